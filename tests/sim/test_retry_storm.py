"""The retry-storm claim: 500 clients, a backend at 100% errors for 10 s (simulated time).

With the SDK defaults the attempts reaching the backend during the spike stay <= 1.1 per
request, against >= 3 for naive "retry 3 times"; every client's breaker opens and closes again.
The numbers and the reason: `python3 -m tests.sim.storm`.
"""

from __future__ import annotations

from tests.sim.storm import report, simulate


def test_defaults_do_not_amplify_a_spike_and_naive_retry_does() -> None:
    defaults, naive = simulate(seed=7), simulate(seed=7, naive=True)
    print(report(defaults, naive))
    assert defaults.requests == naive.requests > 30_000  # the same traffic for both
    assert defaults.spike_amplification <= 1.1
    assert defaults.amplification <= 1.1
    assert naive.spike_amplification >= 3
    # every client's breaker opened in the spike and closed again after it
    assert defaults.breaker_opened == defaults.breaker_closed == 500
    assert defaults.open_at_end == 0
    # recovery: requests made after the spike fail only while a breaker waits for its probe
    assert defaults.failed_after_spike < 0.05 * (defaults.requests - defaults.spike_requests)


def test_the_simulation_is_exact_per_seed() -> None:
    a, b = simulate(clients=50, seed=3), simulate(clients=50, seed=3)
    assert a == b
    assert simulate(clients=50, seed=4) != a
