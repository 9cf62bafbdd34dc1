"""The control plane at work: three daemons embedding coreplane, a fleet of storage agents,
routers, a fenced lock, failures and the operator's tools, on 127.0.0.1.

    python3 -m pip install . && python3 examples/three_node_demo.py [--plain] [--keep-running]

- three OS processes embed `coreplane.ControlPlane` with its HTTP API (`_demo_node.py`);
- 12 storage agents (`coreplane.sdk.Agent`, on threads of this process) in three zones;
- two routers (`coreplane.sdk.Router`) share one global rate limit;
- a client holds a fenced lock (`coreplane.sdk.Lock`) guarding a resource (`FencedResource`)
  that a stale holder (another process, SIGSTOPped past its TTL) tries to write to;
- then: kill -9 of the leader, kill of a storage agent, a hot partition, a scale-up through
  the real `coreplane` CLI (dry run first), `coreplane diagnose` finding an injected fault,
  the dashboard, and a clean stop of every daemon.

Each scene ends in checks (``ok [name] ...`` or ``FAIL [name] ...``); the exit status is 0
only if every check held. ``--plain`` prints plain lines (for logs and the test);
``--keep-running`` leaves the cluster up with its dashboard until Ctrl-C. Node logs are in the
data dir (``--data-dir``, else a temporary one that is removed at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _demo_harness import NodeDown, ProcCluster

from coreplane.errors import CoreplaneError
from coreplane.sdk import Agent, Client, FleetAction, LongRunningConfig, Router
from coreplane.testing.resource import FencedHttpResource

HERE = Path(__file__).resolve().parent
T0 = time.monotonic()

ZONES = ("z1", "z2", "z3")
AGENTS = [(f"s{i:02d}", ZONES[i % 3]) for i in range(12)]
SPARE = [f"s{i}" for i in range(100, 104)]  # names the provider may hand out (_demo_node.py)
PARTITIONS = [f"p{i}" for i in range(8)]
HOT = "p3"
LIMIT_RPS = 100
OFFERED_RPS = (90, 90)  # two routers, 180 requests/s offered against a limit of 100
# Demo timing: ticks every 100 ms (default 200), a silent agent is suspect after 1 s and dead
# after 2 s (defaults 5 s and 30 s: a real fleet should not re-replicate on a 2 s hiccup), and
# the leader commits "silent" after 0.5 s and re-plans every 0.2 s of cluster time.
OPTIONS = {
    "election_timeout_ms": [300, 600],
    "heartbeat_ms": 50,
    "tick_interval_ms": 100,
    "fleet_config": {
        "suspect_after_ms": 1_000,
        "dead_after_ms": 2_000,
        "copy_timeout_ms": 4_000,
        "cleanup_timeout_ms": 4_000,
        "moves_in_flight_per_node": 2,
    },
}
FLEET_ATTRS = {"silent_after_ms": 500, "solve_interval_ms": 200}
CONFIG = LongRunningConfig(
    backoff_base_ms=20,
    backoff_cap_ms=300,
    lock_poll_ms=20,
    health_check_interval_ms=0,
    request_timeout_ms=3_000,
    max_attempts=8,
    budget_min_retries_per_s=10.0,
)


# ------------------------------------------------------------------------------ the screen


class Screen:
    """Scenes, notes, tables and checks, with the time since the demo started."""

    def __init__(self, plain: bool) -> None:
        self.plain = plain
        self.failed: list[str] = []
        self.passed: list[tuple[str, str, str]] = []
        self.console: Any = None
        if not plain:
            from rich.console import Console

            self.console = Console(highlight=False)

    @property
    def width(self) -> int:
        return 126 if self.plain else max(80, int(self.console.width))

    def _stamp(self) -> str:
        return f"[{time.monotonic() - T0:6.2f}s]"

    def scene(self, title: str) -> None:
        if self.plain:
            print(f"{self._stamp()} == {title}", flush=True)
        else:
            self.console.rule(f"[bold cyan]{title}[/]  [dim]{self._stamp()}[/]", align="left")

    def say(self, msg: str) -> None:
        if self.plain:
            print(f"{self._stamp()}    {msg}", flush=True)
        else:
            from rich.markup import escape

            self.console.print(f"[dim]{self._stamp()}[/]    {escape(msg)}")

    def block(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines():
            if self.plain:
                print(f"             | {line}", flush=True)
            else:
                from rich.markup import escape

                self.console.print(f"             [dim]|[/] {escape(line)}")

    def table(self, headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
        if self.plain:
            widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
            for row in [headers, *rows]:
                print(
                    "             "
                    + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                )
            return
        from rich.table import Table

        t = Table(*headers, box=None, padding=(0, 2), header_style="bold")
        for row in rows:
            t.add_row(*row)
        from rich.padding import Padding

        self.console.print(Padding(t, (0, 0, 0, 13)))

    def summary(self) -> None:
        """Every check, in order, with the time it was decided."""
        rows = [(name, "ok", at) for name, _what, at in self.passed]
        rows += [(f.split(":")[0], "FAIL", "") for f in self.failed]
        self.scene("summary")
        self.table(("check", "result", "at"), rows)

    def check(self, ok: bool, name: str, what: str) -> bool:
        if self.plain:
            print(f"{self._stamp()}  {'ok  ' if ok else 'FAIL'} [{name}] {what}", flush=True)
        else:
            from rich.markup import escape

            mark = "[bold green]ok  [/]" if ok else "[bold red]FAIL[/]"
            self.console.print(
                f"[dim]{self._stamp()}[/]  {mark} [bold]\\[{name}][/] {escape(what)}"
            )
        if ok:
            self.passed.append((name, what, self._stamp().strip("[]")))
        else:
            self.failed.append(f"{name}: {what}")
        return ok


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.1) -> Any:
    """Poll `cond` until it returns something true; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            got = cond()
        except (CoreplaneError, httpx.HTTPError, NodeDown, TimeoutError, KeyError):
            got = None  # a node mid-failover answers nothing: look again
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


