"""The lock machine through the replicated state machine: FIFO grants, tokens, expiry, bounds."""

from __future__ import annotations

import pytest

from coreplane.core import commands as C
from coreplane.core.machines.locks import LockLimits, LockMachine
from coreplane.core.state import StateMachine
from coreplane.errors import CommandRejected, DecodeError
from tests.unit.replicated_log import Log


def test_tags_are_fixed_in_the_lock_range() -> None:
    assert [c.TAG for c in C.LOCK_COMMANDS] == [70, 71, 72, 73, 74]


def test_first_acquirer_holds_with_the_grant_index_as_token_and_others_queue_fifo() -> None:
    log = Log()
    log.tick(1_000)
    a, b, c = (log.ok(C.LockSessionGrant(ttl_ms=5_000)) for _ in range(3))
    assert (a, b, c) == (1, 2, 3)
    got = log.ok(C.LockAcquire("job", a))
    assert got == {"held": True, "token": log.index, "position": 0}
    first_token = got["token"]
    assert log.ok(C.LockAcquire("job", b)) == {"held": False, "token": 0, "position": 1}
    assert log.ok(C.LockAcquire("job", c)) == {"held": False, "token": 0, "position": 2}
    # idempotent per (session, lock)
    assert log.ok(C.LockAcquire("job", a))["token"] == first_token
    assert log.ok(C.LockAcquire("job", c))["position"] == 2
    assert log.ok(C.LockRelease("job", a)) == {"released": True, "granted": b}
    desc = log.sm.locks.describe("job", b)
    assert desc["held"] and desc["holder"] == b and desc["token"] == log.index > first_token
    assert log.sm.locks.describe("job", c)["position"] == 1
    # a waiter leaving the queue does not disturb the holder
    assert log.ok(C.LockRelease("job", c)) == {"released": True, "granted": 0}
    assert log.ok(C.LockRelease("job", c)) == {"released": False, "granted": 0}
    assert log.ok(C.LockRelease("job", b)) == {"released": True, "granted": 0}
    assert "job" not in log.sm.locks.locks  # a free lock with no waiters is dropped


def test_expiry_on_a_tick_grants_the_next_live_waiter_at_the_tick_index() -> None:
    log = Log()
    log.tick(1_000)
    holder = log.ok(C.LockSessionGrant(ttl_ms=2_000))  # expires at 3_000
    waiter_dies = log.ok(C.LockSessionGrant(ttl_ms=1_000))  # expires at 2_000
    waiter = log.ok(C.LockSessionGrant(ttl_ms=10_000))
    log.ok(C.LockAcquire("l", holder))
    log.ok(C.LockAcquire("l", waiter_dies))
    log.ok(C.LockAcquire("l", waiter))
    log.tick(2_000)  # the first waiter expires: it leaves the queue, nothing is granted
    assert log.sm.locks.describe("l")["holder"] == holder
    assert log.sm.locks.describe("l", waiter)["position"] == 1
    log.tick(2_999)
    assert log.sm.locks.describe("l")["holder"] == holder
    log.ok(C.LockSessionKeepAlive(holder))  # pushes the deadline to 2_999 + 2_000
    log.tick(4_000)
    assert log.sm.locks.describe("l")["holder"] == holder
    log.tick(4_999)
    desc = log.sm.locks.describe("l", waiter)
    assert desc["held"] and desc["token"] == log.index  # granted at the tick's own index
    assert holder not in log.sm.locks.sessions
    assert log.run(C.LockSessionKeepAlive(holder)).code == "session_not_found"
    assert log.run(C.LockAcquire("l", holder)).code == "session_not_found"


