"""`coreplane health`, `health where`, `health why` and `diagnose` against three real voters,
healthy and then with one voter stopped: the exit code says unhealthy, and each level names
the next (what -> where -> why -> the fixing command)."""

from __future__ import annotations

import json

import pytest

from coreplane.ops.context import EXIT
from tests.integration.cli_support import Cluster

pytestmark = pytest.mark.slow


def test_health_levels_and_diagnose_find_a_stopped_voter(cli_cluster: Cluster) -> None:
    # Before the fault: no voter is down (a loaded machine may still warn of a slow flush,
    # so the exit code is held to what the answer says, not to 0).
    ok = cli_cluster.cli("health", "-o", "json")
    healthy = json.loads(ok.stdout)["healthy"]
    assert ok.returncode == (0 if healthy else EXIT["unhealthy"]), ok.stderr
    clean = json.loads(cli_cluster.cli("diagnose", "-o", "json").stdout)
    assert not [f for f in clean["findings"] if "down or unreachable" in f["what"]]

    victim = next(n for n in ("a", "b", "c") if n != cli_cluster.leader())
    cli_cluster.nodes[victim].stop()
    alive = ",".join(u for n, u in cli_cluster.apis.items() if n != victim)

    what = cli_cluster.cli("health", COREPLANE_ENDPOINTS=alive)
    assert what.returncode == EXIT["unhealthy"]
    assert "unhealthy" in what.stdout and "next: coreplane health where" in what.stdout
    where = cli_cluster.cli("health", "where", "-o", "json", COREPLANE_ENDPOINTS=alive)
    places = [(p["kind"], p["id"]) for p in json.loads(where.stdout)["places"]]
    assert ("voter", victim) in places
    where_table = cli_cluster.cli("health", "where", COREPLANE_ENDPOINTS=alive)
    assert "next: coreplane health why " in where_table.stdout
    why = cli_cluster.cli(
        "health", "why", f"voter/{victim}", "-o", "json", COREPLANE_ENDPOINTS=alive
    )
    findings = json.loads(why.stdout)["findings"]
    assert any(f["fix"] == f"coreplane members remove {victim}" for f in findings)
    table = cli_cluster.cli("health", "why", f"voter/{victim}", COREPLANE_ENDPOINTS=alive)
    assert f"coreplane members remove {victim}" in table.stdout
    diag = cli_cluster.cli("diagnose", "-o", "json", COREPLANE_ENDPOINTS=alive)
    assert diag.returncode == EXIT["unhealthy"]
    assert any(victim in json.dumps(f["where"]) for f in json.loads(diag.stdout)["findings"])
    spaced = cli_cluster.cli(
        "health", "why", "voter", victim, "-o", "json", COREPLANE_ENDPOINTS=alive
    )  # the form diagnose's fixes print
    assert json.loads(spaced.stdout)["findings"] == findings
    assert cli_cluster.cli("health", "why", "voter").returncode == EXIT["usage"]
    missing = cli_cluster.cli("health", "why", "voter/nope", COREPLANE_ENDPOINTS=alive)
    assert missing.returncode == EXIT["rejected"]
    assert "no voter 'nope' is known here" in missing.stderr
