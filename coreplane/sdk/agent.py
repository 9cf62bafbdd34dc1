"""`Agent`: the fleet's agent on a storage node; heartbeats, runs actions, acknowledges.

``Agent(client, node_id, zone=..., handlers={"add_replica": fn, "remove_replica": fn})`` runs a
loop on its own thread: every `heartbeat_ms` it sends a heartbeat with the node's heat report
(``heat()`` -> {partition: heat milli-units}), the sizes of the replicas it serves
(``sizes()`` -> {partition: bytes}; what a dry run's copy estimate is made of) and the replicas
it lost (``lost()``), fetches its pending actions and hands them to its workers, which run
each through the host's handler for its kind and acknowledge it when the handler returns
(`ok=False` with the handler's exception as detail when it raised).

**Handlers off the heartbeat thread.** A copy can take longer than the fleet's suspect_after
(5 s) or dead_after (30 s); run on the heartbeat thread it would make its own node suspect,
then dead, and its replicas re-created elsewhere. So handlers run on `workers` threads (2 by
default, the fleet's default moves in flight per node), one action per partition at a time, at
most `queued_max` waiting (more wait in the fleet, delivered again next round), while
heartbeats keep their schedule. Handlers of different partitions may run at the same time:
make them thread-safe, or pass ``workers=1`` to have them run one after another. An action queued
or running is not accepted again when the fleet delivers it again (it is not acknowledged
yet). `close(drain_s=...)` stops heartbeats and new handlers, waits for the running ones up to
`drain_s` and abandons the rest unacknowledged (delivered again, with the same token).

**Idempotent and fenced.** An action carries a fencing token (the log index that issued it).
The agent keeps the highest token it has run per partition and refuses an action with a lower
one (an older decision overtaken by a newer one, delivered late or by a deposed leader); an
action it already ran (same id) is acknowledged again without running twice (the ack may have
been lost). Handlers get the `FleetAction`, token included, and should pass the token on to
the data they touch (as with `FencedResource`).

**Bounded memory.** A long-running agent remembers the last `ran_max` actions it ran (10,000
by default): `ran` lists them, oldest first, and their ids are acknowledged again without
running. Past the bound the oldest are forgotten. The fleet delivers an action only until it
is acknowledged and keeps few in flight per node, so one delivered again after `ran_max`
others ran here is one whose acks were all lost; it then runs again if its token is still
the highest of its partition (a newer action for the partition ran since: refused as stale, as
within the bound). Handlers must therefore be idempotent, as `close` already requires. The
highest token per partition (`highest`) is never forgotten: it is the fence.

**Failover.** Heartbeats go to the leader: a follower answers ``not_leader`` and the client's
connection provider finds the new leader (retries with backoff and a budget, breakers per
endpoint); an ack the new leader already has is refused by the state machine as stale, which
the agent takes as done. Nothing here assumes the leader it talked to last is still in charge.

Uses the fleet's agent routes (``/v1/fleet/heartbeat``, ``/v1/fleet/actions``,
``/v1/fleet/ack``, with an ``agent:<node_id>`` token). Imports only `coreplane.errors` of the
server side.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from coreplane.errors import CommandRejected, CoreplaneError, InvalidArgument

__all__ = ["Agent", "FleetAction"]

RAN_MAX = 10_000  # default `ran_max`: actions remembered as run (see "Bounded memory")


@dataclass(frozen=True, slots=True)
class FleetAction:
    """Work for this node: ``add_replica`` (copy `partition` from `source`; empty: create it)
    or ``remove_replica``; `token` fences it; `operation` is the operation's id."""

    id: str
    kind: str
    partition: str
    source: str
    token: int
    operation: str


Handler = Callable[[FleetAction], Any]


