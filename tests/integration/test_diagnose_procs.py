"""`diagnose` over the HTTP API of three real voter processes on 127.0.0.1: healthy gives no
finding; a voter killed with SIGKILL, a process whose wall clock is 3 s ahead, and a voter
started with the wrong cluster secret are each found, placed, explained and given a fix."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coreplane.testing.ports import free_ports
from coreplane.testing.procs import JsonLineChild

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECRET = "0123456789abcdef0123456789abcdef"  # hex: 16 bytes
WRONG = "fedcba9876543210fedcba9876543210"
ADMIN = "procs-admin-token-0123456789"


class Procs:
    def __init__(self, base: Path, *, skew: dict[str, float] | None = None,
                 secrets: dict[str, str] | None = None) -> None:
        ids = ("a", "b", "c")
        base.mkdir(parents=True, exist_ok=True)
        ports = free_ports(6)  # one call: six distinct ports
        raft = dict(zip(ids, ports[:3], strict=True))
        http = dict(zip(ids, ports[3:], strict=True))
        self.urls = {n: f"http://127.0.0.1:{p}" for n, p in http.items()}
        self.nodes: dict[str, JsonLineChild] = {}
        for nid in ids:
            cfg = {"node_id": nid, "address": f"127.0.0.1:{raft[nid]}",
                   "peers": {p: f"127.0.0.1:{raft[p]}" for p in ids if p != nid},
                   "data_dir": str(base / nid), "api_address": f"127.0.0.1:{http[nid]}",
                   "api_peers": {p: u for p, u in self.urls.items() if p != nid},
                   "tokens": {ADMIN: "admin"}, "clock_skew_s": (skew or {}).get(nid, 0.0)}
            secret = (secrets or {}).get(nid, SECRET)
            self.nodes[nid] = JsonLineChild(
                nid, [sys.executable, "-m", "tests.integration.obs_node", json.dumps(cfg)],
                log_path=base / f"{nid}.log", env={"COREPLANE_TEST_SECRET": secret}, cwd=ROOT)
        for child in self.nodes.values():
            child.start(timeout_s=30)

    def leader(self, wait_until: Any) -> str:
        def find() -> str | None:
            for nid, child in self.nodes.items():
                if not child.alive:
                    continue
                st = child.request("status")["status"]
                if st["role"] == "leader" and st.get("fencing_token"):
                    return nid
            return None

        found: str = wait_until(find, 20.0, "a leader")
        return found

    def diagnose(self, nid: str) -> list[dict[str, Any]]:
        answer = httpx.get(self.urls[nid] + "/v1/diagnose", timeout=15.0,
                           headers={"Authorization": f"Bearer {ADMIN}"})
        assert answer.status_code == 200, answer.text
        findings: list[dict[str, Any]] = answer.json()["findings"]
        return findings

    def stop(self) -> None:
        for child in self.nodes.values():
            child.stop()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Any]:
    made: list[Procs] = []

    def make(**kw: Any) -> Procs:
        p = Procs(tmp_path / f"c{len(made)}", **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def test_healthy_then_a_voter_killed(procs: Any, wait_until: Any) -> None:
    cluster = procs()
    leader = cluster.leader(wait_until)
    assert cluster.diagnose(leader) == []
    victim = next(n for n in cluster.nodes if n != leader)
    cluster.nodes[victim].kill9()

    def quorum() -> list[dict[str, Any]]:
        return [f for f in cluster.diagnose(leader) if f["check"] == "quorum"]

    f = wait_until(quorum, 15.0, "a quorum finding")[0]
    assert f["where"] == [{"kind": "voter", "id": victim,
                           "link": f"/health/why/voter/{victim}"}]
    assert "2 of 3 voters answer, a quorum needs 2" in f["why"]
    assert f["fix"] == f"coreplane members remove {victim}"


def test_a_process_with_its_clock_ahead(procs: Any, wait_until: Any) -> None:
    cluster = procs(skew={"c": 3.0})
    leader = cluster.leader(wait_until)
    observer = leader if leader != "c" else "a"
    findings = cluster.diagnose(observer)
    assert [f["check"] for f in findings] == ["clock_drift"]
    f = findings[0]
    assert f["where"][0]["id"] == "c" and f["fix"] == "chronyc makestep"
    assert 2_500 <= f["evidence"]["offset_ms"] <= 3_500 and f["evidence"]["error_ms"] < 500


def test_a_voter_with_the_wrong_secret(procs: Any, wait_until: Any) -> None:
    cluster = procs(secrets={"c": WRONG})
    leader = cluster.leader(wait_until)

    def auth() -> list[dict[str, Any]]:
        return [f for f in cluster.diagnose(leader) if f["check"] == "auth_failures"]

    f = wait_until(auth, 15.0, "an auth_failures finding")[0]
    assert f["where"][0] == {"kind": "voter", "id": "c", "link": "/health/why/voter/c"}
    assert "failed the wire's HMAC handshake" in f["why"]
    assert f["fix"] == "coreplane members remove c"
