"""The whole coreplane exception tree.

One root so a host can catch everything coreplane raises, and a split that tells the caller what
to do next: fix the call (`InvalidArgument`), accept a deterministic refusal (`CommandRejected`),
retry (`Retryable`: `NotLeader`, `Unavailable`), distrust the bytes (`DecodeError`,
`CorruptData`) or stop the node (`InvariantViolation`). Imports nothing from coreplane.
"""

from __future__ import annotations

__all__ = [
    "CommandRejected",
    "CoreplaneError",
    "CorruptData",
    "DecodeError",
    "InvalidArgument",
    "InvariantViolation",
    "LockLost",
    "NotLeader",
    "PermissionDenied",
    "Retryable",
    "StorageFull",
    "Unavailable",
    "require",
]


class CoreplaneError(Exception):
    """Root of every error coreplane raises through its public API."""


class InvalidArgument(CoreplaneError, ValueError):
    """The caller passed a bad value; `field` names it so the message can point at it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class CommandRejected(CoreplaneError):
    """The replicated state machine refused a command, identically on every replica.

    `code` is a stable machine-readable string (e.g. ``"key_too_large"``); callers branch on it,
    never on the message.
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class Retryable(CoreplaneError):
    """An operational condition that may clear: retry with backoff."""


class NotLeader(Retryable):
    """This node cannot serve the request; `leader_hint` is where to go, if known."""

    def __init__(self, leader_hint: str | None = None, message: str = "not the leader") -> None:
        hint = f" (leader: {leader_hint})" if leader_hint else ""
        super().__init__(message + hint)
        self.leader_hint = leader_hint


class Unavailable(Retryable):
    """No quorum, a timeout, or a node that is stopping: the outcome may be unknown."""


class LockLost(CoreplaneError):
    """A lock this client held lapsed (its session expired or was closed): the guarded work
    must stop, because another holder with a higher fencing token may already be acting."""

    def __init__(self, name: str, message: str = "") -> None:
        super().__init__(f"lock {name!r} was lost" + (f": {message}" if message else ""))
        self.name = name


class PermissionDenied(CoreplaneError):
    """The API refused the caller's credentials: no or unknown token (401) or a role that may
    not make this request (403); or the client does not trust the server's TLS certificate
    (`status` 0). Not retryable: fix the token or the trust store."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class DecodeError(CoreplaneError):
    """Bytes from outside (network, disk, a client) are not a valid coreplane encoding."""


class CorruptData(CoreplaneError):
    """Stored data failed an integrity check (checksum, foreign data dir); never applied."""


class StorageFull(CoreplaneError):
    """The disk or the LMDB map is full; the node stops writing and loses nothing."""


class InvariantViolation(CoreplaneError):
    """A bug: an internal invariant does not hold. The node stops rather than diverge."""


def require(condition: bool, message: str) -> None:
    """Check an invariant that must hold in production (`assert` vanishes under ``python -O``)."""
    if not condition:
        raise InvariantViolation(message)
