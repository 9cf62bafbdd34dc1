"""Client profiles: chosen from the environment, overridable, validated."""

from __future__ import annotations

import pytest

from coreplane.errors import InvalidArgument
from coreplane.sdk.config import (
    ContainerConfig,
    LongRunningConfig,
    ServerlessConfig,
    detect_config,
    detect_profile,
)


def _nothing(_path: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("env", "files", "profile"),
    [
        ({"AWS_LAMBDA_FUNCTION_NAME": "f"}, (), "serverless"),
        ({"K_SERVICE": "svc"}, (), "serverless"),
        ({"FUNCTIONS_WORKER_RUNTIME": "python"}, (), "serverless"),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, (), "container"),
        ({}, ("/.dockerenv",), "container"),
        ({}, ("/run/.containerenv",), "container"),
        ({}, (), "long_running"),
        ({"AWS_LAMBDA_FUNCTION_NAME": "f", "KUBERNETES_SERVICE_HOST": "x"}, (), "serverless"),
        ({"COREPLANE_SDK_PROFILE": "long_running", "K_SERVICE": "s"}, (), "long_running"),
    ],
)
def test_profile_follows_the_environment(
    env: dict[str, str], files: tuple[str, ...], profile: str
) -> None:
    assert detect_profile(env, exists=lambda p: p in files) == profile
    assert detect_config(env, exists=lambda p: p in files).profile == profile


def test_serverless_keeps_no_idle_connection_and_overrides_apply() -> None:
    s = ServerlessConfig()
    assert s.keepalive_max == 0 and s.health_check_interval_ms == 0 and s.pool_max <= 4
    assert isinstance(detect_config({"K_SERVICE": "x"}, exists=_nothing), ServerlessConfig)
    c = detect_config({"KUBERNETES_SERVICE_HOST": "h"}, exists=_nothing, max_attempts=2)
    assert isinstance(c, ContainerConfig) and c.max_attempts == 2
    assert LongRunningConfig().keepalive_expiry_ms < 75_000  # the server's keep-alive
    assert ContainerConfig().with_(pool_max=3).pool_max == 3


def test_bad_values_and_bad_profile_names_are_refused() -> None:
    with pytest.raises(InvalidArgument) as info:
        LongRunningConfig(request_timeout_ms=-1)
    assert info.value.field == "request_timeout_ms"
    with pytest.raises(InvalidArgument):
        LongRunningConfig(backoff_base_ms=10, backoff_cap_ms=5)
    with pytest.raises(InvalidArgument):
        detect_profile({"COREPLANE_SDK_PROFILE": "lambda"})
