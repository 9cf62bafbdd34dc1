"""`Lock` and `AsyncLock`: a fenced, FIFO-fair lock in replicated state, kept alive for you.

``with client.lock("name", ttl_ms=10_000) as lock:`` asks for the lock (queued FIFO behind
earlier waiters) and gives you `lock.token`, the log index of the grant: send it with every
write to the guarded resource, which keeps the highest token it has seen and refuses lower ones
(`FencedResource`).

Liveness is a **lock session** (as etcd's ``concurrency.Session`` or a ZooKeeper session): a
client opens one session per TTL on first use, keeps it alive in the background (every TTL/3)
and reuses it for all its locks of that TTL, so a lock cycle costs two proposals (acquire,
release), or one when the release rides on the next acquire (below). A session the cluster
expired is replaced on the next `lock()`.

When can a lock be lost? If no keep-alive sent at time t is acknowledged, the cluster may
expire the session at t + TTL of its own (tick) time, and then grant the lock to the next
waiter. So a session counts as **lost** locally as soon as ``now > last acknowledged send +
0.9 TTL`` (cluster time advances by the leader's monotonic steps, never faster than ours; the
margin absorbs scheduling), or a keep-alive hears that it is gone. A process paused for longer
than the TTL (GC, SIGSTOP, a VM migration) therefore wakes up to a lost lock: `lock.lost` is
True, `on_lost(lock)` is called once, and the next guarded call (`lock.check()`, or a client
write with ``guard=lock``) raises `LockLost`. The token still matters after that: a write
already in flight when the pause began reaches the resource with the old token and is refused
there, which no local check can do (tests/integration/test_lock_safety.py shows both).

**Release is deferred** by `lock_release_linger_ms` (`ClientConfig`; 5 ms by default, 0 in
the serverless profile, where a frozen process must not sit on one): leaving the ``with``
block ends the lock *here* at once (`check()` raises, ``guard=lock`` writes are refused), and
the release reaches the cluster with this session's next acquire (one request and one log
entry, `LockReleaseAcquire`: the release, then the acquire; `coreplane/api/routes.py`), or
on its own once the linger is over, whichever comes first. A lock taken and given back in a
loop then costs one round trip and one entry per cycle instead of two; a waiter elsewhere
gets the lock at most the linger later. Safety does
not depend on it (the cluster hands the lock on only after the release is applied, and the
holder stopped using it before). Closing the client or the session releases everything at
once; a process that exits without closing flushes what is pending at exit.

Sync and async share every decision: each operation (open a session, one keep-alive round,
close, acquire, release) is a generator of steps without I/O (``("call", (path, body))``,
``("session", ttl_ms)``, ``("sleep", seconds)``) that `_run_sync` or `_run_async` carries out
with the client's own I/O, throwing a `CoreplaneError` back in where the call failed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from coreplane.errors import CommandRejected, CoreplaneError, InvalidArgument, LockLost, Unavailable

__all__ = ["AsyncLock", "Lock"]

_SAFETY = 0.9  # of the TTL: the part of a lease a holder may count on after its last ack

Steps = Generator[tuple[str, Any], Any, Any]


def _new_session_id() -> int:
    # Client-chosen and random: another API client cannot guess it to release our locks.
    return int.from_bytes(os.urandom(8), "big") % (2**63 - 1) + 1


def _run_sync(client: Any, steps: Steps) -> Any:
    """Carry out `steps` with the sync client; the generator's return value."""
    reply: Any = None
    error: CoreplaneError | None = None
    while True:
        try:
            kind, arg = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value
        reply, error = None, None
        try:
            if kind == "call":
                reply = client._call(*arg)
            elif kind == "session":
                reply = client._lock_session(arg)
            else:
                time.sleep(arg)
        except CoreplaneError as exc:
            error = exc


async def _run_async(client: Any, steps: Steps) -> Any:
    """The same with the async client."""
    reply: Any = None
    error: CoreplaneError | None = None
    while True:
        try:
            kind, arg = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value
        reply, error = None, None
        try:
            if kind == "call":
                reply = await client._call(*arg)
            elif kind == "session":
                reply = await client._lock_session(arg)
            else:
                await asyncio.sleep(arg)
        except CoreplaneError as exc:
            error = exc


