"""`LocalControlPlane`: a one-node, in-memory stand-in with ControlPlane's public API.

It applies commands straight to a real `StateMachine` (no Raft), so the API server and the SDK
can be tested fast and exactly; the real thing is tested in tests/integration (slow).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable
from typing import Any

from coreplane.core import commands as C
from coreplane.core.state import Applied, StateMachine
from coreplane.errors import Unavailable
from coreplane.runtime.controlplane import KV
from coreplane.runtime.view import StateView

ADMIN = "admin-token-0123456789"
CLIENT = "client-token-0123456789"
AGENT = "agent-token-n7-0123456789"
TOKENS = {ADMIN: "admin", CLIENT: "client", AGENT: "agent:n7"}


class LocalControlPlane:
    def __init__(self, node_id: str = "n1") -> None:
        self.node_id = node_id
        self.sm = StateMachine()
        self.kv = KV(self)  # the runtime's own KV facade, over this object
        self._lock = threading.Lock()
        self._index = 0
        self._seq = itertools.count(1)
        self._ticks = 0
        self.down = False  # True: every call raises Unavailable (a lost quorum)
        self.proposed: list[bytes] = []

    @property
    def leader_id(self) -> str:
        return self.node_id

    def is_leader(self) -> bool:
        return True

    def _check(self) -> None:
        if self.down:
            raise Unavailable("no quorum (simulated)")

    def propose(self, command: Any, *, timeout_s: float | None = None) -> Applied:
        self._check()
        if not command.client_id and "client_id" in command.TYPES:
            command = dataclasses.replace(
                command, client_id=f"{self.node_id}/local", seq=next(self._seq)
            )
        data = C.encode(command)
        with self._lock:
            self.proposed.append(data)
            self._index += 1
            return self.sm.apply(data, self._index)

    def call_command(self, command: Any, *, timeout_s: float | None = None) -> Any:
        return self.propose(command, timeout_s=timeout_s).unwrap()

    def tick(self, tick_ms: int) -> None:
        """Advance cluster time to `tick_ms`."""
        with self._lock:
            self._ticks += 1
            self._index += 1
            step = C.Tick(self._ticks, tick_ms - self.sm.tick_ms)  # ticks carry elapsed time
            self.sm.apply(C.encode_internal(step), self._index)

    def read(
        self,
        fn: Callable[[StateView], Any],
        *,
        stale_ok: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        self._check()
        with self._lock:
            return fn(StateView(self.sm))

    def _read_state(
        self,
        fn: Callable[[StateMachine], Any],
        *,
        stale_ok: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        self._check()
        with self._lock:
            return fn(self.sm)

    def status(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "role": "leader",
            "applied_index": self._index,
            "tick_ms": self.sm.tick_ms,
            "ratio": 0.5,
        }

    def members(self) -> dict[str, str]:
        return {self.node_id: "127.0.0.1:1"}

    def add_voter(self, node_id: str, address: str, *, timeout_s: float | None = None) -> None:
        self._check()

    def remove_voter(self, node_id: str, *, timeout_s: float | None = None) -> None:
        self._check()
