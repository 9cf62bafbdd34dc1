"""Metrics: one registry per ControlPlane, read at scrape time, parseable exposition."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from coreplane.obs import Metrics
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
