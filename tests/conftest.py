"""Suite-wide settings: hypothesis profiles chosen by COREPLANE_HYPOTHESIS_PROFILE.

`dev` (default) is quick; `ci` is derandomized and prints reproduction blobs; `chaos` runs many
examples for long fault searches.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "chaos",
    max_examples=2000,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("COREPLANE_HYPOTHESIS_PROFILE", "dev"))