class Agent:
    """See the module docstring. `start=False` leaves the heartbeat loop to you (`step`), for
    tests; handlers still run on the agent's workers (`wait_idle` waits for them)."""

    def __init__(
        self,
        client: Any,
        node_id: str,
        *,
        zone: str,
        handlers: Mapping[str, Handler],
        weight: int = 1,
        slots: int = 1 << 20,
        heat: Callable[[], Mapping[str, int]] | None = None,
        lost: Callable[[], Iterable[str]] | None = None,
        sizes: Callable[[], Mapping[str, int]] | None = None,
        heartbeat_ms: int = 500,
        workers: int = 2,
        queued_max: int = 1024,
        ran_max: int = RAN_MAX,
        start: bool = True,
    ) -> None:
        for name, value in (("node_id", node_id), ("zone", zone)):
            if not isinstance(value, str) or not value or len(value) > 256:
                raise InvalidArgument(name, "must be a non-empty str of at most 256 characters")
        if not isinstance(handlers, Mapping) or not all(callable(h) for h in handlers.values()):
            raise InvalidArgument("handlers", "must map action kinds to callables")
        if type(heartbeat_ms) is not int or not 10 <= heartbeat_ms <= 60_000:
            raise InvalidArgument("heartbeat_ms", "must be an int in [10, 60000]")
        if type(workers) is not int or not 1 <= workers <= 64:
            raise InvalidArgument("workers", "must be an int in [1, 64]")
        if type(queued_max) is not int or not 1 <= queued_max <= 100_000:
            raise InvalidArgument("queued_max", "must be an int in [1, 100000]")
        if type(ran_max) is not int or not 1 <= ran_max <= 1_000_000:
            raise InvalidArgument("ran_max", "must be an int in [1, 1000000]")
        self.client, self.node_id, self.zone = client, node_id, zone
        self.handlers = dict(handlers)
        self.weight, self.slots = weight, slots
        self._heat = heat or (lambda: {})
        self._lost = lost or (lambda: ())
        self._sizes = sizes or (lambda: {})
        self.heartbeat_ms = heartbeat_ms
        self.queued_max = queued_max
        self.highest: dict[str, int] = {}  # partition -> highest token run
        self.ran_max = ran_max
        # The last `ran_max` actions run: their ids -> ok (answered again, not run again), and
        # the actions themselves, oldest first (for the host and tests).
        self._done: OrderedDict[str, bool] = OrderedDict()
        self._ran: deque[FleetAction] = deque(maxlen=ran_max)
        self.refused = 0
        self.heartbeats = 0  # heartbeats sent (for the host and tests)
        self.last_error: CoreplaneError | None = None
        # Work handed to the workers: per partition, in arrival order; a partition runs one
        # action at a time (`_busy`), so its tokens are run in the order they were accepted.
        self._mu = threading.Condition()
        self._queued: OrderedDict[str, deque[FleetAction]] = OrderedDict()
        self._queued_n = 0
        self._busy: set[str] = set()
        self._accepted: set[str] = set()  # ids queued or running: not accepted twice
        self._stop = threading.Event()  # no more heartbeats, no new handlers
        self._abandon = threading.Event()  # results of handlers still running are dropped
        self._workers = [
            threading.Thread(
                target=self._work, daemon=True, name=f"coreplane-agent-{node_id}-worker-{i}"
            )
            for i in range(workers)
        ]
        for w in self._workers:
            w.start()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(
                target=self._loop, daemon=True, name=f"coreplane-agent-{node_id}"
            )
            self._thread.start()

    @property
    def ran(self) -> list[FleetAction]:
        """The last `ran_max` actions run here, oldest first: a copy, safe to iterate while
        the workers run more."""
        with self._mu:
            return list(self._ran)

    @property
    def stopping(self) -> bool:
        """True once `close` began: a long handler may poll it and give up early."""
        return self._stop.is_set()

    # -- one round -----------------------------------------------------------------------

    def step(self) -> int:
        """Heartbeat, fetch actions and hand them to the workers; the number accepted now.

        Never waits for a handler: a copy that takes minutes must not stop the heartbeats
        (the fleet would take the node for suspect, then dead, and re-create its replicas)."""
        c = self.client
        heat = {str(p): int(h) for p, h in sorted(self._heat().items())}
        sizes = {str(p): int(b) for p, b in sorted(self._sizes().items())}
        c.request(
            "POST",
            "/v1/fleet/heartbeat",
            {
                "node_id": self.node_id,
                "zone": self.zone,
                "weight": self.weight,
                "slots": self.slots,
                "heat": json.dumps(heat),
                "lost": json.dumps(sorted(str(p) for p in self._lost())),
                "sizes": json.dumps(sizes) if sizes else "",
            },
            idempotent=True,
        )
        self.heartbeats += 1
        answer = c.request("POST", "/v1/fleet/actions", {"node_id": self.node_id}, idempotent=True)
        accepted = 0
        for row in answer.get("actions", []):
            if self._stop.is_set():
                break
            accepted += self._accept(
                FleetAction(
                    str(row["id"]),
                    str(row["kind"]),
                    str(row["partition"]),
                    str(row["source"]),
                    int(row["token"]),
                    str(row["operation"]),
                )
            )
        return accepted

    def _accept(self, action: FleetAction) -> int:
        """Queue `action` for the workers (1), or answer it here (0)."""
        with self._mu:
            if action.id in self._accepted:  # still queued or running: its ack comes later
                return 0
            done = self._done.get(action.id)
            stale = action.token < self.highest.get(action.partition, 0)
            if done is None and not stale:
                if self._queued_n >= self.queued_max:
                    return 0  # not acknowledged: the fleet delivers it again next round
                self._accepted.add(action.id)
                self._queued.setdefault(action.partition, deque()).append(action)
                self._queued_n += 1
                self._mu.notify()
                return 1
            if stale and done is None:
                self.refused += 1  # overtaken by a newer decision for this partition
                highest = self.highest[action.partition]
        if done is not None:  # ran before; its ack may have been lost
            self._ack(action, done, "")
        else:
            self._ack(action, False, f"stale token {action.token} < {highest}")
        return 0

    # -- the workers ---------------------------------------------------------------------

    def _next(self) -> FleetAction | None:
        """The oldest action of a partition no worker is running; None once stopping."""
        with self._mu:
            while True:
                if self._stop.is_set():
                    return None
                for pid, queue in self._queued.items():
                    if pid not in self._busy:
                        action = queue.popleft()
                        if not queue:
                            del self._queued[pid]
                        self._queued_n -= 1
                        self._busy.add(pid)
                        return action
                self._mu.wait()

    def _work(self) -> None:
        while (action := self._next()) is not None:
            try:
                self._run(action)
            except Exception as exc:  # noqa: BLE001 - an ack that failed; the worker lives on
                self.last_error = (
                    exc if isinstance(exc, CoreplaneError) else CoreplaneError(repr(exc))
                )
            finally:
                with self._mu:
                    self._busy.discard(action.partition)
                    self._accepted.discard(action.id)
                    self._mu.notify_all()

    def _run(self, action: FleetAction) -> None:
        with self._mu:
            highest = self.highest.get(action.partition, 0)
            stale = action.token < highest  # a newer action for this partition ran meanwhile
            if stale:
                self.refused += 1
            else:
                self.highest[action.partition] = action.token
        if stale:
            self._ack(action, False, f"stale token {action.token} < {highest}")
            return
        handler = self.handlers.get(action.kind)
        ok, detail = True, ""
        if handler is None:
            ok, detail = False, f"no handler for {action.kind!r}"
        else:
            try:
                handler(action)
            except Exception as exc:  # noqa: BLE001 - the host's failure, reported in the ack
                ok, detail = False, f"{type(exc).__name__}: {exc}"[:1000]
        with self._mu:
            self._ran.append(action)  # the deque drops its oldest past ran_max
            self._done[action.id] = ok
            if len(self._done) > self.ran_max:
                self._done.popitem(last=False)
        if not self._abandon.is_set():  # closed meanwhile: the client may be gone
            self._ack(action, ok, detail)

    def _ack(self, action: FleetAction, ok: bool, detail: str) -> None:
        # Refused: already acknowledged, or replaced by a newer action; nothing left to do.
        with contextlib.suppress(CommandRejected):
            self.client.request(
                "POST",
                "/v1/fleet/ack",
                {
                    "node_id": self.node_id,
                    "action_id": action.id,
                    "token": action.token,
                    "ok": ok,
                    "detail": detail,
                },
                idempotent=True,  # fenced: a repeated ack is refused as already applied
            )

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no action is queued or running; False if `timeout_s` ran out first."""
        with self._mu:
            return self._mu.wait_for(lambda: not self._accepted, timeout=timeout_s)

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except CoreplaneError as exc:
                self.last_error = exc  # no leader right now, or it moved: the next round
            except Exception as exc:  # noqa: BLE001 - keep the agent alive; say why
                self.last_error = CoreplaneError(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.heartbeat_ms / 1000)

    def close(self, *, drain_s: float = 10.0) -> bool:
        """Stop heartbeating and starting handlers; wait up to `drain_s` for the running ones.

        Queued actions are dropped unacknowledged: the fleet delivers them again to the next
        agent of this node, with the same token. A handler still running after `drain_s` is
        abandoned: its thread (a daemon) finishes on its own and its ack is not sent, so the
        action is delivered again later and, the handler being idempotent, redone. True if
        every running handler finished and was acknowledged."""
        self._stop.set()
        with self._mu:
            for queue in self._queued.values():
                for action in queue:
                    self._accepted.discard(action.id)
            self._queued.clear()
            self._queued_n = 0
            self._mu.notify_all()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout=max(drain_s, 0.0) + self.heartbeat_ms / 1000)
        drained = self.wait_idle(max(drain_s, 0.0))
        self._abandon.set()
        return drained

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
