"""Red team: data dir and journal abuse (issue 10).

Each test is an attack or an accident a host can cause through the public API or the file
system: a second open of a live data dir, a truncated ``data.mdb``, a deleted journal next to a
kept ``coreplane.meta``, a full disk. Each must be refused with a coreplane error that says what
to do, never a crash of the host process (SIGBUS), a silently empty journal (a second vote in a
term) or a node that stops for good. Extend this module as new layers land (the HTTP API routes
every request through the same checks).

The SIGBUS case runs in a child process so that, on code without the check, the signal kills
the child and not pytest. The two-process lock test lives in
``tests/integration/test_redteam_storage_procs.py`` (slow).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coreplane.errors import CoreplaneError, CorruptData, InvalidArgument, StorageFull
from coreplane.raft.journal import LmdbJournal
from coreplane.runtime.controlplane import ControlPlane
from coreplane.runtime.datadir import META_FILE
from coreplane.testing.ports import free_ports

SECRET = b"red-team-storage-secret-0123456789"
FAST = {"election_timeout_ms": (200, 400), "heartbeat_ms": 40, "tick_interval_ms": 100}
REPO = Path(__file__).resolve().parents[2]


def _node(data_dir: Path, **options: Any) -> ControlPlane:
    """Node "a" alone, at the address its data dir records (a fresh port for a new dir)."""
    meta_path = data_dir / META_FILE
    if meta_path.exists():
        address = json.loads(meta_path.read_text())["members"]["a"]
    else:
        address = f"127.0.0.1:{free_ports(1)[0]}"
    return ControlPlane("a", address, {}, data_dir, SECRET, **{**FAST, **options})


def _wait(predicate: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _tree_digest(path: Path, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """Content digest of every file under `path` except lock files (runtime state)."""
    out = {}
    for root, _dirs, files in os.walk(path):
        for name in sorted(files):
            if name in skip:
                continue
            full = Path(root) / name
            out[str(full.relative_to(path))] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out


@pytest.fixture
def stopped_node_dir(tmp_path: Path) -> Iterator[Path]:
    """A node's data dir with a journal of about 1 MiB (never started: no network)."""
    data_dir = tmp_path / "a"
    cp = _node(data_dir)
    try:
        journal = cp._journal
        for i in range(1, 121):
            journal.add(b"\x10" + b"v" * 8000, i, 1)
        journal.setCurrentTerm(3, "a")
    finally:
        cp.stop()
    yield data_dir


# ------------------------------------------------------------------------ bug 1: the lock


def test_second_open_of_a_data_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    cp = _node(tmp_path / "a")
    try:
        with pytest.raises(InvalidArgument) as info:
            _node(tmp_path / "a")
        assert info.value.field == "data_dir"
        assert f"pid {os.getpid()}" in str(info.value)
    finally:
        cp.stop()
    _node(tmp_path / "a").stop()  # released by stop()


def test_a_refused_construction_releases_the_lock(tmp_path: Path) -> None:
    _node(tmp_path / "a").stop()
    address = json.loads((tmp_path / "a" / META_FILE).read_text())["members"]["a"]
    with pytest.raises(InvalidArgument, match="peers"):  # refused after the lock was taken
        ControlPlane("a", address, {"b": "127.0.0.1:1"}, tmp_path / "a", SECRET, **FAST)
    _node(tmp_path / "a").stop()  # not "in use"


@pytest.mark.slow
def test_a_failed_start_releases_the_lock(tmp_path: Path) -> None:
    import socket

    cp = _node(tmp_path / "a")
    host, port = cp.address.rsplit(":", 1)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((host, int(port)))
        squatter.listen()
        with pytest.raises(CoreplaneError):
            cp.start()  # the port is taken
    _node(tmp_path / "a").stop()  # the data dir is free again


def test_the_lock_file_records_the_holder_pid(tmp_path: Path) -> None:
    cp = _node(tmp_path / "a")
    try:
        text = (tmp_path / "a" / "coreplane.lock").read_text()
        assert text.split()[0] == str(os.getpid())
    finally:
        cp.stop()


def test_a_journal_refuses_a_second_opener_before_touching_lmdb(tmp_path: Path) -> None:
    journal = LmdbJournal(str(tmp_path / "j"), node_id="n1")
    try:
        with pytest.raises(InvalidArgument, match=f"pid {os.getpid()}"):
            LmdbJournal(str(tmp_path / "j"), node_id="n1")
    finally:
        journal.close()


def _last_txnid(path: Path) -> int:
    import lmdb  # only to read the environment's transaction counter

    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=3)
    try:
        return int(env.info()["last_txnid"])
    finally:
        env.close()


