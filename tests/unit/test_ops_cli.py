"""The CLI's pure parts: blast radius, spec diff, operation ids and goals, config contexts,
exit codes without a cluster. (Through a real cluster: tests/integration/test_cli_cluster.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from coreplane.errors import InvalidArgument
from coreplane.ops import config as cfg
from coreplane.ops import guard, operations, spec
from coreplane.ops.cli import main
from coreplane.ops.context import EXIT

TOKEN = "unit-admin-token-0123456789"


# ------------------------------------------------------------------ blast radius


def test_radius_counts_named_nodes_and_both_ends_of_every_move() -> None:
    r = guard.radius(
        named_nodes=["n1"],
        moves=[
            {"partition": "p1", "source": "n1", "target": "n4"},
            {"partition": "p2", "source": "n1", "target": "n5"},
        ],
        nodes_total=10,
        partitions_total=10,
        destructive=True,
        production=False,
    )
    assert r.nodes == ("n1", "n4", "n5") and r.partitions == ("p1", "p2")
    assert not r.needs_confirmation  # 3/10 nodes and 2/10 partitions: within 30 %
    assert r.sentence() == "affects 3 of 10 nodes and 2 of 10 partitions"


def test_radius_past_the_share_or_on_production_needs_confirmation() -> None:
    wide = guard.radius(
        named_nodes=["a", "b", "c", "d"],
        nodes_total=10,
        partitions_total=0,
        destructive=True,
        production=False,
    )
    assert wide.reasons == ("touches 4 of 10 nodes (over 30%)",)
    prod = guard.radius(
        named_nodes=["a"], nodes_total=10, partitions_total=10, destructive=True, production=True
    )
    assert prod.reasons == ("the cluster is marked production",)
    # uncordon is not destructive: production alone does not ask
    assert not guard.radius(
        named_nodes=["a"], nodes_total=10, partitions_total=10, destructive=False, production=True
    ).needs_confirmation
    custom = guard.radius(
        named_partitions=["p1", "p2"],
        nodes_total=10,
        partitions_total=10,
        destructive=True,
        production=False,
        partitions_pct=10,
    )
    assert custom.reasons == ("touches 2 of 10 partitions (over 10%)",)


# ------------------------------------------------------------------ spec


NODES = [
    {"id": "n1", "admin": "active"},
    {"id": "n2", "admin": "cordoned"},
    {"id": "n3", "admin": "active"},
]
PARTS = [{"id": "p1", "rf": 3}, {"id": "p2", "rf": 3}, {"id": "old", "rf": 1}]


def test_spec_diff_orders_changes_and_prints_them_as_a_diff() -> None:
    desired = spec.parse(
        yaml.safe_dump(
            {
                "partitions": {"p1": {"rf": 5}, "p2": {"rf": 3}, "new": {"rf": 2}},
                "cordoned": ["n3"],
                "prune": True,
            }
        )
    )
    changes = spec.diff(desired, PARTS, NODES)
    assert [c.line() for c in changes] == [
        "+ partition new: rf 2",
        "~ partition p1: rf 3 -> 5",
        "- partition old: rf 1",
        "~ node n3: active -> cordoned",
        "~ node n2: cordoned -> active",
    ]


def test_spec_without_cordoned_or_prune_leaves_those_alone() -> None:
    desired = spec.parse("partitions:\n  p1: {rf: 3}\n")
    assert spec.diff(desired, PARTS, NODES) == []


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("partitions: {p1: {rf: 0}}", "spec.partitions.p1.rf"),
        ("partitions: {p1: {rf: true}}", "spec.partitions.p1.rf"),
        ("nodes: {}", "spec.nodes"),
        ("cordoned: n1", "spec.cordoned"),
        ("- a list", "spec"),
    ],
)
def test_bad_specs_name_the_field(text: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        spec.parse(text)
    assert info.value.field == field


def test_spec_cordoning_an_unknown_node_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="no node 'n9'"):
        spec.diff(spec.parse("cordoned: [n9]"), PARTS, NODES)


# ------------------------------------------------------------------ operations


def test_operation_ids_come_from_the_request_alone() -> None:
    a = operations.op_id("drain", "n3", [{"verb": "drain", "subject": "n3"}])
    b = operations.op_id("drain", "n3", [{"subject": "n3", "verb": "drain"}])
    c = operations.op_id("drain", "n4", [{"verb": "drain", "subject": "n4"}])
    assert a == b and a.startswith("drain-n3-") and a != c


def test_distance_counts_replicas_left_to_move() -> None:
    goals = operations.goals_for(
        [{"verb": "drain", "subject": "n1"}, {"verb": "set_rf", "subject": "p1", "rf": 3}]
    )
    nodes = {"n1": {"replicas": 2}}
    parts = {"p1": {"replicas": ["a"], "live_replicas": 1, "operation": None}}
    assert operations.distance(goals, nodes, parts) == 2 + 2  # two replicas off, two to add
    dead = {"p1": {"replicas": ["a", "b", "c"], "live_replicas": 2, "operation": None}}
    assert operations.distance(goals, {"n1": {"replicas": 0}}, dead) == 1  # replace one
    moving = {"p1": {"replicas": ["a", "b", "c"], "live_replicas": 3, "operation": {"id": "x"}}}
    assert operations.distance(goals, {"n1": {"replicas": 0}}, moving) == 1  # not done yet
    parts_done = {"p1": {"replicas": ["a", "b", "c"], "live_replicas": 3, "operation": None}}
    assert operations.distance(goals, {"n1": {"replicas": 0}}, parts_done) == 0


# ------------------------------------------------------------------ config and exit codes


def test_flags_beat_the_environment_which_beats_the_context(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    cfg.save_file(
        {
            "current-context": "dev",
            "contexts": {
                "dev": {"endpoints": ["http://ctx:1"], "token": "ctx-token", "cluster": "devc"}
            },
        },
        path,
    )
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    s = cfg.resolve(endpoints=None, token=None, context=None, environ={}, path=path)
    assert (s.endpoints, s.token, s.cluster) == (("http://ctx:1",), "ctx-token", "devc")
    s = cfg.resolve(
        endpoints=None,
        token=None,
        context=None,
        path=path,
        environ={"COREPLANE_ENDPOINTS": "a:1, b:2", "COREPLANE_TOKEN": "env-tok"},
    )
    assert (s.endpoints, s.token) == (("a:1", "b:2"), "env-tok")
    s = cfg.resolve(
        endpoints="f:1",
        token="flag-tok",
        context=None,
        path=path,
        environ={"COREPLANE_ENDPOINTS": "a:1", "COREPLANE_TOKEN": "env-tok"},
    )
    assert (s.endpoints, s.token) == (("f:1",), "flag-tok")
    assert "flag-tok" not in repr(s)
    with pytest.raises(InvalidArgument) as info:
        cfg.resolve(endpoints=None, token=None, context="nope", environ={}, path=path)
    assert info.value.field == "context"


def test_contexts_are_set_listed_without_tokens_and_switched(tmp_path: Path) -> None:
    env = {"COREPLANE_CONFIG": str(tmp_path / "c.yaml"), "COREPLANE_TOKEN": TOKEN}
    runner = CliRunner()
    for name in ("prod", "dev"):
        r = runner.invoke(
            main,
            [
                "config",
                "set-context",
                name,
                "--endpoints",
                f"{name}:1",
                "--token-env",
                "--cluster",
                f"{name}-c",
            ],
            env=env,
        )
        assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["config", "get-contexts", "-o", "json"], env=env)
    rows = json.loads(r.stdout)
    assert [(x["name"], x["current"], x["token"]) for x in rows] == [
        ("dev", False, "<redacted>"),
        ("prod", True, "<redacted>"),
    ]
    assert TOKEN not in r.output
    assert runner.invoke(main, ["config", "use-context", "dev"], env=env).exit_code == 0
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["current-context"] == "dev"
    r = runner.invoke(main, ["config", "use-context", "nope"], env=env)
    assert r.exit_code == EXIT["usage"]
    # `diagnose` suggests `config set-context --token NEW` for a rotated token: the current
    # context's token changes, nothing else, and the new token is not echoed
    new = "rotated-token-0123456789abcdef"
    r = runner.invoke(main, ["config", "set-context", "--token", new], env=env)
    assert r.exit_code == 0, r.output
    assert new not in r.output
    dev = yaml.safe_load((tmp_path / "c.yaml").read_text())["contexts"]["dev"]
    assert dev == {"endpoints": ["dev:1"], "token": new, "cluster": "dev-c"}


def test_no_endpoints_is_a_usage_error(tmp_path: Path) -> None:
    env = {
        "COREPLANE_CONFIG": str(tmp_path / "none.yaml"),
        "COREPLANE_ENDPOINTS": "",
        "COREPLANE_TOKEN": "",
    }
    r = CliRunner().invoke(main, ["status"], env=env)
    assert r.exit_code == EXIT["usage"]
    assert "no endpoints" in r.output


def test_an_unreachable_cluster_exits_unavailable_and_never_prints_the_token(
    tmp_path: Path,
) -> None:
    env = {"COREPLANE_CONFIG": str(tmp_path / "none.yaml")}
    r = CliRunner().invoke(
        main, ["--endpoints", "http://127.0.0.1:9", "--token", TOKEN, "kv", "get", "k"], env=env
    )
    assert r.exit_code == EXIT["unavailable"]
    assert TOKEN not in r.output


def test_completion_scripts_name_the_command() -> None:
    r = CliRunner().invoke(main, ["completion", "bash"])
    assert r.exit_code == 0 and "_COREPLANE_COMPLETE" in r.output


def test_a_move_belongs_to_the_operation_that_names_its_partition_or_a_node() -> None:
    from coreplane.ops.fleet_commands import _belongs

    drain = {"changes": [{"verb": "drain", "subject": "n3"}]}
    scale = {"changes": [{"verb": "set_rf", "subject": "p6", "rf": 3}]}
    off_n3 = {"partition": "p1", "source": "n3", "target": "n5"}
    to_n3 = {"partition": "p2", "source": None, "target": "n3"}
    p6 = {"partition": "p6", "source": None, "target": "n1"}
    assert _belongs(drain, off_n3) and _belongs(drain, to_n3) and not _belongs(drain, p6)
    assert _belongs(scale, p6) and not _belongs(scale, off_n3)
