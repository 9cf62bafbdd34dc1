"""`StdlibTransport`: the sync `Client`'s wire for plain-HTTP endpoints, on `http.client`.

Why not httpx's own transport (httpcore + h11) here: per request it costs about three times the
CPU of the standard library's `http.client` (measured: ~350 us against ~120 us for a 64-byte
put on the API, the httpx client layer above it excluded), and it sends the headers and the
body in two writes. The SDK is a load generator for the cluster as much as a library: every
microsecond here is one the cluster's own hosts pay at scale. The transport plugs in below
`httpx.Client` (its documented extension point), so timeouts, headers, the request and
response model and TLS stay httpx's; only ``http://`` is mounted here, ``https://`` keeps
httpx's transport (its certificate handling is the well-kept part).

What it keeps from httpcore's pool, because the profiles rely on it:
- idle connections per endpoint at most `keepalive_max`, none idle longer than
  `keepalive_expiry_s` (0: none kept: `ServerlessConfig`);
- a pooled connection is checked before reuse: one the peer closed (readable while idle: EOF or
  junk) is dropped, not sent on;
- at most `connections_max` exchanges at once (`PoolTimeout` after the pool timeout).
It never retries by itself: the SDK's retry policy (`CallPlan`) decides.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from typing import Any

import httpx

__all__ = ["RawResponse", "StdlibTransport"]


class _Conn(http.client.HTTPConnection):
    """One keep-alive connection; Nagle off, and a request goes out in one write.

    `http.client` sends the header block and the body in two ``send`` calls (Python 3.11's
    ``_send_output``): with Nagle off that is two segments, so the server wakes up, reads and
    parses twice per request (aiohttp: two ``data_received``, and the handler's body read
    waits for the second). Joining them for a bytes body is one syscall here and one read
    there (measured on a 64-byte put against the API: see benches/api.py's notes)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        buffer: list[bytes] = getattr(self, "_buffer", None)  # type: ignore[assignment]
        if type(message_body) is not bytes or encode_chunked or not isinstance(buffer, list):
            super()._send_output(message_body, encode_chunked)
            return
        buffer.extend((b"", b""))
        msg = b"\r\n".join(buffer)
        del buffer[:]
        self.send(msg + message_body)


def _timeouts(request: httpx.Request) -> tuple[float | None, float | None, float | None]:
    t: dict[str, Any] = request.extensions.get("timeout", {})
    return t.get("connect"), t.get("read"), t.get("pool")


class StdlibTransport(httpx.BaseTransport):
    def __init__(
        self, *, keepalive_max: int, keepalive_expiry_s: float, connections_max: int
    ) -> None:
        self._keepalive_max = keepalive_max
        self._expiry_s = keepalive_expiry_s
        self._idle: dict[tuple[str, int], list[tuple[float, _Conn]]] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(connections_max)
        self._closed = False

    # -------------------------------------------------------------------------- pool

    def _checkout(self, key: tuple[str, int], connect_s: float | None) -> _Conn:
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    break
                since, conn = idle.pop()
            if now - since <= self._expiry_s and conn.sock is not None:
                readable, _, _ = select.select([conn.sock], [], [], 0)
                if not readable:
                    return conn
            conn.close()  # expired, or the peer closed it (EOF) while it was idle
        return _Conn(key[0], key[1], timeout=connect_s)

    def _checkin(self, key: tuple[str, int], conn: _Conn) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if not self._closed and len(idle) < self._keepalive_max and self._expiry_s > 0:
                idle.append((time.monotonic(), conn))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = [c for idle in self._idle.values() for _t, c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()

    # -------------------------------------------------------------------------- exchange

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"{url.scheme}: not plain HTTP", request=request)
        connect_s, read_s, pool_s = _timeouts(request)
        raw = self.exchange(
            request.method,
            (url.host, url.port or 80),
            url.raw_path.decode("ascii"),
            request.read(),
            dict(request.headers.multi_items()),
            connect_s=connect_s,
            read_s=read_s,
            pool_s=pool_s,
        )
        return httpx.Response(
            raw.status_code, headers=raw.header_items, content=raw.content, request=request
        )

    def exchange(
        self,
        method: str,
        key: tuple[str, int],
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        *,
        connect_s: float | None,
        read_s: float | None,
        pool_s: float | None,
    ) -> RawResponse:
        """One request and its whole answer; transport failures raise httpx's exceptions.
        The SDK's hot path calls this directly (the httpx client layer costs ~100 us)."""
        if not self._slots.acquire(timeout=pool_s if pool_s is not None else -1):
            raise httpx.PoolTimeout("no free connection slot")
        try:
            if not body and method in ("GET", "HEAD"):
                body = None
            conn = self._checkout(key, connect_s)
            fresh = conn.sock is None
            try:
                if fresh:
                    conn.connect()
                conn.sock.settimeout(read_s)
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                content = response.read()
            except BaseException as exc:
                connecting = fresh and conn.sock is None  # before close() forgets the socket
                conn.close()
                raise _mapped(exc, connecting=connecting) from exc
            if response.will_close:
                conn.close()
            else:
                self._checkin(key, conn)
            return RawResponse(response.status, response.getheaders(), content)
        finally:
            self._slots.release()


class RawResponse:
    """What `_classify` reads of an answer: status, content type, body."""

    __slots__ = ("content", "header_items", "headers", "status_code")

    def __init__(self, status: int, header_items: list[tuple[str, str]], content: bytes) -> None:
        self.status_code = status
        self.header_items = header_items
        self.headers = {k.lower(): v for k, v in header_items}
        self.content = content


def _mapped(exc: BaseException, *, connecting: bool) -> BaseException:
    """The httpx exception for a failed exchange (the SDK classifies httpx's tree)."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        kind: type[httpx.TransportError] = httpx.ConnectTimeout if connecting else httpx.ReadTimeout
        return kind(str(exc) or "timed out")
    if isinstance(exc, http.client.HTTPException):
        return httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        kind = httpx.ConnectError if connecting else httpx.ReadError
        return kind(f"{type(exc).__name__}: {exc}")
    return exc
