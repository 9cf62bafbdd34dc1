"""Runner: `python -m benches NAME --json OUT [--smoke]` (see benches/__init__.py)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))


def _git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches")
    parser.add_argument("name", choices=_names())
    parser.add_argument("--json", dest="json_out", default=None, help="write results here")
    parser.add_argument("--smoke", action="store_true", help="small sizes, for the test suite")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"benches.{args.name}")
    start = time.perf_counter()
    result: dict[str, Any] = module.run(json_out=args.json_out, smoke=args.smoke)
    result.setdefault("bench", args.name)
    result["git_revision"] = _git_revision()
    result["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    result["wall_s"] = time.perf_counter() - start
    text = json.dumps(result, indent=2, sort_keys=True, default=str)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n", encoding="utf-8")
    print(json.dumps(result.get("summary", result), indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