# ------------------------------------------------------------------------------ the fleet


class Store:
    """One storage node's data: partition -> the fencing token of the action that put it."""

    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.hot: set[str] = set()
        self.lock = threading.Lock()

    def add(self, action: FleetAction) -> None:
        time.sleep(0.05)  # "copying" from action.source
        with self.lock:
            self.held[action.partition] = action.token

    def remove(self, action: FleetAction) -> None:
        with self.lock:
            self.held.pop(action.partition, None)

    def heat(self) -> dict[str, int]:
        with self.lock:
            return {p: (50_000 if p in self.hot else 100) for p in self.held}


class Fleet:
    """The storage agents of this demo: each an `Agent` with its own `Client` and `Store`."""

    def __init__(self, urls: list[str], tokens: dict[str, str]) -> None:
        self.urls, self.tokens = urls, tokens
        self.stores: dict[str, Store] = {}
        self.agents: dict[str, Agent] = {}
        self.clients: dict[str, Client] = {}
        self.zone_of: dict[str, str] = {}
        self._mu = threading.Lock()

    def start(self, node_id: str, zone: str) -> None:
        with self._mu:
            if node_id in self.agents:
                return
            store = self.stores.setdefault(node_id, Store())
            client = Client(self.urls, self.tokens[node_id], CONFIG)
            self.clients[node_id] = client
            self.zone_of[node_id] = zone
            self.agents[node_id] = Agent(
                client,
                node_id,
                zone=zone,
                heat=store.heat,
                heartbeat_ms=150,
                handlers={"add_replica": store.add, "remove_replica": store.remove},
            )

    def kill(self, node_id: str) -> None:
        """The agent's process dies: no more heartbeats, no more actions."""
        with self._mu:
            agent = self.agents.pop(node_id)
            client = self.clients.pop(node_id)
        agent.close()
        client.close()

    def heat_up(self, pid: str) -> None:
        for store in self.stores.values():
            with store.lock:
                store.hot.add(pid)

    def holders(self, pid: str) -> list[str]:
        with self._mu:
            live = sorted(self.agents)
        return [n for n in live if pid in self.stores[n].held]

    def close(self) -> None:
        for node_id in list(self.agents):
            self.kill(node_id)


def watch_provider(directory: Path, fleet: Fleet, stop: threading.Event) -> None:
    """Start an agent for every node the provider was asked for (`_demo_node.DirProvider`)."""
    while not stop.wait(0.1):
        for path in sorted(directory.glob("s*.json")):
            with contextlib.suppress(ValueError, OSError, KeyError):
                row = json.loads(path.read_text())
                fleet.start(row["node_id"], row["zone"])


