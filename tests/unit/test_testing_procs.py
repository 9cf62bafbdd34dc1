"""coreplane.testing.procs: the JSON-line channel to child processes never hangs its caller."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from coreplane.testing.procs import JsonLineChild, ProcessDown

# Real child processes: opt-in (`pytest -m slow`), as CONTRIBUTING.md says.
pytestmark = pytest.mark.slow

CHILD = """
import os, sys, time
from coreplane.testing.procs import emit, serve_json_lines

def handle(req):
    if req["op"] == "echo":
        return {"value": req["value"], "secret_seen": os.environ.get("SECRET") == "s3"}
    if req["op"] == "sleep":
        time.sleep(req["s"])
        return {}
    raise KeyError(req["op"])

emit({"event": "ready"})
serve_json_lines(handle)
emit({"event": "stopped"})
"""


@pytest.fixture
def child(tmp_path: Path) -> JsonLineChild:
    proc = JsonLineChild(
        "c1",
        [sys.executable, "-c", CHILD],
        log_path=tmp_path / "c1.log",
        env={"SECRET": "s3"},
        cwd=Path(__file__).resolve().parents[2],
    )
    proc.start(timeout_s=20)
    return proc


def test_replies_match_requests_and_errors_come_back_named(child: JsonLineChild) -> None:
    assert child.request("echo", value=[1, "x"]) == {
        "id": 1,
        "ok": True,
        "value": [1, "x"],
        "secret_seen": True,
    }
    bad = child.request("nope")
    assert bad["ok"] is False and bad["error"] == "KeyError"
    assert child.request("echo", value=2)["value"] == 2  # still serving after a bad request
    assert [e["event"] for e in child.events] == ["ready"]
    assert child.stop() == 0
    assert [e["event"] for e in child.events] == ["ready", "stopped"]


def test_a_slow_request_does_not_hold_up_others(child: JsonLineChild) -> None:
    import threading

    slow = threading.Thread(target=child.request, args=("sleep",), kwargs={"s": 1.0})
    slow.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert child.request("echo", value=1)["ok"]
    assert time.monotonic() - started < 0.9
    slow.join()
    child.stop()


def test_a_dead_or_silent_child_raises_instead_of_hanging(child: JsonLineChild) -> None:
    with pytest.raises(TimeoutError):
        child.request("sleep", timeout_s=0.0, s=5.0)  # waits timeout + slack (2 s), no more
    child.kill9()
    assert not child.alive
    with pytest.raises(ProcessDown):
        child.request("echo", value=1)
    with pytest.raises(ConnectionError):  # ProcessDown is a ConnectionError too
        child.request("echo", value=1)
