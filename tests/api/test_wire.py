"""`StdlibTransport` (coreplane/sdk/_wire.py): the sync client's plain-HTTP wire keeps the pool
rules the profiles rely on: reuse within the expiry, none kept with ``keepalive_max=0``, a
connection the server closed while idle is dropped rather than sent on, and transport failures
come out as httpx's exceptions (which the SDK classifies as retryable)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from coreplane.sdk._wire import StdlibTransport
from coreplane.testing.ports import free_ports

TIMEOUTS = {"connect_s": 1.0, "read_s": 1.0, "pool_s": 1.0}


class _Server:
    def __init__(self) -> None:
        self.connections = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def setup(self) -> None:
                super().setup()
                server.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.key = ("127.0.0.1", self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _post(wire: StdlibTransport, key: tuple[str, int], body: bytes) -> Any:
    return wire.exchange("POST", key, "/echo", body, {}, **TIMEOUTS)


def test_a_connection_is_reused_within_the_expiry(server: _Server) -> None:
    wire = StdlibTransport(keepalive_max=4, keepalive_expiry_s=30, connections_max=8)
    for i in range(5):
        got = _post(wire, server.key, f"b{i}".encode())
        assert (got.status_code, got.content) == (200, f"b{i}".encode())
    assert server.connections == 1
    wire.close()


def test_none_is_kept_when_keepalive_max_is_zero(server: _Server) -> None:
    wire = StdlibTransport(keepalive_max=0, keepalive_expiry_s=0, connections_max=8)
    for _ in range(3):
        assert _post(wire, server.key, b"x").status_code == 200
    assert server.connections == 3


def test_a_connection_the_peer_closed_while_idle_is_not_sent_on() -> None:
    """A server that answers once per connection and closes without saying so."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.close()  # no "Connection: close": the client thinks it may reuse it

    threading.Thread(target=serve, daemon=True).start()
    key = ("127.0.0.1", listener.getsockname()[1])
    wire = StdlibTransport(keepalive_max=4, keepalive_expiry_s=30, connections_max=8)
    try:
        assert _post(wire, key, b"a").content == b"ok"
        threading.Event().wait(0.1)  # the FIN arrives while the connection is idle
        assert _post(wire, key, b"b").content == b"ok"  # on a new connection, no error
        assert len(accepted) == 2
    finally:
        listener.close()


def test_failures_are_httpx_exceptions() -> None:
    wire = StdlibTransport(keepalive_max=4, keepalive_expiry_s=30, connections_max=8)
    with pytest.raises(httpx.ConnectError):
        _post(wire, ("127.0.0.1", free_ports(1)[0]), b"x")
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        with pytest.raises(httpx.ReadTimeout):
            wire.exchange(
                "POST",
                ("127.0.0.1", silent.getsockname()[1]),
                "/",
                b"x",
                {},
                connect_s=1.0,
                read_s=0.2,
                pool_s=1.0,
            )
    finally:
        silent.close()


def test_the_pool_bound_holds() -> None:
    wire = StdlibTransport(keepalive_max=1, keepalive_expiry_s=30, connections_max=1)
    assert wire._slots.acquire(timeout=0)  # the one slot is taken
    with pytest.raises(httpx.PoolTimeout):
        wire.exchange("POST", ("127.0.0.1", 9), "/", b"", {}, **{**TIMEOUTS, "pool_s": 0.05})
    wire._slots.release()


class _Scripted:
    """A raw server: for each request it reads (whole, in one recv), it sends the next
    canned answer verbatim; records each request's bytes and how many recvs it took."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.key = ("127.0.0.1", self.listener.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                while self.answers:
                    data = conn.recv(65536)
                    if not data:
                        break
                    self.requests.append(data)
                    answer = self.answers.pop(0)
                    conn.sendall(answer)
                    if b"Connection: close" in answer or answer.startswith(b"HTTP/1.0"):
                        break

    def close(self) -> None:
        self.listener.close()


def test_a_request_goes_out_in_one_write_with_its_length() -> None:
    srv = _Scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    try:
        wire = StdlibTransport(keepalive_max=4, keepalive_expiry_s=30, connections_max=8)
        got = wire.exchange("POST", srv.key, "/v1/kv/put", b"body!", {"X-A": "1"}, **TIMEOUTS)
        assert (got.status_code, got.content) == (200, b"ok")
        head, _, body = srv.requests[0].partition(b"\r\n\r\n")
        assert body == b"body!"  # the header block and the body arrived in one read
        assert head.startswith(b"POST /v1/kv/put HTTP/1.1\r\n")
        assert b"\r\nContent-Length: 5" in head and b"\r\nX-A: 1" in head
    finally:
        srv.close()


def test_answers_are_parsed_chunked_and_keep_alive_rules() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: a/b\r\n\r\n"
        b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
    )
    closing = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 1\r\n\r\nz"
    old = b"HTTP/1.0 200 OK\r\n\r\nto the end"
    srv = _Scripted([chunked, closing, old])
    try:
        wire = StdlibTransport(keepalive_max=4, keepalive_expiry_s=30, connections_max=8)
        first = wire.exchange("GET", srv.key, "/a", None, {}, **TIMEOUTS)
        assert (first.status_code, first.content) == (200, b"abcde")
        assert first.headers["content-type"] == "a/b"
        assert len(wire._idle[srv.key]) == 1  # kept: HTTP/1.1, no close
        second = wire.exchange("GET", srv.key, "/b", None, {}, **TIMEOUTS)
        assert (second.status_code, second.content) == (503, b"z")
        assert not wire._idle[srv.key]  # the server said close: not kept
        third = wire.exchange("GET", srv.key, "/c", None, {}, **TIMEOUTS)
        assert (third.status_code, third.content) == (200, b"to the end")  # read to EOF
        assert not wire._idle[srv.key]
    finally:
        srv.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"SPDY/9 200 OK\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort",
    ],
)
def test_malformed_answers_are_protocol_errors(answer: bytes) -> None:
    srv = _Scripted([answer])
    try:
        wire = StdlibTransport(keepalive_max=4, keepalive_expiry_s=30, connections_max=8)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            wire.exchange("GET", srv.key, "/", None, {}, **TIMEOUTS)
        assert not wire._idle.get(srv.key)  # a broken connection is never pooled
    finally:
        srv.close()