# ------------------------------------------------------------------------------ the resource


# ------------------------------------------------------------------------------ the routers


class Offered(threading.Thread):
    """Offers `rps` requests per second to `router`; stamps every admitted one."""

    def __init__(self, router: Router, rps: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.router, self.rps, self.stop = router, rps, stop
        self.admitted: list[float] = []

    def run(self) -> None:
        start, offered = time.monotonic(), 0
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * self.rps)
            while offered < due:
                offered += 1
                if self.router.try_acquire():
                    self.admitted.append(time.monotonic())
            time.sleep(0.01)


def windows(stamps: list[float], start: float, end: float) -> list[int]:
    """Admissions in every 1 s window [t, t + 1) for t from start to end - 1, 50 ms apart."""
    stamps = sorted(stamps)
    out, lo, hi, t = [], 0, 0, start
    while t + 1.0 <= end:
        while lo < len(stamps) and stamps[lo] < t:
            lo += 1
        while hi < len(stamps) and stamps[hi] < t + 1.0:
            hi += 1
        out.append(hi - lo)
        t += 0.05
    return out


class Writer(threading.Thread):
    """The lock holder at work: every 20 ms a KV write guarded by its lock (`LockLost` if the
    lock lapsed) and a write to the fenced resource with the lock's token."""

    def __init__(self, client: Client, lock: Any, resource: FencedHttpResource) -> None:
        super().__init__(daemon=True)
        self.client, self.lock, self.resource = client, lock, resource
        self.acked: dict[str, bytes] = {}
        self.stamps: list[float] = []
        self.failed = 0
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._halt.wait(0.02):
            key, value = f"orders/{i:05d}", f"order {i}".encode()
            try:
                self.client.put(key, value, guard=self.lock)
            except CoreplaneError:
                self.failed += 1  # unknown outcome: the next round writes the next key
                continue
            finally:
                i += 1
            if not self.resource.write("writer", self.lock.check()):
                self.errors.append(f"the resource refused token {self.lock.token}")
            self.acked[key] = value
            self.stamps.append(time.monotonic())

    def acked_after(self, t: float) -> float:
        return next((x for x in self.stamps if x > t), 0.0)

    def gap_s(self) -> float:
        return max((b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)), default=0)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


# ------------------------------------------------------------------------------ the demo


