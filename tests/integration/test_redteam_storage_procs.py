"""Red team, two processes: a second process on a live node's data dir (issue 10, bug 1).

Process B runs ``ControlPlane(<exactly node a's arguments>)`` while a runs. Before the data dir
lock, B was not refused, and its ``stop()`` (a fresh journal's garbage sweep) deleted every
entry a had written since B opened: after a clean stop, a could not restart
(``CorruptData: journal entry N is missing``). Now B is refused at construction with an error
naming a's pid, and a restarts with every acknowledged write.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from coreplane.runtime.controlplane import ControlPlane
from coreplane.testing.ports import free_ports

SECRET = b"red-team-storage-secret-0123456789"
FAST = {"election_timeout_ms": (200, 400), "heartbeat_ms": 40, "tick_interval_ms": 100}
REPO = Path(__file__).resolve().parents[2]

# B: open a's data dir with a's arguments, say so, wait for a line, then stop (or report).
_SECOND = textwrap.dedent("""
    import sys
    from coreplane.errors import CoreplaneError
    from coreplane.runtime.controlplane import ControlPlane
    data_dir, address, secret = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    try:
        cp = ControlPlane("a", address, {}, data_dir, secret, election_timeout_ms=(200, 400),
                          heartbeat_ms=40, tick_interval_ms=100)
    except CoreplaneError as exc:
        print("refused", type(exc).__name__, getattr(exc, "field", ""), exc, flush=True)
        sys.exit(0)
    print("opened", flush=True)
    sys.stdin.readline()
    cp.stop()
    print("stopped", flush=True)
""")


def _leader_ready(cp: ControlPlane) -> None:
    deadline = time.monotonic() + 10
    while not (cp.is_leader() and cp.fencing_token is not None):
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.02)


@pytest.mark.slow
def test_second_process_on_a_live_data_dir_is_refused_and_harmless(tmp_path: Path) -> None:
    data_dir = tmp_path / "a"
    address = f"127.0.0.1:{free_ports(1)[0]}"
    a = ControlPlane("a", address, {}, data_dir, SECRET, **FAST)
    a.start()
    try:
        _leader_ready(a)
        for i in range(20):
            a.kv.put(f"before{i}", b"x")
        b = subprocess.Popen(
            [sys.executable, "-c", _SECOND, str(data_dir), address, SECRET.decode()],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert b.stdout is not None and b.stdin is not None
        first = b.stdout.readline().strip()
        for i in range(50):  # written while B holds its view of the log end
            a.kv.put(f"after{i}", b"y")
        if first == "opened":
            b.stdin.write("\n")
            b.stdin.flush()
        out, err = b.communicate(timeout=60)
    finally:
        a.stop()
    a = ControlPlane("a", address, {}, data_dir, SECRET, **FAST)  # a restarts intact
    try:
        a.start()
        _leader_ready(a)
        after = len(a.kv.range("after"))
    finally:
        a.stop()
    assert first.startswith("refused InvalidArgument data_dir"), (first, out, err[-2000:])
    assert f"pid {os.getpid()}" in first
    assert after == 50
