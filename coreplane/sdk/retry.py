"""Retries that cannot storm: backoff with full jitter, a retry budget, a breaker per endpoint.

Sans-I/O (as h11 is): nothing here sends, sleeps or reads a clock by itself. The clock and the
random source are injected, so the sync client, the async client and the simulated retry-storm
test (tests/sim/test_retry_storm.py) drive the *same* decision code, the simulation with a
simulated clock and a seeded RNG.

- `Backoff`: exponential with **full jitter** (delay uniform in ``[0, min(cap, base * 2**n))``,
  AWS's "Exponential Backoff and Jitter"): clients that failed together do not retry together.
- `RetryBudget`: retries are at most `ratio` (10%) of the requests of the last `window_s`
  seconds, plus a small floor (`min_retries_per_s`) so a client that sends little can still
  retry, as Finagle's RetryBudget and gRPC's retry throttling do. A budget is what stops a
  storm: backoff only spreads retries out in time, it does not reduce how many there are, so
  when a backend fails outright, "retry 3 times" multiplies its load by 4.
- `CircuitBreaker`: after `failure_threshold` consecutive failures an endpoint is *open* (calls
  fail fast or go elsewhere) for a jittered `reset_ms`, doubled on each failed probe up to
  `reset_max_ms`; then one probe is let through (*half-open*); its success closes it.
- `CallPlan`: one call's loop as a state machine: which endpoint next, and after a failure
  whether to retry, where and after what delay, or to give up and why.

Why by hand and not tenacity/pybreaker (both well kept): tenacity's loop hooks could host the
budget and breaker checks, but its jitter draws from the global `random` module and its sleep is
the loop's own, so a 500-client simulated-time test could not drive it deterministically, and
the sync and async clients would still need the budget, breaker and endpoint choice written
here; pybreaker reads the wall clock (`datetime.now`) with no injectable clock, counts
exceptions rather than classified outcomes, and has no per-call half-open probe accounting.
Each piece below is a few dozen lines; writing them keeps one tested implementation shared by
every client and the simulation.

Imports nothing from coreplane's server side (`coreplane.errors` only).
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random

from coreplane.errors import InvalidArgument

__all__ = ["Backoff", "CallPlan", "CircuitBreaker", "Decision", "Outcome", "RetryBudget"]

Clock = Callable[[], float]  # monotonic seconds


class Outcome(enum.Enum):
    """How one attempt ended, as the retry logic sees it."""

    OK = "ok"  # an answer, including a deterministic refusal (4xx): never retried
    FAILED = "failed"  # transport error, timeout, 5xx, 503: counts against the endpoint
    REDIRECT = "redirect"  # a healthy "not the leader, go there": not a failure, not a retry
    # A healthy "not the leader, and none known" (an election): the endpoint did nothing, so
    # the call is retried after backoff even when unsafe, and the endpoint's breaker counts it
    # as an answer: elections must not open the breakers of live nodes.
    NO_LEADER = "no_leader"


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**retry))`` seconds."""

    def __init__(self, base_ms: int, cap_ms: int, rng: Random) -> None:
        if base_ms <= 0 or cap_ms < base_ms:
            raise InvalidArgument("backoff", "need 0 < base_ms <= cap_ms")
        self.base_s, self.cap_s, self.rng = base_ms / 1000, cap_ms / 1000, rng

    def delay_s(self, retry: int) -> float:
        """The delay before retry number `retry` (0 for the first retry)."""
        return self.rng.uniform(0.0, min(self.cap_s, self.base_s * (2 ** min(retry, 30))))


