"""`FencedHttpResource`: a downstream resource behind HTTP, for lock-safety experiments.

A lock is only as safe as the resource that checks its token. Tests of a host's own locking
(and the demo) need a resource that sits across a real network hop, so that a holder paused or
partitioned after its `lock.check()` can still deliver a stale write late. This one accepts
``POST /write`` with a JSON body ``{"token": int, "holder": str}``, keeps a log of what it
accepted and refused, and checks the token with the SDK's `FencedResource` unless built with
``fenced=False`` (the negative control a Jepsen-style test must also run, or it proves
nothing). `violations(log)` is the checker: a write accepted with a token lower than one
accepted before it.

Answers: 200 accepted, 409 refused (stale token), 400 with a JSON error naming the bad field.
Listens on 127.0.0.1 only; `close()` (or ``with``) stops it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from coreplane.errors import CommandRejected
from coreplane.runtime.fencing import FencedResource

__all__ = ["FencedHttpResource", "violations"]

_BODY_MAX = 4096


def violations(log: list[tuple[int, str]]) -> list[str]:
    """Writes whose token is lower than one already accepted: a stale holder got through."""
    out = []
    highest = 0
    for n, (token, holder) in enumerate(log):
        if token < highest:
            out.append(f"write {n} by {holder} with token {token} after token {highest}")
        highest = max(highest, token)
    return out


class FencedHttpResource:
    """An HTTP resource that logs accepted writes, fenced by token or (negative control) not."""

    def __init__(self, name: str = "resource", *, fenced: bool = True) -> None:
        self.name = name
        self.fenced = fenced
        self.fence = FencedResource()
        self.accepted: list[tuple[int, str]] = []
        self.refused: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/write"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"resource-{name}", daemon=True
        )
        self._thread.start()

    def write(self, holder: str, token: int) -> bool:
        """The same check as over HTTP, in process: True if accepted."""
        with self._lock:
            try:
                if self.fenced:
                    self.fence.check(self.name, token)
            except CommandRejected:
                self.refused.append((token, holder))
                return False
            self.accepted.append((token, holder))
            return True

    def violations(self) -> list[str]:
        with self._lock:
            return violations(list(self.accepted))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FencedHttpResource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(raw: bytes) -> tuple[int, str]:
    """The write's token and holder, or ValueError naming the bad field."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("body: not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("body: must be a JSON object")
    token, holder = body.get("token"), body.get("holder")
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise ValueError("token: must be a non-negative integer")
    if not isinstance(holder, str) or not holder:
        raise ValueError("holder: must be a non-empty string")
    return token, holder


def _handler(resource: FencedHttpResource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/write":
                self._answer(404, {"error": "not_found", "field": "path"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._answer(400, {"error": "invalid_argument", "field": "Content-Length"})
                return
            if not 0 <= length <= _BODY_MAX:
                self._answer(400, {"error": "invalid_argument", "field": "Content-Length"})
                return
            try:
                token, holder = _parse(self.rfile.read(length))
            except ValueError as exc:
                field, _, why = str(exc).partition(": ")
                self._answer(400, {"error": "invalid_argument", "field": field, "message": why})
                return
            if resource.write(holder, token):
                self._answer(200, {"accepted": True})
            else:
                self._answer(409, {"error": "stale_token", "field": "token"})

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
