"""Linearizable reads that hold no thread while they wait (`ControlPlane.read_async`).

`ControlPlane.read` blocks its caller twice: for a confirmed read index from the leader, then
until this replica applied that index. An event loop (the HTTP API) would spend a pool thread
per read on those waits. Here a read is a small record instead: the engine's read-index
callback (inline on a leader holding its lease, else on the tick thread) checks the applied
index and, if it is there, runs the read under the state lock and completes the future; if
not, or if the leader did not answer (an election), the record waits in a list that the
engine's tick callback (tick thread, after apply) walks: reads whose index got applied run,
failed ones ask again after a jittered back-off (5 ms doubling to 100 ms, as `read` does),
and expired ones fail `Unavailable`. No timer thread, no pool.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from coreplane.errors import Unavailable
from coreplane.runtime.pipeline import ProposalFuture

__all__ = ["MAKE_LOCK", "AsyncReads"]

# Held while a ControlPlane makes its AsyncReads (once per engine): not the state lock, which
# the tick thread takes inside the engine's tick-callback lock that registering takes too.
MAKE_LOCK = threading.Lock()

_SUCCESS = 0  # pysyncobj's FAIL_REASON.SUCCESS (checked against it in AsyncReads.__init__)


class _Read:
    __slots__ = ("attempt", "backoff_s", "deadline", "fn", "future", "index", "retry_at")

    def __init__(self, fn: Callable[[], Any], future: ProposalFuture[Any], deadline: float):
        self.fn = fn
        self.future = future
        self.deadline = deadline
        self.attempt = 0  # a callback of an older attempt is ignored
        self.index = 0  # the confirmed read index, 0 while none
        self.retry_at = 0.0  # > 0: ask for a read index again at this time
        self.backoff_s = 0.005


class AsyncReads:
    """The pending linearizable reads of one engine (see the module's text)."""

    def __init__(
        self,
        engine: Any,
        run: Callable[[Callable[[], Any]], Any],
        stopping: threading.Event,
    ) -> None:
        from coreplane.raft import engine as E

        assert E.FAIL.SUCCESS == _SUCCESS
        self.engine = engine
        self._run = run  # fn -> fn() under the state machine's lock
        self._stopping = stopping
        self._mu = threading.Lock()
        self._pending: list[_Read] = []  # waiting for a tick: not applied yet, or a retry due
        self._live: set[_Read] = set()  # every read not answered yet (for `fail_all`)
        engine.addOnTickCallback(self._on_tick)

    def submit(self, fn: Callable[[], Any], deadline: float) -> ProposalFuture[Any]:
        future: ProposalFuture[Any] = ProposalFuture()
        future.set_running_or_notify_cancel()
        read = _Read(fn, future, deadline)
        with self._mu:
            self._live.add(read)
        future.add_done_callback(lambda _f: self._forget(read))
        self._ask(read)
        if self._stopping.is_set():  # `fail_all` may have run before this read was live
            self._finish(read, Unavailable("the control plane is not running"))
        return future

    def _forget(self, read: _Read) -> None:
        with self._mu:
            self._live.discard(read)

    def _ask(self, read: _Read) -> None:
        read.attempt += 1
        read.retry_at = 0.0
        attempt = read.attempt

        def on_index(result: Any, code: int) -> None:
            self._on_index(read, attempt, result, code)

        try:
            self.engine.request_read_index(on_index)
        except BaseException as exc:  # noqa: BLE001 - the future carries it
            self._finish(read, exc)

    def _on_index(self, read: _Read, attempt: int, result: Any, code: int) -> None:
        if attempt != read.attempt or read.future.done():
            return  # a second callback of the same attempt, or an older attempt's
        if code == _SUCCESS:
            read.index = int(result)
            if self.engine.applied_index() >= read.index:
                self._complete(read)
                return
        else:
            now = time.monotonic()
            read.retry_at = now + read.backoff_s * (0.5 + random.random())
            read.backoff_s = min(read.backoff_s * 2, 0.1)
        with self._mu:
            self._pending.append(read)

    def _complete(self, read: _Read) -> None:
        try:
            value = self._run(read.fn)
        except BaseException as exc:  # noqa: BLE001 - the future carries it
            self._finish(read, exc)
            return
        if not read.future.done():
            read.future.set_result(value)

    @staticmethod
    def _finish(read: _Read, exc: BaseException) -> None:
        if not read.future.done():
            read.future.set_exception(exc)

    def fail_all(self, reason: str = "the control plane stopped") -> None:
        """Once the node stops (`stop()`, or a fatal error that ended its threads): a read
        still waiting fails now rather than at its caller's own timeout (no tick will walk
        the list again). Call it after setting the stopping event (see `submit`)."""
        with self._mu:
            live, self._pending = list(self._live), []
        for read in live:  # waiting for a tick, or for a read index the engine never answers
            self._finish(read, Unavailable(reason))

    def _on_tick(self) -> None:
        """Tick thread, after apply: run, retry or expire the pending reads."""
        if not self._pending:
            return
        with self._mu:
            pending, self._pending = self._pending, []
        now = time.monotonic()
        applied = self.engine.applied_index()
        stopping = self._stopping.is_set()
        for read in pending:
            if read.future.done():
                continue
            if stopping:
                self._finish(read, Unavailable("the control plane is not running"))
            elif read.index and applied >= read.index:
                self._complete(read)
            elif now >= read.deadline:
                self._finish(
                    read,
                    Unavailable(
                        f"read index {read.index} not applied here in time"
                        if read.index
                        else "no leader confirmed a read index before the deadline"
                    ),
                )
            elif read.retry_at and now >= read.retry_at:
                self._ask(read)
            else:
                with self._mu:
                    self._pending.append(read)
