"""`Router`: admits requests against a global rate limit with a local token bucket.

``router = client.router("api", "edge-3")`` (or ``Router(client, key, router_id)``) reports
this router's demand to the leader a few times a second and gets back its **share** of the
key's limit for the current epoch (the leader allots shares in proportion to demand; see
coreplane/core/machines/quotas.py). ``router.try_acquire()`` takes one request's token from a
local bucket filled at the share's rate: no network on the request path.

**What a router spends, and when** (the rule the leader's reservations rely on):

- its newest share until ``send time + remaining_ms`` of the answer that brought it (the answer
  bounds the lease by both cluster time and the leader's own clock; an answer slower than
  ``rtt_max_ms`` is not used), or the share it replaced if that was larger, until that one's
  own deadline (a shrink takes effect when the old share expires: the leader counted both);
- then, when no newer share came (the leader is unreachable), **nothing** for ``zone_ms``: other
  routers' shares of epochs that did not reserve room for this one run out meanwhile;
- then its **fallback** share, ``usable / routers_max`` of the key (every router on fallback
  stays within the limit), for ``fallback_max_ms``; after that, nothing until the leader answers
  again (the leader forgets a router silent that long).

A bucket holds at most ``burst_ms`` of its share plus one request; the budget the leader allots
leaves room for every bucket's depth, so any one-second window stays within the limit.

**Reporting after a failure.** Each report is one attempt (a follower's redirect to the leader
is followed), not a call the client retries with its growing backoff: a report that sat out
that backoff arrived late, and a router that lost the leader reached the new one up to
0.75 s after its first epoch (which reserves every router's fallback until each has said it
holds it). The router's own loop is the retry: after a failed report it reports again after a
jittered wait doubling from 50 ms up to its report interval (`Router.next_report_ms`), so it
finds a new leader within one or two report intervals of a node naming it (the first may go
to the dead leader still taken for the leader and learn the new one), at about the rate the
client's retries sent.

`Schedule` is the rule with explicit times (ms), for tests; the background thread is the only
part that reads a clock or does I/O. Imports only `coreplane.errors` of the server side.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from random import Random
from typing import Any

from coreplane.errors import CoreplaneError, InvalidArgument

__all__ = ["Router", "Schedule"]

_TOKEN_MILLI = 1000
_RETRY_MS_MIN = 50  # the first wait after a failed report (then doubling up to report_ms)


class Schedule:
    """A router's spend rate over time, piecewise constant, from its newest answer."""

    def __init__(self) -> None:
        self.epoch = 0
        self.token = 0
        self.share_milli = 0
        self.deadline_ms = -1
        self.zone_ms = 0
        self.fallback_milli = 0
        self.fallback_max_ms = 0
        self.burst_ms = 20
        self.unlimited = False
        # The share this answer replaced, spendable until its own deadline (an epoch's check
        # counts a router's largest share over the live epochs): a shrink waits for it.
        self.previous_milli = 0
        self.previous_deadline_ms = -1

    def accept(self, answer: dict[str, Any], send_ms: int, receive_ms: int) -> bool:
        """Take a leader's answer to a request sent at `send_ms`; False if it was not used."""
        if answer.get("no_limit"):
            self.unlimited = True
            return True
        epoch = int(answer.get("epoch", 0))
        if receive_ms - send_ms > int(answer.get("rtt_max_ms", 0)) or epoch == 0:
            return False
        if epoch < self.epoch:
            return False
        self.unlimited = False
        if epoch > self.epoch:
            self.previous_milli, self.previous_deadline_ms = self.share_milli, self.deadline_ms
        self.epoch, self.token = epoch, int(answer["token"])
        self.share_milli = int(answer["share_milli"])
        self.deadline_ms = send_ms + int(answer["remaining_ms"])
        self.zone_ms = int(answer["zone_ms"])
        self.fallback_milli = int(answer["fallback_milli"])
        self.fallback_max_ms = int(answer["fallback_max_ms"])
        self.burst_ms = int(answer.get("burst_ms", 20))
        return True

    def _segments(self) -> list[tuple[int, int]]:
        """(from_ms, rate_milli) breakpoints, increasing."""
        if self.epoch == 0:
            return [(-(2**62), 0)]
        d = self.deadline_ms
        late = [
            (d, 0),
            (d + self.zone_ms, self.fallback_milli),
            (d + self.zone_ms + self.fallback_max_ms, 0),
        ]
        p = min(self.previous_deadline_ms, d)
        if self.previous_milli > self.share_milli and p > -(2**62):
            return [(-(2**62), self.previous_milli), (p, self.share_milli), *late]
        return [(-(2**62), self.share_milli), *late]

    def rate(self, now_ms: int) -> int:
        rate = 0
        for start, value in self._segments():
            if now_ms >= start:
                rate = value
        return rate

    def mode(self, now_ms: int) -> str:
        if self.unlimited:
            return "unlimited"
        if self.epoch == 0:
            return "none"
        d = self.deadline_ms
        if now_ms < d:
            return "share"
        if now_ms < d + self.zone_ms:
            return "zone"
        if now_ms < d + self.zone_ms + self.fallback_max_ms:
            return "fallback"
        return "closed"

    def integral(self, a_ms: int, b_ms: int) -> int:
        """milli-tokens earned over [a, b): rate (milli-requests/s) times seconds, in milli."""
        if b_ms <= a_ms:
            return 0
        segs = self._segments()
        total = 0
        for i, (start, rate) in enumerate(segs):
            end = segs[i + 1][0] if i + 1 < len(segs) else 2**62
            lo, hi = max(a_ms, start), min(b_ms, end)
            if hi > lo:
                total += rate * (hi - lo) // 1000
        return total

    def capacity(self, now_ms: int) -> int:
        rate = self.rate(now_ms)
        return rate * self.burst_ms // 1000 + _TOKEN_MILLI if rate > 0 else 0