class _SessionState:
    """What sync and async sessions share: the deadline, the lost flag, the locks to tell,
    and the steps of opening, keeping alive and closing."""

    def __init__(self, client: Any, ttl_ms: int) -> None:
        self.client = client
        self.ttl_ms = ttl_ms
        self.session_id = _new_session_id()
        self.deadline = 0.0
        self.reason = ""
        self._lost = False
        self._mu = threading.Lock()
        self.locks: set[_LockBase] = set()
        # Deferred releases, by lock name: their bodies (each with its own seq), and when
        # the oldest must go out on its own.
        self._deferred: dict[str, dict[str, Any]] = {}
        self._flush_due: float | None = None
        self._closing = False

    # -- deferred releases ---------------------------------------------------------------

    def defer(self, body: dict[str, Any]) -> bool:
        """Hold a release for the next acquire (or the linger's end); False: send it now."""
        linger_ms = self.client.config.lock_release_linger_ms
        if linger_ms <= 0:
            return False
        with self._mu:
            if self._lost or self._closing:
                return False
            self._deferred[body["name"]] = body
            first = self._flush_due is None
            if first:
                self._flush_due = time.monotonic() + linger_ms / 1000
        if first:
            self._arm(linger_ms / 1000)
        return True

    def restore(self, body: dict[str, Any]) -> None:
        """Put back a release an acquire carried but may not have delivered (same seq)."""
        with self._mu:
            if self._lost or self._closing or body["name"] in self._deferred:
                return
            self._deferred[body["name"]] = body
            if self._flush_due is not None:
                return
            linger_s = max(self.client.config.lock_release_linger_ms, 1) / 1000
            self._flush_due = time.monotonic() + linger_s
        self._arm(linger_s)

    def take_deferred(self, name: str) -> dict[str, Any] | None:
        """A deferred release to carry on an acquire: `name`'s if pending, else the oldest.

        Taken even while a flush is sending it: both send the same body (the same seq), so
        the cluster applies it once, and always before this acquire. That is what makes a
        re-acquire of the same name safe: a release of it still pending could otherwise
        land after the new grant and end it."""
        with self._mu:
            if not self._deferred:
                return None
            body = self._deferred.pop(name, None)
            if body is None:
                body = self._deferred.pop(next(iter(self._deferred)))
            if not self._deferred:
                self._flush_due = None
            return body

    def _arm(self, delay_s: float) -> None:
        """Make sure the deferred releases go out within `delay_s` (the subclass's timer)."""

    def _flush_steps(self) -> Steps:
        """Send every deferred release on its own. Each stays pending until it is answered
        (an acquire may still carry it, see `take_deferred`); one the cluster could not take
        (no quorum) stays for the next flush, so a lock is never left held by a live
        session; one whose seq fell out of the cluster's session window is sent again with
        a new seq (unless an acquire took it meanwhile: then that acquire settled it)."""
        with self._mu:
            pending = list(self._deferred.items())
            self._flush_due = None
        retry = False
        for name, body in pending:
            try:
                yield "call", ("/v1/locks/release", body)
                outcome = "done"
            except CommandRejected as exc:
                outcome = "stale" if exc.code == "seq_expired" else "done"
            except CoreplaneError:
                outcome = "again"
            with self._mu:
                if self._deferred.get(name) is not body:
                    continue  # an acquire carried it (or the session closed)
                if outcome == "done":
                    del self._deferred[name]
                    continue
                if outcome == "stale":
                    fresh = self.client._write({"name": name, "session_id": self.session_id})
                    self._deferred[name] = fresh
                retry = True
        if retry:
            linger_s = max(self.client.config.lock_release_linger_ms, 1) / 1000
            with self._mu:
                if self._flush_due is None and self._deferred:
                    self._flush_due = time.monotonic() + linger_s
            self._arm(linger_s)

    def acked(self, sent: float) -> None:
        self.deadline = max(self.deadline, sent + self.ttl_ms / 1000 * _SAFETY)

    @property
    def lost(self) -> bool:
        if not self._lost and self.deadline and time.monotonic() > self.deadline:
            self.mark_lost(f"no keep-alive acknowledged within the TTL of {self.ttl_ms} ms")
        return self._lost

    def mark_lost(self, reason: str) -> None:
        with self._mu:
            if self._lost:
                return
            self._lost, self.reason = True, reason
            locks = list(self.locks)
        for lock in locks:
            lock._session_lost(reason)

    def _open_steps(self) -> Steps:
        sent = time.monotonic()
        body = {"ttl_ms": self.ttl_ms, "session_id": self.session_id}
        yield "call", ("/v1/locks/session", self.client._write(body))
        self.acked(sent)

    def _keep_alive_steps(self) -> Steps:
        """One keep-alive round; returns False when the session is over."""
        if self.lost:
            return False
        sent = time.monotonic()
        body = self.client._write({"session_id": self.session_id})
        try:
            yield "call", ("/v1/locks/keepalive", body)
        except CommandRejected as exc:
            self.mark_lost(f"keep-alive refused: {exc.code}")
            return False
        except CoreplaneError:
            return True  # tried again next round; lost once the deadline passes
        self.acked(sent)
        return True

    def _close_steps(self) -> Steps:
        with self._mu:
            self._closing = True
            self._deferred.clear()  # the session's close releases every lock it has
            self._flush_due = None
        if not self._lost:
            body = self.client._write({"session_id": self.session_id})
            with contextlib.suppress(CoreplaneError):
                yield "call", ("/v1/locks/close", body)
        self._lost, self.reason = True, "session closed"


