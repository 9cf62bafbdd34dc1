"""The KV machine's bounded event history, for watches (long polls by revision).

Every KV change appends an event ``(revision, kind, key, value, mod_revision)`` (kind "put" or
"delete"; one lease revocation deletes several keys in one revision). The history keeps the
latest events up to `events_max` and `bytes_max`, whichever binds first; evicting an event
raises `floor`, the newest revision that may have lost events. A watch from revision `s` is
complete only if ``s > floor``; otherwise it is refused with code ``compacted``, naming the
oldest revision still complete (``floor + 1``), so a client never silently misses an event.

Derived state, not replicated state: it is rebuilt from the log as entries apply and is left
out of snapshots and `state_hash` (a replica restored from a snapshot at revision r starts with
``floor = r``, and answers older watches with ``compacted``, as etcd does after compaction).
Pure: no clock, no I/O; bounded.
"""

from __future__ import annotations

import bisect
from typing import Any

from coreplane.errors import CommandRejected

__all__ = ["Event", "History"]

Event = tuple[int, str, str, bytes, int]  # (revision, kind, key, value, mod_revision)
_EVENT_OVERHEAD_BYTES = 100  # a tuple, its ints and the key object, roughly


def _revision(event: Event) -> int:
    return event[0]


class History:
    def __init__(
        self, *, events_max: int = 10_000, bytes_max: int = 64 * 1024 * 1024, floor: int = 0
    ) -> None:
        self.events_max, self.bytes_max = events_max, bytes_max
        self.floor = floor
        self._events: list[Event] = []
        self._start = 0  # events before this position are evicted (trimmed in batches)
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._events) - self._start

    def record(self, revision: int, kind: str, key: str, value: bytes, mod_revision: int) -> None:
        """Append one event. Runs on every replica for every KV change: one append and one
        add, with eviction only past a bound."""
        events = self._events
        events.append((revision, kind, key, value, mod_revision))
        self._bytes += len(key) + len(value) + _EVENT_OVERHEAD_BYTES
        if len(events) - self._start > self.events_max or self._bytes > self.bytes_max:
            self._evict()

    def _evict(self) -> None:
        # Runs after every record once the history is full: the state is in locals for the
        # loop (the usual case evicts exactly one event) and written back once.
        events = self._events
        start, size, floor = self._start, self._bytes, self.floor
        events_max, bytes_max, n = self.events_max, self.bytes_max, len(events)
        while n - start > events_max or (size > bytes_max and n - start > 1):
            old = events[start]
            size -= len(old[2]) + len(old[3]) + _EVENT_OVERHEAD_BYTES
            if old[0] > floor:
                floor = old[0]
            start += 1
        if start > 1024 and start * 2 > n:  # amortized trim
            del events[:start]
            start = 0
        self._start, self._bytes, self.floor = start, size, floor

    def since(
        self, start_revision: int, prefix: str = "", limit: int = 1000
    ) -> tuple[list[Event], int]:
        """Events with revision >= `start_revision` whose key starts with `prefix`, oldest
        first, at most about `limit` (one revision's events are never split), and the revision
        to resume from. Raises CommandRejected("compacted") if some may have been evicted."""
        if start_revision <= self.floor:
            raise CommandRejected(
                "compacted",
                f"revision {start_revision} is compacted; the oldest available is {self.floor + 1}",
            )
        i = bisect.bisect_left(self._events, start_revision, lo=self._start, key=_revision)
        out: list[Event] = []
        events = self._events
        next_revision = start_revision
        while i < len(events):
            event = events[i]
            if len(out) >= limit and event[0] != out[-1][0]:
                break
            if event[2].startswith(prefix):
                out.append(event)
            next_revision = event[0] + 1
            i += 1
        return out, next_revision

    def describe(self) -> dict[str, Any]:
        return {"floor": self.floor, "events": len(self), "bytes": self._bytes}
