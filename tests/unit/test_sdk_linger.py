"""The sync lock sessions' linger clock (`coreplane.sdk.lock._LingerClock`) on a fake clock:
when a deferred release goes out on its own, and when a deferral has to wake the clock."""

from __future__ import annotations

import threading

from coreplane.sdk.lock import _LingerClock


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class FakeSession:
    """What the clock reads of a session: the oldest pending release's deadline."""

    def __init__(self, due: float | None) -> None:
        self.due = due
        self.told = threading.Event()

    def _linger_due(self) -> float | None:
        return self.due

    def _flush_requested(self) -> None:
        self.told.set()


class CountingClock(_LingerClock):
    """No thread: counts the times a deferral had to wake the clock; `wake` is its thread's
    step at a wake."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.kicks = 0

    def _kick(self) -> None:
        self.kicks += 1

    def wake(self, now: float) -> tuple[list[object], float]:
        due, self.planned = self.plan(now)
        return due, self.planned


def test_a_release_is_due_at_its_deadline_never_sooner() -> None:
    t = FakeClock()
    clock = CountingClock(t)
    s = FakeSession(due=t.t + 0.005)
    clock.schedule(s, s.due, nap_s=0.0025)
    assert clock.kicks == 1 and clock.planned == s.due  # a sleeping clock is told
    t.t += 0.004
    due, wake = clock.wake(t.t)
    assert due == [] and wake == s.due  # not yet: an acquire may still carry it
    t.t = s.due
    due, wake = clock.wake(t.t)
    assert due == [s]  # at its deadline: its session's thread sends it
    assert wake == float("inf")  # no deferral since the last wake: sleep until told
    s2 = FakeSession(t.t + 0.005)
    clock.schedule(s2, s2.due, nap_s=0.0025)
    assert clock.kicks == 2
    due, wake = clock.wake(t.t + 0.001)
    assert due == [] and wake == t.t + 0.001 + 0.0025  # deferrals keep coming: nap


def test_a_release_an_acquire_carried_is_forgotten_without_a_flush() -> None:
    t = FakeClock()
    clock = CountingClock(t)
    s = FakeSession(due=t.t + 0.005)
    clock.schedule(s, s.due, nap_s=0.0025)
    s.due = None  # the next acquire took it
    t.t += 0.005
    due, _wake = clock.wake(t.t)
    assert due == []
    due, wake = clock.wake(t.t + 1)
    assert due == [] and wake == float("inf")


def test_while_deferrals_keep_coming_they_never_wake_the_clock() -> None:
    t = FakeClock()
    clock = CountingClock(t)
    sessions = [FakeSession(None) for _ in range(4)]
    clock.schedule(sessions[0], t.t + 0.005, nap_s=0.005)  # the first one wakes it
    clock.wake(t.t)  # its thread wakes
    for step in range(400):  # 4 sessions, lock cycles every 3.4 ms each: a linger of 5 ms
        t.t += 0.00075
        s = sessions[step % 4]
        s.due = t.t + 0.005
        clock.schedule(s, s.due, nap_s=0.005)
        t.t += 0.0001
        s.due = None  # carried by the session's next acquire
        if t.t >= clock.planned:
            due, _wake = clock.wake(t.t)
            assert due == []  # every release was carried
    assert clock.kicks == 1


def test_with_a_long_sleep_every_deadline_is_kept_and_late_ones_told() -> None:
    t = FakeClock()
    clock = CountingClock(t)
    a, b = FakeSession(t.t + 0.005), FakeSession(t.t + 0.003)
    clock.schedule(a, a.due, nap_s=0.0025)
    clock.schedule(b, b.due, nap_s=0.0025)  # earlier than planned: told again
    assert clock.kicks == 2 and clock.planned == b.due
    t.t = b.due
    due, wake = clock.wake(t.t)
    assert due == [b] and wake == min(a.due, t.t + 0.0025)
    t.t = a.due
    due, _wake = clock.wake(t.t)
    assert due == [a]


def test_the_clock_thread_tells_a_session_at_its_deadline() -> None:
    import time

    clock = _LingerClock()
    s = FakeSession(time.monotonic() + 0.02)
    clock.schedule(s, s.due, nap_s=0.01)  # type: ignore[arg-type]
    assert s.told.wait(10)
    assert s.due is not None and time.monotonic() >= s.due


def test_a_forked_child_starts_its_own_clock_on_its_first_deferral() -> None:
    t = FakeClock()
    clock = CountingClock(t)
    s = FakeSession(t.t + 0.005)
    clock.schedule(s, s.due, nap_s=0.005)
    clock.wake(t.t)  # napping: the next deferral would not wake it ...
    clock._forked()  # ... but a forked child has no clock thread
    assert clock.planned == float("inf") and clock._thread is None
    clock.schedule(s, t.t + 0.006, nap_s=0.005)
    assert clock.kicks == 2  # told (started), not left napping in the parent
