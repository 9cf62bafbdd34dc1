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
and completion) is a dict insert and delete, without a lock (each is atomic; the timer thread
allows for a write that completes while it looks). Retries take the lock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import _base as _futures
from typing import Any, TypeVar

from coreplane.core.state import Applied
from coreplane.errors import CommandRejected, InvariantViolation, Unavailable
from coreplane.raft import engine as E

__all__ = ["Pipeline", "ProposalFuture"]

T = TypeVar("T")
_SWEEP_S = 0.05  # how often attempt timeouts and deadlines are looked at
_RUNNING, _FINISHED = _futures.RUNNING, _futures.FINISHED
_CANCELLED = frozenset((_futures.CANCELLED, _futures.CANCELLED_AND_NOTIFIED))
_DONE = _CANCELLED | {_FINISHED}
_LOGGER = _futures.LOGGER
_SUCCESS = E.FAIL.SUCCESS
_LIGHT = threading.Lock()  # guards every ProposalFuture that has no condition yet


class ProposalFuture(Future[T]):
    """A `concurrent.futures.Future` that an asyncio coroutine may also ``await``.

    Lighter than its base on the write path: a base Future builds a `threading.Condition` in
    its constructor (about ten objects for the cyclic GC to track while the write is in
    flight) and takes it for every state change and query. Here the condition is made on
    first use only (a blocking `result`, `concurrent.futures.wait`, ...); until then state
    changes and callback registration take one module lock (`_LIGHT`), and `done`, and
    `result`/`exception` of a finished future, read the state without a lock (a finished
    future never changes). Once made, the condition guards everything as in the base class:
    a change under `_LIGHT` happens only while no condition exists, and the condition is
    made under `_LIGHT`, so the two never overlap. Created running (it cannot be cancelled).
    """

    def __init__(self) -> None:
        self._state = _RUNNING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._done_callbacks: list[Callable[[Future[T]], object]] = []

    def __getattr__(self, name: str) -> Any:
        """The condition, and the waiters list (`concurrent.futures.wait` takes the condition
        before it adds to it), are made when first asked for."""
        if name not in ("_condition", "_waiters"):
            raise AttributeError(name)
        with _LIGHT:
            made = self.__dict__.get(name)
            if made is None:
                made = self.__dict__[name] = threading.Condition() if name == "_condition" else []
        return made

    def __await__(self) -> Generator[Any, None, T]:
        return asyncio.wrap_future(self).__await__()

    def _finish(self, result: Any, exception: BaseException | None) -> bool:
        """Finish without a condition (none was made yet): True if done here."""
        with _LIGHT:
            if "_condition" in self.__dict__:
                return False
            state = self._state
            if state not in _DONE:
                self._result, self._exception, self._state = result, exception, _FINISHED
        if state in _DONE:  # outside the lock: repr() makes the condition
            raise InvalidStateError(f"{state}: {self!r}")
        for callback in self._done_callbacks:
            try:
                callback(self)
            except Exception:
                _LOGGER.exception("exception calling callback for %r", self)
        return True

    def set_result(self, result: T) -> None:
        if not self._finish(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._finish(None, exception):
            super().set_exception(exception)

    def add_done_callback(self, fn: Callable[[Future[T]], object]) -> None:
        with _LIGHT:
            light = "_condition" not in self.__dict__
            if light and self._state not in _DONE:
                self._done_callbacks.append(fn)
                return
        if not light:
            super().add_done_callback(fn)
            return
        try:
            fn(self)
        except Exception:
            _LOGGER.exception("exception calling callback for %r", self)

    def done(self) -> bool:
        return self._state in _DONE

    def running(self) -> bool:
        return self._state == _RUNNING

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    def set_running_or_notify_cancel(self) -> bool:
        """True: created running (kept for callers that start a future themselves)."""
        if self._state == _RUNNING:
            return True
        return super().set_running_or_notify_cancel()

    def cancel(self) -> bool:
        if self._state in (_RUNNING, _FINISHED):  # never goes back to pending
            return False
        return super().cancel()

    def result(self, timeout: float | None = None) -> T:
        if self._state == _FINISHED:
            if self._exception is not None:
                raise self._exception
            value: T = self._result
            return value
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == _FINISHED:
            return self._exception
        return super().exception(timeout)


class _Pending:
    """One write in flight; also its first attempt's engine callback (no closure per write:
    a re-send's callback is a closure that carries its attempt number)."""

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
        "pipeline",
        "release",
        "transform",
    )

    def __init__(
        self,
        pipeline: Pipeline,
        key: int,
        data: bytes,
        future: ProposalFuture[Any],
        deadline: float,
        transform: Callable[[Applied], Any] | None,
        release: Callable[[], None] | None,
    ) -> None:
        self.pipeline = pipeline
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

    def __call__(self, result: Any, code: int) -> None:
        """The first attempt's engine callback (tick thread); a success is `_done`'s first
        case, with `_set` and `_released` inlined (it is almost every write)."""
        if code != _SUCCESS or self.finished or not isinstance(result, Applied):
            self.pipeline._done(self, 1, result, code)
            return
        self.pipeline._inflight.pop(self.key, None)
        self.finished = True
        release = self.release
        if release is not None:
            self.release = None
            release()
        transform = self.transform
        value: Any = result
        if transform is not None:
            try:  # `_unwrap_int` of a success (kv.put_async), inlined
                value = (
                    int(result.value)  # type: ignore[arg-type]
                    if transform is _unwrap_int and result.ok
                    else transform(result)
                )
            except Exception as exc:  # noqa: BLE001 - the caller's refusal travels in the future
                _fail(self, exc)
                return
        future = self.future
        try:
            if not future._finish(value, None):  # a condition exists: the base class's way
                Future.set_result(future, value)
        except InvalidStateError:  # lost a race with another completion
            pass


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
        future: ProposalFuture[Any] = ProposalFuture()  # running from the start
        now = time.monotonic()
        p = _Pending(self, next(self._keys), data, future, now + timeout_s, transform, release)
        p.batchable = batchable
        # `_send`'s first attempt, inlined (every write takes it): no lock, one clock read
        try:
            engine = self._engine()
        except Unavailable as exc:
            _fail(p, exc)
            return future
        p.attempt = 1
        p.attempt_deadline = now + self._attempt_s
        inflight = self._inflight
        inflight[p.key] = p  # a new key: at the end, as the newest attempt
        # close() sets _closed before it takes what is in flight: either it took p, or p is
        # seen here (and failed once: only one of the two pops gets it)
        if self._closed and inflight.pop(p.key, None) is not None:
            _fail(p, Unavailable("the control plane stopped"))
        elif batchable:
            engine.propose(data, p, batchable=True)
        else:
            engine.propose(data, p)
        return future

    def close(self) -> None:
        """Fail what is still in flight (outcome unknown) and stop the timer thread."""
        with self._lock:
            self._closed = True
            pending = [p for _, _, p in self._retries]
            self._retries.clear()
            inflight = self._inflight
            while inflight:  # one atomic pop each: a racing `_send` pops p, or this does
                try:
                    pending.append(inflight.popitem()[1])
                except KeyError:  # emptied meanwhile (`_forget`)
                    break
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
        if p.attempt == 0:  # the first attempt: no lock (each dict operation is atomic)
            p.attempt = 1
            p.attempt_deadline = time.monotonic() + self._attempt_s
            inflight = self._inflight
            inflight[p.key] = p  # a new key: at the end, as the newest attempt
            # close() sets _closed before it takes what is in flight: either it took p, or
            # p is seen here (and failed once: only one of the two pops gets it)
            closed = self._closed and inflight.pop(p.key, None) is not None
        else:
            with self._lock:
                closed = self._closed
                if not closed:
                    p.attempt += 1
                    p.attempt_deadline = time.monotonic() + self._attempt_s
                    self._inflight.pop(p.key, None)
                    self._inflight[p.key] = p
        if closed:
            _fail(p, Unavailable("the control plane stopped"))
            return
        attempt = p.attempt
        done: Callable[[Any, int], None] = p
        if attempt != 1:

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
        self._inflight.pop(p.key, None)  # atomic; the timer thread's pops allow for it

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
                    if self._inflight.pop(p.key, None) is None:
                        continue  # completed meanwhile (`_forget` takes no lock)
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


def _unwrap_int(applied: Applied) -> int:
    """A write's mod revision (`KV.put_async`'s transform), or its refusal."""
    return int(applied.unwrap())  # type: ignore[arg-type]


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
    try:  # noqa: SIM105 - not contextlib.suppress: an object per write
        p.future.set_result(value)
    except InvalidStateError:  # lost a race with another completion
        pass


def _fail(p: _Pending, exc: BaseException) -> None:
    _released(p)
    try:  # noqa: SIM105 - not contextlib.suppress: an object per write
        p.future.set_exception(exc)
    except InvalidStateError:  # lost a race with another completion
        pass
