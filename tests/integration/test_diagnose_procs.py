"""`diagnose` over the HTTP API of three real voter processes on 127.0.0.1: healthy gives no
finding; a voter killed with SIGKILL, a process whose wall clock is 3 s ahead, a voter started
with the wrong cluster secret, a voter on a slow disk, a voter whose LMDB map is nearly full and
a client sending a wrong token are each found, placed, explained and given a fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.procs_support import IDS, VoterProcs

pytestmark = pytest.mark.slow

WRONG = "fedcba9876543210fedcba9876543210"
ADMIN = "procs-admin-token-0123456789"


class Procs(VoterProcs):
    def __init__(
        self,
        base: Path,
        *,
        skew: dict[str, float] | None = None,
        secrets: dict[str, str] | None = None,
        faults: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        options = {
            nid: {"clock_skew_s": (skew or {}).get(nid, 0.0), **(faults or {}).get(nid, {})}
            for nid in IDS
        }
        super().__init__(base, tokens={ADMIN: "admin"}, secrets=secrets, node_options=options)

    def diagnose(self, nid: str) -> list[dict[str, Any]]:
        answer = httpx.get(
            self.urls[nid] + "/v1/diagnose",
            timeout=15.0,
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert answer.status_code == 200, answer.text
        findings: list[dict[str, Any]] = answer.json()["findings"]
        return findings


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
    assert f["where"] == [{"kind": "voter", "id": victim, "link": f"/health/why/voter/{victim}"}]
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


def _found(cluster: Procs, nid: str, check: str, wait_until: Any) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        return next((f for f in cluster.diagnose(nid) if f["check"] == check), None)

    found: dict[str, Any] = wait_until(look, 20.0, f"a {check} finding")
    return found


def _put(cluster: Procs, nid: str, n: int, size: int = 10) -> None:
    for i in range(n):
        reply = cluster.nodes[nid].request("put", key=f"k{i}", value="x" * size)
        assert reply["ok"], reply


def test_a_voter_on_a_slow_disk(procs: Any, wait_until: Any) -> None:
    cluster = procs(faults={"c": {"slow_flush_ms": 150}})
    leader = cluster.leader(wait_until)
    _put(cluster, leader, 30)
    f = _found(cluster, leader, "fsync_latency", wait_until)
    assert f["where"][0]["id"] == "c" and "took over 100 ms" in f["why"]
    assert f["fix"] == "coreplane members remove c"


def test_a_voter_with_its_lmdb_map_nearly_full(procs: Any, wait_until: Any) -> None:
    cap = 1 << 20
    cluster = procs(faults={"b": {"map_max_bytes": cap}})
    leader = cluster.leader(wait_until)

    def use_pct() -> int:
        answer = httpx.get(
            cluster.urls["b"] + "/v1/obs/sample",
            timeout=10.0,
            headers={"Authorization": f"Bearer {ADMIN}"},
        ).json()
        j = answer["raft"]["journal"]
        return int((j["last_page"] + 1) * j["page_bytes"] * 100 // j["map_size_max_bytes"])

    i = 0
    while use_pct() < 82:
        reply = cluster.nodes[leader].request("put", key=f"big{i}", value="x" * 8000)
        assert reply["ok"], reply
        i += 1
        assert i < 500, "the map never filled"
    f = _found(cluster, leader, "storage", wait_until)
    assert f["where"][0]["id"] == "b" and "LMDB map is" in f["what"]
    assert f["fix"] == "restart voter b with a larger map_size_max_bytes"


def test_a_client_with_a_wrong_token(procs: Any, wait_until: Any) -> None:
    cluster = procs()
    leader = cluster.leader(wait_until)
    for _ in range(2):
        bad = httpx.get(
            cluster.urls[leader] + "/v1/status",
            timeout=10.0,
            headers={"Authorization": "Bearer not-this-clusters-token-000"},
        )
        assert bad.status_code == 401
    f = _found(cluster, leader, "token_mismatch", wait_until)
    assert f["where"][0] == {
        "kind": "client",
        "id": "127.0.0.1",
        "link": "/health/why/client/127.0.0.1",
    }
    assert f["evidence"]["unauthorized"] == 2
