"""Metrics: one registry per ControlPlane, read at scrape time, parseable exposition."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coreplane.obs import Metrics
from coreplane.obs.metrics import _CHILDREN_MAX, ApiMetrics
from coreplane.runtime.controlplane import ControlPlane

SECRET = b"unit-test-secret-0123456789abcdef"


def families(metrics: Metrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.generate().decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def test_a_stopped_node_exports_its_identity_and_registries_stay_apart(tmp_path: Path) -> None:
    one = ControlPlane("a", "127.0.0.1:1", {}, tmp_path / "a", SECRET)
    two = ControlPlane("b", "127.0.0.1:2", {}, tmp_path / "b", SECRET)
    try:
        m1, m2 = Metrics(one), Metrics(two)
        got = families(m1)
        role = dict((lab["role"], v) for lab, v in got["coreplane_raft_role"])
        assert role["stopped"] == 1.0 and role["leader"] == 0.0
        assert {lab["node"] for lab, _ in got["coreplane_tick_n"]} == {"a"}
        assert {lab["node"] for lab, _ in families(m2)["coreplane_tick_n"]} == {"b"}
        assert m1.registry is not m2.registry
        assert "coreplane_raft_role" not in {m.name for m in REGISTRY.collect()}
    finally:
        one.stop()
        two.stop()


def test_api_metrics_count_routes_codes_and_unauthorized_remotes(tmp_path: Path) -> None:
    cp = ControlPlane("a", "127.0.0.1:1", {}, tmp_path / "a", SECRET)
    try:
        m = Metrics(cp)
        m.api.observe("/v1/kv/get", "POST", 200, 0.003, "10.0.0.9")
        m.api.observe("/v1/kv/get", "POST", 200, 0.004, "10.0.0.9")
        m.api.observe("/v1/kv/put", "POST", 401, 0.001, "10.0.0.7", token_sent=True)
        m.api.observe("/health/where", "GET", 401, 0.001, "10.0.0.8")  # no token: no mismatch
        got = families(m)
        counts = {(lab["route"], lab["code"]): v for lab, v in got["coreplane_api_requests_total"]}
        assert counts == {
            ("/v1/kv/get", "200"): 2.0,
            ("/v1/kv/put", "401"): 1.0,
            ("/health/where", "401"): 1.0,
        }
        hist = {lab["route"]: v for lab, v in got["coreplane_api_request_duration_seconds_count"]}
        assert hist == {"/v1/kv/get": 2.0, "/v1/kv/put": 1.0, "/health/where": 1.0}
        assert m.api.stats() == {"unauthorized_by_remote": {"10.0.0.7": 1}}
    finally:
        cp.stop()


def test_api_metrics_are_plain_counts_exported_as_prometheus_families_and_bounded() -> None:
    """Counted in plain numbers, exported at scrape time as a counter and a histogram (bucket
    bounds inclusive, as Prometheus' ``le``); past the bound, new series fold into one per
    code, every request still counted."""
    registry = CollectorRegistry(auto_describe=False)
    api = ApiMetrics(registry, "a", wall_clock_s=lambda: 1000.0)
    for seconds in (0.001, 0.0011, 0.002):
        api.observe("/v1/kv/get", "POST", 200, seconds)
    api.observe("/v1/kv/get", "POST", 404, 99.0)
    samples = {
        (s.name, s.labels.get("code", ""), s.labels.get("le", "")): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if s.labels.get("route") == "/v1/kv/get"
    }
    assert samples[("coreplane_api_requests_total", "200", "")] == 3.0
    assert api.count("/v1/kv/get", "POST", 200) == 3 and api.count("/v1/kv/get", "GET", 200) == 0
    assert samples[("coreplane_api_requests_total", "404", "")] == 1.0
    assert samples[("coreplane_api_requests_created", "200", "")] == 1000.0
    hist = "coreplane_api_request_duration_seconds"
    assert samples[(f"{hist}_bucket", "", "0.001")] == 1.0  # 0.001 <= 0.001
    assert samples[(f"{hist}_bucket", "", "0.0025")] == 3.0
    assert samples[(f"{hist}_bucket", "", "30.0")] == 3.0
    assert samples[(f"{hist}_bucket", "", "+Inf")] == samples[(f"{hist}_count", "", "")] == 4.0
    assert samples[(f"{hist}_sum", "", "")] == pytest.approx(99.0041)
    assert samples[(f"{hist}_created", "", "")] == 1000.0
    for i in range(_CHILDREN_MAX + 10):  # past the bound: still counted, as (other, other)
        api.observe(f"/r{i}", "GET", 200, 0.001)
    api.observe("/r0", "GET", 200, 0.001)
    assert len(api.snapshot()) == _CHILDREN_MAX + 1
    got = {
        (s.labels["route"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if s.name == "coreplane_api_requests_total"
    }
    assert got[("/v1/kv/get", "200")] == 3.0 and got[("/v1/kv/get", "404")] == 1.0
    assert got[("/r0", "200")] == 2.0 and (f"/r{_CHILDREN_MAX + 9}", "200") not in got
    assert got[("other", "200")] == 10 + 2 and sum(got.values()) == 4 + _CHILDREN_MAX + 11