class Demo:
    def __init__(self, screen: Screen, base: Path) -> None:
        self.screen = screen
        self.base = base
        self.admin = "demo-admin-" + os.urandom(12).hex()
        self.client_token = "demo-client-" + os.urandom(12).hex()
        self.agent_tokens = {n: f"demo-agent-{n}-" + os.urandom(8).hex() for n, _ in AGENTS}
        self.agent_tokens.update({n: f"demo-agent-{n}-" + os.urandom(8).hex() for n in SPARE})
        tokens = {self.admin: "admin", self.client_token: "client"}
        tokens.update({tok: f"agent:{n}" for n, tok in self.agent_tokens.items()})
        self.provider_dir = base / "provider"
        self.cluster = ProcCluster(
            base,
            options=OPTIONS,
            api_tokens=tokens,
            config={"provider_dir": str(self.provider_dir), "fleet_attrs": FLEET_ATTRS},
        )
        self.urls = list(self.cluster.api_urls.values())
        self.http = httpx.Client(
            timeout=5.0, headers={"Authorization": f"Bearer {self.admin}"}, trust_env=False
        )
        self.stop = threading.Event()
        self.fleet = Fleet(self.urls, self.agent_tokens)
        self.resource = FencedHttpResource("orders-db")
        self.cli_config = base / "cli-config.yaml"
        self.leader = ""
        self.closers: list[Callable[[], None]] = []

    # -- helpers -----------------------------------------------------------------------

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """An admin call to the API of whichever live voter answers first."""
        last: Exception | None = None
        for nid, url in self.cluster.api_urls.items():
            if not self.cluster.nodes[nid].alive:
                continue
            try:
                if body is None:
                    r = self.http.get(url + path)
                else:
                    r = self.http.post(url + path, json=body)
            except httpx.HTTPError as exc:
                last = exc
                continue
            if r.status_code == 200:
                return r.json()
            last = RuntimeError(f"{path}: {r.status_code} {r.text[:200]}")
        raise last or RuntimeError("no live voter")

    def partitions(self) -> dict[str, dict[str, Any]]:
        return {p["id"]: p for p in self.api("/v1/fleet/partitions")["partitions"]}

    def converged(self) -> bool:
        parts = self.partitions()
        ops = self.api("/v1/fleet/operations")["operations"]
        return bool(parts) and not ops and all(p["health"] == "healthy" for p in parts.values())

    def host(self, op: str, **fields: Any) -> dict[str, Any]:
        """Ask the leading daemon's host code (its `cp`) over the demo's control channel."""
        reply = self.cluster.nodes[self.leader].request(op, timeout_s=5.0, **fields)
        if not reply.get("ok"):
            raise RuntimeError(f"{op}: {reply.get('error')}: {reply.get('message')}")
        return reply

    def cli(self, *args: str, on_line: Callable[[str], None] | None = None) -> tuple[int, str]:
        """Run the real `coreplane` CLI (as `python3 -m coreplane.ops`); (exit code, output)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("COREPLANE_")}
        env.update(
            COREPLANE_ENDPOINTS=",".join(self.urls),
            COREPLANE_TOKEN=self.admin,
            COREPLANE_CONFIG=str(self.cli_config),
            COLUMNS=str(self.screen.width - 16),  # the CLI's tables fit in the demo's blocks
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "coreplane.ops", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out = []
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))
        return proc.wait(timeout=60), "".join(out)

    # -- scenes ------------------------------------------------------------------------

    def election(self) -> None:
        s = self.screen
        s.scene("1. three daemons embedding coreplane.ControlPlane elect a leader")
        t = time.monotonic()
        self.cluster.start_all(parallel=True)
        started = time.monotonic() - t
        self.leader = self.cluster.wait_leader(timeout_s=20)
        status = self.cluster.status(self.leader)
        s.say(
            f"processes up in {started:.2f}s: "
            + ", ".join(f"{n} pid {p.pid}" for n, p in self.cluster.nodes.items())
        )
        s.check(
            True,
            "election",
            f"leader {self.leader} elected {time.monotonic() - t:.2f}s after start "
            f"(term {status['term']}, fencing token {status['fencing_token']})",
        )
        self.token1 = int(status["fencing_token"])

    def placement(self) -> None:
        s = self.screen
        s.scene("2. 12 storage agents in 3 zones; partitions placed across zones")
        t = time.monotonic()
        for node_id, zone in AGENTS:
            self.fleet.start(node_id, zone)
        watcher = threading.Thread(
            target=watch_provider, args=(self.provider_dir, self.fleet, self.stop), daemon=True
        )
        watcher.start()
        wait_for(lambda: len(self.api("/v1/fleet/nodes")["nodes"]) == len(AGENTS), 20, "agents")
        s.say(f"{len(AGENTS)} agents registered by heartbeat in {time.monotonic() - t:.2f}s")
        for pid in PARTITIONS:
            self.host("fleet_create_partition", pid=pid, rf=3)
        wait_for(self.converged, 30, "the partitions placed")
        parts = self.partitions()
        zone = self.fleet.zone_of
        rows, ok = [], True
        for pid in PARTITIONS:
            reps = parts[pid]["replicas"]
            zones = sorted({zone[r] for r in reps})
            ok &= len(reps) == 3 and len(zones) == 3 and sorted(self.fleet.holders(pid)) == reps
            rows.append((pid, " ".join(f"{r}/{zone[r]}" for r in reps), ",".join(zones)))
        s.table(("partition", "replicas (node/zone)", "zones"), rows)
        s.check(
            ok,
            "placement",
            f"{len(PARTITIONS)} partitions x rf 3 placed in 3 distinct zones, each replica held "
            f"by its agent, {time.monotonic() - t:.2f}s",
        )

    def start_stale_holder(self) -> subprocess.Popen[str]:
        env = dict(os.environ, COREPLANE_TOKEN=self.client_token)
        return subprocess.Popen(
            [
                sys.executable,
                str(HERE / "_demo_lock_holder.py"),
                "stale",
                self.resource.url,
                "orders-writer",
                *self.urls,
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def fenced_lock(self, holder: subprocess.Popen[str]) -> None:
        s = self.screen
        s.scene("3. a fenced lock: a stale holder's write is refused")
        assert holder.stdin is not None and holder.stdout is not None
        wrote = holder.stdout.readline().split()
        checked = holder.stdout.readline().split()
        old = int(checked[1])
        s.say(
            f"holder process {holder.pid} took lock 'orders-writer' (token {old}) and wrote with "
            f"it: HTTP {wrote[2]}"
        )
        s.say("it checks that it still holds the lock ... and is paused (SIGSTOP) before its write")
        os.kill(holder.pid, signal.SIGSTOP)
        t = time.monotonic()
        self.client = Client(self.urls, self.client_token, CONFIG)
        self.lock = self.client.lock("orders-writer", ttl_ms=5_000, acquire_timeout_s=20)
        self.lock.acquire()
        s.say(
            f"the holder's TTL (1 s) ran out; this client got the lock {time.monotonic() - t:.2f}s "
            f"later with token {self.lock.token}"
        )
        mine = self.resource.write("client", self.lock.check())
        os.kill(holder.pid, signal.SIGCONT)
        holder.stdin.write("go\n")
        holder.stdin.flush()
        late = holder.stdout.readline().split()
        lost = holder.stdout.readline().split()
        holder.wait(timeout=10)
        s.say(
            f"holder resumed and wrote with token {late[1]}: HTTP {late[2]} "
            f"(its lock.lost: {lost[1]})"
        )
        tokens = [tok for tok, _ in self.resource.accepted]
        s.check(
            mine
            and late[2] == "409"
            and self.lock.token > old
            and tokens == sorted(tokens)
            and self.resource.refused == [(old, "stale")],
            "fencing",
            f"the stale holder's write with token {old} was refused; the resource accepted "
            f"tokens {tokens} (never lower than one it had seen)",
        )

    def rate_limit(self) -> None:
        s = self.screen
        s.scene("4. two routers share one global rate limit")
        self.host("quota_set_limit", key="api", limit_milli=LIMIT_RPS * 1000, routers_max=2)
        self.routers = []
        for i, rps in enumerate(OFFERED_RPS):
            client = Client(self.urls, self.client_token, CONFIG)
            self.closers.append(client.close)
            router = Router(client, "api", f"edge-{i + 1}")
            self.closers.insert(0, router.close)
            self.routers.append((router, rps))
        self.offered = [Offered(r, rps, self.stop) for r, rps in self.routers]
        self.offer_t0 = time.monotonic()
        for o in self.offered:
            o.start()
        # A router's share follows the demand it reports (a few times a second): the first
        # epochs after the demand appears give it room bit by bit.
        warm = wait_for(
            lambda: (
                all(r.mode == "share" and r.schedule.share_milli > 0 for r, _ in self.routers)
                and time.monotonic()
            ),
            10,
            "shares for both routers",
        )
        time.sleep(max(0.0, warm + 1.0 - time.monotonic()))
        steady_t0 = time.monotonic()
        time.sleep(2.0)
        now = time.monotonic()
        stamps = [t for o in self.offered for t in o.admitted]
        every = windows(stamps, self.offer_t0, now)
        steady = windows(stamps, steady_t0, now)
        per = [sum(steady_t0 <= t < now for t in o.admitted) for o in self.offered]
        s.say(
            f"offered {' + '.join(map(str, OFFERED_RPS))} requests/s against a limit of "
            f"{LIMIT_RPS}/s; shares "
            + ", ".join(
                f"{r.router_id} {r.schedule.share_milli / 1000:.0f}/s" for r, _ in self.routers
            )
            + f"; admitted in the last {now - steady_t0:.1f}s per router: {per}"
        )
        mean = sum(steady) / max(1, len(steady))
        s.check(
            bool(steady) and max(every) <= LIMIT_RPS and mean >= 0.6 * LIMIT_RPS,
            "rate_limit",
            f"no 1 s window admitted more than {LIMIT_RPS} across both routers (busiest "
            f"{max(every, default=0)}); once the shares settled the limit was used: "
            f"{mean:.0f} per window on average, {min(steady, default=0)} at least",
        )

    def failover(self) -> None:
        s = self.screen
        s.scene("5. kill -9 of the leader: failover, operations continue")
        old = self.leader
        admitted_before = sum(len(o.admitted) for o in self.offered)
        writer = Writer(self.client, self.lock, self.resource)
        writer.start()
        time.sleep(0.3)
        s.say(
            f"the lock holder writes every 20 ms (guarded by its lock); kill -9 {old} "
            f"(pid {self.cluster.nodes[old].pid})"
        )
        t = time.monotonic()
        self.cluster.nodes[old].kill9()
        self.leader = self.cluster.wait_leader(timeout_s=20, exclude=old)
        elected = time.monotonic() - t
        wait_for(lambda: writer.acked_after(t), 20, "a write after the kill", every_s=0.01)
        first_write = writer.acked_after(t) - t
        token2 = int(self.cluster.status(self.leader)["fencing_token"])
        s.say(
            f"new leader {self.leader} {elected:.2f}s after the kill (fencing token {token2}); "
            f"the first write acknowledged {first_write:.2f}s after the kill"
        )
        restart = threading.Thread(target=self.cluster.nodes[old].start, daemon=True)
        restart.start()
        s.say(f"restarting {old} from its data dir (in the background)")
        # the fleet goes on: a new partition is placed by the new leader
        self.host("fleet_create_partition", pid="p8", rf=3)
        wait_for(lambda: self.partitions()["p8"]["health"] == "healthy", 20, "p8 placed")
        time.sleep(max(0.0, 1.5 - (time.monotonic() - t)))
        writer.stop()
        acked = writer.acked
        stored = {k: v for k, v, _rev in self.client.range("orders/")}
        missing = [k for k in acked if stored.get(k) != acked[k]]
        s.say(
            f"{len(acked)} writes acknowledged around the failover, {writer.failed} failed "
            f"and retried later; longest pause between acknowledgements {writer.gap_s():.2f}s"
        )
        s.check(
            self.leader != old
            and token2 > self.token1
            and not self.lock.lost
            and not missing
            and writer.errors == [],
            "failover",
            f"{self.leader} leads (token {token2} > {self.token1}); the lock survived; all "
            f"{len(acked)} acknowledged writes are there, each accepted by the fenced resource; "
            "p8 placed by the new leader",
        )
        admitted_after = sum(len(o.admitted) for o in self.offered) - admitted_before
        w = windows([x for o in self.offered for x in o.admitted], self.offer_t0, time.monotonic())
        s.check(
            max(w) <= LIMIT_RPS and admitted_after > 0,
            "limit_failover",
            f"routers admitted {admitted_after} more through the failover, never over "
            f"{LIMIT_RPS} in any 1 s window (busiest {max(w)})",
        )
        self.restart = restart

    def storage_failure(self) -> None:
        s = self.screen
        s.scene("6. a storage agent dies: suspect, dead, re-replicated, RF restored")
        parts = self.partitions()
        victim = max(
            (n for n, _ in AGENTS), key=lambda n: sum(n in p["replicas"] for p in parts.values())
        )
        held = sorted(p for p, v in parts.items() if victim in v["replicas"])
        s.say(
            f"killing agent {victim} ({self.fleet.zone_of[victim]}), which holds {', '.join(held)}"
        )
        t = time.monotonic()
        self.fleet.kill(victim)
        seen: dict[str, float] = {}

        def state() -> str:
            node = self.api("/v1/fleet/node", {"node_id": victim})
            return str((node.get("node") or node).get("liveness") or node.get("state"))

        def reached(want: str) -> bool:
            st = state()
            if st not in seen:
                seen[st] = time.monotonic() - t
            return st == want or (want == "suspect" and st == "dead")

        wait_for(lambda: reached("suspect"), 20, f"{victim} suspect", every_s=0.05)
        if "suspect" in seen:
            s.say(f"{victim} suspect after {seen['suspect']:.2f}s (suspect_after_ms=1000)")
        else:  # a loaded machine can delay one look past the whole suspect second
            s.say(f"{victim} suspect: passed between two looks")
        wait_for(lambda: reached("dead"), 20, f"{victim} dead", every_s=0.05)
        s.say(f"{victim} dead after {seen['dead']:.2f}s (dead_after_ms=2000)")
        wait_for(
            lambda: (
                self.converged()
                and not any(victim in p["replicas"] for p in self.partitions().values())
            ),
            30,
            "re-replication",
        )
        parts = self.partitions()
        zone = self.fleet.zone_of
        rows = []
        for pid in held:
            reps = parts[pid]["replicas"]
            rows.append((pid, " ".join(f"{r}/{zone[r]}" for r in reps)))
        s.table(("partition", "replicas now"), rows)
        decisions = self.api("/v1/fleet/explain", {"thing": victim, "limit": 50})["decisions"]
        s.say(f"the fleet's own account (`coreplane explain {victim}`), from the log:")
        since = next(
            (i for i, d in enumerate(decisions) if "declared" in d["text"]), len(decisions) - 6
        )
        for d in decisions[since : since + 8]:
            s.block(f"index {d['index']}, cluster time {d['tick_ms']} ms: {d['text']}")
        restored = time.monotonic() - t
        # every replica the fleet lists is held by its agent (a node that came back after a
        # false alarm may hold an extra copy the fleet no longer counts: not a loss)
        problems = [
            f"{p}: replicas {parts[p]['replicas']}, held by {self.fleet.holders(p)}"
            for p in held
            if len(set(parts[p]["replicas"])) != 3
            or len({zone[r] for r in parts[p]["replicas"]}) != 3
            or not set(parts[p]["replicas"]) <= set(self.fleet.holders(p))
        ]
        s.check(
            not problems,
            "re_replication",
            f"{len(held)} replicas of {victim} re-created elsewhere, RF 3 restored in 3 zones, "
            f"{restored:.2f}s after the kill" + (f"; but {problems}" if problems else ""),
        )
        self.victim = victim

    def hot_partition(self) -> None:
        s = self.screen
        s.scene("7. a hot partition is flagged")
        s.say(f"the agents holding {HOT} report 500x its usual heat")
        t = time.monotonic()
        self.fleet.heat_up(HOT)
        part = wait_for(
            lambda: (p := self.partitions()[HOT])["split_candidate"] and p, 20, "a split flag"
        )
        s.check(
            True,
            "hot_partition",
            f"{HOT} flagged as a split candidate {time.monotonic() - t:.2f}s later "
            f"(heat {part['heat']}): too hot for any one node's share, so it is not moved "
            "back and forth",
        )

    def scale_up(self) -> None:
        s = self.screen
        s.scene(f"8. coreplane update partition {HOT} --scale-up --new-num-nodes 4")
        args = ("update", "partition", HOT, "--scale-up", "--new-num-nodes", "4")
        s.say("$ coreplane " + " ".join(args) + " --dry-run")
        before = self.partitions()[HOT]
        code, out = self.cli(*args, "--dry-run")
        s.block(out)
        after = self.partitions()[HOT]
        s.check(
            code == 0 and after["rf"] == 3 and after["replicas"] == before["replicas"],
            "dry_run",
            f"the dry run planned and changed nothing (exit {code}; {HOT} still rf 3)",
        )
        s.say(
            "the fleet has 3 zones and RF 4 needs 4: the leader asks the host's provider for a "
            "node in a new zone; the CLI asks for the cluster's name (--confirm-cluster)"
        )
        s.say("$ coreplane " + " ".join(args) + " --confirm-cluster coreplane")
        t = time.monotonic()
        code, out = self.cli(
            *args,
            "--confirm-cluster",
            "coreplane",
            on_line=lambda line: s.block(f"{line}   (+{time.monotonic() - t:.1f}s)"),
        )
        part = self.partitions()[HOT]
        zones = sorted({self.fleet.zone_of.get(r, "?") for r in part["replicas"]})
        s.say(f"{HOT}: replicas {', '.join(part['replicas'])} in zones {', '.join(zones)}")
        s.check(
            code == 0 and part["rf"] == 4 and len(part["replicas"]) == 4 and len(zones) == 4,
            "scale_up",
            f"{HOT} scaled to 4 replicas in 4 zones in {time.monotonic() - t:.2f}s (the 4th zone's "
            f"node came from the host's provider)",
        )

    def diagnose(self) -> None:
        s = self.screen
        s.scene("9. coreplane diagnose finds an injected fault and names its fix")
        s.say("injected: an agent configured with an old token keeps calling the API")
        bad = httpx.Client(headers={"Authorization": "Bearer an-old-rotated-token"})
        for _ in range(3):
            with contextlib.suppress(httpx.HTTPError):
                bad.post(self.urls[0] + "/v1/fleet/heartbeat", json={})
        bad.close()
        s.say("$ coreplane diagnose")
        code, out = self.cli("diagnose")
        s.block(out)
        findings = self.api("/v1/diagnose")["findings"]
        mine = [f for f in findings if f["check"] == "token_mismatch"]
        s.check(
            code == 7 and bool(mine) and mine[0]["fix"].startswith("coreplane config set-context"),
            "diagnose",
            "found the wrong token"
            + (f" ({mine[0]['what']}); fix: {mine[0]['fix']}" if mine else "")
            + f"; exit {code} (unhealthy)",
        )

    def dashboard(self, keep_running: bool) -> None:
        s = self.screen
        s.scene("10. the dashboard")
        url = self.cluster.api_urls[self.leader]
        page = self.http.get(url + "/dashboard")
        s.check(
            page.status_code == 200 and "<html" in page.text.lower(),
            "dashboard",
            f"served at {url}/dashboard#token={self.admin}",
        )
        self.restart.join(timeout=20)
        self.cluster.wait_caught_up(timeout_s=20)
        index, digest = self.cluster.equal_hashes()
        s.check(
            len(self.cluster.alive()) == 3,
            "replicas_agree",
            f"all 3 voters (the killed one restarted) agree on state hash {digest[:12]} at "
            f"index {index}",
        )
        if keep_running:
            s.say(f"open {url}/dashboard#token={self.admin}  (Ctrl-C stops the demo)")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(1)

    def shutdown(self) -> None:
        """Stop the clients, then every daemon cleanly (`cp.stop()`), all at once."""
        s = self.screen
        s.scene("11. a clean stop")
        self.close_clients()
        codes: dict[str, int | None] = {}

        def stop(nid: str) -> None:
            codes[nid] = self.cluster.nodes[nid].stop(timeout_s=15)

        threads = [threading.Thread(target=stop, args=(n,)) for n in self.cluster.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s.check(
            all(c == 0 for c in codes.values()),
            "clean_stop",
            f"every daemon stopped cleanly: exit statuses {dict(sorted(codes.items()))}",
        )

    def close_clients(self) -> None:
        if self.stop.is_set():
            return  # closed already
        self.stop.set()
        for closer in self.closers:
            with contextlib.suppress(Exception):
                closer()
        with contextlib.suppress(Exception):
            self.lock.release()
            self.client.close()
        self.fleet.close()

    def close(self) -> None:
        self.close_clients()
        self.http.close()
        self.resource.close()
        self.cluster.kill_all()


def run(screen: Screen, base: Path, keep_running: bool) -> int:
    demo = Demo(screen, base)
    try:
        demo.election()
        holder = demo.start_stale_holder()  # starts up while the fleet forms
        try:
            demo.placement()
            demo.fenced_lock(holder)
        finally:
            if holder.poll() is None:
                with contextlib.suppress(OSError):
                    os.kill(holder.pid, signal.SIGCONT)
                holder.kill()
        demo.rate_limit()
        demo.failover()
        demo.storage_failure()
        demo.hot_partition()
        demo.scale_up()
        demo.diagnose()
        demo.dashboard(keep_running)
        demo.shutdown()
    except Exception as exc:  # noqa: BLE001 - any error is a failed demo, with its reason
        screen.check(False, "demo", f"{type(exc).__name__}: {exc} (node logs: {base})")
    finally:
        demo.close()
    total = time.monotonic() - T0
    screen.summary()
    if screen.failed:
        screen.say(f"FAILED {len(screen.failed)} check(s) in {total:.1f}s: {screen.failed}")
        return 1
    screen.say(f"all {len(screen.passed)} checks passed in {total:.1f}s")
    return 0


def use_this_coreplane() -> None:
    """Every process the demo starts (daemons, the CLI, the stale holder) imports the coreplane
    this one imported: the installed package, or a checkout named by PYTHONPATH."""
    import coreplane

    root = str(Path(coreplane.__file__).resolve().parent.parent)
    paths = [root, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plain", action="store_true", help="plain lines, no colour (logs)")
    parser.add_argument(
        "--keep-running", action="store_true", help="keep the cluster and dashboard up"
    )
    parser.add_argument("--data-dir", help="keep data and node logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    use_this_coreplane()
    screen = Screen(plain=args.plain)
    if args.data_dir:
        return run(screen, Path(args.data_dir), args.keep_running)
    with tempfile.TemporaryDirectory(prefix="coreplane-demo-") as tmp:
        return run(screen, Path(tmp), args.keep_running)


if __name__ == "__main__":
    sys.exit(main())
