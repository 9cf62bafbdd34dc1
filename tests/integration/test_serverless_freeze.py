"""A process frozen longer than an idle timeout on the path (here a NAT-like proxy that drops
idle connections silently) fails no request with `ServerlessConfig` (no idle connection is
kept, so none is reused after the thaw), while a plain pooled client reproduces the failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coreplane.api.server import ApiServer
from tests.api.local import LocalControlPlane

from .nat_proxy import NatProxy

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "freeze-test-token-0123456789"


@pytest.fixture
def proxied() -> Iterator[NatProxy]:
    server = ApiServer(LocalControlPlane(), "127.0.0.1:0", tokens={TOKEN: "client"})
    server.start()
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    proxy = NatProxy((host, int(port)), idle_s=0.3)
    try:
        yield proxy
    finally:
        proxy.close()
        server.stop()


def _run_with_freeze(proxy: NatProxy, mode: str) -> list[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.freeze_client",
            mode,
            f"http://127.0.0.1:{proxy.port}",
            TOKEN,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(30), lines
        for _ in range(3):  # three freezes, each longer than the idle timeout
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(1.0)
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.3)
        assert proc.wait(timeout=60) == 0, lines
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
    reader.join(5)
    return [line for line in lines if line != "ready"]


def test_serverless_profile_fails_no_request_across_freezes(proxied: NatProxy) -> None:
    results = _run_with_freeze(proxied, "sdk")
    print("sdk:", results.count("ok"), "ok,", len(results) - results.count("ok"), "failed")
    assert len(results) == 30 and all(r == "ok" for r in results), results


def test_a_pooled_client_reproduces_the_failure(proxied: NatProxy) -> None:
    results = _run_with_freeze(proxied, "naive")
    failed = [r for r in results if r != "ok"]
    print("naive pool:", len(results) - len(failed), "ok,", failed, "dropped", proxied.dropped)
    assert failed, "the negative control must fail, or the test proves nothing"
