"""`StdlibTransport`: the sync `Client`'s wire for plain-HTTP endpoints: a small HTTP/1.1
exchange over the standard library's sockets.

Why not httpx's own transport (httpcore + h11) here: per request it costs about three times the
CPU of the standard library's `http.client` (measured: ~350 us against ~120 us for a 64-byte
put on the API, the httpx client layer above it excluded). And why not `http.client` either
(what this used until it was measured against the cluster's own cost): see `_Conn`. The SDK is
a load generator for the cluster as much as a library: every microsecond here is one the
cluster's own hosts pay at scale. The transport plugs in below `httpx.Client` (its documented
extension point), so timeouts, headers, the request and response model and TLS stay httpx's;
only ``http://`` is mounted here, ``https://`` keeps httpx's transport (its certificate
handling is the well-kept part).

What it keeps from httpcore's pool, because the profiles rely on it:
- idle connections per endpoint at most `keepalive_max`, none idle longer than
  `keepalive_expiry_s` (0: none kept: `ServerlessConfig`);
- a pooled connection is checked before reuse: one the peer closed (readable while idle: EOF or
  junk) is dropped, not sent on;
- at most `connections_max` exchanges at once (`PoolTimeout` after the pool timeout).
It never retries by itself: the SDK's retry policy (`CallPlan`) decides.
"""

from __future__ import annotations

import functools
import http.client
import select
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

__all__ = ["RawResponse", "StdlibTransport"]


