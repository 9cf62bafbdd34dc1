"""Pipelined proposals: `ControlPlane.propose_async` and `KV.put_async`.

A host that writes from one thread, or from an event loop, should not need a thread per write
in flight. `Pipeline.submit` hands the bytes to the engine and returns a `ProposalFuture` at
once; the engine's commit callback (tick thread) completes it. The semantics are the
synchronous call's, without its waiting thread:

- the bytes carry ``(client_id, seq)`` fixed before the first attempt, so a re-send applies
  once (the core's sessions);
- a retryable engine code (no leader yet, leader changed, unknown outcome, queue full) re-sends
  the same bytes after a backoff with jitter; an attempt that hears nothing within
  `attempt_s` is re-sent too (a forwarded proposal can be lost with its leader);
- only the deadline turns into `Unavailable` (outcome unknown); a leader's refusal is
  `CommandRejected("request_denied")`; the state machine's own refusal is the `Applied`.

Ordering: proposals are handed to the engine in call order, but a retried one may commit after
one submitted later. A caller that needs B after A waits for A's future first (as with etcd's
client, whose requests in flight are ordered only by their commit).

One daemon thread owns the timers (backoffs, attempt timeouts, deadlines); the hot path (submit
and completion) is a dict insert and delete under one lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future, InvalidStateError
from typing import Any, TypeVar

from coreplane.core.state import Applied
from coreplane.errors import CommandRejected, InvariantViolation, Unavailable
from coreplane.raft import engine as E

__all__ = ["Pipeline", "ProposalFuture"]

T = TypeVar("T")
_SWEEP_S = 0.05  # how often attempt timeouts and deadlines are looked at


class ProposalFuture(Future[T]):
    """A `concurrent.futures.Future` that an asyncio coroutine may also ``await``."""

    def __await__(self) -> Generator[Any, None, T]:
        return asyncio.wrap_future(self).__await__()


class _Pending:
    __slots__ = (
        "attempt",
        "attempt_deadline",
        "backoff_s",
        "batchable",
        "data",
        "deadline",
        "finished",
        "future",
        "key",
        "release",
        "transform",
    )

    def __init__(
        self,
        key: int,
        data: bytes,
        future: ProposalFuture[Any],
        deadline: float,
        transform: Callable[[Applied], Any] | None,
        release: Callable[[], None] | None,
    ) -> None:
        self.key = key
        self.release = release
        self.transform = transform
        self.data = data
        self.future = future
        self.deadline = deadline
        self.attempt = 0
        self.attempt_deadline = 0.0
        self.backoff_s = 0.02
        self.batchable = False
        self.finished = False  # set by the first completion (cheaper than future.done())


class Pipeline:
    """The in-flight asynchronous proposals of one ControlPlane."""

    def __init__(
        self,
        engine: Callable[[], E.RaftEngine],
        retry_codes: frozenset[int],
        *,
        attempt_s: float,
        name: str,
    ) -> None:
        self._engine = engine  # raises Unavailable when the node is not running
        self._retry_codes = retry_codes
        self._attempt_s = attempt_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inflight: dict[int, _Pending] = {}  # in (re-)send order: oldest attempt first
        self._retries: list[tuple[float, int, _Pending]] = []  # (due, key, pending) heap
        self._keys = itertools.count()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"coreplane-pipeline-{name}", daemon=True
        )
        self._thread.start()

    def submit(
        self,
        data: bytes,
        timeout_s: float,
        transform: Callable[[Applied], Any] | None = None,
        release: Callable[[], None] | None = None,
        *,
        batchable: bool = False,
    ) -> ProposalFuture[Any]:
        """Propose `data`; the future gets the `Applied`, or ``transform(applied)`` (whose
        exception, e.g. `CommandRejected` from ``Applied.unwrap``, becomes the future's).
        `release` runs once when the write completes, however it completes, before the
        future's callbacks (the session seq it frees is then free when a waiter wakes);
        `batchable` lets the engine put it in one log entry with others (`RaftEngine.propose`)."""
        future: ProposalFuture[Any] = ProposalFuture()
        future.set_running_or_notify_cancel()
        pending = _Pending(
            next(self._keys), data, future, time.monotonic() + timeout_s, transform, release
        )
        pending.batchable = batchable
        self._send(pending)
        return future

    def close(self) -> None:
        """Fail what is still in flight (outcome unknown) and stop the timer thread."""
        with self._lock:
            self._closed = True
            pending = list(self._inflight.values()) + [p for _, _, p in self._retries]
            self._inflight.clear()
            self._retries.clear()
            self._wake.notify()
        for p in pending:
            _fail(p, Unavailable("the control plane stopped; the outcome is unknown"))

    # ------------------------------------------------------------------ attempts

    def _send(self, p: _Pending) -> None:
        try:
            engine = self._engine()
        except Unavailable as exc:
            _fail(p, exc)
            return
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                p.attempt += 1
                p.attempt_deadline = time.monotonic() + self._attempt_s
                self._inflight.pop(p.key, None)
                self._inflight[p.key] = p
        if closed:
            _fail(p, Unavailable("the control plane stopped"))
            return
        attempt = p.attempt

        def done(result: Any, code: int) -> None:
            self._done(p, attempt, result, code)

        if p.batchable:
            engine.propose(p.data, done, batchable=True)
        else:
            engine.propose(p.data, done)

    def _done(self, p: _Pending, attempt: int, result: Any, code: int) -> None:
        """Engine callback, tick thread: complete, or schedule a re-send of the same bytes."""
        if p.finished:
            return
        if code == E.FAIL.SUCCESS:  # any attempt's success is the answer (same bytes)
            self._forget(p)
            if isinstance(result, Applied):
                _set(p, result)
            else:
                _fail(p, InvariantViolation(f"engine returned {type(result).__name__}"))
            return
        if code == E.FAIL.REQUEST_DENIED:
            self._forget(p)
            _fail(p, CommandRejected("request_denied", "the leader refused the proposal"))
            return
        if code not in self._retry_codes:
            self._forget(p)
            _fail(p, Unavailable(f"proposal failed with engine code {code}"))
            return
        with self._lock:
            if attempt != p.attempt or self._closed or p.key not in self._inflight:
                return  # a newer attempt is out (or a retry is already scheduled)
            del self._inflight[p.key]
            due = time.monotonic() + p.backoff_s * (0.5 + random.random())
            p.backoff_s = min(p.backoff_s * 2, 0.2)
            heapq.heappush(self._retries, (due, p.key, p))
            self._wake.notify()

    def _forget(self, p: _Pending) -> None:
        with self._lock:
            self._inflight.pop(p.key, None)

    # ------------------------------------------------------------------ timers

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                wait_s = _SWEEP_S
                if self._retries:
                    wait_s = max(0.0, min(wait_s, self._retries[0][0] - now))
                self._wake.wait(wait_s)
                if self._closed:
                    return
                now = time.monotonic()
                resend: list[_Pending] = []
                while self._retries and self._retries[0][0] <= now:
                    resend.append(heapq.heappop(self._retries)[2])
                expired: list[_Pending] = []
                for p in list(self._inflight.values()):  # oldest attempt first
                    if p.attempt_deadline > now:
                        break
                    del self._inflight[p.key]
                    (expired if now >= p.deadline else resend).append(p)
            for p in resend:
                if p.finished:
                    continue
                if now >= p.deadline:
                    expired.append(p)
                else:
                    self._send(p)
            for p in expired:
                _fail(
                    p,
                    Unavailable(
                        "no commit before the deadline; the outcome is unknown "
                        "(propose the same command bytes again to retry safely)"
                    ),
                )


def _released(p: _Pending) -> None:
    """Free what the write held (its session seq), once: the first completion wins."""
    p.finished = True
    release, p.release = p.release, None
    if release is not None:
        release()


def _set(p: _Pending, result: Applied) -> None:
    _released(p)
    if p.transform is not None:
        try:
            value: Any = p.transform(result)
        except Exception as exc:  # noqa: BLE001 - the caller's refusal travels in the future
            _fail(p, exc)
            return
    else:
        value = result
    with contextlib.suppress(InvalidStateError):  # lost a race with another completion
        p.future.set_result(value)


def _fail(p: _Pending, exc: BaseException) -> None:
    _released(p)
    with contextlib.suppress(InvalidStateError):  # lost a race with another completion
        p.future.set_exception(exc)
