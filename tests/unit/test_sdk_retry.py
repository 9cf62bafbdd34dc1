"""The SDK's retry pieces on a fake clock: backoff, budget, breaker, one call's plan."""

from __future__ import annotations

from random import Random

import pytest

from coreplane.errors import InvalidArgument
from coreplane.sdk.retry import Backoff, CallPlan, CircuitBreaker, Outcome, RetryBudget


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_full_jitter_stays_under_the_exponential_envelope_and_the_cap() -> None:
    backoff = Backoff(50, 1_000, Random(1))
    for retry, envelope in ((0, 0.05), (1, 0.1), (3, 0.4), (10, 1.0), (99, 1.0)):
        draws = [backoff.delay_s(retry) for _ in range(200)]
        assert all(0 <= d <= envelope for d in draws)
        assert max(draws) > envelope * 0.8  # spread over the whole range, not a fixed step
    with pytest.raises(InvalidArgument):
        Backoff(0, 10, Random())


def test_budget_allows_ten_percent_plus_the_floor_per_window() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.1, min_retries_per_s=0.5, window_s=10, clock=clock)
    for _ in range(100):
        budget.record_request()
    allowed = sum(budget.try_retry() for _ in range(100))
    assert allowed == 10 + 5  # 10% of 100 requests + 0.5/s * 10 s
    assert not budget.try_retry()
    clock.t += 11  # the window slid past every deposit and withdrawal
    assert sum(budget.try_retry() for _ in range(100)) == 5


def test_breaker_opens_after_consecutive_failures_probes_once_and_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        failure_threshold=3, reset_ms=1_000, reset_max_ms=4_000, clock=clock, rng=Random(2)
    )
    breaker.record(Outcome.FAILED)
    breaker.record(Outcome.OK)  # not consecutive: stays closed
    for _ in range(3):
        assert breaker.allow()
        breaker.record(Outcome.FAILED)
    assert breaker.state == "open" and breaker.opened == 1
    assert not breaker.allow()
    clock.t += 1.0  # past the jittered open period (0.5..1 s)
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # one probe at a time
    breaker.record(Outcome.FAILED)  # the probe failed: open again, for longer
    assert breaker.state == "open" and breaker.opened == 2
    clock.t += 1.0
    opened_again = breaker.allow()
    clock.t += 1.0
    assert opened_again or breaker.allow()  # 1..2 s now
    breaker.record(Outcome.OK)
    assert breaker.state == "closed" and breaker.closed == 1 and breaker.allow()


def _plan(
    endpoints: list[str],
    clock: FakeClock,
    *,
    safe: bool = True,
    attempts: int = 3,
    threshold: int = 5,
) -> CallPlan:
    breakers = {
        e: CircuitBreaker(
            failure_threshold=threshold,
            reset_ms=1_000,
            reset_max_ms=2_000,
            clock=clock,
            rng=Random(0),
        )
        for e in endpoints
    }
    budget = RetryBudget(ratio=0.1, min_retries_per_s=1, window_s=10, clock=clock)
    return CallPlan(
        endpoints, breakers, budget, Backoff(10, 100, Random(0)), max_attempts=attempts, safe=safe
    )


def test_plan_moves_to_another_endpoint_and_gives_up_with_a_reason() -> None:
    clock = FakeClock()
    plan = _plan(["a", "b", "c"], clock)
    assert plan.first() == "a"
    d = plan.after(Outcome.FAILED)
    assert d.endpoint == "b" and 0 <= d.delay_s <= 0.01
    d = plan.after(Outcome.FAILED)
    assert d.endpoint == "c"
    d = plan.after(Outcome.FAILED)
    assert d.endpoint is None and "3 attempts" in d.reason
    assert plan.attempts == 3


def test_plan_never_retries_an_unsafe_request_and_follows_redirects_for_free() -> None:
    clock = FakeClock()
    plan = _plan(["a", "b"], clock, safe=False)
    assert plan.first() == "a"
    d = plan.after(Outcome.REDIRECT, redirect_to="b")
    assert d.endpoint == "b" and d.delay_s == 0 and plan.retries == 0
    d = plan.after(Outcome.FAILED)
    assert d.endpoint is None and "not safe" in d.reason
    ok = _plan(["a"], clock)
    ok.first()
    assert ok.after(Outcome.OK).done


def test_no_leader_yet_is_retried_after_backoff_and_never_opens_a_breaker() -> None:
    """During an election every follower answers "not the leader, none known": the call is
    retried after backoff (even an unsafe one: that node did nothing) and those live
    endpoints' breakers stay closed, while a real failure still counts."""
    clock = FakeClock()
    plan = _plan(["a", "b"], clock, threshold=1, safe=False, attempts=5)
    assert plan.first() == "a"
    d = plan.after(Outcome.NO_LEADER)
    assert d.endpoint == "b" and 0 <= d.delay_s <= 0.01 and plan.retries == 1
    d = plan.after(Outcome.NO_LEADER)
    assert d.endpoint == "a" and plan.retries == 2
    assert all(b.state == CircuitBreaker.CLOSED for b in plan.breakers.values())
    d = plan.after(Outcome.FAILED)  # a transport error is still a failure, and unsafe
    assert d.endpoint is None and "not safe" in d.reason
    assert plan.breakers["a"].state == CircuitBreaker.OPEN


def test_plan_fails_fast_when_every_breaker_is_open() -> None:
    clock = FakeClock()
    plan = _plan(["a"], clock, threshold=1)
    plan.first()
    assert plan.after(Outcome.FAILED).reason == "every endpoint's circuit breaker is open"
    again = CallPlan(["a"], plan.breakers, plan.budget, plan.backoff, max_attempts=3, safe=True)
    assert again.first() is None and again.attempts == 0