class _Conn:
    """One keep-alive HTTP/1.1 connection: a request out in one ``send``, its answer parsed
    here (status line, headers, a ``Content-Length`` or chunked body). Nagle off.

    Why not `http.client` (which this replaced): per exchange it costs ~130 us of CPU on the
    machine the benches run on (measured: a 64-byte put against a bare aiohttp handler, one
    thread: 134 us for a bare ``http.client`` loop), most of it parsing the answer's headers
    through the `email` package, and it sends the header block and the body in two ``send``
    calls (two segments with Nagle off: the server wakes, reads and parses twice). With this
    one the whole SDK put (`Client.put`: retry plan, codec, exchange) costs 94 us of CPU
    against 179 us on `http.client` (same measure, same run). Only what the API
    answers is understood; anything else (a 1xx, an unknown transfer coding, a malformed
    line) is a protocol error, which the SDK's retry policy treats as a failed exchange.
    """

    __slots__ = ("_buf", "host", "port", "read_s", "sock", "timeout")

    def __init__(self, host: str, port: int, timeout: float | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self._buf = b""
        self.read_s: float | None = -1.0  # the socket's timeout as last set (-1: not yet)

    def set_read_timeout(self, read_s: float | None) -> None:
        """`settimeout` only when it changes: each call is a syscall (the socket's blocking
        mode is set again), and a client sends every request with the same timeout."""
        if read_s != self.read_s:
            assert self.sock is not None
            self.sock.settimeout(read_s)
            self.read_s = read_s

    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), self.timeout)
        self.read_s = self.timeout
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self._buf = b""
        if sock is not None:
            sock.close()

    def exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, tuple[tuple[str, str], ...], dict[str, str], bytes, bool]:
        """Send one request, read its answer: (status, headers as sent and by lower-case
        name (shared between answers: read-only), body, will_close)."""
        sock = self.sock
        assert sock is not None
        head = _request_head(method, path, self.host, self.port, tuple(headers.items()))
        if body is None:
            sock.sendall(head + b"\r\n")
        else:
            sock.sendall(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
        status, items, by_name, length, chunked, will_close = self._head()
        if method == "HEAD" or status in (204, 304):
            content = b""
        elif chunked:
            content = self._chunked()
        elif length is not None:
            content = self._exactly(length)
        else:  # no length: the body runs to the end of the connection
            content = self._to_eof()
            will_close = True
        return status, items, by_name, content, will_close or bool(self._buf)  # junk: drop it

    # -------------------------------------------------------------------- reading

    def _more(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise http.client.RemoteDisconnected("the server closed the connection")
        self._buf += data

    def _head(self) -> _Head:
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buf) > _HEAD_BYTES_MAX:
                raise http.client.LineTooLong("answer header block")
            self._more()
        block, self._buf = self._buf[:end], self._buf[end + 4 :]
        head = _HEADS.get(block)
        if head is None:
            head = _parse_head(block)
            if len(_HEADS) >= _HEADS_MAX:
                _HEADS.clear()
            _HEADS[block] = head
        return head

    def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._more()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > _HEAD_BYTES_MAX:
                raise http.client.LineTooLong("chunk size line")
            self._more()
        line, self._buf = self._buf[:end], self._buf[end + 2 :]
        return line

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise http.client.HTTPException(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._exactly(size))
            if self._exactly(2) != b"\r\n":
                raise http.client.HTTPException("chunk not followed by CRLF")

    def _to_eof(self) -> bytes:
        assert self.sock is not None
        parts = [self._buf]
        self._buf = b""
        while data := self.sock.recv(65536):
            parts.append(data)
        return b"".join(parts)


_HEAD_BYTES_MAX = 65536


# An answer's header block as parsed: (status, headers as sent, by lower-case name,
# Content-Length, chunked, will_close). Shared between answers with the same block: read-only.
_Head = tuple[int, tuple[tuple[str, str], ...], dict[str, str], int | None, bool, bool]

# Parsed header blocks by their bytes. A client's answers repeat their header block byte for
# byte (the same status, type and length, the server's Date changing once a second), so most
# answers are a dict lookup instead of the parse below (~4 us of the ~40 us the SDK spends on a
# put in Python). Bounded; emptied when full.
_HEADS: dict[bytes, _Head] = {}
_HEADS_MAX = 256


def _parse_head(block: bytes) -> _Head:
    """Parse a header block (without its final blank line); protocol errors raise."""
    status_line, *header_lines = block.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit() or code[0] == "1":
        raise http.client.BadStatusLine(status_line[:80])
    items: list[tuple[str, str]] = []
    by_name: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise http.client.HTTPException(f"malformed header line {line[:80]!r}")
        value = value.strip()
        items.append((name, value))
        by_name[name.lower()] = value
    length: int | None = None
    chunked = False
    will_close = version == "HTTP/1.0"
    field = by_name.get("content-length")
    if field is not None:
        if not field.isdigit():
            raise http.client.HTTPException(f"bad Content-Length {field[:20]!r}")
        length = int(field)
    field = by_name.get("transfer-encoding")
    if field is not None:
        if field.lower() != "chunked":
            raise http.client.HTTPException(f"unsupported transfer coding {field!r}")
        chunked = True
    field = by_name.get("connection")
    if field is not None:
        tokens = {t.strip().lower() for t in field.split(",")}
        will_close = "close" in tokens or (will_close and "keep-alive" not in tokens)
    return int(code), tuple(items), by_name, length, chunked, will_close


@functools.lru_cache(maxsize=256)
def _request_head(
    method: str, path: str, host: str, port: int, headers: tuple[tuple[str, str], ...]
) -> bytes:
    """A request's line and header block, without its Content-Length and final CRLF: a
    client sends the same few (method, path, headers) over and over, so built once each."""
    lines = [f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"]
    lines += [f"{k}: {v}\r\n" for k, v in headers if k.lower() != "host"]
    return "".join(lines).encode("latin-1")


class _Slots:
    """`threading.BoundedSemaphore`'s acquire(timeout)/release, a plain lock's cost when a
    slot is free (the Condition is only waited on, and notified, when the pool is full)."""

    __slots__ = ("_cond", "_free", "_max", "_mu", "_waiting")

    def __init__(self, n: int) -> None:
        self._free = self._max = n
        self._mu = threading.Lock()
        self._cond = threading.Condition(self._mu)
        self._waiting = 0

    def acquire(self, timeout: float = -1) -> bool:
        with self._mu:
            if self._free > 0:
                self._free -= 1
                return True
            deadline = None if timeout < 0 else time.monotonic() + timeout
            self._waiting += 1
            try:
                while self._free <= 0:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                self._free -= 1
                return True
            finally:
                self._waiting -= 1

    def release(self) -> None:
        with self._mu:
            if self._free >= self._max:
                raise ValueError("slot released too many times")
            self._free += 1
            if self._waiting:
                self._cond.notify()


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
        self._slots = _Slots(connections_max)
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
                assert conn.sock is not None
                conn.set_read_timeout(read_s)
                status, items, by_name, content, will_close = conn.exchange(
                    method, path, body, headers
                )
            except BaseException as exc:
                connecting = fresh and conn.sock is None  # before close() forgets the socket
                conn.close()
                raise _mapped(exc, connecting=connecting) from exc
            if will_close:
                conn.close()
            else:
                self._checkin(key, conn)
            return RawResponse(status, items, content, by_name)
        finally:
            self._slots.release()


class RawResponse:
    """What `_classify` reads of an answer: status, content type, body. `headers` may be
    shared with other answers (`_HEADS`): read-only."""

    __slots__ = ("content", "header_items", "headers", "status_code")

    def __init__(
        self,
        status: int,
        header_items: Sequence[tuple[str, str]],
        content: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status_code = status
        self.header_items = header_items
        self.headers = {k.lower(): v for k, v in header_items} if headers is None else headers
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
