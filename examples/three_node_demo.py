"""Three OS processes embedding coreplane on 127.0.0.1: elect, write, kill -9 the leader, fail
over, verify, restart the killed node from its data dir, watch it catch up, stop cleanly.

    python3 -m pip install . && python3 examples/three_node_demo.py

Every write the cluster acknowledged must be on every replica at the end, and the replicas must
agree on the state hash at the same index. Exit status 0 only if every check held.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from _demo_harness import NodeDown, ProcCluster

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        say(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failed.append(what)
        return ok


def write(cluster: ProcCluster, via: str, key: str, acked: dict[str, str]) -> bool:
    value = f"{key}@{via}"
    try:
        reply = cluster.nodes[via].request("put", key=key, value=value, timeout_s=5.0)
    except (NodeDown, TimeoutError):
        return False
    if reply.get("ok"):
        acked[key] = value
        return True
    return False


def verify(cluster: ProcCluster, acked: dict[str, str], checks: Checks, label: str) -> None:
    cluster.wait_caught_up(timeout_s=20)
    for node_id, items in sorted(cluster.dumps().items()):
        missing = [k for k, v in acked.items() if items.get(k) != v]
        checks.check(
            not missing,
            f"{label}: node {node_id} has all {len(acked)} acknowledged "
            f"writes" + (f" (missing {missing[:5]})" if missing else ""),
        )
    index, digest = cluster.equal_hashes()
    checks.check(True, f"{label}: replicas agree on state hash {digest[:12]} at index {index}")


def run(base: Path) -> int:
    checks = Checks()
    acked: dict[str, str] = {}
    with ProcCluster(base, options={"log_compaction_min_entries": 200}) as cluster:
        say(f"starting nodes {dict(cluster.addresses)} (data under {base})")
        t = time.monotonic()
        cluster.start_all()
        leader = cluster.wait_leader(timeout_s=15)
        token1 = cluster.status(leader)["fencing_token"]
        say(
            f"leader elected: {leader} (fencing token {token1}), "
            f"{time.monotonic() - t:.2f}s after the processes started"
        )
        followers = [n for n in cluster.nodes if n != leader]

        say("writing 30 keys through the leader and 10 through a follower (forwarded)")
        ok = all(write(cluster, leader, f"k{i:03d}", acked) for i in range(30))
        ok &= all(write(cluster, followers[0], f"k{i:03d}", acked) for i in range(30, 40))
        checks.check(ok, "all 40 writes acknowledged")
        verify(cluster, acked, checks, "before failover")

        say(f"kill -9 leader {leader} (pid {cluster.nodes[leader].pid})")
        t_kill = time.monotonic()
        cluster.nodes[leader].kill9()
        new_leader = cluster.wait_leader(timeout_s=15, exclude=leader)
        t_elected = time.monotonic() - t_kill
        first_write = None
        for i in range(40, 60):
            if write(cluster, new_leader, f"k{i:03d}", acked) and first_write is None:
                first_write = time.monotonic() - t_kill
        say(
            f"new leader: {new_leader}, established {t_elected:.2f}s after the kill; "
            f"first acknowledged write {first_write or float('nan'):.2f}s after the kill"
        )
        checks.check(new_leader != leader, "a different node leads after the kill")
        token2 = cluster.status(new_leader)["fencing_token"]
        checks.check(token2 > token1, f"the new leader's fencing token {token2} > {token1}")
        checks.check(len(acked) == 60, f"{len(acked)}/60 writes acknowledged across failover")
        verify(cluster, acked, checks, "after failover (2 nodes)")

        say(f"restarting {leader} from its data dir")
        t = time.monotonic()
        cluster.nodes[leader].start()
        for i in range(60, 70):
            write(cluster, new_leader, f"k{i:03d}", acked)
        verify(cluster, acked, checks, f"after {leader} rejoined")
        say(
            f"{leader} caught up {time.monotonic() - t:.2f}s after restart; "
            f"status: {cluster.status(leader)['role']}, leader {cluster.status(leader)['leader']}"
        )

        say("stopping all nodes cleanly")
        codes = {n: node.stop() for n, node in cluster.nodes.items()}
        checks.check(all(c == 0 for c in codes.values()), f"clean exit statuses {codes}")

    total = time.monotonic() - T0
    if checks.failed:
        say(f"FAILED {len(checks.failed)} check(s) in {total:.1f}s: {checks.failed}")
        return 1
    say(f"all checks passed in {total:.1f}s")
    return 0


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="coreplane-demo-") as tmp:
        try:
            return run(Path(tmp))
        except Exception as exc:  # noqa: BLE001 - any harness error is a failed demo, with its reason
            say(f"FAILED: {type(exc).__name__}: {exc}")
            return 1


if __name__ == "__main__":
    sys.exit(main())
