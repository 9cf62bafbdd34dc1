"""The linearizability checker: known histories, and agreement with brute force on random ones."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coreplane.testing.linearizability import (
    Operation,
    Verdict,
    check,
    check_brute_force,
    check_kv,
    kv_register_model,
)

W, R, CAS = "write", "read", "cas"


def op(
    client: int,
    call: int,
    ret: int | None,
    kind: str,
    arg: object = None,
    result: object = None,
    key: str = "x",
) -> Operation:
    return Operation(client, call, ret, kind, key, arg, result)


def test_sequential_history_is_linearizable() -> None:
    h = [
        op(1, 0, 1, W, 1),
        op(1, 2, 3, R, result=1),
        op(1, 4, 5, CAS, (1, 2), True),
        op(1, 6, 7, R, result=2),
    ]
    assert check_kv(h).verdict is Verdict.OK


def test_stale_read_after_write_returned_is_a_violation() -> None:
    h = [op(1, 0, 1, W, 1), op(2, 2, 3, R, result=None)]
    result = check_kv(h)
    assert result.verdict is Verdict.VIOLATION
    assert result.key == "x"


def test_concurrent_read_may_see_either_value() -> None:
    old = [op(1, 0, 10, W, 1), op(2, 1, 2, R, result=None)]
    new = [op(1, 0, 10, W, 1), op(2, 1, 2, R, result=1)]
    assert check_kv(old).ok and check_kv(new).ok


def test_reads_must_not_go_back_in_time() -> None:
    # w1 concurrent with two sequential reads: new then old is not linearizable.
    h = [op(1, 0, 10, W, 1), op(2, 1, 2, R, result=1), op(2, 3, 4, R, result=None)]
    assert check_kv(h).verdict is Verdict.VIOLATION


def test_unknown_write_may_or_may_not_have_happened() -> None:
    took_effect = [op(1, 0, None, W, 1), op(2, 5, 6, R, result=1)]
    did_not = [op(1, 0, None, W, 1), op(2, 5, 6, R, result=None)]
    assert check_kv(took_effect).ok and check_kv(did_not).ok
    # but it cannot take effect before it was called
    too_early = [op(2, 0, 1, R, result=1), op(1, 5, None, W, 1)]
    assert check_kv(too_early).verdict is Verdict.VIOLATION


def test_lost_acknowledged_write_is_a_violation() -> None:
    h = [op(1, 0, 1, W, 1), op(1, 2, 3, W, 2), op(2, 4, 5, R, result=1)]
    assert check_kv(h).verdict is Verdict.VIOLATION


def test_cas_results_are_checked() -> None:
    both_won = [op(1, 0, 5, CAS, (None, 1), True), op(2, 0, 5, CAS, (None, 2), True)]
    assert check_kv(both_won).verdict is Verdict.VIOLATION
    one_won = [op(1, 0, 5, CAS, (None, 1), True), op(2, 0, 5, CAS, (None, 2), False)]
    assert check_kv(one_won).ok


def test_keys_are_checked_independently() -> None:
    h = [
        op(1, 0, 1, W, 1, key="a"),
        op(1, 2, 3, R, result=1, key="a"),
        op(2, 0, 1, W, 5, key="b"),
        op(2, 2, 3, R, result=4, key="b"),
    ]
    result = check_kv(h)
    assert result.verdict is Verdict.VIOLATION and result.key == "b"


def test_budget_exhaustion_is_unknown_never_ok() -> None:
    h = [op(i, 0, 100, W, i) for i in range(12)] + [op(99, 200, 201, R, result=-1)]
    result = check(h, kv_register_model(), max_steps=50)
    assert result.verdict is Verdict.UNKNOWN
    assert not result.ok


def test_large_concurrent_history_is_checked_quickly() -> None:
    rng = random.Random(5)
    value, h, t = None, [], 0
    for i in range(400):  # a correct register: each op linearizes at its midpoint
        t += rng.randint(1, 3)
        kind = rng.choice([W, R, CAS])
        if kind == W:
            value = i
            h.append(op(i % 5, t - 2, t + 2, W, i))
        elif kind == R:
            h.append(op(i % 5, t - 2, t + 2, R, result=value))
        else:
            ok = value == i - 1
            h.append(op(i % 5, t - 2, t + 2, CAS, (i - 1, i), ok))
            value = i if ok else value
    assert check_kv(h).ok


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    n = draw(st.integers(1, 6))
    ops = []
    for i in range(n):
        call = draw(st.integers(0, 10))
        unknown = draw(st.integers(0, 5)) == 0
        ret = None if unknown else call + draw(st.integers(0, 6))
        kind = draw(st.sampled_from([W, R, CAS]))
        value = draw(st.sampled_from([None, 1, 2]))
        if kind == W:
            ops.append(op(i, call, ret, W, draw(st.sampled_from([1, 2]))))
        elif kind == R:
            ops.append(op(i, call, ret, R, result=value))
        else:
            ops.append(
                op(i, call, ret, CAS, (value, draw(st.sampled_from([1, 2]))), draw(st.booleans()))
            )
    return ops


@given(small_histories())
def test_agrees_with_brute_force(history: list[Operation]) -> None:
    model = kv_register_model()
    assert check(history, model).verdict == check_brute_force(history, model)


def test_brute_force_refuses_big_histories() -> None:
    with pytest.raises(ValueError):
        check_brute_force([op(i, 0, 1, W, i) for i in range(9)], kv_register_model())
