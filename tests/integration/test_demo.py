"""The README's first command: `examples/three_node_demo.py --plain` runs every scene and exits 0.

Runs the demo as a newcomer would (its own process, this checkout on PYTHONPATH so the daemons
and the CLI it starts import this coreplane) and checks that every scene's check passed, in
the order the story tells them. Its wall time is a bench matter, not asserted here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCENES = (
    "election",
    "placement",
    "fencing",
    "rate_limit",
    "failover",
    "limit_failover",
    "re_replication",
    "hot_partition",
    "dry_run",
    "scale_up",
    "diagnose",
    "dashboard",
    "replicas_agree",
    "clean_stop",
)


def test_the_demo_passes_every_check_in_order(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREPLANE_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "three_node_demo.py"), "--plain"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    passed = re.findall(r"^\[ *[\d.]+s\]  ok   \[(\w+)\] ", out, re.M)
    assert tuple(passed) == SCENES, out[-4000:]
    assert not re.search(r"^\[ *[\d.]+s\]  FAIL ", out, re.M)
    assert re.search(r"all 14 checks passed in [\d.]+s$", out.rstrip()), out[-500:]
    # what each scene must show on screen, beyond its check line
    for shown in (
        "kill -9 ",
        "$ coreplane update partition p3 --scale-up --new-num-nodes 4 --dry-run",
        "scale-up-p3-",
        "$ coreplane diagnose",
        "coreplane config set-context --token NEW_TOKEN",
        "/dashboard#token=",
    ):
        assert shown in out, shown