class RetryBudget:
    """At most ``ratio * requests + min_retries_per_s * window_s`` retries in any window.

    Counts in one-second buckets over `window_s` (Finagle's `ttl`); thread-safe. Every request
    (first attempt) deposits, every retry withdraws; a withdrawal the budget cannot cover is
    refused and the caller fails instead of retrying.
    """

    def __init__(
        self, *, ratio: float, min_retries_per_s: float, window_s: int, clock: Clock
    ) -> None:
        if not 0 <= ratio <= 1 or min_retries_per_s < 0 or window_s < 1:
            raise InvalidArgument("retry_budget", "need 0 <= ratio <= 1, floor >= 0, window >= 1")
        self.ratio, self.floor = ratio, min_retries_per_s * window_s
        self.window_s, self.clock = int(window_s), clock
        self._buckets: deque[list[int]] = deque()  # [second, requests, retries]
        self._requests = 0
        self._retries = 0
        self._lock = threading.Lock()

    def _bucket(self) -> list[int]:
        now = int(self.clock())
        buckets = self._buckets
        while buckets and buckets[0][0] <= now - self.window_s:
            _, requests, retries = buckets.popleft()
            self._requests -= requests
            self._retries -= retries
        if not buckets or buckets[-1][0] != now:
            buckets.append([now, 0, 0])
        return buckets[-1]

    def record_request(self) -> None:
        with self._lock:
            self._bucket()[1] += 1
            self._requests += 1

    def try_retry(self) -> bool:
        """Take one retry from the budget; False (and nothing taken) if it is spent."""
        with self._lock:
            bucket = self._bucket()
            if self._retries + 1 > self.ratio * self._requests + self.floor:
                return False
            bucket[2] += 1
            self._retries += 1
            return True

    def balance(self) -> float:
        with self._lock:
            self._bucket()
            return self.ratio * self._requests + self.floor - self._retries


