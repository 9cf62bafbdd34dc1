"""LmdbJournal on a real full disk, and under real pysyncobj clusters on 127.0.0.1.

Disk full uses a 2 MiB tmpfs (root only; skipped with the reason otherwise): the journal stops
writing with `StorageFull`, keeps every synced entry, exposes nothing of the failed batch, and
writes again once space returns. The cluster tests run pysyncobj with `LmdbJournal` and
`SnapshotSerializer` installed through `seams.journal_factory`: snapshots land in LMDB, a
restarted node comes back from LMDB alone (even without the marker file pysyncobj looks for),
and a lagging node catches up from a snapshot streamed out of the leader's LMDB.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj, SyncObjConf, replicated

from coreplane.errors import StorageFull
from coreplane.raft import seams, serialization
from coreplane.raft.journal import LmdbJournal, snapshot_marker_path

# ------------------------------------------------------------------------ disk full


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(journal: LmdbJournal, start: int) -> tuple[int, int]:
    """Append 1 KiB entries in batches of 10 until a flush fails; (last synced, last added)."""
    synced, idx = start - 1, start - 1
    with pytest.raises(StorageFull) as info:
        for _ in range(10_000):  # bounded: 2 MiB cannot hold 100k KiB
            for _ in range(10):
                idx += 1
                journal.add(b"\x00" + idx.to_bytes(8, "big") * 128, idx, 1)
            journal.flush()
            synced = idx
    assert "disk full" in str(info.value)
    return synced, idx


def _indexes(journal: LmdbJournal) -> list[int]:
    return [journal[i][1] for i in range(len(journal))]


@pytest.mark.slow
def test_disk_full_stops_writes_keeps_synced_entries_and_recovers(tiny_disk: Path) -> None:
    ballast = tiny_disk / "ballast"
    ballast.write_bytes(b"\x00" * 640 * 1024)  # what the operator frees later
    path = str(tiny_disk / "j")
    journal = LmdbJournal(path, node_id="n1")
    synced, added = _fill(journal, 1)
    assert synced > 0 and added > synced
    with pytest.raises(StorageFull):
        journal.flush()  # still full: fails again, loudly
    with pytest.raises(StorageFull):
        journal.setCurrentTerm(2, "n1")  # a vote could not be made durable: not sent
    journal.close()  # logs the unflushed batch; nothing half-written becomes visible

    journal = LmdbJournal(path, node_id="n1")  # reopen on the still-full disk
    assert _indexes(journal) == list(range(1, synced + 1))
    assert journal.getCurrentTerm() == 0
    synced2, added2 = _fill(journal, synced + 1)
    assert synced2 == synced  # still no room
    with pytest.raises(StorageFull):
        journal.save_snapshot(b"s" * 300_000, last_entry=journal[1], prev_entry=journal[0])
    assert journal.load_snapshot() is None  # no half-published snapshot

    ballast.unlink()  # space returns
    journal.flush()
    journal.setCurrentTerm(3, "n2")
    journal.close()
    journal = LmdbJournal(path, node_id="n1")
    try:
        assert _indexes(journal) == list(range(1, added2 + 1))
        assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (3, "n2")
        journal.verify()
    finally:
        journal.close()


@pytest.mark.slow
def test_controlplane_on_a_full_disk_refuses_writes_and_resumes(tiny_disk: Path) -> None:
    """A real full filesystem under a running node: writes fail with `StorageFull` (not
    `Unavailable`), the node does not stop, stale reads work, and freeing space resumes writes
    with no restart. Every write acknowledged before, during and after survives a restart."""
    from coreplane.runtime.controlplane import ControlPlane
    from coreplane.testing.ports import free_ports

    address = f"127.0.0.1:{free_ports(1)[0]}"
    data_dir = tiny_disk / "a"

    def node() -> ControlPlane:
        return ControlPlane(
            "a",
            address,
            {},
            data_dir,
            b"tiny-disk-secret-0123456789",
            election_timeout_ms=(200, 400),
            heartbeat_ms=40,
            tick_interval_ms=100,
        )

    def leader(cp: ControlPlane) -> None:
        deadline = time.monotonic() + 10
        while not (cp.is_leader() and cp.fencing_token is not None):
            assert time.monotonic() < deadline, "no leader"
            time.sleep(0.02)

    cp = node()
    cp.start()
    acked: dict[str, bytes] = {}
    try:
        leader(cp)
        (tiny_disk / "ballast").write_bytes(b"\x00" * 256 * 1024)  # what is freed later
        with pytest.raises(StorageFull):
            for i in range(10_000):  # bounded: 2 MiB cannot hold 10k x 4 KiB
                value = i.to_bytes(4, "big") * 1024
                cp.kv.put(f"k{i:05d}", value, timeout_s=5)
                acked[f"k{i:05d}"] = value
        assert acked
        with pytest.raises(StorageFull):
            cp.kv.put("while-full", b"x", timeout_s=2)
        assert cp.status().error is None
        last = max(acked)
        got = cp.kv.get(last, stale_ok=True)
        assert got is not None and got[0] == acked[last]
        (tiny_disk / "ballast").unlink()  # space returns
        deadline = time.monotonic() + 15
        while True:
            try:
                cp.kv.put("after", b"back", timeout_s=2)
                break
            except StorageFull:
                assert time.monotonic() < deadline, "writes did not resume"
                time.sleep(0.1)
        acked["after"] = b"back"
    finally:
        cp.stop()
    cp = node()
    cp.start()
    try:
        leader(cp)
        for key, value in acked.items():
            got = cp.kv.get(key)
            assert got is not None and got[0] == value, key
    finally:
        cp.stop()


def _enospc_switch(cp: Any) -> Callable[[bool], None]:
    """Every journal write transaction of `cp` fails with ENOSPC while switched on."""
    journal = cp._journal
    real = journal._flush_txn
    state = {"full": False}

    def flush_txn() -> None:
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real()

    journal._flush_txn = flush_txn
    return lambda full: state.update(full=full)


@pytest.mark.slow
@pytest.mark.parametrize("who", ["follower", "leader"])
def test_three_nodes_one_full_disk_others_write_then_it_catches_up(
    cluster_factory: Any, wait_until: Any, who: str
) -> None:
    """Three in-process nodes on the real wire. One node's journal cannot be written: writes
    through it fail with `StorageFull`, the other two keep committing (a full leader hands
    over), and once space returns it catches up and holds every acknowledged write."""
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    victim = leader if who == "leader" else cluster.followers()[0]
    full = _enospc_switch(victim)
    acked: dict[str, bytes] = {}
    for i in range(10):
        leader.kv.put(f"before{i}", b"b%d" % i)
        acked[f"before{i}"] = b"b%d" % i
    full(True)
    wait_until(lambda: _victim_full(victim), 10, "the victim's journal to fail")
    with pytest.raises(StorageFull):
        victim.kv.put("through-victim", b"x", timeout_s=3)
    others = [cp for cp in cluster.nodes.values() if cp is not victim]
    new_leader = wait_until(
        lambda: next((cp for cp in others if cp.is_leader()), None),
        10,
        "a leader among the nodes with space",
    )
    for i in range(20):
        new_leader.kv.put(f"during{i}", b"d%d" % i, timeout_s=10)
        acked[f"during{i}"] = b"d%d" % i
    assert victim.status().error is None
    full(False)
    # The victim may hold every entry in memory already; its journal is writable again only
    # once a tick's flush succeeds, and `status()` is how a host sees that.
    wait_until(lambda: not victim.status().storage_full, 10, "the victim's journal to write")
    wait_until(lambda: _has_all(victim, acked), 20, "the victim to catch up")
    victim.kv.put("after", b"a", timeout_s=10)


def _victim_full(cp: Any) -> bool:
    engine = cp._engine
    return engine is not None and engine.storage_full()


def _has_all(cp: Any, acked: dict[str, bytes]) -> bool:
    try:
        return all(
            cp.kv.get(k, stale_ok=True) is not None and cp.kv.get(k, stale_ok=True)[0] == v
            for k, v in acked.items()
        )
    except Exception:  # noqa: BLE001 - not caught up yet
        return False


# ------------------------------------------------------------------------ real clusters


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Counter(SyncObj):
    def __init__(self, addr: str, others: list[str], conf: SyncObjConf) -> None:
        super().__init__(addr, others, conf)
        self.value = 0
        self.seen: list[int] = []

    @replicated
    def add(self, by: int) -> int:
        self.value += by
        self.seen.append(by)
        return self.value


class _Node:
    """One pysyncobj node on an LMDB journal; `start`/`stop` keep the data dir."""

    def __init__(self, root: Path, addr: str, others: list[str]) -> None:
        self.path = str(root / addr.replace(":", "_"))
        self.addr, self.others = addr, others
        self.obj: _Counter | None = None
        self.journal: LmdbJournal | None = None

    def start(self) -> _Counter:
        conf = SyncObjConf(
            autoTick=False,
            raftMinTimeout=0.15,
            raftMaxTimeout=0.3,
            appendEntriesPeriod=0.03,
            connectionRetryTime=0.1,
            logCompactionMinEntries=30,
            logCompactionMinTime=0.3,
            logCompactionBatchSize=4096,
            fullDumpFile=snapshot_marker_path(self.path),
        )

        def make_journal(_file: str | None) -> LmdbJournal:
            self.journal = LmdbJournal(self.path, node_id=self.addr, durability="relaxed")
            return self.journal

        with seams.journal_factory(
            make_journal,
            serializer_factory=lambda j, _f, batch, *_: serialization.SnapshotSerializer(
                j, transmission_batch_bytes=batch
            ),
        ):
            self.obj = _Counter(self.addr, self.others, conf)
        return self.obj

    def tick(self) -> None:
        assert self.obj is not None and self.journal is not None
        self.obj.doTick(0.002)
        self.journal.flush()  # the runtime's end-of-tick group commit

    def stop(self) -> None:
        if self.obj is not None:
            self.obj._SyncObj__serializer.wait(10)
            self.obj._doDestroy()  # closes the journal (flushes)
            self.obj = None


def _run(nodes: list[_Node], until: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for node in nodes:
            if node.obj is not None:
                node.tick()
        if until():
            return True
    return False


def _leader(nodes: list[_Node]) -> _Node:
    assert _run(nodes, lambda: any(n.obj is not None and n.obj._isLeader() for n in nodes))
    return next(n for n in nodes if n.obj is not None and n.obj._isLeader())


def _propose(nodes: list[_Node], count: int) -> None:
    for i in range(count):
        leader = _leader(nodes)
        assert leader.obj is not None
        leader.obj.add(1)
        if i % 5 == 0:
            _run(nodes, lambda: False, seconds=0.02)


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[list[_Node]]:
    serialization.install()
    addrs = [f"127.0.0.1:{_free_port()}" for _ in range(3)]
    nodes = [_Node(tmp_path, a, [b for b in addrs if b != a]) for a in addrs]
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        serialization.uninstall()


def _values(nodes: list[_Node]) -> list[int]:
    return [n.obj.value if n.obj is not None else -1 for n in nodes]


@pytest.mark.slow
def test_cluster_snapshots_into_lmdb_and_restarts_from_it(cluster: list[_Node]) -> None:
    for node in cluster:
        node.start()
    _propose(cluster, 120)
    assert _run(cluster, lambda: _values(cluster) == [120] * 3)
    assert _run(
        cluster, lambda: all(n.journal is not None and n.journal.load_snapshot() for n in cluster)
    )
    assert all(n.journal is not None and len(n.journal) < 120 for n in cluster)
    for node in cluster:
        node.stop()
    for node in cluster:  # defect 7: the dump-file marker is gone, LMDB still has it all
        os.remove(snapshot_marker_path(node.path))
    for node in cluster:
        node.start()
    assert _run(cluster, lambda: _values(cluster) == [120] * 3)
    _propose(cluster, 5)
    assert _run(cluster, lambda: _values(cluster) == [125] * 3)


@pytest.mark.slow
def test_lagging_node_catches_up_from_a_streamed_lmdb_snapshot(cluster: list[_Node]) -> None:
    for node in cluster:
        node.start()
    _propose(cluster, 10)
    assert _run(cluster, lambda: _values(cluster) == [10] * 3)
    lagging = next(n for n in cluster if n.obj is not None and not n.obj._isLeader())
    lagging.stop()
    live = [n for n in cluster if n is not lagging]
    _propose(live, 150)
    assert _run(
        live,
        lambda: all(
            n.journal is not None and n.journal.load_snapshot() is not None and n.journal[0][1] > 20
            for n in live
        ),
    )
    lagging.start()
    assert _run(cluster, lambda: _values(cluster) == [160] * 3)
    assert lagging.journal is not None
    snap = lagging.journal.load_snapshot()
    assert snap is not None and snap.last_entry[1] > 20  # installed from the leader
    assert lagging.journal[0][1] > 20  # its log restarts at the snapshot, not at entry 1
