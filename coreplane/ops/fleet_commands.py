"""The fleet's commands: `nodes`, `partitions`, the admin verbs, `update partition`,
`plan`/`apply`, `ops` and `explain` (what they share is in `coreplane.ops.fleet`).

`COMMANDS` is what `coreplane.ops.cli` adds to the `coreplane` group.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from coreplane.ops import guard, operations
from coreplane.ops.context import EXIT, Ctx, command, fail
from coreplane.ops.fleet import (
    as_change,
    cluster_flags,
    confirm,
    dry_plan,
    estimate_words,
    follow,
    issue,
    limits,
    list_nodes,
    list_partitions,
    node_rows,
    part_rows,
    progress_of,
    run_change,
)
from coreplane.ops.output import kv_table, table

__all__ = ["COMMANDS", "fleet_move"]


def fleet_move(obj: Ctx, oid: str) -> dict[str, Any]:
    """One of the fleet's moves in flight by id, or exit 5."""
    moves = obj.remote.call("/v1/fleet/operations", method="GET")["operations"]
    for move in moves:
        if move.get("id") == oid:
            return dict(move)
    raise fail(f"no operation {oid} (neither the CLI's nor a fleet move in flight)", "rejected")


mutating = [
    click.option("--dry-run", is_flag=True, help="the plan in words; change nothing"),
    click.option(
        "--confirm-cluster",
        default=None,
        metavar="NAME",
        help="the cluster's name: confirms a wide or production change",
    ),
    click.option("--wait/--no-wait", default=True, help="follow progress (default)"),
]


