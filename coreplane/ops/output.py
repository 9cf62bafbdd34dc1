"""Rendering: every command hands plain data here with its table layout; ``--output`` picks
table (rich), json or yaml. JSON and YAML print the data whole (bytes as UTF-8 text when they
decode, else base64 under a ``base64:`` prefix), so scripts parse the same fields the table
shows and more."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

__all__ = ["FORMATS", "Out", "plain"]

FORMATS = ("table", "json", "yaml")


def plain(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class Out:
    """One command's output channel: data to stdout in the chosen format, notes to stderr."""

    def __init__(self, fmt: str = "table", *, color: bool | None = None) -> None:
        self.fmt = fmt
        self.console = Console(
            highlight=False, no_color=color is False, force_terminal=color if color else None
        )
        self.err = Console(stderr=True, highlight=False, no_color=color is False)

    def data(self, value: Any, table: Callable[[Any], Any] | None = None) -> None:
        value = plain(value)
        if self.fmt == "json":
            sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
        elif self.fmt == "yaml":
            sys.stdout.write(yaml.safe_dump(value, sort_keys=True))
        elif table is not None:
            self.console.print(table(value))
        else:
            self.console.print(value)

    def note(self, text: str) -> None:
        """A remark for the human (stderr): never mixed into json/yaml output."""
        self.err.print(text)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    t = Table(title=title or None, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    return t


def kv_table(title: str, mapping: dict[str, Any]) -> Table:
    t = Table(title=title or None, title_justify="left", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    for k, v in mapping.items():
        t.add_row(
            str(k), "" if v is None else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
        )
    return t