def test_opening_and_closing_a_journal_writes_nothing(tmp_path: Path) -> None:
    """A bare open and close commits no transaction: the garbage sweep runs only for keys
    outside the live range that LMDB held at open or that this journal's own truncations left
    (an opener with a stale view of the log end once deleted entries written after it looked;
    the owner lock now also keeps such an opener out)."""
    path = tmp_path / "j"
    journal = LmdbJournal(str(path), node_id="n1")
    for i in range(1, 11):
        journal.add(b"\x00" + bytes([i]), i, 1)
    journal.flush()
    journal.close()
    before = _last_txnid(path)
    journal = LmdbJournal(str(path), node_id="n1")
    assert len(journal) == 10
    journal.close()
    assert _last_txnid(path) == before


def test_leftover_garbage_recorded_by_a_shrunk_log_is_still_swept(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = LmdbJournal(str(path), node_id="n1")
    for i in range(1, 11):
        journal.add(b"\x00" + bytes([i]), i, 1)
    journal.flush()
    journal.deleteEntriesFrom(5)
    journal.flush()
    journal.close()
    import lmdb

    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=3)
    try:
        with env.begin() as txn:
            assert txn.stat(env.open_db(b"log", txn=txn))["entries"] == 5
    finally:
        env.close()


def test_corrupt_journal_at_construction_leaves_no_lock_and_no_change(
    stopped_node_dir: Path,
) -> None:
    data = stopped_node_dir / "journal.lmdb" / "data.mdb"
    raw = bytearray(data.read_bytes())
    # Damage a stored entry's bytes (not LMDB's structure): the checksum catches it.
    marker = raw.find(b"v" * 64)
    assert marker > 0
    raw[marker + 10] ^= 0x01
    data.write_bytes(bytes(raw))
    skip = frozenset({"coreplane.lock", "lock.mdb"})
    before = _tree_digest(stopped_node_dir, skip)
    with pytest.raises(CorruptData):
        _node(stopped_node_dir)
    assert _tree_digest(stopped_node_dir, skip) == before
    with pytest.raises(CorruptData):  # refused again, not "already open" (the lock is free)
        _node(stopped_node_dir)


# ------------------------------------------------------------------------ bug 6: truncation

_OPEN_CHILD = textwrap.dedent("""
    import sys
    from coreplane.errors import CorruptData
    from coreplane.runtime.controlplane import ControlPlane
    try:
        ControlPlane("a", sys.argv[2], {}, sys.argv[1], sys.argv[3].encode()).stop()
    except CorruptData as exc:
        print("CorruptData:", exc)
        sys.exit(3)
    print("opened")
""")


