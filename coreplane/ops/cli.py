"""The `coreplane` command: cluster, KV, health and the fleet, through the HTTP API.

Global options (also from the environment or the config file, see `coreplane.ops.config`):
``--endpoints``, ``--token``, ``--context``, ``-o/--output`` (every command takes ``-o`` too).
Exit codes: `coreplane.ops.context.EXIT`, documented in docs/cli.md. Fleet commands live in
`coreplane.ops.fleet`; this module holds the group and the cluster-level commands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from coreplane.ops import config as cfg
from coreplane.ops import fleet, fleet_commands
from coreplane.ops.context import EXIT, Ctx, command, fail
from coreplane.ops.output import FORMATS, kv_table, table

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--endpoints",
    envvar="COREPLANE_ENDPOINTS",
    default=None,
    help="comma-separated API URLs (env COREPLANE_ENDPOINTS)",
)
@click.option(
    "--token",
    envvar="COREPLANE_TOKEN",
    default=None,
    show_envvar=True,
    help="bearer token (env COREPLANE_TOKEN; prefer the env or a token-file)",
)
@click.option("--context", "context_", default=None, help="config context to use")
@click.option("-o", "--output", type=click.Choice(FORMATS), default="table")
@click.option(
    "--max-nodes-pct",
    type=click.IntRange(0, 100),
    default=None,
    help="blast radius: share of nodes a change may touch unconfirmed (default 30)",
)
@click.option(
    "--max-partitions-pct",
    type=click.IntRange(0, 100),
    default=None,
    help="blast radius: share of partitions (default 30)",
)
@click.version_option(package_name="coreplane", prog_name="coreplane")
@click.pass_context
def main(
    ctx: click.Context,
    endpoints: str | None,
    token: str | None,
    context_: str | None,
    output: str,
    max_nodes_pct: int | None,
    max_partitions_pct: int | None,
) -> None:
    """coreplane: operate a coreplane cluster through its HTTP API."""
    ctx.obj = Ctx(endpoints, token, context_, output, max_nodes_pct, max_partitions_pct)


# ------------------------------------------------------------------------------ status


@command(main)
def status(obj: Ctx) -> None:
    """The cluster at a glance: leader, term, voters and their indexes."""
    remote = obj.remote
    members = remote.client.members()
    st = remote.client.status()
    flags = fleet.cluster_flags(obj)
    voters = []
    peers = st.get("peers") or {}
    for node_id in sorted(members.get("members") or [st.get("node_id")]):
        # reachable as the answering voter sees it (its authenticated Raft connection)
        reachable = node_id == st.get("node_id") or bool(
            (peers.get(node_id) or {}).get("connected")
        )
        voters.append(
            {
                "id": node_id,
                "leader": node_id == members.get("leader"),
                "reachable": reachable,
                "api": (members.get("api") or {}).get(node_id, ""),
            }
        )
    data = {
        "cluster": flags["name"],
        "production": flags["production"],
        "leader": members.get("leader") or None,
        "answered_by": st.get("node_id"),
        "term": st.get("term"),
        "commit_index": st.get("commit_index"),
        "applied_index": st.get("applied_index"),
        "has_quorum": st.get("has_quorum"),
        "tick_ms": st.get("tick_ms"),
        "voters": voters,
    }

    def show(d: dict[str, Any]) -> Any:
        from rich.console import Group

        head = kv_table(
            f"cluster {d['cluster']}" + (" [PRODUCTION]" if d["production"] else ""),
            {
                k: d[k]
                for k in (
                    "leader",
                    "answered_by",
                    "term",
                    "commit_index",
                    "applied_index",
                    "has_quorum",
                    "tick_ms",
                )
            },
        )
        rows = [
            (
                v["id"],
                "leader" if v["leader"] else "follower",
                "yes" if v["reachable"] else "[red]NO[/red]",
                v["api"],
            )
            for v in d["voters"]
        ]
        return Group(head, table("voters", ("id", "role", "reachable", "api"), rows))

    obj.out.data(data, show)
    if not data["leader"] or data["has_quorum"] is False:
        raise fail("the cluster has no leader or no quorum", "unhealthy")


# ------------------------------------------------------------------------------ members


@main.group()
def members() -> None:
    """Voters: list, add, remove (one at a time, idempotent)."""


@command(members, "list")
def members_list(obj: Ctx) -> None:
    """The voters and which one leads."""
    m = obj.remote.client.members()
    rows = [
        {"id": n, "leader": n == m.get("leader"), "api": (m.get("api") or {}).get(n, "")}
        for n in sorted(m.get("members") or [])
    ]
    obj.out.data(
        rows,
        lambda r: table(
            "voters",
            ("id", "leader", "api"),
            [(x["id"], "*" if x["leader"] else "", x["api"]) for x in r],
        ),
    )


@command(members, "add")
@click.argument("node_id")
@click.argument("address")
@click.option("--dry-run", is_flag=True, help="say what would change, change nothing")
def members_add(obj: Ctx, node_id: str, address: str, dry_run: bool) -> None:
    """Add voter NODE_ID at raft ADDRESS (host:port)."""
    m = obj.remote.client.members()
    current = sorted(m.get("members") or [])
    plan = {
        "action": "add_voter",
        "node_id": node_id,
        "address": address,
        "voters_before": current,
        "voters_after": sorted({*current, node_id}),
        "noop": node_id in current,
    }
    if dry_run:
        _members_dry_run(obj, plan, len(current))
        return
    fleet.confirm(obj, radius=None, destructive=True, what=f"add voter {node_id}")
    answer = obj.remote.call("/v1/members/add", {"node_id": node_id, "address": address})
    obj.out.data(
        {"members": answer["members"]},
        lambda d: table("voters", ("id",), [(n,) for n in sorted(d["members"])]),
    )


@command(members, "remove")
@click.argument("node_id")
@click.option("--dry-run", is_flag=True, help="say what would change, change nothing")
@click.option("--confirm-cluster", default=None, help="the cluster's name, for automation")
def members_remove(obj: Ctx, node_id: str, dry_run: bool, confirm_cluster: str | None) -> None:
    """Remove voter NODE_ID (refused if it would cost the cluster its quorum)."""
    m = obj.remote.client.members()
    current = sorted(m.get("members") or [])
    after = [n for n in current if n != node_id]
    plan = {
        "action": "remove_voter",
        "node_id": node_id,
        "voters_before": current,
        "voters_after": after,
        "noop": node_id not in current,
        "quorum_after": len(after) // 2 + 1,
    }
    if dry_run:
        _members_dry_run(obj, plan, len(current))
        return
    fleet.confirm(
        obj,
        radius=None,
        destructive=True,
        what=f"remove voter {node_id}",
        confirm_cluster=confirm_cluster,
        force=len(after) < 3,
    )
    answer = obj.remote.call("/v1/members/remove", {"node_id": node_id})
    obj.out.data(
        {"members": answer["members"]},
        lambda d: table("voters", ("id",), [(n,) for n in sorted(d["members"])]),
    )


def _members_dry_run(obj: Ctx, plan: dict[str, Any], n: int) -> None:
    words = (
        (
            "nothing to do: "
            + ("already a voter" if plan["action"] == "add_voter" else "not a voter")
        )
        if plan["noop"]
        else (
            f"{plan['action'].replace('_', ' ')} {plan['node_id']}: voters "
            f"{', '.join(plan['voters_before'])} -> {', '.join(plan['voters_after'])} "
            f"(one membership change, one log entry; quorum "
            f"{n // 2 + 1} -> {len(plan['voters_after']) // 2 + 1})"
        )
    )
    obj.out.data({"dry_run": True, **plan, "plan": words}, lambda d: d["plan"])


# ------------------------------------------------------------------------------ kv


@main.group()
def kv() -> None:
    """The replicated key-value store: get, put, del, watch."""


def _value_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.hex()


@command(kv, "get")
@click.argument("key")
@click.option("--prefix", is_flag=True, help="every key starting with KEY")
@click.option("--stale-ok", is_flag=True, help="read the answering replica (not linearizable)")
def kv_get(obj: Ctx, key: str, prefix: bool, stale_ok: bool) -> None:
    """Read KEY (linearizable unless --stale-ok)."""
    client = obj.remote.client
    if prefix:
        items = client.range(key, stale_ok=stale_ok)
        rows = [{"key": k, "value": v, "mod_revision": r} for k, v, r in items]
        obj.out.data(
            rows,
            lambda d: table(
                "",
                ("key", "value", "mod_revision"),
                [(x["key"], x["value"], x["mod_revision"]) for x in d],
            ),
        )
        return
    got = client.get(key, stale_ok=stale_ok)
    if got is None:
        raise fail(f"key {key!r} not found", "rejected")
    obj.out.data(
        {"key": key, "value": got[0], "mod_revision": got[1]}, lambda d: _value_text(got[0])
    )


@command(kv, "put")
@click.argument("key")
@click.argument("value")
@click.option("--dry-run", is_flag=True, help="say what would change, change nothing")
def kv_put(obj: Ctx, key: str, value: str, dry_run: bool) -> None:
    """Write VALUE (UTF-8 text, or @FILE for a file's bytes) at KEY."""
    data = Path(value[1:]).read_bytes() if value.startswith("@") else value.encode("utf-8")
    client = obj.remote.client
    if dry_run:
        old = client.get(key)
        words = f"put {key}: {len(data)} bytes; " + (
            "unchanged (same value)"
            if old and old[0] == data
            else f"replaces {len(old[0])} bytes at revision {old[1]}"
            if old
            else "creates the key"
        )
        obj.out.data(
            {"dry_run": True, "key": key, "exists": old is not None, "plan": words},
            lambda d: d["plan"],
        )
        return
    revision = client.put(key, data)
    obj.out.data({"key": key, "revision": revision}, lambda d: f"revision {d['revision']}")


@command(kv, "del")
@click.argument("key")
@click.option("--dry-run", is_flag=True, help="say what would change, change nothing")
@click.option(
    "--confirm-cluster",
    default=None,
    metavar="NAME",
    help="the cluster's name (a production cluster asks for it)",
)
def kv_del(obj: Ctx, key: str, dry_run: bool, confirm_cluster: str | None) -> None:
    """Delete KEY (destructive: a production cluster asks for its name)."""
    client = obj.remote.client
    if dry_run:
        old = client.get(key)
        words = f"delete {key} (revision {old[1]})" if old else f"nothing: {key} is absent"
        obj.out.data(
            {"dry_run": True, "key": key, "exists": old is not None, "plan": words},
            lambda d: d["plan"],
        )
        return
    fleet.confirm(
        obj, radius=None, destructive=True, what=f"delete {key}", confirm_cluster=confirm_cluster
    )
    deleted = client.delete(key)
    obj.out.data({"key": key, "deleted": deleted}, lambda d: f"deleted {d['deleted']}")


@command(kv, "watch")
@click.argument("prefix", default="")
@click.option(
    "--rev",
    "start_revision",
    type=click.IntRange(1),
    default=None,
    help="start at this revision (default: from now)",
)
@click.option("--count", type=click.IntRange(1), default=None, help="stop after N events")
def kv_watch(obj: Ctx, prefix: str, start_revision: int | None, count: int | None) -> None:
    """Print every change under PREFIX as it happens (Ctrl-C stops); resumes by revision."""
    client = obj.remote.client
    if start_revision is None:
        _events, start_revision = client.watch(prefix, start_revision=1 << 62, wait_ms=0)
        start_revision = max(1, start_revision)
    seen = 0
    try:
        while count is None or seen < count:
            events, start_revision = client.watch(
                prefix, start_revision=start_revision, wait_ms=5_000
            )
            for rev, kind, key, value in events:
                event = {"revision": rev, "type": kind, "key": key, "value": value}
                if obj.output == "table":
                    click.echo(f"{rev}\t{kind}\t{key}\t{_value_text(value)}")
                else:
                    click.echo(json.dumps({**event, "value": _value_text(value)}))
                seen += 1
                if count is not None and seen >= count:
                    break
    except KeyboardInterrupt:
        click.echo(f"stopped; resume with --rev {start_revision}", err=True)


# ------------------------------------------------------------------------------ health


def _why_path(thing: str) -> str:
    return "/health/why/" + "/".join(p for p in thing.split("/") if p)


@command(main, "health")
@click.argument("level", type=click.Choice(["what", "where", "why"]), default="what")
@click.argument("thing_words", nargs=-1, metavar="[KIND/ID]")
def health(obj: Ctx, level: str, thing_words: tuple[str, ...]) -> None:
    """Health, drilled down: `health` (what), `health where`, `health why KIND/ID` (or
    `health why KIND ID`)."""
    thing = "/".join(thing_words) if thing_words else None
    remote = obj.remote
    if level == "why":
        if not thing or "/" not in thing.strip("/"):
            raise fail(
                "health why needs KIND/ID (or KIND ID), such as voter/n2: "
                "`coreplane health where` lists them",
                "usage",
            )
        status_code, body = remote.get_plain(_why_path(thing))
        if status_code == 404:
            raise fail(f"{thing}: {(body or {}).get('message', 'not found')}", "rejected")
    else:
        status_code, body = remote.get_plain("/health" if level == "what" else "/health/where")
    if status_code not in (200, 503):
        raise fail(f"health: HTTP {status_code}: {body}", "error")
    obj.out.data(body, lambda d: _health_table(level, d))
    if isinstance(body, dict) and body.get("healthy") is False:
        raise SystemExit(EXIT["unhealthy"])


def _places(where: Any) -> str:
    """A finding's places as ``kind/id`` (what `health why` takes)."""
    if isinstance(where, list):
        return ", ".join(
            f"{p.get('kind')}/{p.get('id')}" if isinstance(p, dict) else str(p) for p in where
        )
    return "" if where is None else str(where)


def _health_table(level: str, d: Any) -> Any:
    """what: one line; where: the places, worst first; why: findings and internal state.
    Each level ends with the command for the next one down."""
    from rich.console import Group

    if not isinstance(d, dict):
        return str(d)
    ok = d.get("healthy")
    mark = "[green]healthy[/green]" if ok else "[red]unhealthy[/red]"
    if level == "what":
        summary = str(d.get("summary", ""))
        for word in ("healthy: ", "unhealthy: "):
            summary = summary.removeprefix(word)  # the mark says it, in colour
        return Group(f"{mark}: {summary}", "" if ok else "next: coreplane health where")
    if level == "where":
        places = d.get("places") or []
        rows = [
            (p.get("severity"), f"{p.get('kind')}/{p.get('id')}", "; ".join(p.get("what") or []))
            for p in places
        ]
        return Group(
            table("where", ("severity", "place", "what"), rows)
            if rows
            else f"{mark}: nowhere to look",
            f"next: coreplane health why {rows[0][1]}" if rows else "",
        )
    findings = d.get("findings") or []
    rows = [(f.get("severity"), f.get("what"), f.get("why"), f.get("fix")) for f in findings]
    return Group(
        table(f"why {d.get('thing', '')}", ("severity", "what", "why", "fix"), rows)
        if rows
        else f"{mark}: no finding about {d.get('thing', '')}",
        kv_table("state", d.get("state") or {}),
        "related: " + ", ".join(str(x) for x in d["related"]) if d.get("related") else "",
    )


@command(main, "diagnose")
def diagnose(obj: Ctx) -> None:
    """Check the usual suspects; print what is wrong, where, why and the fixing command."""
    answer = obj.remote.call("/v1/diagnose", method="GET")
    findings = answer.get("findings") or []

    def show(d: dict[str, Any]) -> Any:
        if not d.get("findings"):
            return f"[green]healthy[/green]: {d.get('summary', 'no findings')}"
        rows = [
            (
                f.get("severity", ""),
                f.get("what", f.get("check", "")),
                _places(f.get("where")),
                f.get("why", ""),
                f.get("fix", ""),
            )
            for f in d["findings"]
        ]
        return table(
            d.get("summary", "findings"), ("severity", "what", "where", "why", "fix"), rows
        )

    obj.out.data(answer, show)
    if findings:
        raise SystemExit(EXIT["unhealthy"])


# ------------------------------------------------------------------------------ config


@main.group("config")
def config_group() -> None:
    """Contexts in ~/.config/coreplane/config.yaml (or $COREPLANE_CONFIG), as kubeconfig."""


@command(config_group, "get-contexts")
def get_contexts(obj: Ctx) -> None:
    """Every context (tokens redacted) and which one is current."""
    data = cfg.load_file()
    cur = data.get("current-context", "")
    rows = [
        {"name": n, "current": n == cur, **cfg.redacted(c)}
        for n, c in sorted(data["contexts"].items())
    ]
    obj.out.data(
        rows,
        lambda r: table(
            str(cfg.config_path()),
            ("current", "name", "endpoints", "cluster"),
            [
                (
                    "*" if x["current"] else "",
                    x["name"],
                    ",".join(x.get("endpoints") or []),
                    x.get("cluster", ""),
                )
                for x in r
            ],
        ),
    )


@command(config_group, "use-context")
@click.argument("name")
def use_context(obj: Ctx, name: str) -> None:
    """Make NAME the current context."""
    data = cfg.load_file()
    if name not in data["contexts"]:
        raise fail(f"no context {name!r} in {cfg.config_path()}", "usage")
    data["current-context"] = name
    path = cfg.save_file(data)
    obj.out.data(
        {"current-context": name, "file": str(path)},
        lambda d: f"current context: {d['current-context']}",
    )


@command(config_group, "set-context")
@click.argument("name", required=False)
@click.option("--endpoints", "eps", default=None, help="comma-separated API URLs")
@click.option("--token-file", default=None, help="file holding the token (preferred)")
@click.option("--token-env", is_flag=True, help="store the token from $COREPLANE_TOKEN")
@click.option(
    "--token",
    "token_value",
    default=None,
    help="store this token (it shows in `ps`: prefer --token-file or --token-env)",
)
@click.option("--cluster", default=None, help="the cluster's name (asked back by guards)")
def set_context(
    obj: Ctx,
    name: str | None,
    eps: str | None,
    token_file: str | None,
    token_env: bool,
    token_value: str | None,
    cluster: str | None,
) -> None:
    """Create or update context NAME (default: the current one); the file is owner-only.
    Only the fields given change: `set-context --token-file F` rotates a token."""
    import os

    data = cfg.load_file()
    name = name or data.get("current-context")
    if not name:
        raise fail("no context named and no current context", "usage")
    ctx: dict[str, Any] = dict(data["contexts"].get(name) or {})
    if eps:
        ctx["endpoints"] = [e.strip() for e in eps.split(",") if e.strip()]
    if not ctx.get("endpoints"):
        raise fail(f"context {name!r} needs --endpoints", "usage")
    if token_value:
        ctx.pop("token-file", None)
        ctx["token"] = token_value
    if token_file:
        ctx.pop("token", None)
        ctx["token-file"] = token_file
    if token_env:
        token = os.environ.get("COREPLANE_TOKEN")
        if not token:
            raise fail("--token-env: COREPLANE_TOKEN is not set", "usage")
        ctx.pop("token-file", None)
        ctx["token"] = token
    if cluster:
        ctx["cluster"] = cluster
    data["contexts"][name] = ctx
    data.setdefault("current-context", name)
    path = cfg.save_file(data)
    obj.out.data(
        {"context": name, "file": str(path), **cfg.redacted(ctx)},
        lambda d: f"context {name} saved in {path}",
    )


@command(main, "completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(obj: Ctx, shell: str) -> None:
    """Print the shell completion script: eval "$(coreplane completion bash)"."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - the three shells above are built in
        raise fail(f"no completion for {shell}", "usage")
    click.echo(cls(main, {}, "coreplane", "_COREPLANE_COMPLETE").source())


@command(main, "replay")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--upto", type=click.IntRange(0), default=None, help="stop at this log index")
@click.option(
    "--fleet-config",
    "fleet_config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML map of the FleetConfig the cluster runs with",
)
def replay_cmd(obj: Ctx, data_dir: str, upto: int | None, fleet_config: str | None) -> None:
    """Rebuild a voter's state from a COPY of its data dir, offline; print the state hash
    and the fleet decisions with their sentences."""
    from coreplane.ops.replay import run_replay

    started = time.monotonic()
    result = run_replay(data_dir, upto=upto, fleet_config_path=fleet_config)
    result["elapsed_ms"] = int((time.monotonic() - started) * 1000)

    def show(d: dict[str, Any]) -> Any:
        from rich.console import Group

        head = kv_table(
            f"replay of {d['node_id']}",
            {
                k: d[k]
                for k in (
                    "applied_index",
                    "snapshot_index",
                    "commit_index",
                    "state_hash",
                    "entries_applied",
                    "refusals",
                )
            },
        )
        rows = [(x["index"], x["tick_ms"], x["text"]) for x in d.get("decisions", [])]
        return Group(head, table("fleet decisions", ("index", "tick_ms", "decision"), rows))

    obj.out.data(result, show)


for _fleet_command in fleet_commands.COMMANDS:
    main.add_command(_fleet_command)