def test_closing_a_session_releases_everything_it_holds_and_leaves_its_queues() -> None:
    log = Log()
    s1, s2 = log.ok(C.LockSessionGrant(ttl_ms=5_000)), log.ok(C.LockSessionGrant(ttl_ms=5_000))
    log.ok(C.LockAcquire("x", s1))
    log.ok(C.LockAcquire("y", s2))
    log.ok(C.LockAcquire("y", s1))
    log.ok(C.LockAcquire("x", s2))
    assert log.ok(C.LockSessionClose(s1)) == 2
    assert log.sm.locks.describe("x", s2)["held"]
    assert log.sm.locks.describe("x")["token"] == log.index
    assert log.sm.locks.describe("y")["waiters"] == 0


def test_client_chosen_session_ids_and_duplicates_apply_once() -> None:
    log = Log()
    sid = 0x1234_5678_9ABC
    grant = C.LockSessionGrant(ttl_ms=3_000, session_id=sid, client_id="c", seq=1)
    assert log.ok(grant) == sid
    assert log.ok(grant) == sid  # a retried duplicate: the cached result, not session_exists
    assert log.run(C.LockSessionGrant(ttl_ms=3_000, session_id=sid)).code == "session_exists"
    acquire = C.LockAcquire("r", sid, client_id="c", seq=2)
    token = log.ok(acquire)["token"]
    index_before = log.index
    assert log.ok(acquire)["token"] == token
    release = C.LockRelease("r", sid, client_id="c", seq=3)
    assert log.ok(release)["released"] is True
    assert log.ok(release)["released"] is True  # the original result, applied once
    assert log.index == index_before + 3


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (C.LockSessionGrant(ttl_ms=10), "ttl_out_of_range"),
        (C.LockSessionGrant(ttl_ms=10**12), "ttl_out_of_range"),
        (C.LockAcquire("", 1), "name_empty"),
        (C.LockAcquire("n" * 600, 1), "name_too_large"),
        (C.LockAcquire("n", 99), "session_not_found"),
        (C.LockSessionClose(99), "session_not_found"),
    ],
)
def test_refusals_have_stable_codes(command: C.Command, code: str) -> None:
    log = Log()
    log.ok(C.LockSessionGrant(ttl_ms=2_000))
    assert log.run(command).code == code


def test_bounds_refuse_deterministically() -> None:
    machine = LockMachine(
        LockLimits(sessions_max=3, locks_max=1, waiters_per_lock_max=1, locks_per_session_max=1)
    )
    a, b, c = (machine.session_grant(1_000, 0, 0) for _ in range(3))
    with pytest.raises(CommandRejected, match="too_many_sessions"):
        machine.session_grant(1_000, 0, 0)
    machine.acquire("one", a, 10)
    with pytest.raises(CommandRejected, match="session_full"):
        machine.acquire("two", a, 11)
    with pytest.raises(CommandRejected, match="too_many_locks"):
        machine.acquire("two", b, 11)
    assert machine.acquire("one", b, 12)["position"] == 1
    with pytest.raises(CommandRejected, match="queue_full"):
        machine.acquire("one", c, 13)
    assert machine.describe("one", c)["position"] == -1  # a refusal changed nothing


def test_snapshot_round_trip_and_bad_snapshots() -> None:
    log = Log()
    log.tick(500)
    s = [log.ok(C.LockSessionGrant(ttl_ms=4_000)) for _ in range(3)]
    for sid in s:
        log.ok(C.LockAcquire("a", sid))
    log.ok(C.LockAcquire("b", s[2]))
    restored = StateMachine.from_snapshot(log.sm.snapshot())
    assert restored.state_hash() == log.sm.state_hash()
    assert restored.locks.sessions[s[2]].names == {"a", "b"}
    for bad in (
        {"next_session_id": 1, "sessions": [], "locks": [["a", 5, 1, []]]},
        {"next_session_id": 1, "sessions": [[1, 1, 1]], "locks": [[3, 1, 1, []]]},
        {"sessions": []},
    ):
        with pytest.raises(DecodeError):
            LockMachine.from_plain(bad)
    assert LockMachine.from_plain(None).sessions == {}  # snapshots from before locks
