"""`Lock` and `AsyncLock`: a fenced, FIFO-fair lock in replicated state, kept alive for you.

``with client.lock("name", ttl_ms=10_000) as lock:`` opens a lock session with that TTL (in
the cluster's tick time), asks for the lock (queued FIFO behind earlier waiters), keeps the
session alive in the background (every TTL/3) and gives you `lock.token`, the log index of the
grant: send it with every write to the guarded resource, which keeps the highest token it has
seen and refuses lower ones (`FencedResource`).

When can the lock be lost? If no keep-alive sent at time t is acknowledged, the cluster may
expire the session at t + TTL of its own (tick) time, and then grant the lock to the next
waiter. So the lock counts as **lost** locally as soon as ``now > last acknowledged send +
TTL - margin`` (margin = TTL/10: cluster time is stamped by the leader and should not run
faster than ours, the margin absorbs small clock steps), or a keep-alive hears that the session
is gone. A process paused for longer than the TTL (GC, SIGSTOP, a VM migration) therefore
wakes up to a lost lock: `lock.lost` is True, `on_lost(lock)` is called once, and the next
guarded call (`lock.check()`, or a client write with ``guard=lock``) raises `LockLost`. The
token still matters after that: a write already in flight when the pause began reaches the
resource with the old token and is refused there, which local checks alone cannot do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from coreplane.errors import CommandRejected, CoreplaneError, InvalidArgument, LockLost, Unavailable

__all__ = ["AsyncLock", "Lock"]


class _LockBase:
    def __init__(self, client: Any, name: str, *, ttl_ms: int,
                 on_lost: Callable[[Any], None] | None, acquire_timeout_s: float | None) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgument("name", "must be a non-empty str")
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 1_000:
            raise InvalidArgument("ttl_ms", "must be an integer >= 1000 (ticks are 200 ms)")
        if on_lost is not None and not callable(on_lost):
            raise InvalidArgument("on_lost", "must be callable")
        self.client, self.name, self.ttl_ms = client, name, ttl_ms
        self.on_lost = on_lost
        self.acquire_timeout_s = acquire_timeout_s
        self.session_id = 0
        self.token: int | None = None
        self._deadline = 0.0  # monotonic time after which the lock counts as lost
        self._lost_reason = ""
        self._lost_flag = False
        self._released = False
        self._flag_lock = threading.Lock()

    @property
    def _ttl_s(self) -> float:
        return self.ttl_ms / 1000

    def _acked(self, sent: float) -> None:
        self._deadline = max(self._deadline, sent + self._ttl_s * 0.9)

    def _mark_lost(self, reason: str) -> None:
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
        if not self._lost_flag and self.session_id and time.monotonic() > self._deadline:
            self._mark_lost(f"no keep-alive acknowledged within the TTL of {self.ttl_ms} ms")
        return self._lost_flag

    def check(self) -> int:
        """The token if the lock is still held; raises `LockLost` otherwise."""
        if self.token is None or self._released:
            raise LockLost(self.name, "released" if self._released else "not acquired")
        if self.lost:
            raise LockLost(self.name, self._lost_reason)
        return self.token

    def _new_session_id(self) -> int:
        return int.from_bytes(os.urandom(8), "big") % (2**63 - 1) + 1

    def _granted(self, answer: dict[str, Any]) -> bool:
        if answer.get("held"):
            self.token = int(answer["token"])
            return True
        if "session" in answer and answer["session"] is None:
            self._mark_lost("the lock session expired while waiting")
            raise LockLost(self.name, self._lost_reason)
        return False

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, token={self.token}, "
                f"lost={self._lost_flag})")


class Lock(_LockBase):
    """A held-or-lost lock for the sync `Client`; see the module docstring."""

    def __init__(self, client: Any, name: str, *, ttl_ms: int = 10_000,
                 on_lost: Callable[[Any], None] | None = None,
                 acquire_timeout_s: float | None = None) -> None:
        super().__init__(client, name, ttl_ms=ttl_ms, on_lost=on_lost,
                         acquire_timeout_s=acquire_timeout_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Lock:
        """Block until granted (FIFO); raises LockLost or Unavailable (acquire timeout)."""
        c = self.client
        self.session_id = self._new_session_id()
        sent = time.monotonic()
        c._call("/v1/locks/session", c._write({"ttl_ms": self.ttl_ms,
                                                "session_id": self.session_id}))
        self._acked(sent)
        self._thread = threading.Thread(target=self._keep_alive, daemon=True,
                                        name=f"coreplane-lock-{self.name[:32]}")
        self._thread.start()
        try:
            answer = c._call("/v1/locks/acquire", c._write({"name": self.name,
                                                            "session_id": self.session_id}))
            started = time.monotonic()
            while not self._granted(answer):
                if self.lost:
                    raise LockLost(self.name, self._lost_reason)
                if (self.acquire_timeout_s is not None
                        and time.monotonic() - started > self.acquire_timeout_s):
                    raise Unavailable(f"lock {self.name!r} not granted within "
                                      f"{self.acquire_timeout_s} s")
                time.sleep(c.config.lock_poll_ms / 1000)
                answer = c._call("/v1/locks/describe", {"name": self.name,
                                                        "session_id": self.session_id})
        except BaseException:
            self.release()
            raise
        return self

    def _keep_alive(self) -> None:
        c = self.client
        interval_s = self._ttl_s / 3
        while not self._stop.wait(interval_s):
            if self.lost:
                return
            sent = time.monotonic()
            try:
                c._call("/v1/locks/keepalive", c._write({"session_id": self.session_id}))
            except CommandRejected as exc:
                self._mark_lost(f"keep-alive refused: {exc.code}")
                return
            except CoreplaneError:
                continue  # retried next round; lost once the deadline passes
            self._acked(sent)

    def release(self) -> None:
        """Release the lock and close the session (best effort: it expires anyway)."""
        self._stop.set()
        self._released = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._ttl_s)
        if not self.session_id:
            return
        c = self.client
        with contextlib.suppress(CoreplaneError):
            c._call("/v1/locks/close", c._write({"session_id": self.session_id}))
        self.session_id = 0

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class AsyncLock(_LockBase):
    """The same for `AsyncClient`: ``async with client.lock("name") as lock:``."""

    def __init__(self, client: Any, name: str, *, ttl_ms: int = 10_000,
                 on_lost: Callable[[Any], None] | None = None,
                 acquire_timeout_s: float | None = None) -> None:
        super().__init__(client, name, ttl_ms=ttl_ms, on_lost=on_lost,
                         acquire_timeout_s=acquire_timeout_s)
        self._task: asyncio.Task[None] | None = None

    async def acquire(self) -> AsyncLock:
        c = self.client
        self.session_id = self._new_session_id()
        sent = time.monotonic()
        await c._call("/v1/locks/session", c._write({"ttl_ms": self.ttl_ms,
                                                      "session_id": self.session_id}))
        self._acked(sent)
        self._task = asyncio.get_running_loop().create_task(self._keep_alive())
        try:
            answer = await c._call("/v1/locks/acquire", c._write({
                "name": self.name, "session_id": self.session_id}))
            started = time.monotonic()
            while not self._granted(answer):
                if self.lost:
                    raise LockLost(self.name, self._lost_reason)
                if (self.acquire_timeout_s is not None
                        and time.monotonic() - started > self.acquire_timeout_s):
                    raise Unavailable(f"lock {self.name!r} not granted within "
                                      f"{self.acquire_timeout_s} s")
                await asyncio.sleep(c.config.lock_poll_ms / 1000)
                answer = await c._call("/v1/locks/describe", {"name": self.name,
                                                              "session_id": self.session_id})
        except BaseException:
            await self.release()
            raise
        return self

    async def _keep_alive(self) -> None:
        c = self.client
        while True:
            await asyncio.sleep(self._ttl_s / 3)
            if self.lost:
                return
            sent = time.monotonic()
            try:
                await c._call("/v1/locks/keepalive", c._write({"session_id": self.session_id}))
            except CommandRejected as exc:
                self._mark_lost(f"keep-alive refused: {exc.code}")
                return
            except CoreplaneError:
                continue
            self._acked(sent)

    async def release(self) -> None:
        self._released = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.session_id:
            return
        c = self.client
        with contextlib.suppress(CoreplaneError):
            await c._call("/v1/locks/close", c._write({"session_id": self.session_id}))
        self.session_id = 0

    async def __aenter__(self) -> AsyncLock:
        return await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
