"""A state machine fed the way the runtime feeds it, for the unit tests of the built-in machines
(locks, quotas): encoded commands at consecutive log indexes, internal ones with the runtime's
marker, and ticks that carry the elapsed cluster time."""

from __future__ import annotations

from typing import Any

from coreplane.core import commands as C
from coreplane.core.state import StateMachine

__all__ = ["Log", "entry"]


def entry(command: C.Command) -> bytes:
    """A log entry as the runtime writes it (internal commands carry its marker)."""
    if command.TAG in C.INTERNAL_TAGS:
        return C.encode_internal(command)
    return C.encode(command)


class Log:
    """A state machine fed through encoded commands at consecutive indexes."""

    def __init__(self) -> None:
        self.sm = StateMachine()
        self.index = 0
        self.ticks = 0

    def run(self, command: C.Command) -> Any:
        """Apply `command` at the next index; its `Applied` (a refusal is not raised)."""
        self.index += 1
        return self.sm.apply(entry(command), self.index)

    def ok(self, command: C.Command) -> Any:
        """Apply `command` at the next index; its value, or CommandRejected."""
        return self.run(command).unwrap()

    def tick(self, tick_ms: int) -> Any:
        """Advance cluster time to `tick_ms` (ticks carry the elapsed step)."""
        self.ticks += 1
        return self.ok(C.Tick(self.ticks, tick_ms - self.sm.tick_ms))

    def leader(self, node: str = "n1") -> int:
        """Commit a Leader entry for `node` in the next term; its fencing token."""
        term = self.sm.leader_term + 1
        return int(self.ok(C.Leader(node_id=node, term=term)))
