"""Pipelined proposals and session lanes, against a scripted engine (no network)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from coreplane import CommandRejected, Unavailable
from coreplane.core.state import Applied
from coreplane.raft import engine as E
from coreplane.runtime.pipeline import Pipeline
from coreplane.runtime.sessions import LANE_WINDOW, SessionLanes

RETRY = frozenset({E.FAIL.LEADER_CHANGED, E.FAIL.UNKNOWN_OUTCOME, E.FAIL.MISSING_LEADER})


class ScriptedEngine:
    """Answers the n-th proposal of each payload with the n-th code of its script."""

    def __init__(self, scripts: dict[bytes, list[int | None]]) -> None:
        self.scripts = scripts
        self.sent: list[bytes] = []
        self.lock = threading.Lock()

    def propose(self, data: bytes, callback: Any) -> None:
        with self.lock:
            self.sent.append(data)
            code = self.scripts[data].pop(0) if self.scripts[data] else E.FAIL.SUCCESS
        if code is None:
            return  # lost: no callback ever (a forwarded proposal gone with its leader)
        callback(Applied(True, data.decode()) if code == E.FAIL.SUCCESS else None, code)


def pipeline(engine: ScriptedEngine, attempt_s: float = 0.2) -> Pipeline:
    return Pipeline(lambda: engine, RETRY, attempt_s=attempt_s, name="t")  # type: ignore[arg-type,return-value]


def test_retryable_failures_and_silence_resend_the_same_bytes() -> None:
    engine = ScriptedEngine(
        {b"a": [E.FAIL.LEADER_CHANGED, E.FAIL.UNKNOWN_OUTCOME], b"b": [None], b"c": []}
    )
    p = pipeline(engine)
    futures = {k: p.submit(k, timeout_s=5) for k in (b"a", b"b", b"c")}
    assert {k: f.result(timeout=5).value for k, f in futures.items()} == {
        b"a": "a",
        b"b": "b",
        b"c": "c",
    }
    assert engine.sent.count(b"a") == 3 and engine.sent.count(b"b") == 2
    p.close()


def test_deadline_denial_and_other_codes_fail_the_future() -> None:
    engine = ScriptedEngine(
        {b"lost": [None] * 100, b"denied": [E.FAIL.REQUEST_DENIED], b"odd": [12345]}
    )
    p = pipeline(engine, attempt_s=0.05)
    lost, denied, odd = (p.submit(k, timeout_s=0.3) for k in (b"lost", b"denied", b"odd"))
    with pytest.raises(Unavailable, match="outcome is unknown"):
        lost.result(timeout=5)
    with pytest.raises(CommandRejected, match="request_denied"):
        denied.result(timeout=5)
    with pytest.raises(Unavailable, match="12345"):
        odd.result(timeout=5)
    p.close()


def test_transform_and_close() -> None:
    engine = ScriptedEngine({b"x": [], b"never": [None] * 100})
    p = pipeline(engine, attempt_s=10)
    assert p.submit(b"x", 5, transform=lambda a: len(a.value)).result(timeout=5) == 1
    with pytest.raises(ValueError):
        p.submit(b"x", 5, transform=lambda a: int("nope")).result(timeout=5)
    waiting = p.submit(b"never", 60)
    p.close()
    with pytest.raises(Unavailable, match="stopped"):
        waiting.result(timeout=5)


class _Silent:
    def propose(self, data: bytes, callback: Any) -> None:
        pass  # never answers


def _submit_while_closing(p: Pipeline) -> list[Any]:
    futures: list[Any] = []
    go = threading.Event()

    def writer() -> None:
        go.wait()
        for i in range(200):
            futures.append(p.submit(b"%d" % i, 60))

    writers = [threading.Thread(target=writer) for _ in range(4)]
    for t in writers:
        t.start()
    go.set()
    p.close()
    for t in writers:
        t.join()
    return futures


def test_writes_submitted_while_closing_all_finish() -> None:
    """Submit and completion take no lock: a write racing close() is failed by one of them."""
    for _ in range(20):
        p = Pipeline(lambda: _Silent(), RETRY, attempt_s=60, name="t")  # type: ignore[arg-type,return-value]
        futures = _submit_while_closing(p)
        assert len(futures) == 800
        for f in futures:
            with pytest.raises(Unavailable, match="stopped"):
                f.result(timeout=5)


def test_a_lane_never_runs_more_than_its_window_past_a_write_in_flight() -> None:
    lanes = SessionLanes("n/1")
    first_lane, first_seq = lanes.acquire()  # stays in flight (its first attempt was lost)
    held = [lanes.acquire() for _ in range(3 * LANE_WINDOW)]
    for lane, seq in held:
        lanes.release(lane, seq)  # everything after it completes quickly
    in_first = [seq for lane, seq in held if lane is first_lane]
    assert max(in_first) - first_seq < LANE_WINDOW  # its result cannot leave the core's window
    assert lanes.lanes() >= 2  # the rest went to another session
    lanes.release(first_lane, first_seq)
    lane, seq = lanes.acquire()
    assert lane is first_lane  # idle lanes are reused first: sessions follow peak concurrency
    assert seq == first_lane.next_seq - 1


def test_out_of_order_completions_move_the_lane_floor_to_the_oldest_in_flight() -> None:
    lanes = SessionLanes("n/1")
    got = [lanes.acquire() for _ in range(5)]  # seqs 1..5 of one lane
    lane = got[0][0]
    for i in (1, 3):  # seqs 2 and 4 complete first: 1 is still the oldest in flight
        lanes.release(*got[i])
    assert lane.low == 1
    lanes.release(*got[0])  # 1 completes: 3 is now the oldest
    assert lane.low == 3
    lanes.release(*got[0])  # a second release of the same seq changes nothing
    assert lane.low == 3
    lanes.release(*got[2])
    lanes.release(*got[4])
    assert lane.low == lane.next_seq == 6 and not lane.inflight


def test_release_runs_once_however_the_write_completes() -> None:
    engine = ScriptedEngine(
        {b"ok": [], b"denied": [E.FAIL.REQUEST_DENIED], b"lost": [None] * 100, b"bad": []}
    )
    p = pipeline(engine, attempt_s=0.05)
    released: list[bytes] = []

    def submit(k: bytes, timeout_s: float = 5, **kw: Any) -> Any:
        return p.submit(k, timeout_s, release=lambda: released.append(k), **kw)

    assert submit(b"ok").result(timeout=5).value == "ok"
    with pytest.raises(CommandRejected):
        submit(b"denied").result(timeout=5)
    with pytest.raises(Unavailable):
        submit(b"lost", timeout_s=0.2).result(timeout=5)
    with pytest.raises(ValueError):
        submit(b"bad", transform=lambda a: int("nope")).result(timeout=5)
    assert sorted(released) == [b"bad", b"denied", b"lost", b"ok"]
    p.close()
