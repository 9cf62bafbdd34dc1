"""Client sessions for this node's own proposals: which ``(client_id, seq)`` a write carries.

The core remembers the results of a session's last `SESSION_WINDOW` applied seqs; a retry of a
seq older than that is refused (``seq_expired``) rather than risk applying it twice, and the
caller learns nothing about its write. With one session shared by every writer of the host, a
write whose first attempt was lost with its leader could be retried after more than a window's
worth of newer writes applied (256 threads, or a pipeline of thousands): measured, a failover
with 3,000 pipelined writes in flight surfaced ``seq_expired`` to callers.

So writes go out in *lanes*, each its own session: a lane hands out seq ``s`` only while every
seq below ``s - LANE_WINDOW`` of that lane has completed, hence at most ``LANE_WINDOW - 1`` seqs
of the lane can apply after a write still in flight, and its retry always finds its result
(or applies it). A host that needs more writes in flight than one lane allows gets more lanes;
idle lanes are reused first, so the number of sessions in replicated state follows the peak
concurrency, not the number of writes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from coreplane.core.state import SESSION_WINDOW

__all__ = ["LANE_WINDOW", "Lane", "SessionLanes", "Ticket"]

LANE_WINDOW = SESSION_WINDOW // 2  # half the core's window: a margin, not a need
LANES_MAX = 1024  # x LANE_WINDOW writes in flight; beyond that, callers wait for a free seq


@dataclass(slots=True)
class Lane:
    client_id: str
    next_seq: int = 1
    inflight: set[int] = field(default_factory=set)
    low: int = 1  # the lowest seq still in flight (next_seq when none)

    def open(self) -> bool:
        return self.next_seq - self.low < LANE_WINDOW


class Ticket:
    """One write's ``(client_id, seq)``; calling it releases the seq (`SessionLanes.release`).
    One object per write (a closure over lanes, lane and seq was five for the cyclic GC)."""

    __slots__ = ("client_id", "lane", "lanes", "seq")

    def __init__(self, lanes: SessionLanes, lane: Lane, seq: int) -> None:
        self.lanes, self.lane, self.seq, self.client_id = lanes, lane, seq, lane.client_id

    def __call__(self) -> None:
        self.lanes.release(self.lane, self.seq)


class SessionLanes:
    """Thread-safe allocator of ``(client_id, seq)`` for one node's proposals."""

    def __init__(self, base_client_id: str) -> None:
        self._base = base_client_id
        self._lanes: list[Lane] = [Lane(base_client_id)]
        self._lock = threading.Lock()  # `with lock` is one C call; a Condition's is Python
        self._cond = threading.Condition(self._lock)  # for waiters only (all lanes full)
        self._waiters = 0  # threads waiting in `acquire` for a free seq (notify only then)
        self._last = self._lanes[0]  # the lane of the latest seq handed out: tried first

    def acquire(self, timeout_s: float | None = None) -> tuple[Lane, int] | None:
        """A lane and the seq to use, or None if none freed up within `timeout_s`."""
        with self._lock:
            while True:
                for lane in self._lanes:
                    seq = lane.next_seq
                    if seq - lane.low < LANE_WINDOW:
                        lane.next_seq = seq + 1
                        if not lane.inflight:
                            lane.low = seq
                        lane.inflight.add(seq)
                        self._last = lane
                        return lane, seq
                if len(self._lanes) < LANES_MAX:
                    self._lanes.append(Lane(f"{self._base}.{len(self._lanes)}"))
                    continue
                self._waiters += 1
                try:
                    if not self._cond.wait(timeout_s):
                        return None
                finally:
                    self._waiters -= 1

    def take(self, timeout_s: float | None = None) -> Ticket | None:
        """`acquire` as a `Ticket` (call it to release), or None. The lane of the previous
        seq is tried first, without a scan (it has room for most writes: a lane takes
        `LANE_WINDOW` writes in flight); a new lane is still made only when all are full."""
        with self._lock:  # no Python call while it is held (a GIL hand-off there blocks others)
            lane = self._last
            seq = lane.next_seq
            took = seq - lane.low < LANE_WINDOW
            if took:
                lane.next_seq = seq + 1
                if not lane.inflight:
                    lane.low = seq
                lane.inflight.add(seq)
        if took:
            return Ticket(self, lane, seq)
        got = self.acquire(timeout_s)
        return None if got is None else Ticket(self, got[0], got[1])

    def release(self, lane: Lane, seq: int) -> None:
        """The write with this seq completed (applied, refused, or given up at its deadline).

        The lane's lowest seq in flight moves up past completed seqs one step at a time:
        seqs are handed out in order, so that is O(1) per release, amortized (a `min` over
        the set was O(window) for every in-order completion)."""
        with self._lock:
            inflight = lane.inflight
            inflight.discard(seq)
            if seq != lane.low:
                return
            if not inflight:
                lane.low = lane.next_seq
            else:
                low = seq + 1
                while low not in inflight:
                    low += 1
                lane.low = low
            if self._waiters:
                self._cond.notify()

    def lanes(self) -> int:
        with self._lock:
            return len(self._lanes)
