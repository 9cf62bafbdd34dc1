"""README's two commands are the contract with a newcomer; CI must run the test one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_has_exactly_two_commands() -> None:
    cmds = _commands()
    assert len(cmds) == 2
    assert "three_node_demo" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _commands()[1] in ci


def test_demo_named_by_readme_exists() -> None:
    demo = _commands()[0].split("python3 ")[-1].strip()
    assert (ROOT / demo).is_file(), demo
