"""User machines: how a host builds its own replicated state on coreplane.

A user machine is anything with ``apply(state, command, ctx) -> (new_state, result)`` and,
optionally, ``on_tick(state, ctx) -> new_state`` and an ``initial`` state; or the same given as
plain functions to `UserMachine.of`. No subclassing. The state is plain data (None, bool, int,
str, bytes, lists, str-keyed maps) that coreplane keeps, snapshots and hashes for the machine,
so the machine itself stays a pure function and replicas cannot drift through hidden fields.

To refuse a command, raise `CommandRejected(code)`: every replica refuses it the same way. Any
other exception is treated as a deterministic refusal with code ``machine_error`` and leaves the
state as it was (return a new state rather than mutating the one you were given).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from coreplane.core.codec import Value
from coreplane.errors import InvalidArgument

__all__ = ["ApplyContext", "Machine", "UserMachine"]

ApplyFn = Callable[[Value, Value, "ApplyContext"], tuple[Value, Value]]
TickFn = Callable[[Value, "ApplyContext"], Value]


@dataclass(frozen=True, slots=True)
class ApplyContext:
    """What a machine may know besides its state: all of it comes from the log."""

    index: int  # log index of the entry being applied
    tick_ms: int  # committed tick time (leader-stamped); never a local clock
    client_id: str  # "" for internal entries such as ticks


@runtime_checkable
class Machine(Protocol):
    """What `ControlPlane.register_machine` accepts: an object with `apply`, and optionally
    ``on_tick(state, ctx) -> new_state`` (run on every committed tick, in name order) and an
    ``initial`` state (a value, or a callable returning one). All three must be deterministic
    functions of their arguments: no clock, randomness, I/O or floats."""

    def apply(self, state: Value, command: Value, ctx: ApplyContext) -> tuple[Value, Value]:
        """(new_state, result) for `command`; raise `CommandRejected(code)` to refuse it."""
        ...


@dataclass(frozen=True, slots=True)
class UserMachine:
    """A registered machine, normalized from an object or from plain functions."""

    name: str
    apply: ApplyFn
    on_tick: TickFn | None
    initial: Value

    @staticmethod
    def of(
        name: str,
        machine: Any = None,
        *,
        apply: ApplyFn | None = None,
        on_tick: TickFn | None = None,
        initial: Value = None,
    ) -> UserMachine:
        if not isinstance(name, str) or not name or len(name) > 128:
            raise InvalidArgument("name", "must be a non-empty str of at most 128 characters")
        if machine is not None:
            apply = getattr(machine, "apply", None)
            on_tick = getattr(machine, "on_tick", None)
            initial = getattr(machine, "initial", None)
            if callable(initial):
                initial = initial()
        if not callable(apply):
            raise InvalidArgument(f"machines.{name}.apply", "a user machine needs apply()")
        if on_tick is not None and not callable(on_tick):
            raise InvalidArgument(f"machines.{name}.on_tick", "must be callable")
        return UserMachine(name, apply, on_tick, initial)
