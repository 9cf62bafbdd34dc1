"""A TCP proxy that drops idle connections silently, as NATs and load balancers do.

A connection idle for `idle_s` is forgotten without a FIN reaching the client: the client's
socket still looks open. The client's next bytes on it are answered with a RST (SO_LINGER 0),
which is what a pooled connection reused after a serverless freeze runs into.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time


class TcpProxy:
    """A listener on 127.0.0.1 that hands each accepted connection to `_pump` on a thread."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        raise NotImplementedError


class NatProxy(TcpProxy):
    def __init__(self, upstream: tuple[str, int], idle_s: float) -> None:
        self.idle_s = idle_s
        self.dropped = 0
        self.reset = 0
        super().__init__(upstream)

    def _pump(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        last = time.monotonic()
        dead = False
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(
                    [client] + ([] if dead else [upstream]), [], [], 0.05
                )
                if not dead and time.monotonic() - last > self.idle_s:
                    dead = True  # forget it silently: no FIN to the client
                    self.dropped += 1
                    upstream.close()
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if sock is client and dead:
                        self.reset += 1
                        client.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        return
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
                    last = time.monotonic()
        except OSError:
            return
        finally:
            client.close()
            if not dead:
                upstream.close()
