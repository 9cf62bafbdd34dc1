"""The README's quickstart daemon, verbatim, as three processes: they elect a leader, serve the
API (a write and a linearizable read through the SDK, `coreplane status` through the CLI) and
stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coreplane.sdk import Client, LongRunningConfig
from coreplane.testing.ports import free_ports

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "quickstart-admin-token-0123456789"
CONFIG = LongRunningConfig(
    backoff_base_ms=20, backoff_cap_ms=300, health_check_interval_ms=0, max_attempts=10
)


def quickstart() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quickstart: a daemon with a control plane inside", 1)[1]
    match = re.search(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert match is not None
    return match.group(1)


def test_quickstart_is_about_twenty_lines() -> None:
    lines = [line for line in quickstart().splitlines() if line.strip()]
    assert len(lines) <= 25


def test_three_quickstart_daemons_elect_serve_and_stop(tmp_path: Path) -> None:
    script = tmp_path / "mydaemon.py"
    script.write_text(quickstart())
    ports = free_ports(6)
    ids = ("a", "b", "c")
    raft = ",".join(f"{n}=127.0.0.1:{p}" for n, p in zip(ids, ports[:3], strict=True))
    api = ",".join(f"{n}=127.0.0.1:{p}" for n, p in zip(ids, ports[3:], strict=True))
    urls = [f"http://127.0.0.1:{p}" for p in ports[3:]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREPLANE_")}
    env.update(
        RAFT=raft,
        API=api,
        CLUSTER_SECRET=os.urandom(32).hex(),
        ADMIN_TOKEN=ADMIN,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    procs = {
        n: subprocess.Popen(
            [sys.executable, str(script)],
            env={**env, "NODE_ID": n, "DATA_DIR": str(tmp_path / n)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in ids
    }
    try:
        with Client(urls, ADMIN, CONFIG) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    rev = client.put("quickstart/hello", b"world")
                    break
                except Exception:  # noqa: BLE001 - still starting: no leader yet
                    assert time.monotonic() < deadline, "no write within 30 s"
                    time.sleep(0.2)
            assert client.get("quickstart/hello") == (b"world", rev)
            leader = client.status()["leader"]
        status = subprocess.run(
            [sys.executable, "-m", "coreplane.ops", "status", "-o", "json"],
            env={**env, "COREPLANE_ENDPOINTS": urls[0], "COREPLANE_TOKEN": ADMIN},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert f'"leader": "{leader}"' in status.stdout
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    outs = {n: p.communicate(timeout=30) for n, p in procs.items()}
    assert {n: p.returncode for n, p in procs.items()} == dict.fromkeys(ids, 0), outs
    assert outs[leader][0].startswith("leading "), outs[leader]
