"""The SDK's client-side metrics (`coreplane.sdk.metrics.ClientMetrics`) against a real API
server: attempts by code, latency, calls, retries, budget refusals, breaker state; and
docs/metrics.md lists exactly what is exported."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coreplane.errors import InvalidArgument, Unavailable
from coreplane.sdk import AsyncClient, Client, LongRunningConfig
from coreplane.sdk.metrics import ClientMetrics
from coreplane.testing.ports import free_ports
from tests.api.local import CLIENT

FAST = LongRunningConfig(
    backoff_base_ms=1,
    backoff_cap_ms=5,
    health_check_interval_ms=0,
    connect_timeout_ms=500,
    request_timeout_ms=2_000,
)


def _samples(metrics: ClientMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_attempts_calls_retries_refusals_and_breakers_are_counted(served) -> None:  # type: ignore[no-untyped-def]
    cp, server = served
    metrics = ClientMetrics()
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    with metrics.instrument(Client([server.url], CLIENT, FAST), name="app") as c:
        c.put("m/a", b"1")
        assert c.get("m/a") is not None
        cp.down = True  # the server answers 503: retried within the budget
        try:
            with pytest.raises(Unavailable):
                c.get("m/a")
        finally:
            cp.down = False
    stingy = FAST.with_(budget_ratio=0.0, budget_min_retries_per_s=0.0, breaker_failures=2)
    with metrics.instrument(Client([dead], CLIENT, stingy), name="stingy") as s:
        for _ in range(3):
            with pytest.raises(Unavailable):
                s.get("k")
    got = _samples(metrics)
    app = (("client", "app"),)
    assert got[("coreplane_sdk_calls_total", app)] == 3
    retries = got[("coreplane_sdk_retries_total", app)]
    assert (
        retries == FAST.max_attempts - 1
        and got[("coreplane_sdk_retry_budget_refusals_total", app)] == 0
    )
    ok = (("client", "app"), ("code", "200"), ("method", "POST"))
    busy = (("client", "app"), ("code", "503"), ("method", "POST"))
    assert got[("coreplane_sdk_requests_total", ok)] == 2
    assert got[("coreplane_sdk_requests_total", busy)] == FAST.max_attempts
    count = (("client", "app"), ("method", "POST"))
    assert got[("coreplane_sdk_request_duration_seconds_count", count)] == 2 + FAST.max_attempts
    stingy_l = (("client", "stingy"),)
    assert got[("coreplane_sdk_retry_budget_refusals_total", stingy_l)] >= 1
    assert got[("coreplane_sdk_retries_total", stingy_l)] == 0
    errors = (("client", "stingy"), ("code", "error"), ("method", "POST"))
    assert got[("coreplane_sdk_requests_total", errors)] >= 2
    open_ = (("client", "stingy"), ("endpoint", dead), ("state", "open"))
    assert got[("coreplane_sdk_breaker_state", open_)] == 1.0
    assert (
        got[("coreplane_sdk_breaker_opened_total", (("client", "stingy"), ("endpoint", dead)))] >= 1
    )
    # five 503s in a row (FAST.breaker_failures): the app's breaker opened too
    for state, value in (("closed", 0.0), ("open", 1.0), ("half_open", 0.0)):
        labels = (("client", "app"), ("endpoint", server.url), ("state", state))
        assert got[("coreplane_sdk_breaker_state", labels)] == value


def test_the_async_client_is_counted_too_and_names_are_checked(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    metrics = ClientMetrics()

    async def main() -> None:
        async with metrics.instrument(AsyncClient([server.url], CLIENT, FAST), name="a") as c:
            await c.put("m/async", b"1")

    asyncio.run(main())
    got = _samples(metrics)
    ok = (("client", "a"), ("code", "200"), ("method", "POST"))
    assert got[("coreplane_sdk_requests_total", ok)] == 1
    with (
        metrics.instrument(Client([server.url], CLIENT, FAST), name="b"),
        Client([server.url], CLIENT, FAST) as c,
    ):
        with pytest.raises(InvalidArgument) as twice:
            metrics.instrument(c, name="b")  # while the first "b" lives
        assert twice.value.field == "name"
    with pytest.raises(InvalidArgument) as bad:
        metrics.instrument(object())
    assert bad.value.field == "client"


def _documented(section: str) -> set[str]:
    """The metric names in one section's table of docs/metrics.md (as test_obs_raft_probes)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    body = text.split(f"### {section}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    names = set()
    for line in body.splitlines():
        if line.startswith("| `coreplane_"):
            names |= {part.strip("`") for part in line.split("|")[1].split(", ")}
    return {n.strip().strip("`").removesuffix("_total") for n in names}


def test_every_sdk_metric_is_documented_and_back(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    metrics = ClientMetrics()
    with metrics.instrument(Client([server.url], CLIENT, FAST), name="doc") as c:
        c.put("m/doc", b"1")
        exported = {
            f.name
            for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
            if not f.name.endswith("_created")
        }
    assert exported == _documented("SDK (client side)")
