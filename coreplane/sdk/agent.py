"""`Agent`: the fleet's agent on a storage node; heartbeats, runs actions, acknowledges.

``Agent(client, node_id, zone=..., handlers={"add_replica": fn, "remove_replica": fn})`` runs a
loop on its own thread: every `heartbeat_ms` it sends a heartbeat with the node's heat report
(``heat()`` -> {partition: heat milli-units}), the sizes of the replicas it serves
(``sizes()`` -> {partition: bytes}; what a dry run's copy estimate is made of) and the replicas
it lost (``lost()``), fetches its pending actions, runs each through the host's handler for its
kind, and acknowledges it (`ok=False` with the handler's exception as detail when it raised).

**Idempotent and fenced.** An action carries a fencing token (the log index that issued it).
The agent keeps the highest token it has run per partition and refuses an action with a lower
one (an older decision overtaken by a newer one, delivered late or by a deposed leader); an
action it already ran (same id) is acknowledged again without running twice (the ack may have
been lost). Handlers get the `FleetAction`, token included, and should pass the token on to
the data they touch (as with `FencedResource`).

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
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from coreplane.errors import CommandRejected, CoreplaneError, InvalidArgument

__all__ = ["Agent", "FleetAction"]

_DONE_MAX = 10_000  # action ids remembered as run


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
    """See the module docstring. `start=False` leaves the loop to you (`step`), for tests."""

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
        start: bool = True,
    ) -> None:
        for name, value in (("node_id", node_id), ("zone", zone)):
            if not isinstance(value, str) or not value or len(value) > 256:
                raise InvalidArgument(name, "must be a non-empty str of at most 256 characters")
        if not isinstance(handlers, Mapping) or not all(callable(h) for h in handlers.values()):
            raise InvalidArgument("handlers", "must map action kinds to callables")
        if type(heartbeat_ms) is not int or not 10 <= heartbeat_ms <= 60_000:
            raise InvalidArgument("heartbeat_ms", "must be an int in [10, 60000]")
        self.client, self.node_id, self.zone = client, node_id, zone
        self.handlers = dict(handlers)
        self.weight, self.slots = weight, slots
        self._heat = heat or (lambda: {})
        self._lost = lost or (lambda: ())
        self._sizes = sizes or (lambda: {})
        self.heartbeat_ms = heartbeat_ms
        self.highest: dict[str, int] = {}  # partition -> highest token run
        self._done: OrderedDict[str, bool] = OrderedDict()  # action id -> ok
        self.ran: list[FleetAction] = []  # every action run, in order (for the host and tests)
        self.refused = 0
        self.last_error: CoreplaneError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(
                target=self._loop, daemon=True, name=f"coreplane-agent-{node_id}"
            )
            self._thread.start()

    # -- one round -----------------------------------------------------------------------

    def step(self) -> int:
        """Heartbeat, fetch actions, run and ack them; the number of actions run now."""
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
        answer = c.request("POST", "/v1/fleet/actions", {"node_id": self.node_id}, idempotent=True)
        ran = 0
        for row in answer.get("actions", []):
            if self._stop.is_set():
                break
            ran += self._handle(
                FleetAction(
                    str(row["id"]),
                    str(row["kind"]),
                    str(row["partition"]),
                    str(row["source"]),
                    int(row["token"]),
                    str(row["operation"]),
                )
            )
        return ran

    def _handle(self, action: FleetAction) -> int:
        if action.id in self._done:  # ran before; its ack may have been lost
            self._ack(action, self._done[action.id], "")
            return 0
        if action.token < self.highest.get(action.partition, 0):
            self.refused += 1  # overtaken by a newer decision for this partition
            self._ack(
                action, False, f"stale token {action.token} < {self.highest[action.partition]}"
            )
            return 0
        self.highest[action.partition] = action.token
        handler = self.handlers.get(action.kind)
        ok, detail = True, ""
        if handler is None:
            ok, detail = False, f"no handler for {action.kind!r}"
        else:
            try:
                handler(action)
            except Exception as exc:  # noqa: BLE001 - the host's failure, reported in the ack
                ok, detail = False, f"{type(exc).__name__}: {exc}"[:1000]
        self.ran.append(action)
        self._done[action.id] = ok
        if len(self._done) > _DONE_MAX:
            self._done.popitem(last=False)
        self._ack(action, ok, detail)
        return 1

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

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout=10)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