class _LingerClock:
    """When the sync sessions' deferred releases go out on their own: one daemon thread per
    process that wakes a session's own thread only when one of its releases is due.

    Why not each session's thread on its own timer (as before): a deferral then woke that
    thread twice (told of the new deadline, then at it), and in a loop of lock cycles the
    next acquire carries the release long before the linger is over, so both wakes were for
    nothing: two context switches and GIL hand-offs per cycle. On the 2-core bench machine
    that was the largest share of the SDK's own CPU per lock cycle: a process of 16 threads
    (one client each, lock cycles in a loop against one API server) spent 197-272 us of CPU
    per cycle before, 117-152 us with this clock (paired, interleaved runs on a loaded machine).

    The rule (`plan`): a release is due at its deadline (the deferral's time plus the linger,
    the session's `_flush_due`) and goes out at the first wake at or after it, never sooner
    (so an acquire soon after still carries it). The clock always plans a wake at or before
    every pending deadline, and a deferral whose deadline is before the planned wake wakes
    the clock (`schedule`). While deferrals keep coming (at least one per nap of a linger:
    many lock cycles per second in this process) the clock naps instead of sleeping until
    told; a new deferral's deadline (a linger from now) is then never before the planned
    wake (at most a linger from the last one), so it never has to wake the clock: the
    process pays one wake per nap for all its sessions instead of two per lock cycle. With
    fewer deferrals it sleeps until told, as each session did.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._mu = threading.Lock()
        self._wake = threading.Condition(self._mu)
        self._pending: set[Any] = set()  # sessions that may hold a deferred release
        self._nap_s = 0.005
        self._deferrals = 0  # since the last wake: "hot" while at least one per nap
        self.planned = math.inf  # when the thread wakes next (inf: when told)
        self._thread: threading.Thread | None = None

    def _forked(self) -> None:
        """In a forked child: no clock thread (and no sessions' threads) any more."""
        self._mu = threading.Lock()
        self._wake = threading.Condition(self._mu)
        self._pending = set()
        self.planned, self._thread = math.inf, None

    def schedule(self, session: Any, due: float, nap_s: float) -> None:
        """`session` has a release that must go out by `due` (monotonic seconds)."""
        with self._mu:
            self._pending.add(session)
            self._deferrals += 1
            self._nap_s = max(nap_s, 0.001)
            if due >= self.planned:
                return  # the clock wakes in time: nothing to tell it
            self.planned = due
            self._kick()

    def _kick(self) -> None:
        """Wake the clock's thread to plan again (start it the first time); under the lock."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, daemon=True, name="coreplane-lock-linger"
            )
            self._thread.start()
        else:
            self._wake.notify()

    def plan(self, now: float) -> tuple[list[Any], float]:
        """At a wake at `now` (under the lock): the sessions whose releases are due (to be
        told, and forgotten here), and when to wake next."""
        due: list[Any] = []
        next_due = math.inf
        for session in list(self._pending):
            when = session._linger_due()
            if when is None:
                self._pending.discard(session)  # carried by an acquire, or closed
            elif when <= now:
                self._pending.discard(session)
                due.append(session)
            else:
                next_due = min(next_due, when)
        hot, self._deferrals = self._deferrals > 0, 0
        return due, min(next_due, now + self._nap_s) if hot else next_due

    def _run(self) -> None:
        while True:
            with self._mu:
                now = self._clock()
                while now < self.planned:
                    wait = self.planned - now
                    self._wake.wait(None if wait == math.inf else wait)
                    now = self._clock()
                due, self.planned = self.plan(now)
            for session in due:
                session._flush_requested()


_LINGER = _LingerClock()
os.register_at_fork(after_in_child=_LINGER._forked)


class LockSession(_SessionState):
    """A sync client's lock session of one TTL, kept alive by a daemon thread."""

    def __init__(self, client: Any, ttl_ms: int) -> None:
        super().__init__(client, ttl_ms)
        self._wake = threading.Condition(self._mu)
        self._stopping = False
        self._at_exit = False
        self._flush_asked = False
        self._thread: threading.Thread | None = None

    def open(self) -> LockSession:
        _run_sync(self.client, self._open_steps())
        self._thread = threading.Thread(
            target=self._keep_alive, daemon=True, name=f"coreplane-lock-session-{self.ttl_ms}"
        )
        self._thread.start()
        return self

    def _arm(self, delay_s: float) -> None:
        due = self._flush_due  # one read: the oldest pending release's deadline
        if due is not None:
            nap_s = self.client.config.lock_release_linger_ms / 1000
            _LINGER.schedule(self, due, nap_s)  # it wakes our thread when the release is due
        if not self._at_exit:
            with self._mu:
                register, self._at_exit = not self._at_exit, True
            if register:
                atexit.register(self.flush)

    def _linger_due(self) -> float | None:
        """When the oldest deferred release must go out (None: none pending); `_LingerClock`."""
        return self._flush_due

    def _flush_requested(self) -> None:
        """`_LingerClock`: the deferred releases are due; the thread below sends them."""
        with self._mu:
            self._flush_asked = True
            self._wake.notify()

    def flush(self) -> None:
        """Send the deferred releases now."""
        _run_sync(self.client, self._flush_steps())

    def _keep_alive(self) -> None:
        """Keep-alives every TTL/3, and the deferred releases when `_LINGER` says so."""
        period_s = self.ttl_ms / 3000
        next_keep_alive = time.monotonic() + period_s
        while True:
            with self._mu:
                while True:
                    if self._stopping:
                        return
                    flush, self._flush_asked = self._flush_asked, False
                    now = time.monotonic()
                    if flush or now >= next_keep_alive:
                        break
                    self._wake.wait(next_keep_alive - now)
            if flush:
                self.flush()
            elif _run_sync(self.client, self._keep_alive_steps()):
                next_keep_alive = time.monotonic() + period_s
            else:
                return

    def stop_keep_alive(self) -> None:
        """Stop the background thread (keep-alives, deferred releases); `close` does it too."""
        with self._mu:
            self._stopping = True
            self._wake.notify()

    def close(self) -> None:
        self.stop_keep_alive()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.ttl_ms / 1000)
        if self._at_exit:
            atexit.unregister(self.flush)
        _run_sync(self.client, self._close_steps())


