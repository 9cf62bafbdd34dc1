"""coreplane.sdk: the client side of coreplane (see DESIGN.md section 9).

Re-exports only. Imports nothing of the server side but `coreplane.core.codec` and
`coreplane.errors`: a client machine needs neither pysyncobj nor lmdb.
"""

from coreplane.errors import LockLost
from coreplane.sdk.client import AsyncClient, Client, Endpoints
from coreplane.sdk.config import (
    ClientConfig,
    ContainerConfig,
    LongRunningConfig,
    ServerlessConfig,
    detect_config,
    detect_profile,
)
from coreplane.sdk.fencing import FencedResource
from coreplane.sdk.lock import AsyncLock, Lock
from coreplane.sdk.retry import Backoff, CallPlan, CircuitBreaker, Outcome, RetryBudget

__all__ = [
    "AsyncClient",
    "AsyncLock",
    "Backoff",
    "CallPlan",
    "CircuitBreaker",
    "Client",
    "ClientConfig",
    "ContainerConfig",
    "Endpoints",
    "FencedResource",
    "Lock",
    "LockLost",
    "LongRunningConfig",
    "Outcome",
    "RetryBudget",
    "ServerlessConfig",
    "detect_config",
    "detect_profile",
]