def _open_in_child(data_dir: Path) -> subprocess.CompletedProcess[str]:
    address = json.loads((data_dir / META_FILE).read_text())["members"]["a"]
    return subprocess.run(
        [sys.executable, "-c", _OPEN_CHILD, str(data_dir), address, SECRET.decode()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_truncated_data_mdb_is_refused_not_a_sigbus(stopped_node_dir: Path) -> None:
    data = stopped_node_dir / "journal.lmdb" / "data.mdb"
    size = data.stat().st_size
    assert size > 256 * 1024
    os.truncate(data, size // 2)
    result = _open_in_child(stopped_node_dir)
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr[-2000:])
    assert "data.mdb" in result.stdout and "truncated" in result.stdout
    assert data.stat().st_size == size // 2  # refused, not "repaired"


def test_data_mdb_truncated_to_one_page_is_refused(stopped_node_dir: Path) -> None:
    data = stopped_node_dir / "journal.lmdb" / "data.mdb"
    os.truncate(data, 4096)
    with pytest.raises(CorruptData, match=r"data\.mdb"):
        _node(stopped_node_dir)


def test_data_mdb_truncated_to_zero_is_refused(stopped_node_dir: Path) -> None:
    os.truncate(stopped_node_dir / "journal.lmdb" / "data.mdb", 0)
    with pytest.raises(CorruptData):
        _node(stopped_node_dir)


# ------------------------------------------------------------------------ bug 7: lost journal


@pytest.mark.parametrize("victim", ["journal.lmdb/data.mdb", "journal.lmdb"])
def test_a_deleted_journal_is_refused_with_the_recovery(tmp_path: Path, victim: str) -> None:
    data_dir = tmp_path / "a"
    _node(data_dir).stop()  # the journal now exists (created at construction)
    target = data_dir / victim
    if target.is_dir():
        for child in target.iterdir():
            child.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(CorruptData) as info:
        _node(data_dir)
    text = str(info.value)
    assert "journal" in text and "remove" in text and "new voter" in text
    assert not (data_dir / "journal.lmdb" / "data.mdb").exists()  # nothing recreated


def test_a_legacy_meta_without_the_journal_flag_still_opens(tmp_path: Path) -> None:
    data_dir = tmp_path / "a"
    _node(data_dir).stop()
    meta_path = data_dir / META_FILE
    meta = json.loads(meta_path.read_text())
    meta.pop("journal", None)  # as written before the flag existed
    meta_path.write_text(json.dumps(meta, sort_keys=True))
    _node(data_dir).stop()
    assert json.loads(meta_path.read_text()).get("journal") is True  # recorded now


def test_a_fresh_dir_whose_first_open_crashed_before_the_journal_opens(tmp_path: Path) -> None:
    data_dir = tmp_path / "a"
    _node(data_dir).stop()
    meta_path = data_dir / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["journal"] = False  # a crash between writing the meta and creating the journal
    meta_path.write_text(json.dumps(meta, sort_keys=True))
    for child in (data_dir / "journal.lmdb").iterdir():
        child.unlink()
    (data_dir / "journal.lmdb").rmdir()
    _node(data_dir).stop()  # nothing was ever voted: an empty journal is right
    assert json.loads(meta_path.read_text())["journal"] is True


# ------------------------------------------------------------------------ disk full


def _fail_flushes(cp: ControlPlane) -> Callable[[bool], None]:
    """Make the node's journal hit ENOSPC on every write transaction until switched off."""
    journal = cp._journal
    real = journal._flush_txn
    state = {"full": False}

    def flush_txn() -> None:
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real()

    journal._flush_txn = flush_txn

    def switch(full: bool) -> None:
        state["full"] = full

    return switch


@pytest.mark.slow
def test_disk_full_refuses_writes_with_storage_full_and_resumes(tmp_path: Path) -> None:
    cp = _node(tmp_path / "a")
    disk_full = _fail_flushes(cp)
    cp.start()
    try:
        _wait(lambda: cp.is_leader() and cp.fencing_token is not None, "a leader")
        cp.kv.put("before", b"1")
        disk_full(True)
        with pytest.raises(StorageFull):
            cp.kv.put("during", b"2", timeout_s=3)
        time.sleep(1.5)  # longer than the engine's old give-up point (50 failed ticks)
        with pytest.raises(StorageFull):
            cp.kv.put("during", b"3", timeout_s=3)
        assert cp.status().error is None  # not stopped for good
        assert cp.status().storage_full  # and says why writes are refused
        got = cp.kv.get("before", stale_ok=True)  # reads this node can serve go on
        assert got is not None and got[0] == b"1"
        disk_full(False)
        rev = _wait(lambda: _try_put(cp, "after", b"4"), "a write after space returns")
        assert rev > 0
        assert not cp.status().storage_full
        assert cp.kv.get("after") is not None and cp.kv.get("after")[0] == b"4"  # type: ignore[index]
    finally:
        cp.stop()
    cp = _node(tmp_path / "a")  # restarts with every acknowledged write
    cp.start()
    try:
        _wait(lambda: cp.is_leader() and cp.fencing_token is not None, "a leader again")
        assert cp.kv.get("before")[0] == b"1"  # type: ignore[index]
        assert cp.kv.get("after")[0] == b"4"  # type: ignore[index]
    finally:
        cp.stop()


def _try_put(cp: ControlPlane, key: str, value: bytes) -> int | None:
    try:
        return cp.kv.put(key, value, timeout_s=2)
    except StorageFull:
        return None


# ------------------------------------------------------------------------ disk full, simulated
# Whole clusters on the simulated network with real LMDB journals; one node's journal hits
# ENOSPC on every write transaction for a while. The checkers hold Raft safety: no
# acknowledged write lost (even when the full node is then killed, losing its unsynced
# batch), linearizable histories, equal state hashes.


def _sim_disk_full(c: Any, node_id: str) -> Callable[[bool], None]:
    journal = c.slots[node_id].node.journal
    assert isinstance(journal, LmdbJournal)
    real = journal._flush_txn
    state = {"full": False}

    def flush_txn() -> None:
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real()

    journal._flush_txn = flush_txn  # type: ignore[method-assign]
    return lambda full: state.update(full=full)


def _load(
    c: Any, client: str, first_seq: int, count: int, via: str | None = None, keys: str = "k"
) -> list[Any]:
    ops = []
    for i in range(count):
        ops.append(
            c.put(client, first_seq + i, f"{keys}{i % 4}", b"%s-%d" % (client.encode(), i), via=via)
        )
        c.run_for(9)
    return ops


def _checked(c: Any) -> None:
    assert c.run_until(c.converged, 20_000), "no convergence once space returned"
    c.check_hashes()
    c.check_acknowledged()
    c.check_linearizable()
    assert c.violations == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sim_full_leader_steps_down_and_a_crash_then_loses_no_acked_write(seed: int) -> None:
    from coreplane.testing import SimCluster

    with SimCluster(seed, journal="lmdb") as c:
        assert c.run_until(c.converged, 5_000)
        old = c.leader()
        assert old is not None
        full = _sim_disk_full(c, old)
        _load(c, "a", 1, 10)
        full(True)  # mid-load: the leader's next batches cannot be synced
        ops = _load(c, "b", 1, 60)
        assert c.slots[old].node.engine.storage_full()
        assert c.leader() not in (None, old)  # stepped down; the others lead on
        others = [o for o in ops if o.via != old]
        assert any(o.done and not o.unknown for o in others), "no write through the others"
        c.crash(old)  # kill -9 while full: its unsynced batch is gone
        _load(c, "c", 1, 10)
        c.restart(old)
        _checked(c)


@pytest.mark.parametrize("seed", [4, 5])
def test_sim_full_follower_acks_nothing_unsynced_and_catches_up(seed: int) -> None:
    from coreplane.testing import SimCluster

    with SimCluster(seed, journal="lmdb") as c:
        assert c.run_until(c.converged, 5_000)
        leader = c.leader()
        follower = next(n for n in c.node_ids if n != leader)
        full = _sim_disk_full(c, follower)
        full(True)
        _load(c, "a", 1, 40)
        journal = c.slots[follower].node.journal
        assert journal.storage_full
        engine = c.slots[leader].node.engine
        peer = next(n for n in engine.otherNodes if str(n.id) == follower)
        # The leader never learnt a match index past what the follower stored durably.
        assert engine._SyncObj__raftMatchIndex.get(peer, 0) <= _durable_last(journal)
        assert c.leader() == leader  # the others commit on
        assert c.slots[follower].node.engine.fatal_error() is None  # waits, not stopped
        full(False)
        _load(c, "b", 1, 10)
        _checked(c)


def _durable_last(journal: LmdbJournal) -> int:
    """The last log index LMDB holds for `journal` (what survives a crash)."""
    with journal._env.begin(db=journal._dbs[b"log"]) as txn:
        cursor = txn.cursor()
        return int.from_bytes(cursor.key(), "big") if cursor.last() else 0


@pytest.mark.parametrize("seed", [6, 7])
def test_sim_majority_full_elects_no_one_then_resumes(seed: int) -> None:
    from coreplane.testing import SimCluster

    with SimCluster(seed, journal="lmdb") as c:
        assert c.run_until(c.converged, 5_000)
        switches = [_sim_disk_full(c, n) for n in c.node_ids[:2]]
        for switch in switches:
            switch(True)
        _load(c, "a", 1, 40)
        c.run_for(3_000)
        for switch in switches:
            switch(False)
        _load(c, "b", 1, 10)
        _checked(c)


@pytest.mark.parametrize("seed", [8, 9, 10, 11])
def test_sim_full_leader_never_counts_its_unsynced_copy(seed: int) -> None:
    """Leader L and follower f1 form the only quorum (f2 cut off). L's disk fills: its batch
    leaves before its own sync (as a leader's does) and f1 stores it, but L's sync fails. If L
    counted its own copy, the write would be acknowledged with one durable copy: killing L and
    f1 and letting f2 and the restarted L elect a leader would lose it."""
    from coreplane.testing import SimCluster

    with SimCluster(seed, journal="lmdb") as c:
        assert c.run_until(c.converged, 5_000)
        leader = c.leader()
        assert leader is not None
        f1, f2 = (n for n in c.node_ids if n != leader)
        c.partition([leader, f1], [f2])
        _load(c, "a", 1, 5, via=leader)
        full = _sim_disk_full(c, leader)
        full(True)
        ops = _load(c, "b", 1, 5, via=leader, keys="b")  # keys no later write touches
        c.run_for(300)
        c.crash(leader)
        c.crash(f1)
        c.heal()
        c.restart(leader)  # restarted with space, without its unsynced batch
        assert c.run_until(lambda: c.leader() is not None, 10_000)
        _load(c, "c", 1, 8)
        c.restart(f1)
        assert c.run_until(c.converged, 20_000)
        reads = [c.get("r", f"b{i}") for i in range(4)]
        assert c.run_until(lambda: all(r.done for r in reads), 5_000)
        assert all(o.done for o in ops)
        _checked(c)
