"""How `kv.put` callers of a batch are woken: at most `width` baton holders at a time
(`_Baton`)."""

from __future__ import annotations

import threading
import time

import pytest

from coreplane.errors import InvalidArgument
from coreplane.runtime.controlplane import BATON_WIDTH, _Baton, _BatonAttempt


def _completed(baton: _Baton, n: int) -> list[_BatonAttempt]:
    """n attempts whose writes completed in one callback loop (one batch entry)."""
    attempts = [_BatonAttempt(baton) for _ in range(n)]
    for i, attempt in enumerate(attempts):
        attempt(f"r{i}", 0)
    return attempts


def test_a_batch_wakes_one_caller_and_each_passes_on_when_its_call_returns() -> None:
    baton = _Baton(1)
    a, b, c = _completed(baton, 3)
    assert (a.result, b.result, c.result) == ("r0", "r1", "r2")  # results are in at once
    assert a.wait(0)  # the first is woken by the callback; the others wait for it
    assert b._lock.locked() and c._lock.locked()
    baton.pass_on()  # a's call returns
    assert not b._lock.locked() and c._lock.locked()
    assert b.wait(0)
    baton.pass_on()
    assert c.wait(0)
    baton.pass_on()  # nobody queued: the baton is put down
    (d,) = _completed(baton, 1)
    assert not d._lock.locked()  # released by its own callback


def test_a_thread_without_the_baton_passes_nothing() -> None:
    baton = _Baton(1)
    a, b = _completed(baton, 2)
    baton.pass_on()  # this thread has not woken from a: no-op
    assert b._lock.locked()
    other = threading.Thread(target=baton.pass_on)
    other.start()
    other.join()
    assert b._lock.locked()
    assert a.wait(0)
    baton.pass_on()
    assert b.wait(0)


def test_a_baton_nobody_passes_on_is_passed_by_the_tick() -> None:
    baton = _Baton(1)
    a, b = _completed(baton, 2)
    assert not a._lock.locked()  # a's caller gave up waiting: it never takes the baton
    baton.tick()  # the baton moved since the last tick: left alone
    assert b._lock.locked()
    baton.tick()  # a whole tick without moving: the tick thread passes it
    assert not b._lock.locked()


def test_a_second_callback_for_the_same_attempt_queues_nobody_twice() -> None:
    baton = _Baton(1)
    a, b = _completed(baton, 2)
    b("late", 0)  # a duplicate callback while b is queued
    assert a.wait(0)
    baton.pass_on()
    assert b.wait(0)
    baton.pass_on()
    (c,) = _completed(baton, 1)
    assert not c._lock.locked()  # the baton was down: b was queued once, not twice


@pytest.mark.parametrize("width", [1, 3, BATON_WIDTH])
def test_many_callers_all_complete_whatever_they_do_after_a_write(width: int) -> None:
    """Writers that keep writing or stop early: every completed write wakes its caller (a
    tick thread completes queued writes in batches)."""
    baton = _Baton(width)
    queue: list[_BatonAttempt] = []
    guard = threading.Lock()
    stop = threading.Event()
    done: list[int] = []

    def tick_thread() -> None:
        while not stop.is_set():
            with guard:
                batch, queue[:] = list(queue), []
            for attempt in batch:
                attempt("ok", 0)
            baton.tick()
            time.sleep(0.001)

    def writer(k: int) -> None:
        for _ in range(1 + k % 7):  # some leave early, holding the baton
            attempt = _BatonAttempt(baton)
            with guard:
                queue.append(attempt)
            assert attempt.wait(10.0) and attempt.result == "ok"
            baton.pass_on()  # what ControlPlane.propose does when it returns
        done.append(k)

    ticker = threading.Thread(target=tick_thread)
    ticker.start()
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(40)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(timeout=20)
    stop.set()
    ticker.join()
    assert sorted(done) == list(range(40))


def test_a_batch_wakes_up_to_width_callers_and_each_hands_its_baton_to_one_more() -> None:
    baton = _Baton(2)
    a, b, c, d = _completed(baton, 4)
    assert not a._lock.locked() and not b._lock.locked()  # two woken by the callbacks
    assert c._lock.locked() and d._lock.locked()
    assert baton.holders() == 2
    assert b.wait(0)  # b's caller runs first: the order they run in does not matter
    baton.pass_on()
    assert not c._lock.locked() and d._lock.locked()  # b's baton went to c, not to d too
    assert baton.holders() == 2
    assert a.wait(0)
    baton.pass_on()
    assert not d._lock.locked()
    assert c.wait(0)
    baton.pass_on()  # nobody queued: a baton is put down
    assert baton.holders() == 1
    assert d.wait(0)
    baton.pass_on()
    assert baton.holders() == 0
    e, f, g = _completed(baton, 3)
    assert not e._lock.locked() and not f._lock.locked() and g._lock.locked()


def test_the_tick_passes_on_only_the_batons_that_did_not_move() -> None:
    baton = _Baton(2)
    a, b, c, d = _completed(baton, 4)
    assert a.fired  # a's caller gave up waiting: it never wakes to take its baton
    baton.tick()  # both batons are new since the last tick: left alone
    assert c._lock.locked() and d._lock.locked()
    assert b.wait(0)
    baton.pass_on()  # b's moved to c; a's caller gave up and never takes its baton
    assert not c._lock.locked() and d._lock.locked()
    baton.tick()  # a's was held at the previous tick too: passed to d; c's is new: kept
    assert not d._lock.locked()
    assert baton.holders() == 2


def test_a_baton_needs_a_width_of_at_least_one() -> None:
    with pytest.raises(InvalidArgument, match="width"):
        _Baton(0)
