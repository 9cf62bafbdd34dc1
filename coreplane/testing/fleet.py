"""Simulated storage agents for `SimCluster`: the fleet the control plane manages, in sim time.

`FleetWorld(cluster)` adds toy storage nodes (`SimAgent`) that do what a real agent does through
the public agent protocol of `cp.fleet`: heartbeat to the leader every `heartbeat_ms` (with the
heat of what they serve), read their pending actions, copy partitions from a peer (taking
`copy_ms` of simulated time, scaled by an injectable slowness), drop replicas, and acknowledge
each action through the log with its fencing token. An agent acts only on the highest token it
has seen per partition. Faults: `crash` (the process stops; its data stays on disk unless
`wipe=True`), `restart`, `lose` (a replica's data is gone; the agent reports it), `slow`.

Every random choice comes from the cluster's seeded RNG, so a world replays exactly.
`SimProvider` is the host's provider in simulation (`FleetWorld.provider()` installs it), and
`ThreadAgent` is the same toy agent on a real thread, for real clusters (in-process or across
processes).

Checks (`check`, also run as `sample` during a run) are the fleet invariants: no duplicate
replica in a committed replica set; every committed replica on a running agent holds the data
(so no cutover ever happened before its copy caught up, unless a loss was injected); and at the
end, every partition at RF with healthy replicas, each repair started exactly once
(`repairs`). Violations go to `cluster.violations` like the cluster's own.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coreplane.core import commands as C
from coreplane.errors import CoreplaneError
from coreplane.testing.cluster import Op, SimCluster

__all__ = [
    "FleetWorld",
    "SimAgent",
    "SimProvider",
    "ThreadAgent",
    "completed_moves",
    "started_moves",
    "undone_moves",
]


@dataclass(slots=True)
class SimAgent:
    """One toy storage node: which partitions it holds, and what it is doing."""

    node_id: str
    zone: str
    weight: int = 1
    slots: int = 1_000
    up: bool = True
    slowness: int = 1  # copy time multiplier
    held: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)  # lost, not yet reported
    busy: set[str] = field(default_factory=set)  # action ids in progress
    max_token: dict[str, int] = field(default_factory=dict)
    heat: dict[str, int] = field(default_factory=dict)
    seq: int = 0
    gen: int = 0  # bumps on crash: timers of the old process do nothing
    cut_until_us: int = 0  # agent-to-leader partition: nothing it sends arrives before this
    last_heard_us: int = -1  # when a leader last accepted its heartbeat
    heard_at: list[int] = field(default_factory=list)  # accepted heartbeats, recent ones


class SimProvider:
    """The host's provider in simulation: `provision` starts an agent (in `zone`, or in a new
    zone when None), `decommission` stops one; a repeated request id returns the first answer,
    and calls are recorded with their tokens (`calls`)."""

    def __init__(self, world: FleetWorld) -> None:
        self.world = world
        self.answers: dict[str, str] = {}
        self.calls: list[tuple[str, str, int]] = []  # (kind, request_id, token)

    def provision(
        self, zone: str | None, spec: dict[str, Any], request_id: str, *, token: int
    ) -> str:
        self.calls.append(("provision", request_id, token))
        if request_id in self.answers:
            return self.answers[request_id]
        zones = {a.zone for a in self.world.agents.values()}
        if zone is None:
            zone = next(f"z{i}" for i in range(len(zones) + 1) if f"z{i}" not in zones)
        node_id = f"prov{len(self.answers) + 1}"
        self.world.add_agent(node_id, zone)
        self.answers[request_id] = node_id
        return node_id

    def decommission(self, node_id: str, request_id: str, *, token: int) -> None:
        self.calls.append(("decommission", request_id, token))
        if request_id in self.answers:
            return
        self.answers[request_id] = node_id
        agent = self.world.agents.get(node_id)
        if agent is not None and agent.up:
            self.world.crash(node_id, wipe=True)


class FleetWorld:
    """Agents of one SimCluster; see the module docstring."""

    def __init__(
        self,
        cluster: SimCluster,
        *,
        heartbeat_ms: int = 1_000,
        copy_ms: tuple[int, int] = (200, 1_500),
    ) -> None:
        self.c = cluster
        self.heartbeat_ms = heartbeat_ms
        self.copy_ms = copy_ms
        self.agents: dict[str, SimAgent] = {}
        self.copies: Counter[tuple[str, str]] = Counter()  # (pid, node) copies performed
        self.refused_tokens = 0
        self.acks_rejected: Counter[str] = Counter()
        self.injected_loss: set[tuple[str, str]] = set()
        self.dead_after_ms = 0  # > 0: check that no node heard recently is declared dead
        self._dead_seen: set[str] = set()

    # ------------------------------------------------------------------ agents and faults

    def add_agent(
        self, node_id: str, zone: str, *, weight: int = 1, slots: int = 1_000
    ) -> SimAgent:
        agent = SimAgent(node_id, zone, weight, slots)
        self.agents[node_id] = agent
        self.c.at(self.c.rng.randrange(0, self.heartbeat_ms), self._beat, agent, agent.gen)
        return agent

    def crash(self, node_id: str, *, wipe: bool = False) -> None:
        agent = self.agents[node_id]
        agent.up, agent.gen = False, agent.gen + 1
        agent.busy.clear()
        if wipe:
            for pid in sorted(agent.held):
                self.injected_loss.add((node_id, pid))
                agent.lost.add(pid)
            agent.held.clear()
        self.c.record("agent_crash", node_id, wipe)

    def restart(self, node_id: str) -> None:
        agent = self.agents[node_id]
        if agent.up:
            return
        agent.up, agent.gen = True, agent.gen + 1
        self.c.record("agent_restart", node_id)
        self.c.at(self.c.rng.randrange(0, self.heartbeat_ms), self._beat, agent, agent.gen)

    def lose(self, node_id: str, pid: str) -> None:
        agent = self.agents[node_id]
        if pid in agent.held:
            agent.held.discard(pid)
            agent.lost.add(pid)
            self.injected_loss.add((node_id, pid))
            self.c.record("agent_lose", node_id, pid)

    def cut(self, node_id: str, ms: int) -> None:
        """The agent cannot reach the control plane for `ms` (its data stays served)."""
        self.agents[node_id].cut_until_us = self.c.now + ms * 1000
        self.c.record("agent_cut", node_id, ms)

    def slow(self, node_id: str, factor: int) -> None:
        self.agents[node_id].slowness = max(1, factor)

    def provider(self) -> SimProvider:
        """Install a host provider whose `provision` starts a new agent in a new zone, on
        every node (and on nodes restarted later)."""
        provider = SimProvider(self)
        self.c.fleet_provider = provider
        for slot in self.c.slots.values():
            if slot.node is not None:
                slot.node.fleet.provider = provider
        return provider

    def set_heat(self, pid: str, heat: int) -> None:
        for agent in self.agents.values():
            agent.heat[pid] = heat

    # ------------------------------------------------------------------ the agent loop

    def _beat(self, agent: SimAgent, gen: int) -> None:
        if not agent.up or agent.gen != gen:
            return
        c = self.c
        c.at(self.heartbeat_ms + c.rng.randrange(0, 100), self._beat, agent, gen)
        leader = c.leader()
        if leader is None or c.now < agent.cut_until_us:
            return
        heat = {pid: agent.heat.get(pid, 1) for pid in sorted(agent.held)}
        lost = sorted(agent.lost)

        def beat(node: Any) -> Any:
            try:
                node.fleet.heartbeat(
                    agent.node_id,
                    zone=agent.zone,
                    weight=agent.weight,
                    slots=agent.slots,
                    heat=heat,
                    lost=lost,
                )
                return node.fleet.actions(agent.node_id, stale_ok=True)
            except CoreplaneError:
                return None

        actions = c.ask(leader, beat)
        if actions is None:
            return
        agent.last_heard_us = c.now
        agent.heard_at.append(c.now)
        if len(agent.heard_at) > 256:
            del agent.heard_at[:128]
        # Reported; a report a failover swallowed is sent again while the replica stays assigned.
        agent.lost = {pid for pid in agent.lost if self._still_assigned(leader, agent.node_id, pid)}
        for action in actions:
            self._act(agent, action)

    def _still_assigned(self, leader: str, node_id: str, pid: str) -> bool:
        def look(node: Any) -> bool:
            rec = node.state.fleet.parts.get(pid)
            return rec is not None and node_id in rec[2]

        return bool(self.c.ask(leader, look))

    def _act(self, agent: SimAgent, action: Any) -> None:
        if action.id in agent.busy:
            return
        pid = action.partition
        if action.token < agent.max_token.get(pid, 0):
            self.refused_tokens += 1
            return
        agent.max_token[pid] = action.token
        agent.busy.add(action.id)
        c = self.c
        if action.kind == "remove_replica":
            fleet = self.fleet_state()
            if (
                fleet is not None
                and pid in fleet.parts
                and agent.node_id in fleet.parts[pid][2]
                and pid in agent.held
            ):
                c.violate(
                    "fleet_removed_committed_replica",
                    f"{agent.node_id} told to delete {pid}, which the state still counts",
                )
            agent.held.discard(pid)
            self._ack(agent, action, True, "")
            return
        if pid in agent.held:  # an earlier attempt already copied it: idempotent
            self._ack(agent, action, True, "already held")
            return
        lo, hi = self.copy_ms
        delay = c.rng.randrange(lo, hi + 1) * agent.slowness
        c.at(delay, self._copied, agent, agent.gen, action)

    def _copied(self, agent: SimAgent, gen: int, action: Any) -> None:
        if not agent.up or agent.gen != gen:
            return
        source = self.agents.get(action.source) if action.source else None
        if action.source and (
            source is None or not source.up or action.partition not in source.held
        ):
            self._ack(agent, action, False, f"source {action.source} unavailable")
            return
        agent.held.add(action.partition)
        self.copies[(action.partition, agent.node_id)] += 1
        self._ack(agent, action, True, "")

    def _ack(self, agent: SimAgent, action: Any, ok: bool, detail: str) -> None:
        if self.c.now < agent.cut_until_us:
            agent.busy.discard(action.id)  # lost on the way: done again when listed again
            return
        agent.seq += 1
        client = f"agent/{agent.node_id}/{agent.gen}"
        cmd = C.FleetAck(
            node_id=agent.node_id,
            action_id=action.id,
            token=action.token,
            ok=ok,
            detail=detail,
            client_id=client,
            seq=agent.seq,
        )
        gen = agent.gen

        def done(op: Op) -> None:
            if agent.gen == gen:
                agent.busy.discard(action.id)  # listed again if it did not apply: re-done
            result = op.result
            if result is not None and not result.ok:
                self.acks_rejected[result.code] += 1

        alive = [n for n in self.c.node_ids if self.c.slots[n].node is not None]
        if not alive:
            agent.busy.discard(action.id)
            return
        self.c.command(client, cmd, done, via=self.c.rng.choice(alive), kind="fleet_ack")

    # ------------------------------------------------------------------ checks

    def fleet_state(self) -> Any:
        """The fleet machine of the most advanced running node (None if none runs)."""
        best = None
        for node_id in self.c.node_ids:
            node = self.c.slots[node_id].node
            if node is not None and (
                best is None or node.state.applied_index > best.state.applied_index
            ):
                best = node
        return None if best is None else best.state.fleet

    def sample(self) -> None:
        """Invariants that must hold at every moment (call between events)."""
        fleet = self.fleet_state()
        if fleet is None:
            return
        if self.dead_after_ms:
            self._check_deaths(fleet)
        for pid in sorted(fleet.parts):
            replicas = fleet.parts[pid][2]
            if len(set(replicas)) != len(replicas):
                self.c.violate("fleet_duplicate_replica", f"{pid} on {replicas}")
            for node_id in replicas:
                agent = self.agents.get(node_id)
                if (
                    agent is not None
                    and agent.up
                    and pid not in agent.held
                    and (node_id, pid) not in self.injected_loss
                    and pid not in agent.lost
                ):
                    self.c.violate(
                        "fleet_replica_without_data",
                        f"{pid} is committed on {node_id}, which never got it",
                    )

    def _check_deaths(self, fleet: Any) -> None:
        """A node declared dead although a leader accepted its heartbeats all through the last
        dead_after, never more than half of it apart: a false death (the mass death after a
        failover that Kubernetes operators know). A node silent for long and heard again just
        before the decision is a race the next batch settles, not a false death."""
        dead = {n for n, node in fleet.nodes.items() if node.liveness == "dead"}
        window_us = self.dead_after_ms * 1000
        for node_id in sorted(dead - self._dead_seen):
            agent = self.agents.get(node_id)
            if agent is None or not agent.up:
                continue
            start = self.c.now - window_us
            times = [start, *(t for t in agent.heard_at if t >= start), self.c.now]
            gap = max(b - a for a, b in itertools.pairwise(times))
            if len(times) > 2 and gap < window_us // 2:
                self.c.violate(
                    "fleet_false_death",
                    f"{node_id} declared dead, heard all "
                    f"through the last {self.dead_after_ms} ms (gaps <= "
                    f"{gap // 1000} ms)",
                )
        self._dead_seen = dead

    def converged(self) -> bool:
        fleet = self.fleet_state()
        return bool(
            fleet is not None
            and not fleet.ops
            and not fleet.queue
            and not fleet.under
            and not fleet.needs_plan()
            and all(fleet.partition_view(p)["health"] == "healthy" for p in fleet.parts)
        )

    def repairs(self, node_id: str) -> Counter[str]:
        """How many operations were started to replace each replica lost on `node_id`."""
        fleet = self.fleet_state()
        if fleet is None:
            return Counter()
        return Counter(pid for _i, pid, source, _t in started_moves(fleet) if source == node_id)

    def run(self, ms: int, *, sample_every_ms: int = 250) -> None:
        """Run the cluster for `ms`, sampling the invariants."""
        for _ in range(max(1, ms // sample_every_ms)):
            self.c.run_for(sample_every_ms)
            self.sample()

    def run_until_converged(self, timeout_ms: int, *, sample_every_ms: int = 250) -> bool:
        waited = 0
        while waited < timeout_ms:
            self.c.run_for(sample_every_ms)
            waited += sample_every_ms
            self.sample()
            if self.converged():
                return True
        return False


def started_moves(fleet: Any, cause: str = "") -> list[tuple[int, str, str, str]]:
    """(index, pid, source, target) of every operation started (only those started for
    `cause`, e.g. "repair", if given), from the decision journal. Orphan removals (cause
    "gc") move no replica: they are listed only when asked for by cause."""
    out = []
    for index, _ms, _subjects, text in fleet.journal:
        if " started (" not in text or (cause != "gc" and " started (gc): " in text):
            continue
        if not cause or f" started ({cause}): " in text:
            pid, source, _arrow, target = text.split(": ", 1)[1].split(" ")[:4]
            out.append((index, pid, source, target))
    return out


def completed_moves(fleet: Any, cause: str = "") -> list[tuple[int, str, str, str]]:
    """(index, pid, source, target) of every operation (for `cause`, if given) that reached
    its cutover."""
    started = {
        f"{pid}@{index}": (pid, source, target)
        for index, pid, source, target in started_moves(fleet, cause)
    }
    out = []
    for index, _ms, _subjects, text in fleet.journal:
        if " cutover: " in text:
            op = started.get(text.split(" ", 1)[0])
            if op is not None:
                out.append((index, *op))
    return out


def undone_moves(fleet: Any, cause: str = "") -> list[tuple[str, str, str]]:
    """Completed moves later reversed (a replica of p went a -> b, then b -> a); given a
    `cause`, only reversals that were started for it: "rebalance" is the controller undoing
    its own choice (an oscillation), "repair" a reversal forced by b's death."""
    seen: set[tuple[str, str, str]] = set()
    of_cause = {(i, p, s, t) for i, p, s, t in completed_moves(fleet, cause)} if cause else None
    undone = []
    for move in completed_moves(fleet):
        _index, pid, source, target = move
        reversal = source != "-" and target != "-" and (pid, target, source) in seen
        if reversal and (of_cause is None or move in of_cause):
            undone.append((pid, source, target))
        seen.add((pid, source, target))
    return undone