class AsyncLockSession(_SessionState):
    """An async client's lock session, kept alive by a task."""

    def __init__(self, client: Any, ttl_ms: int) -> None:
        super().__init__(client, ttl_ms)
        self._task: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[Any]] = set()

    def _arm(self, delay_s: float) -> None:
        asyncio.get_running_loop().call_later(delay_s, self._flush_if_due)

    def _flush_if_due(self) -> None:
        due = self._flush_due
        if due is None or self._closing:
            return
        if time.monotonic() < due:  # a newer batch: its own timer
            asyncio.get_running_loop().call_later(due - time.monotonic(), self._flush_if_due)
            return
        task = asyncio.get_running_loop().create_task(_run_async(self.client, self._flush_steps()))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def open(self) -> AsyncLockSession:
        await _run_async(self.client, self._open_steps())
        self._task = asyncio.get_running_loop().create_task(self._keep_alive())
        return self

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            if not await _run_async(self.client, self._keep_alive_steps()):
                return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await _run_async(self.client, self._close_steps())


class _LockBase:
    def __init__(
        self,
        client: Any,
        name: str,
        *,
        ttl_ms: int = 10_000,
        on_lost: Callable[[Any], None] | None = None,
        acquire_timeout_s: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgument("name", "must be a non-empty str")
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 1_000:
            raise InvalidArgument("ttl_ms", "must be an integer >= 1000 (ticks are 200 ms)")
        if on_lost is not None and not callable(on_lost):
            raise InvalidArgument("on_lost", "must be callable")
        self.client, self.name, self.ttl_ms = client, name, ttl_ms
        self.on_lost = on_lost
        self.acquire_timeout_s = acquire_timeout_s
        self.token: int | None = None
        self._session: _SessionState | None = None
        self._lost_reason = ""
        self._lost_flag = False
        self._released = False
        self._flag_lock = threading.Lock()

    @property
    def session_id(self) -> int:
        return self._session.session_id if self._session is not None else 0

    def _session_lost(self, reason: str) -> None:
        if self._released:
            return
        with self._flag_lock:
            if self._lost_flag:
                return
            self._lost_flag, self._lost_reason = True, reason
        if self.on_lost is not None:
            with contextlib.suppress(Exception):
                self.on_lost(self)

    @property
    def lost(self) -> bool:
        """True once the lock may have passed to someone else (see the module docstring)."""
        if not self._lost_flag and not self._released and self._session is not None:
            _ = self._session.lost  # checks the deadline; tells this lock if it passed
        return self._lost_flag

    def check(self) -> int:
        """The token if the lock is still held; raises `LockLost` otherwise."""
        if self.token is None or self._released:
            raise LockLost(self.name, "released" if self._released else "not acquired")
        if self.lost:
            raise LockLost(self.name, self._lost_reason)
        return self.token

    def _granted(self, answer: dict[str, Any]) -> bool:
        if answer.get("held"):
            self.token = int(answer["token"])
            return True
        if "session" in answer and answer["session"] is None and self._session is not None:
            self._session.mark_lost("the lock session expired while waiting")
        if self.lost:
            raise LockLost(self.name, self._lost_reason)
        return False

    def _forget(self, session: _SessionState) -> None:
        """Detach from a session the cluster no longer has, without losing this lock."""
        with session._mu:
            session.locks.discard(self)
        session.mark_lost("the cluster ended the session")

    def _acquire_steps(self) -> Steps:
        """Queue for the lock (FIFO) and wait until granted; LockLost or Unavailable (the
        acquire timeout) otherwise."""
        c = self.client
        for attempt in range(2):
            session = yield "session", self.ttl_ms
            self._session = session
            with session._mu:
                session.locks.add(self)
            body = c._write({"name": self.name, "session_id": session.session_id})
            carried = session.take_deferred(self.name)
            if carried is not None:  # a deferred release of this session rides along
                body["release"], body["release_seq"] = carried["name"], carried["seq"]
            try:
                answer = yield "call", ("/v1/locks/acquire", body)
                break
            except CommandRejected as exc:
                # The cluster ended the session before we noticed: open another, once.
                if exc.code != "session_not_found" or attempt:
                    raise
                self._forget(session)
            except CoreplaneError:
                if carried is not None:  # not known to be applied: it goes out again
                    session.restore(carried)
                raise
        started = time.monotonic()
        while not self._granted(answer):
            if (
                self.acquire_timeout_s is not None
                and time.monotonic() - started > self.acquire_timeout_s
            ):
                raise Unavailable(
                    f"lock {self.name!r} not granted within {self.acquire_timeout_s} s"
                )
            yield "sleep", c.config.lock_poll_ms / 1000
            describe = {"name": self.name, "session_id": session.session_id}
            answer = yield "call", ("/v1/locks/describe", describe)

    def _release_steps(self) -> Steps:
        """Release the lock (or leave its queue); the session stays for the next lock."""
        if self._released:
            return
        self._released = True
        session = self._session
        if session is None:
            return
        with session._mu:
            session.locks.discard(self)
        if not session.lost:
            body = self.client._write({"name": self.name, "session_id": session.session_id})
            if session.defer(body):
                return  # with the session's next acquire, or after the linger
            with contextlib.suppress(CoreplaneError):
                yield "call", ("/v1/locks/release", body)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, token={self.token}, lost={self._lost_flag})"
        )


class Lock(_LockBase):
    """A held-or-lost lock for the sync `Client`; see the module docstring."""

    def acquire(self) -> Lock:
        """Block until granted (FIFO); raises LockLost or Unavailable (acquire timeout)."""
        try:
            _run_sync(self.client, self._acquire_steps())
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        """Release the lock (or leave its queue); the session stays for the next lock."""
        _run_sync(self.client, self._release_steps())

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class AsyncLock(_LockBase):
    """The same for `AsyncClient`: ``async with client.lock("name") as lock:``."""

    async def acquire(self) -> AsyncLock:
        try:
            await _run_async(self.client, self._acquire_steps())
        except BaseException:
            await self.release()
            raise
        return self

    async def release(self) -> None:
        await _run_async(self.client, self._release_steps())

    async def __aenter__(self) -> AsyncLock:
        return await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
