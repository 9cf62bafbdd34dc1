"""coreplane.obs over the HTTP API of a real 3-node cluster (in this process, 127.0.0.1): the
health levels link what -> where -> why, /metrics parses, /v1/diagnose asks the peers' APIs for
their samples (clock offsets bounded by the round trip), and faults that need the API are found:
clock skew measured between APIs, a client with a wrong token, a voter whose API is gone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coreplane.api.server import ApiServer
from coreplane.testing.ports import free_ports

pytestmark = pytest.mark.slow

ADMIN = "obs-admin-token-0123456789"
CLIENT = "obs-client-token-0123456789"


class ApiCluster:
    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        nodes = cluster.nodes
        ports = dict(zip(nodes, free_ports(len(nodes)), strict=True))
        self.urls = {nid: f"http://127.0.0.1:{port}" for nid, port in ports.items()}
        self.servers: dict[str, ApiServer] = {}
        for nid, cp in nodes.items():
            server = ApiServer(
                cp,
                f"127.0.0.1:{ports[nid]}",
                tokens={ADMIN: "admin", CLIENT: "client"},
                api_peers={n: u for n, u in self.urls.items() if n != nid},
            )
            server.start()
            self.servers[nid] = server

    def get(self, nid: str, path: str, token: str | None = ADMIN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.urls[nid] + path, headers=headers, timeout=10.0)

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture
def api(cluster_factory: Any) -> Iterator[ApiCluster]:
    cluster = cluster_factory().start_all()
    cluster.leader()
    servers = ApiCluster(cluster)
    yield servers
    servers.stop()


def _diagnose(api: ApiCluster, nid: str) -> list[dict[str, Any]]:
    answer = api.get(nid, "/v1/diagnose")
    assert answer.status_code == 200, answer.text
    findings: list[dict[str, Any]] = answer.json()["findings"]
    return findings


def test_a_healthy_cluster_over_http(api: ApiCluster) -> None:
    leader = api.cluster.leader().node_id
    assert _diagnose(api, leader) == []
    top = api.get(leader, "/health", token=None)  # probes need no token
    assert top.status_code == 200 and top.json()["healthy"] is True, top.json()
    assert top.json()["links"] == ["/health/where"]
    assert top.json()["summary"].startswith(f"healthy: leader {leader}")
    assert api.get(leader, "/health/where", token=None).status_code == 401
    assert api.get(leader, "/health/where", token=CLIENT).json()["places"] == []
    why = api.get(leader, f"/health/why/voter/{leader}", token=CLIENT).json()
    assert why["healthy"] is True and why["state"]["role"] == "leader"
    assert api.get(leader, "/health/why/voter/nobody").status_code == 404
    assert api.get(leader, "/metrics", token=None).status_code == 401
    text = api.get(leader, "/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("coreplane_raft_is_leader", (("node", leader),))] == 1.0
    assert (
        samples[
            (
                "coreplane_api_requests_total",
                (("code", "200"), ("method", "GET"), ("node", leader), ("route", "/health")),
            )
        ]
        == 1.0
    )
    assert (
        samples[
            (
                "coreplane_api_requests_total",
                (("code", "401"), ("method", "GET"), ("node", leader), ("route", "/metrics")),
            )
        ]
        == 1.0
    )
    assert ("coreplane_raft_fsync_seconds_count", (("node", leader),)) in samples


def test_clock_skew_between_apis_is_found_and_drilled_down(api: ApiCluster) -> None:
    leader = api.cluster.leader().node_id
    skewed = next(n for n in api.servers if n != leader)
    obs = api.servers[skewed].obs
    assert obs is not None
    obs.observer.wall_clock_s = lambda: time.time() + 5.0
    findings = _diagnose(api, leader)
    assert [f["check"] for f in findings] == ["clock_drift"]
    f = findings[0]
    assert f["where"] == [{"kind": "voter", "id": skewed, "link": f"/health/why/voter/{skewed}"}]
    assert 4_000 <= f["evidence"]["offset_ms"] <= 6_000 and f["evidence"]["error_ms"] < 1_000
    assert f["fix"] == "chronyc makestep"
    top = api.get(leader, "/health", token=None)
    assert top.status_code == 503 and top.json()["healthy"] is False
    where = api.get(leader, top.json()["links"][0]).json()
    link = where["places"][0]["link"]
    assert link == f"/health/why/voter/{skewed}" and link in where["links"]
    why = api.get(leader, link).json()
    assert why["findings"][0]["check"] == "clock_drift"
    assert 4_000 <= why["state"]["clock_offset_ms"] <= 6_000


def test_a_client_with_a_wrong_token(api: ApiCluster) -> None:
    node = api.cluster.followers()[0].node_id
    for _ in range(3):
        assert api.get(node, "/v1/status", token="not-a-token-of-this-cluster").status_code == 401
    findings = _diagnose(api, node)
    f = next(f for f in findings if f["check"] == "token_mismatch")
    assert f["where"][0]["kind"] == "client" and f["where"][0]["id"] == "127.0.0.1"
    assert f["evidence"]["unauthorized"] == 3
    assert f["fix"] == "coreplane config set-context --token NEW_TOKEN"


def test_a_voter_gone_with_its_api(api: ApiCluster, wait_until: Any) -> None:
    leader = api.cluster.leader().node_id
    victim = next(n for n in api.servers if n != leader)
    api.servers[victim].stop()
    api.cluster.nodes[victim].stop()

    def quorum() -> list[dict[str, Any]]:
        return [f for f in _diagnose(api, leader) if f["check"] == "quorum"]

    f = wait_until(quorum, 10.0, "a quorum finding")[0]
    assert f["where"][0]["id"] == victim and f["fix"] == f"coreplane members remove {victim}"
    assert "2 of 3 voters answer" in f["why"]
