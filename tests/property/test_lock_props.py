"""Lock machine properties on random logs: the replica laws, FIFO against a simple model,
fencing tokens that only grow, at most one holder, duplicates applied once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coreplane.core import commands as C
from coreplane.core.state import StateMachine

NAMES = ["a", "b", "c"]


@st.composite
def lock_logs(draw: st.DrawFn, max_len: int = 60) -> list[C.Command]:
    out: list[C.Command] = []
    seq = 0
    tick_n = 0
    for _ in range(draw(st.integers(1, max_len))):
        kind = draw(
            st.sampled_from(
                ["grant", "keep", "close", "acquire", "acquire", "release", "tick", "tick"]
            )
        )
        client = draw(st.sampled_from(["", "c1"]))
        if client:
            seq += 1
        meta = {"client_id": client, "seq": seq if client else 0}
        sid = draw(st.integers(1, 4))
        name = draw(st.sampled_from(NAMES))
        if kind == "grant":
            out.append(
                C.LockSessionGrant(
                    draw(st.sampled_from([1_000, 2_500, 6_000])),
                    draw(st.sampled_from([0, 0, sid])),
                    **meta,
                )
            )
        elif kind == "keep":
            out.append(C.LockSessionKeepAlive(sid, **meta))
        elif kind == "close":
            out.append(C.LockSessionClose(sid, **meta))
        elif kind == "acquire":
            out.append(C.LockAcquire(name, sid, **meta))
        elif kind == "release":
            out.append(C.LockRelease(name, sid, **meta))
        else:
            tick_n += 1
            out.append(C.Tick(tick_n, draw(st.integers(0, 2_000))))
    return out


class Model:
    """The deliberately simple version: lists, full scans, no caches."""

    def __init__(self) -> None:
        self.sessions: dict[int, list[int]] = {}  # id -> [ttl, expires]
        self.locks: dict[str, list] = {}  # name -> [holder, token, waiters]
        self.next_id = 1
        self.now = 0

    def leave(self, name: str, sid: int, index: int) -> None:
        holder, _token, waiters = self.locks[name]
        if holder != sid:
            waiters.remove(sid)
        elif waiters:
            self.locks[name] = [waiters.pop(0), index, waiters]
        else:
            del self.locks[name]

    def drop(self, sid: int, index: int) -> None:
        del self.sessions[sid]
        for name in sorted(self.locks):
            if name in self.locks and (self.locks[name][0] == sid or sid in self.locks[name][2]):
                self.leave(name, sid, index)

    def apply(self, cmd: C.Command, index: int) -> None:
        if isinstance(cmd, C.Tick):
            self.now += cmd.elapsed_ms
            for exp, sid in sorted((e, s) for s, (_t, e) in self.sessions.items()):
                if exp <= self.now:
                    self.drop(sid, index)
        elif isinstance(cmd, C.LockSessionGrant):
            if cmd.ttl_ms < 1_000 or (cmd.session_id and cmd.session_id in self.sessions):
                return
            sid = cmd.session_id
            if not sid:
                while self.next_id in self.sessions:
                    self.next_id += 1
                sid, self.next_id = self.next_id, self.next_id + 1
            self.sessions[sid] = [cmd.ttl_ms, self.now + cmd.ttl_ms]
        elif cmd.session_id not in self.sessions:
            return
        elif isinstance(cmd, C.LockSessionKeepAlive):
            self.sessions[cmd.session_id][1] = self.now + self.sessions[cmd.session_id][0]
        elif isinstance(cmd, C.LockSessionClose):
            self.drop(cmd.session_id, index)
        elif isinstance(cmd, C.LockAcquire):
            lock = self.locks.get(cmd.name)
            if lock is None:
                self.locks[cmd.name] = [cmd.session_id, index, []]
            elif lock[0] != cmd.session_id and cmd.session_id not in lock[2]:
                lock[2].append(cmd.session_id)
        elif isinstance(cmd, C.LockRelease):
            lock = self.locks.get(cmd.name)
            if lock is not None and (lock[0] == cmd.session_id or cmd.session_id in lock[2]):
                self.leave(cmd.name, cmd.session_id, index)


def _entry(cmd: C.Command) -> bytes:
    return C.encode_internal(cmd) if cmd.TAG in C.INTERNAL_TAGS else C.encode(cmd)


def _run(log: list[C.Command], sm: StateMachine, start: int = 0) -> list[list[object]]:
    return [sm.apply(_entry(cmd), start + i + 1).to_plain() for i, cmd in enumerate(log)]


@given(log=lock_logs())
def test_machine_matches_the_simple_model_and_tokens_only_grow(log: list[C.Command]) -> None:
    sm, model = StateMachine(), Model()
    seen_tokens: dict[str, int] = {}
    last_grant = 0
    for i, cmd in enumerate(log, start=1):
        first_time = not (
            getattr(cmd, "client_id", "") and _entry(cmd) in [_entry(c) for c in log[: i - 1]]
        )
        sm.apply(_entry(cmd), i)
        if first_time:
            model.apply(cmd, i)
        actual = {
            name: [lock.holder, lock.token, list(lock.waiters)]
            for name, lock in sm.locks.locks.items()
        }
        assert actual == model.locks
        assert {
            sid: [s.ttl_ms, s.expires_ms] for sid, s in sm.locks.sessions.items()
        } == model.sessions
        for name, (holder, token, waiters) in actual.items():
            assert holder in sm.locks.sessions and holder not in waiters
            assert len(set(waiters)) == len(waiters)
            assert token >= seen_tokens.get(name, 0)  # fencing: never goes back
            if token > seen_tokens.get(name, 0):
                assert token == i >= last_grant  # a grant's token is its index (one entry
                # may grant several locks, e.g. a tick expiring a session that held two)
                last_grant = token
            seen_tokens[name] = token


@given(log=lock_logs(), data=st.data())
def test_replicas_agree_and_snapshot_then_rest_equals_whole(
    log: list[C.Command], data: st.DataObject
) -> None:
    k = data.draw(st.integers(0, len(log)))
    whole, other = StateMachine(), StateMachine()
    results = _run(log, whole)
    assert _run(log, other) == results and other.snapshot() == whole.snapshot()
    prefix = StateMachine()
    _run(log[:k], prefix)
    restored = StateMachine.from_snapshot(prefix.snapshot())
    assert _run(log[k:], restored, start=k) == results[k:]
    assert restored.state_hash() == whole.state_hash()


@given(log=lock_logs(max_len=40))
def test_duplicated_lock_commands_apply_once(log: list[C.Command]) -> None:
    client = [c for c in log if getattr(c, "client_id", "") or isinstance(c, C.Tick)]
    once, twice = StateMachine(), StateMachine()
    results = _run(client, once)
    doubled: list[C.Command] = []
    for c in client:
        doubled.extend([c, c] if not isinstance(c, C.Tick) else [c])
    got = _run(doubled, twice)
    picked, j = [], 0
    for c in client:
        picked.append(got[j])
        j += 1 if isinstance(c, C.Tick) else 2
    # Tokens are log indexes, which differ between the two logs; compare everything else.
    assert [r[0] for r in picked] == [r[0] for r in results]
    assert sorted(twice.locks.sessions) == sorted(once.locks.sessions)
    assert {n: [lk.holder, list(lk.waiters)] for n, lk in twice.locks.locks.items()} == {
        n: [lk.holder, list(lk.waiters)] for n, lk in once.locks.locks.items()
    }


def _ride_parts(ride: C.LockReleaseAcquire) -> tuple[C.LockRelease, C.LockAcquire]:
    cid, sid = ride.client_id, ride.session_id
    return (
        C.LockRelease(ride.release, sid, cid, ride.release_seq if cid else 0),
        C.LockAcquire(ride.name, sid, cid, ride.seq if cid else 0),
    )


@st.composite
def ride_logs(draw: st.DrawFn) -> list[C.Command]:
    """Lock logs with release-then-acquire cycles in one entry: without a session, with two
    seqs, retried, and with the release already applied on its own (a request that failed
    after its release was committed, then retried whole)."""
    out: list[C.Command] = []
    rides: list[C.LockReleaseAcquire] = []
    seq = 10_000  # above lock_logs' own seqs of the same client
    for cmd in draw(lock_logs(max_len=40)):
        out.append(cmd)
        mode = draw(st.sampled_from(["", "", "none", "two", "two", "retry", "split"]))
        if not mode or (mode == "retry" and not rides):
            continue
        if mode == "retry":
            out.append(draw(st.sampled_from(rides)))
            continue
        sid = draw(st.integers(1, 4))
        release, name = draw(st.sampled_from(NAMES)), draw(st.sampled_from(NAMES))
        if mode == "none":
            ride = C.LockReleaseAcquire(release, name, sid, "", 0, 0)
        else:
            seq += 2
            ride = C.LockReleaseAcquire(release, name, sid, "c1", seq, seq - 1)
        if mode == "split":
            out.append(_ride_parts(ride)[0])
        rides.append(ride)
        out.append(ride)
    return out


@given(log=ride_logs())
def test_a_release_acquire_entry_applies_as_the_release_then_the_acquire(
    log: list[C.Command],
) -> None:
    """The composite at index i equals its LockRelease then its LockAcquire, each applied at
    index i: same answer as the acquire's, same state (locks, tokens, sessions' seqs)."""
    ours, ref = StateMachine(), StateMachine()
    for i, cmd in enumerate(log, start=1):
        got = ours.apply(_entry(cmd), i).to_plain()
        if isinstance(cmd, C.LockReleaseAcquire):
            release, acquire = _ride_parts(cmd)
            ref.apply(_entry(release), i)
            want = ref._apply_one(_entry(acquire), i, False, None).to_plain()
        else:
            want = ref.apply(_entry(cmd), i).to_plain()
        assert got == want
        assert ours.state_hash() == ref.state_hash()


def test_a_release_acquire_with_one_seq_applies_once_and_keeps_fencing() -> None:
    sm = StateMachine()
    for i, cmd in enumerate(
        [C.LockSessionGrant(5_000, 1), C.LockSessionGrant(5_000, 2), C.LockAcquire("a", 1)],
        start=1,
    ):
        sm.apply(_entry(cmd), i)
    sm.apply(_entry(C.LockAcquire("a", 2)), 4)  # 2 waits for a
    ride = C.LockReleaseAcquire("a", "b", 1, "c9", 7, 0)
    first = sm.apply(_entry(ride), 5)
    assert first.ok and first.value == {"held": True, "token": 5, "position": 0}
    assert sm.locks.describe("a")["holder"] == 2 and sm.locks.locks["a"].token == 5
    sm.apply(_entry(C.LockRelease("b", 1)), 6)
    again = sm.apply(_entry(ride), 7)  # a retry: answered from the session, nothing re-run
    assert again.to_plain() == first.to_plain() and "b" not in sm.locks.locks
    assert sm.locks.describe("a")["holder"] == 2
    clash = sm.apply(_entry(C.LockReleaseAcquire("a", "b", 1, "c9", 8, 8)), 8)
    assert not clash.ok and clash.code == "seq_conflict" and "b" not in sm.locks.locks


def test_the_release_acquire_command_round_trips_with_its_tag() -> None:
    ride = C.LockReleaseAcquire("a", "b", 3, "c", 9, 8)
    data = C.encode(ride)
    assert C.decode(data) == ride and C.LockReleaseAcquire.TAG == 75
    assert C.check_proposable(data) == ride
