"""coreplane: an embeddable, Raft-replicated control plane.

This module only re-exports; the sorted ``__all__`` is pinned by tests/unit/test_public_api.py.
"""

from coreplane.core.state import Applied, StateMachine
from coreplane.errors import (
    CommandRejected,
    CoreplaneError,
    CorruptData,
    DecodeError,
    InvalidArgument,
    InvariantViolation,
    NotLeader,
    Retryable,
    StorageFull,
    Unavailable,
)
from coreplane.runtime.controlplane import KV, ControlPlane

__version__ = "0.1.0"

__all__ = [
    "KV",
    "Applied",
    "CommandRejected",
    "ControlPlane",
    "CoreplaneError",
    "CorruptData",
    "DecodeError",
    "InvalidArgument",
    "InvariantViolation",
    "NotLeader",
    "Retryable",
    "StateMachine",
    "StorageFull",
    "Unavailable",
]