def with_mutating(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(mutating):
        fn = opt(fn)
    return fn


@click.group()
def nodes() -> None:
    """Fleet nodes: list, show."""


@command(nodes, "list")
@click.option("--zone", default=None, help="only this zone")
def nodes_list(obj: Ctx, zone: str | None) -> None:
    rows = [n for n in list_nodes(obj) if zone is None or n["zone"] == zone]
    obj.out.data(rows, node_rows)


@command(nodes, "show")
@click.argument("node_id")
def nodes_show(obj: Ctx, node_id: str) -> None:
    node = obj.remote.call("/v1/fleet/node", {"node_id": node_id})["node"]
    if node is None:
        raise fail(f"no node {node_id!r}", "rejected")
    obj.out.data(node, lambda d: kv_table(f"node {node_id}", d))


@click.group()
def partitions() -> None:
    """Partitions: list, show."""


@command(partitions, "list")
@click.option("--unhealthy", is_flag=True, help="only those not healthy")
def partitions_list(obj: Ctx, unhealthy: bool) -> None:
    rows = [p for p in list_partitions(obj) if not unhealthy or p["health"] != "healthy"]
    obj.out.data(rows, part_rows)


@command(partitions, "show")
@click.argument("pid")
def partitions_show(obj: Ctx, pid: str) -> None:
    part = obj.remote.call("/v1/fleet/partition", {"pid": pid})["partition"]
    if part is None:
        raise fail(f"no partition {pid!r}", "rejected")
    obj.out.data(part, lambda d: kv_table(f"partition {pid}", d))


def admin_command(verb: str, doc: str, destructive: bool) -> click.Command:
    @command(None, verb, help=doc)
    @click.argument("node_id")
    @with_mutating
    def run(obj: Ctx, node_id: str, dry_run: bool, confirm_cluster: str | None, wait: bool) -> None:
        run_change(
            obj,
            verb=verb,
            subject=node_id,
            changes=[{"verb": verb, "subject": node_id}],
            dry_run=dry_run,
            confirm_cluster=confirm_cluster,
            wait=wait,
            destructive=destructive,
        )

    return run


ADMIN_COMMANDS = [
    admin_command("cordon", "Place no new replica on NODE.", True),
    admin_command("uncordon", "Let NODE take replicas again.", False),
    admin_command("drain", "Move every replica off NODE (it stays cordoned).", True),
    admin_command("decommission", "Drain NODE, then release it for good.", True),
]


@click.group()
def update() -> None:
    """Change desired state: `update partition ID --scale-up --new-num-nodes N`."""


@command(update, "partition")
@click.argument("pid")
@click.option("--scale-up", "direction", flag_value="up", help="more nodes hold it")
@click.option("--scale-down", "direction", flag_value="down", help="fewer nodes hold it")
@click.option(
    "--new-num-nodes",
    type=click.IntRange(1, 64),
    required=True,
    help="how many nodes hold a replica (its RF) afterwards",
)
@with_mutating
def update_partition(
    obj: Ctx,
    pid: str,
    direction: str | None,
    new_num_nodes: int,
    dry_run: bool,
    confirm_cluster: str | None,
    wait: bool,
) -> None:
    """Scale partition PID to --new-num-nodes replicas (one per node, distinct zones)."""
    if direction is None:
        raise fail("say --scale-up or --scale-down", "usage")
    part = obj.remote.call("/v1/fleet/partition", {"pid": pid})["partition"]
    if part is None:
        raise fail(f"no partition {pid!r}", "rejected")
    rf = int(part["rf"])
    if (new_num_nodes < rf) if direction == "up" else (new_num_nodes > rf):
        raise fail(f"--scale-{direction} to {new_num_nodes}, but {pid} has {rf} now", "usage")
    run_change(
        obj,
        verb=f"scale-{direction}",
        subject=pid,
        changes=[{"verb": "set_rf", "subject": pid, "rf": new_num_nodes}],
        dry_run=dry_run,
        confirm_cluster=confirm_cluster,
        wait=wait,
    )


def spec_changes(obj: Ctx, path: str) -> tuple[dict[str, Any], list[Any]]:
    from coreplane.ops import spec as specs

    with open(path, encoding="utf-8") as f:
        desired = specs.parse(f.read())
    return desired, specs.diff(desired, list_partitions(obj), list_nodes(obj))


@command(None, "plan")
@click.option("-f", "--filename", "path", required=True, type=click.Path(exists=True))
def plan_cmd(obj: Ctx, path: str) -> None:
    """Show what `apply -f` would change (as kubectl diff); exit 8 when something would."""
    _desired, changes = spec_changes(obj, path)
    moves: dict[str, Any] = {}
    asked = [as_change(c) for c in changes]
    if changes:
        moves = dry_plan(obj, asked)
    named = [c["subject"] for c in asked if c["verb"] in ("set_rf", "create", "delete")]
    data = {
        "in_sync": not changes,
        "changes": [c.to_dict() for c in changes],
        "diff": [c.line() for c in changes],
        "plan": moves,
    }
    obj.out.data(
        data,
        lambda d: (
            "\n".join(d["diff"]) + ("\n\n" + estimate_words(moves, named) if moves else "")
            if d["diff"]
            else "in sync"
        ),
    )
    if changes:
        raise SystemExit(EXIT["pending"])


@command(None, "apply")
@click.option("-f", "--filename", "path", required=True, type=click.Path(exists=True))
@with_mutating
def apply_cmd(obj: Ctx, path: str, dry_run: bool, confirm_cluster: str | None, wait: bool) -> None:
    """Make the fleet match the spec file (partitions with RF, cordons); resumable."""
    desired, changes = spec_changes(obj, path)
    if desired["cluster"]:
        name = cluster_flags(obj)["name"]
        if desired["cluster"] != name:
            raise fail(f"the spec is for cluster {desired['cluster']!r}, this is {name!r}", "usage")
    if not changes:
        obj.out.data({"in_sync": True, "changes": []}, lambda d: "in sync: nothing to do")
        return
    run_change(
        obj,
        verb="apply",
        subject=path.rsplit("/", 1)[-1],
        changes=[as_change(c) for c in changes],
        dry_run=dry_run,
        confirm_cluster=confirm_cluster,
        wait=wait,
    )


@click.group()
def ops() -> None:
    """Operations: list, show, resume, cancel."""


@command(ops, "list")
@click.option("--all", "show_all", is_flag=True, help="finished ones too")
def ops_list(obj: Ctx, show_all: bool) -> None:
    client = obj.remote.client
    records = [json.loads(v.decode("utf-8")) for _k, v, _r in client.range(operations.PREFIX)]
    records = [r for r in records if show_all or r.get("state") == "running"]
    moves = obj.remote.call("/v1/fleet/operations", method="GET")["operations"]
    data = {"operations": records, "moves_in_flight": moves}

    def show(d: dict[str, Any]) -> Any:
        from rich.console import Group

        return Group(
            table(
                "operations",
                ("id", "state", "changes", "attempt"),
                [
                    (r["id"], r.get("state"), len(r.get("changes") or []), r.get("attempt"))
                    for r in d["operations"]
                ],
            ),
            table(
                "moves in flight",
                ("id", "partition", "source", "target", "step", "attempt"),
                [
                    (
                        m["id"],
                        m["partition"],
                        m.get("source"),
                        m.get("target"),
                        m["step"],
                        m["attempt"],
                    )
                    for m in d["moves_in_flight"]
                ],
            ),
        )

    obj.out.data(data, show)


@command(ops, "show")
@click.argument("oid")
def ops_show(obj: Ctx, oid: str) -> None:
    """An operation: the CLI's (its changes, progress) or one of the fleet's moves by its id
    (``p6@1045``, as `ops list` and `diagnose` name them)."""
    found = operations.fetch(obj.remote.client, oid)
    if found is None:
        move = fleet_move(obj, oid)
        obj.out.data(move, lambda d: kv_table(f"move {oid}", d))
        return
    done, total = progress_of(obj, found[0])
    obj.out.data({**found[0], "progress": [done, total]}, lambda d: kv_table(f"operation {oid}", d))


@command(ops, "resume")
@click.argument("oid")
@click.option("--wait/--no-wait", default=True)
def ops_resume(obj: Ctx, oid: str, wait: bool) -> None:
    """Ask again for the operation's changes (idempotent) and follow it."""
    found = operations.fetch(obj.remote.client, oid)
    if found is None:
        fleet_move(obj, oid)  # exits 5 when it is not a move either
        raise fail(
            f"{oid} is one of the fleet's moves: the fleet retries a failed step "
            f"itself (up to its retries) and then rolls it back; there is nothing "
            f"to resume by hand. Watch it with `coreplane ops show {oid}`",
            "rejected",
        )
    record = found[0]
    if record.get("state") != "running":
        raise fail(
            f"operation {oid} is {record.get('state')}; run its command again to start it anew",
            "rejected",
        )
    for ch in record["changes"]:
        issue(obj, ch)
    follow(obj, oid, wait=wait)


@command(ops, "cancel")
@click.argument("oid")
@click.option(
    "--move",
    "move_id",
    default=None,
    metavar="MOVE",
    help="cancel only this move of the operation (an id as `ops list` shows, e.g. p6@1045)",
)
@click.option("--reason", default="", help="why (journaled; `explain` shows it)")
@click.option("--dry-run", is_flag=True)
@click.option("--confirm-cluster", default=None, metavar="NAME")
def ops_cancel(
    obj: Ctx,
    oid: str,
    move_id: str | None,
    reason: str,
    dry_run: bool,
    confirm_cluster: str | None,
) -> None:
    """Stop an operation: ask for the state before it (where that can be asked for); or, with
    ``--move`` (or a move's id as OID), roll one move back while it copies."""
    client = obj.remote.client
    found = operations.fetch(client, oid)
    if found is None and move_id is not None and move_id != oid:
        raise fail(f"no operation {oid}: `ops list` shows the operations", "rejected")
    if found is None or move_id is not None:
        _cancel_move(
            obj, found[0] if found else None, move_id or oid, reason, dry_run, confirm_cluster
        )
        return
    record = found[0]
    undo = record.get("undo") or []
    if dry_run:
        obj.out.data(
            {"dry_run": True, "operation": oid, "undo": undo},
            lambda d: (
                f"cancel {oid}: "
                + (
                    ", ".join(
                        f"{u['verb']} {u['subject']}" + (f" rf {u['rf']}" if "rf" in u else "")
                        for u in undo
                    )
                    or "nothing to undo; the record is marked cancelled"
                )
            ),
        )
        return
    rad = None
    if undo:  # the undo is a change like any other: the same blast-radius rule
        plan = dry_plan(obj, undo)
        rad = guard.radius(
            named_nodes=[u["subject"] for u in undo if u["verb"] != "set_rf"],
            named_partitions=[u["subject"] for u in undo if u["verb"] == "set_rf"],
            moves=plan.get("moves") or [],
            nodes_total=plan.get("nodes_total", 0),
            partitions_total=plan.get("partitions_total", 0),
            destructive=True,
            production=bool(plan.get("production")),
            **limits(obj),
        )
    confirm(
        obj, radius=rad, destructive=True, what=f"cancel {oid}", confirm_cluster=confirm_cluster
    )
    record["state"] = "cancelled"
    operations.save(client, record)
    for ch in undo:
        issue(obj, ch)
    obj.out.data(
        {"operation": oid, "state": "cancelled", "undo": undo},
        lambda d: f"operation {oid} cancelled",
    )


def _belongs(record: dict[str, Any], move: dict[str, Any]) -> bool:
    """A move belongs to an operation when it carries a partition the operation names or
    moves a replica to or from a node it names."""
    subjects = {ch["subject"] for ch in record.get("changes") or []}
    return bool(subjects & {move.get("partition"), move.get("source"), move.get("target")})


def _cancel_move(
    obj: Ctx,
    record: dict[str, Any] | None,
    move_id: str,
    reason: str,
    dry_run: bool,
    confirm_cluster: str | None,
) -> None:
    """Roll one move back while it copies (POST /v1/fleet/operations/cancel): the fleet
    issues an abort with a new fencing token (a late copy ack is refused), removes the
    partial copy from the target and journals the reason. The change that asked for the move
    still stands, so the fleet may plan the partition again, from the state as it is then."""
    move = fleet_move(obj, move_id)  # exits 5 when no such move is in flight
    if record is not None and not _belongs(record, move):
        raise fail(
            f"move {move_id} ({move['partition']}: {move.get('source') or '-'} -> "
            f"{move.get('target') or '-'}) is not part of operation {record['id']}",
            "rejected",
        )
    if move.get("step") != "copy":
        raise fail(
            f"move {move_id} is at step {move.get('step')}: only a move that is still copying "
            f"can be cancelled (after the cutover it is finishing; an abort is under way)",
            "rejected",
        )
    what = (
        f"cancel move {move_id} ({move['partition']}: {move.get('source') or '-'} -> "
        f"{move.get('target')}): roll the copy back and remove the partial copy on "
        f"{move.get('target')}"
    )
    data: dict[str, Any] = {"move": move_id, "partition": move["partition"], "reason": reason}
    if record is not None:
        data["operation"] = record["id"]
    if dry_run:
        obj.out.data({**data, "dry_run": True}, lambda d: what)
        return
    # one move touches one partition: never past a share; production still asks for the name
    confirm(obj, radius=None, destructive=True, what=what, confirm_cluster=confirm_cluster)
    answer = obj.remote.call(
        "/v1/fleet/operations/cancel", {"operation": move_id, "reason": reason}
    )["result"]
    if record is not None:
        record.setdefault("cancelled_moves", []).append({"move": move_id, "reason": reason})
        operations.save(obj.remote.client, record)
    obj.out.data(
        {**data, "step": answer.get("step")},
        lambda d: f"move {move_id} rolling back (see `coreplane explain {move_id}`)",
    )


@command(None, "explain")
@click.argument("thing")
@click.option("--limit", type=click.IntRange(1, 1000), default=50)
def explain(obj: Ctx, thing: str, limit: int) -> None:
    """The fleet's committed decisions about a node, partition or operation, in order. For
    one of the CLI's operations: the decisions about the moves cancelled in it, with why."""
    rows = obj.remote.call("/v1/fleet/explain", {"thing": thing, "limit": limit})["decisions"]
    found = None if rows else operations.fetch(obj.remote.client, thing)
    if found is not None:
        for cancelled in found[0].get("cancelled_moves") or []:
            body = {"thing": cancelled["move"], "limit": limit}
            rows += obj.remote.call("/v1/fleet/explain", body)["decisions"]
        rows = sorted(rows, key=lambda r: r["index"])[-limit:]
    obj.out.data(
        rows,
        lambda r: (
            table(
                f"decisions about {thing}",
                ("index", "tick_ms", "decision"),
                [(x["index"], x["tick_ms"], x["text"]) for x in r],
            )
            if r
            else f"no decision names {thing}"
        ),
    )


COMMANDS = [nodes, partitions, *ADMIN_COMMANDS, update, plan_cmd, apply_cmd, ops, explain]
