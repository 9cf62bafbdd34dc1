"""The built-in lock machine: named locks with a FIFO fair queue, held by sessions with a TTL.

A **session** is a client's liveness in tick time (as a ZooKeeper session or an etcd lease): it
has a TTL, a keep-alive pushes its deadline to ``tick_ms + ttl_ms``, and a committed `Tick`
whose time reaches the deadline expires it. A session **holds** or **waits for** locks. A lock
has at most one holder and a FIFO queue of waiting sessions; when the holder releases, closes
its session or expires, the first waiter is granted the lock *at that log index*, and that
index is the grant's **fencing token**: tokens only grow (log indexes do), so a resource that
keeps the highest token it has seen refuses a holder whose lease lapsed (Kleppmann's fencing).

Acquire is idempotent per (session, lock): a session that already holds the lock gets its token
back, one already queued gets its position; duplicates of a client command are filtered earlier
by the state machine's ``(client_id, seq)`` sessions. A session id may be chosen by the client
(a random 63-bit number keeps it unguessable to other clients of the API) or, with 0, by the
machine (sequential).

Pure and deterministic: no clock (time is the committed tick time passed in), integers only,
every map bounded (`LockLimits`), explicit iteration order (expiry by ``(deadline, id)``,
snapshots sorted). Imports only `coreplane.core.codec` and `coreplane.errors`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from coreplane.core.codec import Value
from coreplane.errors import CommandRejected, DecodeError

__all__ = ["LockLimits", "LockMachine", "LockSession", "LockState"]

_U63 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class LockLimits:
    """Bounds on the lock machine; at a bound apply refuses with a stable code."""

    name_bytes_max: int = 512
    locks_max: int = 100_000  # locks with a holder or waiters
    sessions_max: int = 100_000
    waiters_per_lock_max: int = 10_000
    locks_per_session_max: int = 1_000  # held + waited for
    ttl_ms_min: int = 1_000  # a few ticks (200 ms each by default): shorter would flap
    ttl_ms_max: int = 24 * 3600 * 1000


@dataclass(slots=True)
class LockSession:
    ttl_ms: int
    expires_ms: int
    names: set[str] = field(default_factory=set)  # locks held or waited for (derived state)


@dataclass(slots=True)
class LockState:
    holder: int  # session id; 0 = free (only transiently: a free lock without waiters is dropped)
    token: int  # log index of the holder's grant
    waiters: deque[int] = field(default_factory=deque)


class LockMachine:
    """Lock sessions and locks; mutated only through the apply methods below."""

    def __init__(self, limits: LockLimits | None = None) -> None:
        self.limits = limits or LockLimits()
        self.sessions: dict[int, LockSession] = {}
        self.locks: dict[str, LockState] = {}
        self.next_session_id = 1
        self._next_expiry_ms: int | None = None  # cached min deadline; None = recompute

    # ------------------------------------------------------------------------- reads

    def describe(self, name: str, session_id: int = 0) -> dict[str, Value]:
        """A lock as plain data: holder, token, waiters, and `session_id`'s place in it."""
        lock = self.locks.get(name)
        if lock is None:
            return {
                "name": name,
                "holder": 0,
                "token": 0,
                "waiters": 0,
                "held": False,
                "position": -1,
            }
        position = -1
        if session_id and session_id != lock.holder and session_id in lock.waiters:
            position = list(lock.waiters).index(session_id) + 1
        held = bool(session_id) and lock.holder == session_id
        return {
            "name": name,
            "holder": lock.holder,
            "token": lock.token,
            "waiters": len(lock.waiters),
            "held": held,
            "position": 0 if held else position,
        }

    def session(self, session_id: int) -> dict[str, Value] | None:
        s = self.sessions.get(session_id)
        if s is None:
            return None
        return {
            "session_id": session_id,
            "ttl_ms": s.ttl_ms,
            "expires_ms": s.expires_ms,
            "locks": sorted(s.names),
        }

    # ------------------------------------------------------------------------- sessions

    def session_grant(self, ttl_ms: int, session_id: int, now_ms: int) -> int:
        limits = self.limits
        if not limits.ttl_ms_min <= ttl_ms <= limits.ttl_ms_max:
            raise CommandRejected(
                "ttl_out_of_range", f"ttl_ms must be in [{limits.ttl_ms_min}, {limits.ttl_ms_max}]"
            )
        if len(self.sessions) >= limits.sessions_max:
            raise CommandRejected("too_many_sessions", f"at the bound of {limits.sessions_max}")
        if session_id == 0:
            while self.next_session_id in self.sessions:
                self.next_session_id += 1
            session_id = self.next_session_id
            self.next_session_id += 1
        elif session_id in self.sessions:
            raise CommandRejected("session_exists", f"lock session {session_id} already exists")
        expires_ms = now_ms + ttl_ms
        self.sessions[session_id] = LockSession(ttl_ms, expires_ms)
        if self._next_expiry_ms is not None:
            self._next_expiry_ms = min(self._next_expiry_ms, expires_ms)
        return session_id

    def session_keep_alive(self, session_id: int, now_ms: int) -> int:
        s = self._session(session_id)
        if s.expires_ms == self._next_expiry_ms:
            self._next_expiry_ms = None
        s.expires_ms = now_ms + s.ttl_ms
        return s.expires_ms

    def session_close(self, session_id: int, index: int) -> int:
        """End a session: release what it holds (waiters granted at `index`), leave queues."""
        s = self._session(session_id)
        self._drop_session(session_id, s, index)
        return len(s.names)

    def _session(self, session_id: int) -> LockSession:
        s = self.sessions.get(session_id)
        if s is None:
            raise CommandRejected("session_not_found", f"lock session {session_id} does not exist")
        return s

    def _drop_session(self, session_id: int, s: LockSession, index: int) -> None:
        del self.sessions[session_id]
        if s.expires_ms == self._next_expiry_ms:
            self._next_expiry_ms = None
        for name in sorted(s.names):
            self._leave(name, session_id, index)

    # ------------------------------------------------------------------------- locks

    def acquire(self, name: str, session_id: int, index: int) -> dict[str, Value]:
        """Take `name` for the session, or queue it; {held, token, position}."""
        self._check_name(name)
        s = self._session(session_id)
        lock = self.locks.get(name)
        if lock is not None:
            if lock.holder == session_id:
                return {"held": True, "token": lock.token, "position": 0}
            if session_id in lock.waiters:
                position = list(lock.waiters).index(session_id) + 1
                return {"held": False, "token": 0, "position": position}
        if len(s.names) >= self.limits.locks_per_session_max:
            raise CommandRejected(
                "session_full", f"session {session_id} holds or waits for too many locks"
            )
        if lock is None:
            if len(self.locks) >= self.limits.locks_max:
                raise CommandRejected("too_many_locks", f"at the bound of {self.limits.locks_max}")
            self.locks[name] = LockState(session_id, index)
            s.names.add(name)
            return {"held": True, "token": index, "position": 0}
        if len(lock.waiters) >= self.limits.waiters_per_lock_max:
            raise CommandRejected("queue_full", f"lock {name!r} has too many waiters")
        lock.waiters.append(session_id)
        s.names.add(name)
        return {"held": False, "token": 0, "position": len(lock.waiters)}

    def release(self, name: str, session_id: int, index: int) -> dict[str, Value]:
        """Release (holder) or leave the queue (waiter); {released, granted: next holder}."""
        self._check_name(name)
        s = self._session(session_id)
        if name not in s.names:
            return {"released": False, "granted": 0}
        granted = self._leave(name, session_id, index)
        return {"released": True, "granted": granted}

    def _leave(self, name: str, session_id: int, index: int) -> int:
        """Remove the session from `name` (holder or waiter); the new holder's id, else 0."""
        lock = self.locks[name]
        s = self.sessions.get(session_id)
        if s is not None:
            s.names.discard(name)
        if lock.holder != session_id:
            lock.waiters.remove(session_id)
            return 0
        if not lock.waiters:
            del self.locks[name]
            return 0
        # FIFO: the first waiter is granted at this index, whatever made the lock free.
        lock.holder = lock.waiters.popleft()
        lock.token = index
        return lock.holder

    def _check_name(self, name: str) -> None:
        if not name:
            raise CommandRejected("name_empty", "lock name must not be empty")
        if len(name.encode("utf-8", "surrogatepass")) > self.limits.name_bytes_max:
            raise CommandRejected(
                "name_too_large", f"lock name over {self.limits.name_bytes_max} bytes"
            )

    # ------------------------------------------------------------------------- ticks

    def expire(self, now_ms: int, index: int) -> list[int]:
        """Expire every session whose deadline `now_ms` reached, in (deadline, id) order;
        their locks go to the next waiters with `index` (the tick's) as the token."""
        if self._next_expiry_ms is None:
            self._next_expiry_ms = min(
                (s.expires_ms for s in self.sessions.values()), default=_U63
            )  # no session: nothing can fall due
        if now_ms < self._next_expiry_ms:
            return []
        due = sorted(
            (s.expires_ms, sid) for sid, s in self.sessions.items() if s.expires_ms <= now_ms
        )
        for _, sid in due:
            self._drop_session(sid, self.sessions[sid], index)
        self._next_expiry_ms = None
        return [sid for _, sid in due]

    # ------------------------------------------------------------------------- snapshot

    def capture(self) -> Callable[[], dict[str, Value]]:
        """A consistent copy taken on the apply thread; the thunk builds the plain form."""
        sessions = sorted([sid, s.ttl_ms, s.expires_ms] for sid, s in self.sessions.items())
        locks = sorted(
            [name, lock.holder, lock.token, list(lock.waiters)] for name, lock in self.locks.items()
        )
        next_session_id = self.next_session_id

        def build() -> dict[str, Value]:
            return {"next_session_id": next_session_id, "sessions": sessions, "locks": locks}

        return build

    def to_plain(self) -> dict[str, Value]:
        return self.capture()()

    @classmethod
    def from_plain(cls, plain: Value, limits: LockLimits | None = None) -> LockMachine:
        machine = cls(limits)
        if plain is None:  # a snapshot written before locks existed
            return machine
        try:
            machine.next_session_id = _int(plain["next_session_id"])
            for sid, ttl_ms, expires_ms in plain["sessions"]:
                machine.sessions[_int(sid)] = LockSession(_int(ttl_ms), _int(expires_ms))
            for name, holder, token, waiters in plain["locks"]:
                if type(name) is not str or type(waiters) is not list:
                    raise DecodeError("snapshot locks: name must be str, waiters a list")
                members = [_int(holder), *(_int(w) for w in waiters)]
                for sid in members:
                    if sid not in machine.sessions:
                        raise DecodeError(f"snapshot locks: {name!r} names missing session {sid}")
                    machine.sessions[sid].names.add(name)
                machine.locks[name] = LockState(members[0], _int(token), deque(members[1:]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"snapshot locks section is malformed: {exc!r}") from exc
        return machine


def _int(value: Value) -> int:
    if type(value) is not int or not 0 <= value <= _U63:
        raise DecodeError(f"snapshot locks: expected a non-negative int, got {value!r}")
    return value
