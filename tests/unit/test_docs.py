"""Every ```python block in docs/*.md runs here, or says why it cannot.

The blocks of one page run in order in one namespace (a later block may use an earlier one's
names), each compiled under the name ``docs/<page>.md:<line>`` so a failure points at the page.
A block that cannot run in the default suite (it needs processes, sockets or a cluster) is
marked on the line just before its fence with an HTML comment, which renders as nothing:

    <!-- not-runnable: needs three processes and free ports -->

A marker without a reason is refused, and so is a page whose blocks are all marked: a page of
examples none of which run would rot unseen.

A block that needs a real cluster in this process (threads, sockets on 127.0.0.1, a second or
more) is marked ``<!-- slow: starts a one-node cluster -->``: the default suite leaves it out,
and `test_slow_python_blocks_run` (``-m slow``) runs the whole page, slow blocks included, in
order. Blocks of the default run must therefore not need the names a slow block defines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
_MARKER = re.compile(r"<!--\s*not-runnable:(.*?)-->")
_SLOW = re.compile(r"<!--\s*slow:(.*?)-->")
_PYTHON = {"python", "py", "python3", "pycon"}


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    code: str
    skip_reason: str | None  # None: runnable
    slow_reason: str | None = None  # set: runs only in the slow test


def python_blocks(text: str) -> list[Block]:
    """The python blocks of a markdown page, with the not-runnable reason of each, if any."""
    blocks = []
    for match in _FENCE.finditer(text):
        words = match.group(1).split()
        if not words or words[0].lower() not in _PYTHON:
            continue
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        reason = marker.group(1).strip() if marker else None
        if marker and not reason:
            raise AssertionError(f"line {line}: a not-runnable marker must say why")
        slow = _SLOW.search(before)
        slow_reason = slow.group(1).strip() if slow else None
        if slow and not slow_reason:
            raise AssertionError(f"line {line}: a slow marker must say why")
        blocks.append(Block(line, match.group(2), reason, slow_reason))
    return blocks


def run_page(name: str, text: str, *, slow: bool = False) -> int:
    """Run a page's runnable blocks in order (`slow`: the slow ones too); how many ran.
    Raises what a block raises."""
    namespace: dict[str, object] = {"__name__": f"docs_{Path(name).stem}"}
    ran = 0
    for block in python_blocks(text):
        if block.skip_reason is not None or (block.slow_reason is not None and not slow):
            continue
        # padded so that line numbers in a traceback are the page's own
        code = compile("\n" * block.line + block.code, f"{name}:{block.line}", "exec")
        exec(code, namespace)  # our own documentation's examples
        ran += 1
    return ran


PAGES = sorted(DOCS.glob("*.md"))


def test_there_are_docs_pages() -> None:
    assert [p.name for p in PAGES if p.name == "architecture.md"] == ["architecture.md"]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_blocks_run_or_say_why_not(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    ran = run_page(f"docs/{page.name}", text)
    if blocks:
        assert ran > 0, f"docs/{page.name}: every python block is marked not runnable"


SLOW_PAGES = [p for p in PAGES if any(b.slow_reason for b in python_blocks(p.read_text("utf-8")))]


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW_PAGES, ids=[p.name for p in SLOW_PAGES])
def test_slow_python_blocks_run(page: Path) -> None:
    """In a process of its own: a failing block must not leave its cluster's threads here."""
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    root = DOCS.parent
    code = (
        "import sys; from pathlib import Path; from tests.unit.test_docs import run_page; "
        f"p = Path({str(page)!r}); "
        "print('ran', run_page('docs/' + p.name, p.read_text(encoding='utf-8'), slow=True))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREPLANE_")}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert proc.stdout.split()[-2:] == ["ran", str(sum(b.skip_reason is None for b in blocks))]


def test_the_checker_runs_blocks_and_honours_markers() -> None:
    page = (
        "intro\n\n```python\nx = 40\n```\n\n"
        "<!-- not-runnable: needs a cluster -->\n```python\nraise SystemExit('never runs')\n```\n"
        "```text\nnot python\n```\n"
        "```python\nassert x + 2 == 42\n```\n"
    )
    blocks = python_blocks(page)
    assert [(b.line, b.skip_reason) for b in blocks] == [
        (3, None),
        (8, "needs a cluster"),
        (14, None),
    ]
    assert run_page("docs/t.md", page) == 2
    slow = "```python\nx = 1\n```\n<!-- slow: a cluster -->\n```python\nx += 1\n```\n"
    assert [b.slow_reason for b in python_blocks(slow)] == [None, "a cluster"]
    assert run_page("docs/t.md", slow) == 1
    assert run_page("docs/t.md", slow, slow=True) == 2


def test_the_checker_fails_a_broken_block_at_its_line() -> None:
    page = "text\n\n```python\nvalue = 1\nassert value == 2, 'doc is wrong'\n```\n"
    with pytest.raises(AssertionError, match="doc is wrong") as info:
        run_page("docs/t.md", page)
    tb = info.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert (tb.tb_frame.f_code.co_filename, tb.tb_lineno) == ("docs/t.md:3", 5)  # page line
    with pytest.raises(AssertionError, match="must say why"):
        python_blocks("<!-- not-runnable: -->\n```python\npass\n```\n")