class ThreadAgent:
    """A toy storage node on a real thread, for real clusters (in-process or processes).

    `endpoints` are callables ``call(op, **fields) -> reply`` for each control-plane node,
    with ops ``heartbeat`` (raises on a non-leader), ``actions`` and ``ack``; the agent finds
    the leader by trying them in turn. `peers` is the shared map of agents, where a copy reads
    its source's data. Copies take `copy_s`; acks are retried while the action stays listed.
    """

    def __init__(
        self,
        node_id: str,
        zone: str,
        endpoints: list[Callable[..., Any]],
        peers: dict[str, ThreadAgent],
        *,
        heartbeat_s: float = 0.2,
        copy_s: float = 0.05,
        slots: int = 1_000,
    ) -> None:
        self.node_id, self.zone, self.slots = node_id, zone, slots
        self.endpoints = endpoints
        self.peers = peers
        self.heartbeat_s, self.copy_s = heartbeat_s, copy_s
        self.held: set[str] = set()
        self.max_token: dict[str, int] = {}
        self.copies: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._leader = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"agent-{self.node_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The agent process dies (its data stays)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def holds(self, pid: str) -> bool:
        with self._lock:
            return pid in self.held

    def _call(self, op: str, **fields: Any) -> Any:
        n = len(self.endpoints)
        for k in range(n):
            i = (self._leader + k) % n
            try:
                reply = self.endpoints[i](op, **fields)
            except Exception as exc:  # noqa: BLE001 - any failure: try the next node
                self.errors[type(exc).__name__] += 1
                continue
            self._leader = i
            return reply
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._lock:
                heat = dict.fromkeys(sorted(self.held), 1)
            if (
                self._call(
                    "heartbeat", node_id=self.node_id, zone=self.zone, slots=self.slots, heat=heat
                )
                is None
            ):
                continue
            actions = self._call("actions", node_id=self.node_id) or []
            for action in actions:
                if self._stop.is_set():
                    return
                self._act(action)

    def _act(self, action: dict[str, Any]) -> None:
        pid, token = action["partition"], action["token"]
        if token < self.max_token.get(pid, 0):
            self.errors["refused_token"] += 1
            return
        self.max_token[pid] = token
        ok, detail = True, ""
        if action["kind"] == "remove_replica":
            with self._lock:
                self.held.discard(pid)
        elif not self.holds(pid):
            source = self.peers.get(action["source"]) if action["source"] else None
            time.sleep(self.copy_s)
            if action["source"] and (
                source is None or source._stop.is_set() or not source.holds(pid)
            ):
                ok, detail = False, f"source {action['source']} unavailable"
            else:
                with self._lock:
                    self.held.add(pid)
                self.copies[pid] += 1
        self._call(
            "ack", node_id=self.node_id, action_id=action["id"], token=token, ok=ok, detail=detail
        )
