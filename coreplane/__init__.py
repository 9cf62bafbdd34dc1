"""coreplane: an embeddable, Raft-replicated control plane.

This module only re-exports; the sorted ``__all__`` is pinned by tests/unit/test_public_api.py.

The root is light: importing ``coreplane`` (and so ``coreplane.core.codec``, ``coreplane.sdk``
or ``coreplane.placement``) loads only the error tree. The names that live in heavier layers
are resolved on first use through a module ``__getattr__`` (PEP 562), so pysyncobj, lmdb and
the socket machinery load only when the host touches ``ControlPlane`` or ``KV``.
tests/unit/test_layers.py checks this in a fresh interpreter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` resolves these
    from coreplane.core.commands import Proposable
    from coreplane.core.machines.kv import Limits
    from coreplane.core.machines.user import ApplyContext, Machine
    from coreplane.core.state import Applied, StateMachine
    from coreplane.runtime.controlplane import KV, ControlPlane
    from coreplane.runtime.pipeline import ProposalFuture
    from coreplane.runtime.seams import Seams
    from coreplane.runtime.status import NodeStatus, PeerStatus, StaleReadBound
    from coreplane.runtime.view import StateView

__version__ = "0.1.0"

__all__ = [
    "KV",
    "Applied",
    "ApplyContext",
    "CommandRejected",
    "ControlPlane",
    "CoreplaneError",
    "CorruptData",
    "DecodeError",
    "InvalidArgument",
    "InvariantViolation",
    "Limits",
    "Machine",
    "NodeStatus",
    "NotLeader",
    "PeerStatus",
    "Proposable",
    "ProposalFuture",
    "Retryable",
    "Seams",
    "StaleReadBound",
    "StateMachine",
    "StateView",
    "StorageFull",
    "Unavailable",
]

# exported name -> the module that defines it, imported on first access
_LAZY: dict[str, str] = {
    "KV": "coreplane.runtime.controlplane",
    "Applied": "coreplane.core.state",
    "ApplyContext": "coreplane.core.machines.user",
    "ControlPlane": "coreplane.runtime.controlplane",
    "Limits": "coreplane.core.machines.kv",
    "Machine": "coreplane.core.machines.user",
    "NodeStatus": "coreplane.runtime.status",
    "PeerStatus": "coreplane.runtime.status",
    "Proposable": "coreplane.core.commands",
    "ProposalFuture": "coreplane.runtime.pipeline",
    "Seams": "coreplane.runtime.seams",
    "StaleReadBound": "coreplane.runtime.status",
    "StateMachine": "coreplane.core.state",
    "StateView": "coreplane.runtime.view",
}


if not TYPE_CHECKING:  # hidden from type checkers: a visible module __getattr__ would make
    # mypy accept any attribute (`coreplane.ControlPlan` too); they see the imports above.

    def __getattr__(name: str) -> Any:
        module_name = _LAZY.get(name)
        if module_name is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        globals()[name] = value  # later lookups are plain attribute hits
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
