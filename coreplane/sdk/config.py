"""Client profiles: the numbers a `Client` runs with, chosen from the environment.

`detect_config()` picks one of three profiles (override with ``COREPLANE_SDK_PROFILE`` =
``serverless`` | ``container`` | ``long_running``, or pass a config to the client):

- `ServerlessConfig` (AWS Lambda, Google Cloud Run, Azure Functions): the process is frozen
  between invocations, possibly for minutes, and the clock it would use to expire idle
  connections may not run while frozen; a pooled connection is then dead on the server side
  (its keep-alive timeout passed) but looks alive here, and the first request after the thaw
  fails. So: **no idle connection is kept** (``keepalive_max = 0``; one TCP handshake per
  request, ~0.1 ms on a LAN, the price of never sending on a dead socket), a small pool (4: one
  invocation rarely runs more in parallel), short timeouts (connect 1 s, request 5 s: a function
  has a deadline of its own and must fail fast enough to answer it), 3 attempts, no background
  health checks (a frozen process cannot run them), and a lock's release sent at once
  (``lock_release_linger_ms = 0``: a release deferred into a freeze would hold the lock until
  the session's TTL).
- `ContainerConfig` (Kubernetes, Docker): long-lived but rescheduled at will; pods of one
  deployment start together, so jitter matters. Keep-alive 30 s (below the server's 75 s and
  common proxies' 60 s idle timeouts, so the client always closes first), pool 32, connect 2 s,
  request 10 s, 4 attempts, health checks every 5 s.
- `LongRunningConfig` (VMs, daemons, the CLI's default elsewhere): keep-alive 50 s, pool 64,
  connect 3 s, request 30 s, 5 attempts, health checks every 5 s.

Shared by the other two: a lock's release waits up to 5 ms (``lock_release_linger_ms``) for
the session's next acquire to carry it, then goes on its own (coreplane/sdk/lock.py): a lock
taken in a loop costs one round trip per cycle instead of two, and a waiter elsewhere gets it
at most 5 ms later (measured: benches/api.py, ``lock`` against ``lock_sync``).

Shared by all: backoff with full jitter from 50 ms (25 ms serverless) to a cap; a retry budget of
10% of requests plus a floor of 1 retry/s over a 10 s window (Finagle's shape; its floor of 10/s
is for a process-wide client, ours is per Client); a breaker that opens after 5 consecutive
failures for 0.5..1 s, doubling per failed probe up to 2 s (measured in tests/sim/storm.py:
a 30 s cap kept clients failing fast 17 s after a 10 s outage had ended; 2 s recovers them
within their next requests, at 0.5 attempts per request during the outage).

Detection, in order: Lambda (``AWS_LAMBDA_FUNCTION_NAME``), Cloud Run (``K_SERVICE``), Azure
Functions (``FUNCTIONS_WORKER_RUNTIME``) -> serverless; Kubernetes
(``KUBERNETES_SERVICE_HOST``), Docker (``/.dockerenv``), containerd/podman
(``/run/.containerenv``, ``container`` env) -> container; otherwise long-running.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from coreplane.errors import InvalidArgument

__all__ = [
    "ClientConfig",
    "ContainerConfig",
    "LongRunningConfig",
    "ServerlessConfig",
    "detect_config",
    "detect_profile",
]


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Every knob of a `Client`; the profiles below are this with other defaults."""

    profile: str = "long_running"
    connect_timeout_ms: int = 3_000
    request_timeout_ms: int = 30_000
    pool_max: int = 64  # connections per endpoint
    keepalive_max: int = 16  # idle connections kept per endpoint; 0: none kept
    keepalive_expiry_ms: int = 50_000  # < the server's keep-alive (aiohttp: 75 s)
    max_attempts: int = 5  # first attempt + retries
    backoff_base_ms: int = 50
    backoff_cap_ms: int = 5_000
    budget_ratio: float = 0.1
    budget_min_retries_per_s: float = 1.0
    budget_window_s: int = 10
    breaker_failures: int = 5
    breaker_reset_ms: int = 1_000
    breaker_reset_max_ms: int = 2_000
    health_check_interval_ms: int = 5_000  # 0: no background health checks
    lock_poll_ms: int = 50  # how often a queued Lock asks whether it was granted
    # A Lock's release waits this long for the session's next acquire to carry it (one
    # round trip less per lock cycle), then goes on its own; 0: sent at once (sdk/lock.py)
    lock_release_linger_ms: int = 5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "profile":
                if not isinstance(value, str):
                    raise InvalidArgument("profile", "must be a str")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidArgument(f.name, "must be a non-negative number")
        if self.max_attempts < 1 or self.pool_max < 1:
            raise InvalidArgument("max_attempts", "max_attempts and pool_max must be >= 1")
        if not 0 < self.backoff_base_ms <= self.backoff_cap_ms:
            raise InvalidArgument("backoff_base_ms", "need 0 < backoff_base_ms <= backoff_cap_ms")
        if self.budget_ratio > 1:
            raise InvalidArgument("budget_ratio", "must be in [0, 1]")

    def with_(self, **changes: Any) -> ClientConfig:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class ServerlessConfig(ClientConfig):
    """Lambda, Cloud Run, Azure Functions: no idle connection survives a freeze."""

    profile: str = "serverless"
    connect_timeout_ms: int = 1_000
    request_timeout_ms: int = 5_000
    pool_max: int = 4
    keepalive_max: int = 0
    keepalive_expiry_ms: int = 0
    max_attempts: int = 3
    backoff_base_ms: int = 25
    backoff_cap_ms: int = 1_000
    health_check_interval_ms: int = 0
    lock_release_linger_ms: int = 0  # a frozen function must not sit on a release


@dataclass(frozen=True, kw_only=True)
class ContainerConfig(ClientConfig):
    """Kubernetes, Docker: long-lived, rescheduled at will."""

    profile: str = "container"
    connect_timeout_ms: int = 2_000
    request_timeout_ms: int = 10_000
    pool_max: int = 32
    keepalive_max: int = 8
    keepalive_expiry_ms: int = 30_000
    max_attempts: int = 4
    backoff_base_ms: int = 50
    backoff_cap_ms: int = 2_000


@dataclass(frozen=True, kw_only=True)
class LongRunningConfig(ClientConfig):
    """VMs and daemons: the plain defaults."""


_PROFILES: dict[str, type[ClientConfig]] = {
    "serverless": ServerlessConfig,
    "container": ContainerConfig,
    "long_running": LongRunningConfig,
}


def detect_profile(
    environ: Mapping[str, str] | None = None, *, exists: Any = os.path.exists
) -> str:
    """The profile name this environment calls for (see the module docstring)."""
    env = os.environ if environ is None else environ
    forced = env.get("COREPLANE_SDK_PROFILE", "")
    if forced:
        if forced not in _PROFILES:
            raise InvalidArgument("COREPLANE_SDK_PROFILE", f"must be one of {sorted(_PROFILES)}")
        return forced
    if any(
        env.get(k) for k in ("AWS_LAMBDA_FUNCTION_NAME", "K_SERVICE", "FUNCTIONS_WORKER_RUNTIME")
    ):
        return "serverless"
    if (
        env.get("KUBERNETES_SERVICE_HOST")
        or env.get("container")
        or exists("/.dockerenv")
        or exists("/run/.containerenv")
    ):
        return "container"
    return "long_running"


def detect_config(
    environ: Mapping[str, str] | None = None, *, exists: Any = os.path.exists, **overrides: Any
) -> ClientConfig:
    """The profile's config for this environment, with `overrides` applied."""
    return _PROFILES[detect_profile(environ, exists=exists)](**overrides)
