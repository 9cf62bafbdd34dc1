"""coreplane.sdk: the client side of coreplane (see DESIGN.md section 9).

Re-exports only. Imports nothing of the server side but `coreplane.core.codec` and
`coreplane.errors`: a client machine needs neither pysyncobj nor lmdb.
"""

from coreplane.errors import LockLost
from coreplane.sdk.agent import Agent, FleetAction
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
from coreplane.sdk.router import Router

__all__ = [
    "Agent",
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
    "FleetAction",
    "Lock",
    "LockLost",
    "LongRunningConfig",
    "Outcome",
    "RetryBudget",
    "Router",
    "ServerlessConfig",
    "detect_config",
    "detect_profile",
]
