"""ProposalFuture: a concurrent.futures.Future whose condition is made only when needed."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading

import pytest

from coreplane.runtime.pipeline import ProposalFuture


def test_starts_running_and_cannot_be_cancelled() -> None:
    f: ProposalFuture[int] = ProposalFuture()
    assert f.running() and not f.done() and not f.cancelled()
    assert f.set_running_or_notify_cancel() is True  # already running: no error
    assert f.cancel() is False
    f.set_result(3)
    assert f.done() and not f.running() and f.cancel() is False
    assert f.result() == 3 and f.exception() is None


def test_completion_without_waiters_makes_no_condition() -> None:
    f: ProposalFuture[int] = ProposalFuture()
    seen: list[int] = []
    f.add_done_callback(lambda g: seen.append(g.result()))
    f.set_result(7)
    assert seen == [7]
    assert "_condition" not in f.__dict__
    late: list[int] = []
    f.add_done_callback(lambda g: late.append(g.result()))  # done: called at once
    assert late == [7]


def test_exception_is_raised_by_result() -> None:
    f: ProposalFuture[int] = ProposalFuture()
    f.set_exception(KeyError("k"))
    assert isinstance(f.exception(), KeyError)
    with pytest.raises(KeyError):
        f.result()


def test_second_completion_is_refused() -> None:
    f: ProposalFuture[int] = ProposalFuture()
    f.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        f.set_result(2)
    with pytest.raises(cf.InvalidStateError):
        f.set_exception(ValueError())
    assert f.result() == 1


def test_second_completion_is_refused_with_a_condition() -> None:
    f: ProposalFuture[int] = ProposalFuture()
    assert f._condition is not None  # made (as a waiter would)
    f.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        f.set_result(2)
    assert f.result() == 1


def test_blocking_result_wakes_on_completion_from_another_thread() -> None:
    f: ProposalFuture[str] = ProposalFuture()
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0.01)  # made the condition; still not done
    t = threading.Timer(0.05, f.set_result, args=("ok",))
    t.start()
    assert f.result(timeout=10) == "ok"
    t.join()


def test_callbacks_added_before_and_after_a_waiter_all_run_once() -> None:
    f: ProposalFuture[int] = ProposalFuture()
    calls: list[str] = []
    f.add_done_callback(lambda _: calls.append("before"))
    with pytest.raises(cf.TimeoutError):
        f.exception(timeout=0)
    f.add_done_callback(lambda _: calls.append("after"))
    f.set_result(1)
    assert calls == ["before", "after"]


def test_concurrent_futures_wait_and_as_completed() -> None:
    fs: list[ProposalFuture[int]] = [ProposalFuture() for _ in range(3)]
    fs[0].set_result(0)  # finished before wait() looks
    timers = [threading.Timer(0.02 * i, f.set_result, args=(i,)) for i, f in enumerate(fs) if i]
    for t in timers:
        t.start()
    done, not_done = cf.wait(fs, timeout=10)
    assert done == set(fs) and not not_done
    assert sorted(f.result() for f in cf.as_completed(fs, timeout=10)) == [0, 1, 2]
    for t in timers:
        t.join()


def test_awaitable_from_asyncio() -> None:
    f: ProposalFuture[int] = ProposalFuture()

    async def main() -> int:
        asyncio.get_running_loop().call_later(0.01, f.set_result, 5)
        return await f

    assert asyncio.run(main()) == 5


def test_a_failing_callback_does_not_stop_the_others() -> None:
    f: ProposalFuture[int] = ProposalFuture()
    calls: list[int] = []

    def bad(_: object) -> None:
        raise RuntimeError("boom")

    f.add_done_callback(bad)
    f.add_done_callback(lambda g: calls.append(g.result()))
    f.set_result(9)
    assert calls == [9]
