"""The fleet's HTTP routes (coreplane/api/fleet_routes.py) on one real voter: roles (an agent
token acts only for its own node; desired state and the dry-run are admin-only), argument
checks naming the field, and a dry-run that proposes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import coreplane
from coreplane.testing.ports import free_ports

pytestmark = pytest.mark.slow

ADMIN, CLIENT, AGENT = (
    "routes-admin-token-0123456789",
    "routes-client-token-012345",
    "routes-agent-token-s0-0123456",
)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Any]:
    raft, api = free_ports(2)
    cp = coreplane.ControlPlane(
        "a",
        f"127.0.0.1:{raft}",
        {},
        tmp_path / "a",
        b"routes-secret-0123456789abcdef",
        api_address=f"127.0.0.1:{api}",
        tick_interval_ms=100,
        api_tokens={ADMIN: "admin", CLIENT: "client", AGENT: "agent:s0"},
    )
    cp.start()
    cp.wait_for_leader(timeout_s=10)
    try:
        yield cp
    finally:
        cp.stop()


def _post(cp: Any, path: str, token: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        cp.api_url + path, json=body, timeout=10, headers={"Authorization": f"Bearer {token}"}
    )


def test_roles_agents_and_the_dry_run(node: Any) -> None:
    beat = {"node_id": "s0", "zone": "z0", "heat": json.dumps({})}
    assert _post(node, "/v1/fleet/heartbeat", AGENT, beat).status_code == 200
    other = _post(node, "/v1/fleet/heartbeat", AGENT, {**beat, "node_id": "s1"})
    assert other.status_code == 403 and other.json()["field"] == "node_id"
    assert _post(node, "/v1/fleet/drain", CLIENT, {"node_id": "s0"}).status_code == 403
    assert _post(node, "/v1/fleet/plan", CLIENT, {"changes": "[]"}).status_code == 403
    for _ in range(100):  # registered by the leader's next report
        nodes = httpx.get(
            node.api_url + "/v1/fleet/nodes",
            timeout=10,
            headers={"Authorization": f"Bearer {CLIENT}"},
        ).json()["nodes"]
        if nodes:
            break
        assert _post(node, "/v1/fleet/heartbeat", AGENT, beat).status_code == 200
        time.sleep(0.1)
    assert [n["id"] for n in nodes] == ["s0"]
    bad = _post(
        node,
        "/v1/fleet/plan",
        ADMIN,
        {"changes": json.dumps([{"verb": "explode", "subject": "s0"}])},
    )
    assert bad.status_code == 400 and bad.json()["field"] == "changes"
    unknown = _post(
        node,
        "/v1/fleet/plan",
        ADMIN,
        {"changes": json.dumps([{"verb": "drain", "subject": "nope"}])},
    )
    assert unknown.status_code == 400 and "no node 'nope'" in unknown.json()["message"]
    node._tick_interval_s = 3600.0  # test-only: no Tick entries while we look
    time.sleep(0.3)
    before = node.state_hash()
    plan = _post(
        node,
        "/v1/fleet/plan",
        ADMIN,
        {"changes": json.dumps([{"verb": "create", "subject": "p1", "rf": 1}])},
    )
    assert plan.status_code == 200, plan.text
    answer = plan.json()
    assert [(m["partition"], m["source"], m["target"]) for m in answer["moves"]] == [
        ("p1", None, "s0")
    ]
    assert (answer["nodes_total"], answer["partitions_total"]) == (1, 0)
    assert node.state_hash() == before  # a dry-run proposes nothing


def _size_of(cp: Any, pid: str) -> Any:
    return cp.fleet.partition(pid)["size_bytes"]


def _beat(cp: Any, body: dict[str, Any]) -> None:
    """One round of agent s0: a heartbeat, then every pending action done and acknowledged
    (a copy target's sizes are not listened to while its copy is in flight)."""
    assert _post(cp, "/v1/fleet/heartbeat", AGENT, body).status_code == 200
    actions = _post(cp, "/v1/fleet/actions", AGENT, {"node_id": "s0"}).json()["actions"]
    for a in actions:
        ack = {"node_id": "s0", "action_id": a["id"], "token": a["token"], "ok": True}
        assert _post(cp, "/v1/fleet/ack", AGENT, ack).status_code in (200, 409)


def _beat_until(cp: Any, body: dict[str, Any], cond: Any, what: str) -> None:
    for _ in range(100):  # committed by the leader's next report (one per tick)
        _beat(cp, body)
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sizes_in_heartbeats_are_committed_past_the_hysteresis(node: Any) -> None:
    node.fleet.create_partition("p", 1)
    gib = 1 << 30

    def beat(size: int) -> dict[str, Any]:
        return {"node_id": "s0", "zone": "z0", "sizes": json.dumps({"p": size})}

    assert _size_of(node, "p") is None  # never reported
    _beat_until(node, beat(gib), lambda: _size_of(node, "p") == gib, "the first size")
    _beat_until(node, beat(gib), lambda: not node.fleet.operations(), "p placed on s0")
    # 5 % more: under the 10 % hysteresis, so the log is not written for it
    for _ in range(5):
        _beat(node, beat(gib * 105 // 100))
        time.sleep(0.15)
    assert _size_of(node, "p") == gib
    _beat_until(node, beat(gib * 2), lambda: _size_of(node, "p") == 2 * gib, "a doubled size")
    bad = _post(node, "/v1/fleet/heartbeat", AGENT, {**beat(0), "sizes": "[1]"})
    assert bad.status_code == 400 and bad.json()["field"] == "sizes"
    negative = _post(node, "/v1/fleet/heartbeat", AGENT, beat(-1))
    assert negative.status_code == 400
