"""`import coreplane.sdk` loads neither pysyncobj nor lmdb (a client machine needs neither)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _loaded_after(statement: str) -> set[str]:
    code = (
        f"import sys\n{statement}\n"
        "print(' '.join(m for m in ('pysyncobj', 'lmdb') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(out.stdout.split())


def test_the_sdk_loads_no_server_dependency() -> None:
    assert _loaded_after("import coreplane") == set()  # the package root is lazy
    assert _loaded_after("import coreplane.sdk") == set()
    assert _loaded_after("from coreplane.sdk import FencedResource, LongRunningConfig") == set()
