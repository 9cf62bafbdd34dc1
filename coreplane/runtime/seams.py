"""What a simulator or a host's own tests may replace in a `ControlPlane`: `Seams`.

`coreplane.testing` runs whole clusters in one thread on a simulated network, disk and clock.
It used to get there by swapping module globals of the runtime and overriding its private
methods, so any refactor of the runtime could break the public testing kit. These seams are the
contract instead: a driver passes ``ControlPlane(..., seams=Seams(...))`` and then drives the
node through public methods (`ControlPlane.step`, `ControlPlane.tick_engine`).

Production code passes nothing: every default is the real thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Clock", "Seams", "SystemClock"]


class Clock(Protocol):
    """A monotonic clock in seconds: the runtime's leader work reads time only through it."""

    def monotonic(self) -> float: ...


class SystemClock:
    """The process's monotonic clock."""

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(frozen=True, slots=True)
class Seams:
    """Replaceable edges of one ControlPlane (tests and simulators only).

    - `clock`: read by the leader work (tick pacing and the monotonic time a tick carries,
      deadlines of the runtime's own proposals);
    - `journal_factory(path, *, node_id, cluster_id, durability, create)`: the Raft journal to
      use instead of the LMDB journal in the data dir (``create=False``: the data dir records
      that a journal was created, so a missing one must be refused);
    - `transport_factory(node_id, on_before_send)`: the peer transport *class* instead of the
      authenticated TCP wire (``on_before_send`` must run before any message leaves);
    - `threaded=False`: `start()` builds the engine on the calling thread and starts no thread;
      the driver calls `tick_engine()` (Raft: messages, timers, apply) and `step()` (the leader
      work) itself, and the blocking client calls (`kv.put`, linearizable reads) are not for
      this mode: propose through the engine's callbacks instead;
    - `client_id`: the base of this node's session ids (deterministic runs; random otherwise);
    - `on_apply(data, index)`: called after each entry applied here (invariant checkers);
    - `on_runtime_propose(timeout_s)`: the leader work proposed an entry and its pass ended;
      `step()` does work again once that entry answered or `timeout_s` passed.
    """

    clock: Clock | None = None
    journal_factory: Callable[..., Any] | None = None
    transport_factory: Callable[[str, Callable[[], None]], type] | None = None
    threaded: bool = True
    client_id: str | None = None
    on_apply: Callable[[bytes, int], None] | None = None
    on_runtime_propose: Callable[[float], None] | None = None
