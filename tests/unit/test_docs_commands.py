"""The shell commands of the guides parse with the real tools, so none rots.

Every line of a ```sh block in the guides (docs/concepts.md, operator-guide.md, sdk-guide.md,
testing-guide.md) is one command. A `coreplane ...` line is parsed by the real CLI (click) with
``--help`` appended: an unknown command or option fails it, and nothing runs. A
``python3 -m MODULE ...`` line must name options that ``MODULE --help`` lists. Any other
command is refused, so a new kind of command gets a check before it gets documented.
(docs/cli.md is a reference whose blocks are synopses, with ``|`` between alternatives.)
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from click.testing import CliRunner

from coreplane.ops.cli import main

ROOT = Path(__file__).resolve().parents[2]
GUIDES = ("concepts.md", "operator-guide.md", "sdk-guide.md", "testing-guide.md")
_SH = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def commands(text: str) -> list[str]:
    """The command lines of a page's sh blocks, trailing ``#`` comments removed."""
    out = []
    for block in _SH.findall(text):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                out.append(line)
    return out


@cache
def _module_help(module: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def check(line: str) -> None:
    words = shlex.split(line)
    if words[0] == "coreplane":
        result = CliRunner().invoke(main, [*words[1:], "--help"])
        assert result.exit_code == 0, f"{line!r}: {result.output[-600:]}"
        return
    if words[:2] == ["python3", "-m"]:
        help_text = _module_help(words[2])
        for word in words[3:]:
            if word.startswith("-"):
                assert word.split("=")[0] in help_text, f"{line!r}: {word} is no option"
        return
    raise AssertionError(f"{line!r}: no check for this kind of command")


def test_the_guides_have_commands() -> None:
    found = {name: commands((ROOT / "docs" / name).read_text("utf-8")) for name in GUIDES}
    assert found["operator-guide.md"] and found["testing-guide.md"]


@pytest.mark.parametrize("name", GUIDES)
def test_every_command_parses(name: str) -> None:
    for line in commands((ROOT / "docs" / name).read_text("utf-8")):
        check(line)


def test_the_check_refuses_what_the_tools_refuse() -> None:
    check("coreplane update partition p3 --scale-up --new-num-nodes 4 --dry-run")
    for bad in (
        "coreplane update partition p3 --scale-sideways",
        "coreplane nosuchcommand",
        "python3 -m coreplane.testing.chaos --no-such-flag",
        "rm -rf /",
    ):
        with pytest.raises(AssertionError):
            check(bad)
    assert commands("```sh\ncoreplane status   # the leader\n\n```\n") == ["coreplane status"]
