"""coreplane.obs: the health hierarchy (what / where / why), `diagnose` and Prometheus metrics.

Sits on top of the runtime: it reads a `ControlPlane` (status, the engine's observations, the
fleet) and never changes it. Checks and health answers are pure functions over samples
(`coreplane.obs.sample`), so they are tested without a cluster; `coreplane.obs.http` mounts
them on the API server. Nothing below obs imports it.
"""

from coreplane.obs.diagnose import CHECKS, Finding, Place, Thresholds, diagnose
from coreplane.obs.health import HealthWhat, HealthWhere, HealthWhy, what, where, why
from coreplane.obs.metrics import ApiMetrics, Metrics
from coreplane.obs.sample import (
    ClockSample,
    ClusterInputs,
    LocalSample,
    Observer,
    gather_inprocess,
)

__all__ = [
    "CHECKS",
    "ApiMetrics",
    "ClockSample",
    "ClusterInputs",
    "Finding",
    "HealthWhat",
    "HealthWhere",
    "HealthWhy",
    "LocalSample",
    "Metrics",
    "Observer",
    "Place",
    "Thresholds",
    "diagnose",
    "gather_inprocess",
    "what",
    "where",
    "why",
]
