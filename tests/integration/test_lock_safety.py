"""Lock safety, Jepsen style: real holder processes paused with SIGSTOP past their lock's TTL.

The resource keeps a log of accepted writes. With the token check (`FencedResource`) the log's
tokens never go down, so two holders' writes never interleave, even though the paused holder
wakes up and sends a write it checked before the pause. The negative control runs the same
schedule with the check switched off and must show the violation: otherwise the test would
prove nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coreplane.errors import CommandRejected
from coreplane.sdk import FencedResource
from tests.integration.api_support import TOKEN

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


class Resource:
    """An HTTP resource that logs accepted writes, fenced or (negative control) not."""

    def __init__(self, fenced: bool) -> None:
        self.fenced = fenced
        self.fence = FencedResource()
        self.log: list[tuple[int, str]] = []
        self.refused: list[tuple[int, str]] = []
        self.lock = threading.Lock()
        resource = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 200
                with resource.lock:
                    try:
                        if resource.fenced:
                            resource.fence.check("r", body["token"])
                        resource.log.append((body["token"], body["holder"]))
                    except CommandRejected:
                        resource.refused.append((body["token"], body["holder"]))
                        status = 409
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/write"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def violations(log: list[tuple[int, str]]) -> list[str]:
    """Writes whose token is lower than one already accepted: a stale holder got through."""
    out = []
    highest = 0
    for n, (token, holder) in enumerate(log):
        if token < highest:
            out.append(f"write {n} by {holder} with token {token} after token {highest}")
        highest = max(highest, token)
    return out


class Holder:
    def __init__(self, name: str, resource: Resource, urls: list[str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.lock_holder",
                name,
                resource.url,
                TOKEN,
                "2",
                *urls,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def run_schedule(api_cluster: Any, fenced: bool) -> Resource:
    _cluster, servers = api_cluster
    urls = [s.url for s in servers.values()]
    resource = Resource(fenced)
    holders = [Holder(f"h{i}", resource, urls) for i in range(2)]
    try:
        paused = _wait(
            lambda: next(
                (h for h in holders if any(line.startswith("checked") for line in h.lines)), None
            ),
            60,
            "a first holder",
        )
        os.kill(paused.proc.pid, signal.SIGSTOP)  # between its check and its write
        stale = int(next(line for line in paused.lines if line.startswith("checked")).split()[1])
        other = next(h for h in holders if h is not paused)
        # The pause outlives the TTL: the cluster expires the session, the other holder is
        # granted the lock with a higher token and writes.
        _wait(
            lambda: any(token > stale for token, _h in resource.log), 60, "the next holder's write"
        )
        os.kill(paused.proc.pid, signal.SIGCONT)  # wakes up and sends the write it checked
        for h in holders:
            h.proc.wait(timeout=120)
        assert all(h.proc.returncode == 0 for h in holders), [h.lines for h in holders]
        assert any(line.startswith("wrote") for line in other.lines)
    finally:
        for h in holders:
            if h.proc.poll() is None:
                os.kill(h.proc.pid, signal.SIGCONT)
                h.proc.kill()
        resource.server.shutdown()
    return resource


def test_fenced_writes_never_go_back_even_after_a_pause_past_the_ttl(api_cluster: Any) -> None:
    resource = run_schedule(api_cluster, fenced=True)
    print("fenced: accepted", resource.log, "refused", resource.refused)
    assert violations(resource.log) == []
    assert resource.refused, "the paused holder's stale write must reach the resource"
    assert len({h for _t, h in resource.log}) == 2  # both holders wrote


def test_negative_control_without_the_token_check_shows_the_violation(api_cluster: Any) -> None:
    resource = run_schedule(api_cluster, fenced=False)
    print("unfenced: accepted", resource.log, "violations", violations(resource.log))
    assert violations(resource.log), "without fencing the stale write must get through"