class Router:
    """``Router(client, key, router_id)``: see the module docstring. Thread-safe.

    `start=False` leaves the reporting to you (`report_once`), for tests; `clock` returns
    monotonic seconds.
    """

    def __init__(
        self,
        client: Any,
        key: str,
        router_id: str,
        *,
        start: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value, cap in (("key", key, 256), ("router_id", router_id, 128)):
            if not isinstance(value, str) or not value or len(value.encode()) > cap:
                raise InvalidArgument(name, f"must be a non-empty str of at most {cap} bytes")
        self.client, self.key, self.router_id = client, key, router_id
        self._clock = clock
        self.schedule = Schedule()
        self._mu = threading.Lock()
        self._tokens_milli = 0
        self._filled_ms = self._now_ms()
        self._asked = 0  # requests asked for since the last report
        self._asked_since_ms = self._filled_ms
        self._demand_milli = 0
        self.report_ms = 250
        self._nothing_new = False  # the leader answered, with no epoch for us yet
        self._failures = 0  # reports in a row that got no answer
        self._rng = Random()
        self.admitted = 0
        self.refused = 0
        self.last_error: CoreplaneError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(
                target=self._loop, daemon=True, name=f"coreplane-router-{router_id}"
            )
            self._thread.start()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- the request path ----------------------------------------------------------------

    def try_acquire(self, n: int = 1) -> bool:
        """Admit `n` requests now if the bucket holds them; never blocks, no network."""
        if type(n) is not int or n < 1:
            raise InvalidArgument("n", "must be a positive int")
        now = self._now_ms()
        with self._mu:
            self._asked += n
            if self.schedule.unlimited:
                self.admitted += n
                return True
            self._refill(now)
            need = n * _TOKEN_MILLI
            if self._tokens_milli >= need:
                self._tokens_milli -= need
                self.admitted += n
                return True
            self.refused += n
            return False

    def _refill(self, now: int) -> None:
        s = self.schedule
        if now > self._filled_ms:
            self._tokens_milli += s.integral(self._filled_ms, now)
            self._filled_ms = now
        self._tokens_milli = min(self._tokens_milli, s.capacity(now))

    @property
    def mode(self) -> str:
        """ "share", "zone" (lost the leader: admitting nothing), "fallback", "closed",
        "none" (no share yet) or "unlimited" (the key has no limit)."""
        return self.schedule.mode(self._now_ms())

    @property
    def rate_milli(self) -> int:
        return self.schedule.rate(self._now_ms())

    # -- reporting -----------------------------------------------------------------------

    def report_once(self) -> bool:
        """One demand report and share fetch, one attempt (a redirect to the leader a
        follower names is followed); True if the answer was used."""
        send = self._now_ms()
        with self._mu:
            elapsed = max(1, send - self._asked_since_ms)
            measured = self._asked * 1_000_000 // elapsed  # milli-requests/s
            # EWMA (1/4): a few requests per report interval are noisy, and every change of
            # the reported demand moves shares that may only grow an epoch later.
            self._demand_milli = (
                (3 * self._demand_milli + measured) // 4 if self._demand_milli else measured
            )
            self._asked, self._asked_since_ms = 0, send
            body = {
                "key": self.key,
                "router": self.router_id,
                "demand_milli": self._demand_milli,
                "held_epoch": self.schedule.epoch,
            }
        self._nothing_new = False
        try:
            # One attempt: the loop is the retry (the module docstring, `next_report_ms`).
            answer = self.client._call("/v1/quotas/report", body, attempts_max=1)
        except CoreplaneError as exc:
            self.last_error = exc
            self._failures += 1
            return False
        self._failures = 0
        receive = self._now_ms()
        self._nothing_new = not answer.get("no_limit") and int(answer.get("epoch", 0)) == 0
        with self._mu:
            self._refill(receive)  # tokens earned under the old schedule stay earned
            used = self.schedule.accept(answer, send, receive)
            if used:
                self.report_ms = max(50, int(answer.get("report_ms", self.report_ms)))
            self._tokens_milli = min(self._tokens_milli, self.schedule.capacity(receive))
        return used

    def next_report_ms(self) -> int:
        """How long after the start of the last report the next one goes.

        The leader answered: `report_ms`, as its answers ask, or a fifth of it (50 ms at
        least) when it had nothing for this router yet (a new leader before its first epoch,
        a router the newest epoch does not list). The report failed (the leader is gone, an
        election is on): a wait drawn in [cap/2, cap], the cap doubling from 50 ms with each
        failure in a row up to `report_ms`: routers that lost the leader together do not
        report together, and none sits out a backoff longer than its report interval."""
        if self._failures:
            cap = min(self.report_ms, _RETRY_MS_MIN << min(self._failures - 1, 16))
            return cap - self._rng.randrange(cap // 2 + 1)
        if self._nothing_new:
            return max(50, self.report_ms // 5)
        return self.report_ms

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = self._now_ms()
            with contextlib.suppress(Exception):
                self.report_once()
            spent = self._now_ms() - started
            self._stop.wait(max(0.0, (self.next_report_ms() - spent) / 1000))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