class CircuitBreaker:
    """Closed -> open after consecutive failures -> half-open (one probe) -> closed.

    The open period is jittered (uniform in ``[reset/2, reset]``) so clients that opened
    together do not probe together, and doubles after each failed probe. Thread-safe.
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(
        self, *, failure_threshold: int, reset_ms: int, reset_max_ms: int, clock: Clock, rng: Random
    ) -> None:
        if failure_threshold < 1 or reset_ms <= 0 or reset_max_ms < reset_ms:
            raise InvalidArgument("breaker", "need threshold >= 1, 0 < reset_ms <= reset_max_ms")
        self.failure_threshold = failure_threshold
        self.reset_s, self.reset_max_s = reset_ms / 1000, reset_max_ms / 1000
        self.clock, self.rng = clock, rng
        self.state = self.CLOSED
        self.failures = 0
        self.opened = 0  # transitions to open, for observation and tests
        self.closed = 0  # transitions from half-open back to closed
        self._open_s = self.reset_s
        self._until = 0.0
        self._probe_at: float | None = None
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May an attempt go to this endpoint now? (Half-open admits one probe at a time.)"""
        if self.state == self.CLOSED:  # one attribute read (atomic): no lock on the hot path
            return True
        with self._lock:
            if self.state == self.CLOSED:
                return True
            now = self.clock()
            if self.state == self.OPEN:
                if now < self._until:
                    return False
                self.state = self.HALF_OPEN
            # half-open: one probe; a probe that never reported (its caller died) expires
            if self._probe_at is not None and now - self._probe_at < self._open_s:
                return False
            self._probe_at = now
            return True

    def record(self, outcome: Outcome) -> None:
        if outcome is Outcome.OK and self.failures == 0 and self.state == self.CLOSED:
            return  # nothing to reset (the common case): no lock
        with self._lock:
            if outcome is Outcome.FAILED:
                self.failures += 1
                if self.state == self.HALF_OPEN:
                    self._open_s = min(self._open_s * 2, self.reset_max_s)
                    self._trip()
                elif self.state == self.CLOSED and self.failures >= self.failure_threshold:
                    self._trip()
                return
            self.failures = 0
            if self.state != self.CLOSED:
                self.state = self.CLOSED
                self.closed += 1
                self._open_s = self.reset_s
                self._probe_at = None

    def _trip(self) -> None:
        self.state = self.OPEN
        self.opened += 1
        self._probe_at = None
        self._until = self.clock() + self.rng.uniform(self._open_s / 2, self._open_s)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after an attempt: `done`, or retry at `endpoint` after `delay_s`, or give
    up with `reason` (the budget is spent, attempts exhausted, every breaker open, ...)."""

    done: bool = False
    endpoint: str | None = None
    delay_s: float = 0.0
    reason: str = ""


_DONE = Decision(done=True)  # every successful attempt's: one object, not one per call


class CallPlan:
    """One call's retry loop, without I/O. Usage::

        plan = CallPlan(endpoints, breakers, budget, backoff, max_attempts=3, safe=True)
        endpoint = plan.first()               # None: every endpoint's breaker is open
        while True:
            outcome = send(endpoint)          # classify the answer
            d = plan.after(outcome, redirect_to=...)
            if d.done or d.endpoint is None: break   # success, or give up (d.reason)
            sleep(d.delay_s); endpoint = d.endpoint

    `safe` says the request may run twice harmlessly (a read, or a write carrying
    ``(client_id, seq)``); an unsafe request is never retried after a failure.
    """

    REDIRECTS_MAX = 3

    def __init__(
        self,
        endpoints: Sequence[str],
        breakers: dict[str, CircuitBreaker],
        budget: RetryBudget,
        backoff: Backoff,
        *,
        max_attempts: int,
        safe: bool,
    ) -> None:
        self.endpoints = list(endpoints)
        self.breakers, self.budget, self.backoff = breakers, budget, backoff
        self.max_attempts, self.safe = max_attempts, safe
        self.attempts = 0  # attempts sent (first + retries + redirects)
        self.retries = 0
        self.redirects = 0
        self._current: str | None = None
        self._tried: list[str] = []

    def _pick(self) -> str | None:
        # Prefer endpoints not yet tried in this call, in the given order (leader first).
        if not self._tried:  # the first attempt (every call's): the order as given
            breakers = self.breakers
            for endpoint in self.endpoints:
                if breakers[endpoint].allow():
                    return endpoint
            return None
        ordered = [e for e in self.endpoints if e not in self._tried] + [
            e for e in self.endpoints if e in self._tried
        ]
        for endpoint in ordered:
            if self.breakers[endpoint].allow():
                return endpoint
        return None

    def first(self) -> str | None:
        self.budget.record_request()
        endpoint = self._pick()
        self._sent(endpoint)
        return endpoint

    def _sent(self, endpoint: str | None) -> None:
        if endpoint is not None:
            self.attempts += 1
            self._current = endpoint
            self._tried.append(endpoint)

    def after(self, outcome: Outcome, *, redirect_to: str | None = None) -> Decision:
        current = self._current
        if current is not None and outcome is not Outcome.REDIRECT:
            self.breakers[current].record(Outcome.OK if outcome is Outcome.NO_LEADER else outcome)
        if outcome is Outcome.OK:
            return _DONE
        if outcome is Outcome.REDIRECT:
            self.redirects += 1
            if self.redirects > self.REDIRECTS_MAX:
                return Decision(reason="too many leader redirects")
            target = redirect_to if redirect_to in self.breakers else None
            if target is not None and not self.breakers[target].allow():
                target = None
            target = target or self._pick()
            if target is None:
                return Decision(reason="every endpoint's circuit breaker is open")
            self._sent(target)
            return Decision(endpoint=target)
        if not self.safe and outcome is not Outcome.NO_LEADER:
            return Decision(reason="the request is not safe to retry (outcome unknown)")
        if self.retries + 1 >= self.max_attempts:
            return Decision(reason=f"gave up after {self.retries + 1} attempts")
        if not self.budget.try_retry():
            return Decision(reason="the retry budget is spent (retries <= 10% of requests)")
        target = self._pick()
        if target is None:
            return Decision(reason="every endpoint's circuit breaker is open")
        delay = self.backoff.delay_s(self.retries)
        self.retries += 1
        self._sent(target)
        return Decision(endpoint=target, delay_s=delay)
