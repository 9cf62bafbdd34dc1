"""Child processes driven with JSON lines: the channel under the demo, the kill -9 tests and the
replication bench (each had its own copy of it before).

Parent side, `JsonLineChild`: one process, requests written to its stdin as JSON lines, each
with an id, and replies read from its stdout by a reader thread and matched by id. Every wait
is bounded, so a killed or hung child shows up as `ProcessDown` or `TimeoutError`, never as a
hang of the caller; a line without an id is an event (``{"event": "ready"}`` ends `start`),
kept in `events` with its arrival time. Secrets go in the environment, never on the command
line (`ps` shows that).

Child side, `serve_json_lines(handle)`: read requests until ``{"op": "stop"}`` or EOF, run
each on its own thread (a long load run must not hold up a status query, so replies may come
out of order), and answer ``{"id", "ok": true, **result}`` or ``{"id", "ok": false, "error",
"message"}``; `emit` writes an event line.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from coreplane.errors import CoreplaneError

__all__ = ["JsonLineChild", "ProcessDown", "emit", "serve_json_lines"]

REPLY_SLACK_S = 2.0  # a request's `timeout_s` is the child's own budget; the parent adds this


class ProcessDown(CoreplaneError, ConnectionError):
    """The child process is not running (killed, crashed or not started)."""


class JsonLineChild:
    """One child process and its JSON-line channel (see the module docstring)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env or {})
        self.cwd = cwd
        self.events: list[dict[str, Any]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._ids = itertools.count(1)
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self, timeout_s: float = 15.0) -> None:
        """Spawn the child and wait for its ``ready`` event; its stderr goes to `log_path`."""
        self._ready.clear()
        with open(self.log_path, "a") as log:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            )
        threading.Thread(
            target=self._read, args=(self._proc,), daemon=True, name=f"{self.name}-reader"
        ).start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"{self.name} did not start within {timeout_s} s")

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # not ours (a library printing to stdout)
            if msg.get("id") is not None:
                with self._lock:
                    box = self._replies.get(msg["id"])
                if box is not None:
                    box.put(msg)
                continue
            msg["at"] = time.monotonic()
            self.events.append(msg)
            if msg.get("event") == "ready":
                self._ready.set()

    def request(self, op: str, *, timeout_s: float = 5.0, **fields: Any) -> dict[str, Any]:
        """Send one request (the child sees `timeout_s` too) and wait for its reply, at most
        `timeout_s` + `REPLY_SLACK_S`."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise ProcessDown(self.name)
        rid = next(self._ids)
        box: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._replies[rid] = box
        try:
            assert proc.stdin is not None
            try:
                proc.stdin.write(
                    json.dumps({"id": rid, "op": op, "timeout_s": timeout_s, **fields}) + "\n"
                )
                proc.stdin.flush()
            except OSError as exc:  # BrokenPipeError included
                raise ProcessDown(self.name) from exc
            deadline = time.monotonic() + timeout_s + REPLY_SLACK_S
            while True:
                try:
                    return box.get(timeout=0.05)
                except queue.Empty:
                    if proc.poll() is not None:
                        raise ProcessDown(self.name) from None
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{self.name}: no reply to {op}") from None
        finally:
            with self._lock:
                self._replies.pop(rid, None)

    def kill9(self) -> None:
        """SIGKILL: nothing runs in the child, exactly like a crash."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Ask the child to stop cleanly, kill it if it does not; its exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
                proc.stdin.flush()
                proc.stdin.close()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode


# ---------------------------------------------------------------------------------- child side

_out_lock = threading.Lock()


def emit(message: dict[str, Any]) -> None:
    """Write one JSON line to stdout (a reply or an event), whole, from any thread."""
    line = json.dumps(message, sort_keys=True)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def serve_json_lines(handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Answer requests from stdin until ``{"op": "stop"}`` or EOF; one thread per request.

    `handle(request)` returns the reply's fields; any exception it raises becomes an
    ``ok: false`` reply naming the exception type, and the child goes on serving.
    """

    def serve(req: dict[str, Any]) -> None:
        try:
            reply = {"id": req.get("id"), "ok": True, **handle(req)}
        except Exception as exc:  # noqa: BLE001 - a bad request must not kill the child
            reply = {
                "id": req.get("id"),
                "ok": False,
                "error": type(exc).__name__,
                "message": str(exc),
            }
        emit(reply)

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except ValueError:
            emit({"event": "bad_request", "message": "not JSON"})
            continue
        if req.get("op") == "stop":
            return
        threading.Thread(target=serve, args=(req,), daemon=True).start()
