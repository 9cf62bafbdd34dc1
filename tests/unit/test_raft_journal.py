"""LmdbJournal: pysyncobj's journal semantics, durability, checksums, identity, map full.

The bit-flip test flips 300 random single bits inside stored entries (key and value bytes of
every copy LMDB holds) and requires each flip to be detected (`CorruptData`) or harmless (every
entry reads back exactly as written); an entry that reads back different fails the test.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import threading
import zlib
from pathlib import Path

import lmdb
import pytest

from coreplane.errors import CorruptData, InvalidArgument, InvariantViolation, StorageFull
from coreplane.raft.journal import LmdbJournal, snapshot_marker_path

Entry = tuple[bytes, int, int]


def _open(path: Path, **kw: object) -> LmdbJournal:
    kw.setdefault("node_id", "n1")
    return LmdbJournal(str(path), **kw)  # type: ignore[arg-type]


def _entries(journal: LmdbJournal) -> list[Entry]:
    return [journal[i] for i in range(len(journal))]


def _cmd(i: int, size: int = 12) -> bytes:
    return b"\x00" + f"entry-{i:06d}-".encode().ljust(size, b"x")


# ------------------------------------------------------------------------ interface semantics


def test_model_random_operations_match_a_list(tmp_path: Path) -> None:
    """Seeded random add/truncate/compact/clear/flush/reopen against a plain list."""
    rng = random.Random(7)
    journal = _open(tmp_path / "j", cache_entries_max=8)
    model: list[Entry] = []
    try:
        for step in range(600):
            op = rng.random()
            if op < 0.55 or not model:
                idx = model[-1][1] + 1 if model else rng.randint(1, 50)
                entry = (_cmd(step), idx, rng.randint(0, 3))
                journal.add(*entry)
                model.append(entry)
            elif op < 0.65:
                pos = rng.randrange(len(model))
                journal.deleteEntriesFrom(pos)
                del model[pos:]
            elif op < 0.72:
                pos = rng.randrange(len(model))
                journal.deleteEntriesTo(pos)
                model = model[pos:]
            elif op < 0.74:
                journal.clear()
                model = []
            elif op < 0.90:
                journal.flush()
            elif op < 0.93:
                journal.close()
                journal = _open(tmp_path / "j", cache_entries_max=8)
                # close flushed everything: the reopened log is the model
            assert len(journal) == len(model)
            if model:
                assert journal[0] == model[0] and journal[-1] == model[-1]
                a, b = sorted(rng.randrange(-len(model), len(model) + 1) for _ in range(2))
                assert list(journal[a:b]) == model[a:b]
                assert list(journal[a:]) == model[a:]
        journal.flush()
        assert _entries(journal) == model
    finally:
        journal.close()


def test_indexing_errors_match_a_list(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    try:
        with pytest.raises(IndexError):
            journal[0]
        journal.add(b"\x01", 1, 0)
        assert journal[-1] == journal[0] == (b"\x01", 1, 0)
        with pytest.raises(IndexError):
            journal[1]
        with pytest.raises(IndexError):
            journal[-2]
        assert list(journal[5:]) == []
        with pytest.raises(InvariantViolation):
            journal.add(b"\x01", 3, 0)  # a hole in the log is a bug, never stored
    finally:
        journal.close()


def test_long_slices_beyond_the_cache_are_lazy_and_correct(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j", cache_entries_max=4)
    try:
        model = [(_cmd(i), i, 1) for i in range(1, 501)]
        for entry in model:
            journal.add(*entry)
        journal.flush()
        view = journal[10:]
        assert not isinstance(view, list)  # nothing read yet
        assert len(view) == 490 and view[0] == model[10] and view[-1] == model[-1]
        assert view[3:6] == model[13:16]
        assert list(view) == model[10:]
        assert journal.stats()["cached_entries"] == 4
    finally:
        journal.close()


def test_term_vote_and_commit_survive_reopen(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    journal.add(b"\x01", 1, 0)
    journal.setCurrentTerm(5, "n3")
    journal.setRaftCommitIndex(1)
    journal.close()
    journal = _open(tmp_path / "j")
    try:
        assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (5, "n3")
        assert journal.getRaftCommitIndex() == 1
        assert _entries(journal) == [(b"\x01", 1, 0)]
    finally:
        journal.close()


# ------------------------------------------------------------------------ group commit


def _txn_id(journal: LmdbJournal) -> int:
    return int(journal._env.info()["last_txnid"])


def test_flush_is_one_transaction_per_batch_and_nothing_before_it(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    try:
        before = _txn_id(journal)
        for i in range(1, 101):
            journal.add(_cmd(i), i, 1)
        journal.setRaftCommitIndex(50)
        assert _txn_id(journal) == before  # adds are memory only
        assert journal.dirty
        journal.flush()
        assert _txn_id(journal) == before + 1
        journal.flush()  # nothing new: no transaction
        assert _txn_id(journal) == before + 1 and not journal.dirty
    finally:
        journal.close()


def test_a_commit_index_alone_costs_no_sync_and_rides_on_the_next_write(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    try:
        for i in range(1, 4):
            journal.add(_cmd(i), i, 1)
        journal.flush()
        before = _txn_id(journal)
        journal.setRaftCommitIndex(2)
        assert not journal.dirty  # a group commit now writes nothing
        journal.flush()
        assert _txn_id(journal) == before
        journal.add(_cmd(4), 4, 1)
        journal.flush()  # the entry's transaction carries the commit index along
        assert _txn_id(journal) == before + 1
        journal.setRaftCommitIndex(3)
        journal.onOneSecondTimer()  # at most one sync a second stores a moved commit index
        assert _txn_id(journal) == before + 2
        journal.onOneSecondTimer()  # nothing moved: nothing written
        assert _txn_id(journal) == before + 2
        journal.setRaftCommitIndex(4)
    finally:
        journal.close()  # stores the newest commit index on the way out
    journal = _open(tmp_path / "j")
    try:
        assert journal.getRaftCommitIndex() == 4 and len(journal) == 4
    finally:
        journal.close()


def test_a_lost_commit_index_update_only_lags(tmp_path: Path) -> None:
    """A crash before the commit index was written leaves an older one (Raft volatile
    state: the node applies less at start and learns the rest from its leader)."""
    journal = _open(tmp_path / "j")
    journal.add(_cmd(1), 1, 1)
    journal.add(_cmd(2), 2, 1)
    journal.setRaftCommitIndex(1)
    journal.flush()
    journal.setRaftCommitIndex(2)
    journal.abandon()  # killed: the unwritten commit index is lost, nothing else
    journal = _open(tmp_path / "j")
    try:
        assert journal.getRaftCommitIndex() == 1 and len(journal) == 2
    finally:
        journal.close()


def test_set_current_term_is_durable_before_it_returns(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    try:
        journal.add(b"\x01", 1, 0)
        before = _txn_id(journal)
        journal.setCurrentTerm(2, "n1")
        assert _txn_id(journal) == before + 1 and not journal.dirty
    finally:
        journal.close()


def test_unflushed_entries_are_not_in_lmdb(tmp_path: Path) -> None:
    """What a crash before flush loses: exactly the unflushed batch, nothing flushed."""
    journal = _open(tmp_path / "j")
    for i in range(1, 11):
        journal.add(_cmd(i), i, 1)
    journal.flush()
    for i in range(11, 21):
        journal.add(_cmd(i), i, 1)
    stored = _raw_log(journal)
    journal.close()
    assert sorted(stored) == list(range(1, 11))


def _raw_log(journal: LmdbJournal) -> dict[int, bytes]:
    with journal._env.begin(db=journal._dbs[b"log"]) as txn:
        return {struct.unpack(">Q", k)[0]: bytes(v) for k, v in txn.cursor()}


def test_durability_modes(tmp_path: Path) -> None:
    strict = _open(tmp_path / "a")
    relaxed = _open(tmp_path / "b", durability="relaxed")
    try:
        assert strict._env.flags()["sync"] and strict._env.flags()["metasync"]
        assert relaxed._env.flags()["sync"] and not relaxed._env.flags()["metasync"]
    finally:
        strict.close()
        relaxed.close()
    with pytest.raises(InvalidArgument):
        _open(tmp_path / "c", durability="sometimes")


def test_compacted_keys_are_deleted_in_bounded_batches(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j", durability="relaxed")
    try:
        for i in range(1, 10001):
            journal.add(b"\x00", i, 1)
        journal.flush()
        journal.deleteEntriesTo(9990)
        journal.flush()
        assert 10 < len(_raw_log(journal)) < 10000  # a first bounded batch only
        for _ in range(3):
            journal.flush()
        assert sorted(_raw_log(journal)) == list(range(9991, 10001))
    finally:
        journal.close()


# ------------------------------------------------------------------------ integrity


def _build(path: Path, count: int = 40, batch: int = 7) -> list[Entry]:
    journal = _open(path)
    model = [(_cmd(i, 24), i, 1 + i // 10) for i in range(1, count + 1)]
    for lo in range(0, count, batch):  # several batches: LMDB keeps stale copies of pages
        for entry in model[lo : lo + batch]:
            journal.add(*entry)
        journal.flush()
    journal.setCurrentTerm(9, "n2")
    journal.close()
    return model


def _entry_ranges(data: bytes, model: list[Entry]) -> list[tuple[int, int]]:
    """Byte ranges (key + stored value) of every copy of every entry in data.mdb."""
    ranges = []
    for command, idx, term in model:
        key = struct.pack(">Q", idx)
        value = (
            struct.pack(">IQ", zlib.crc32(command, zlib.crc32(key + struct.pack(">Q", term))), term)
            + command
        )
        start = data.find(key + value)
        while start >= 0:
            ranges.append((start, start + len(key) + len(value)))
            start = data.find(key + value, start + 1)
    return ranges


def test_corrupt_entry_raises_with_its_index(tmp_path: Path) -> None:
    model = _build(tmp_path / "j")
    data = bytearray((tmp_path / "j" / "data.mdb").read_bytes())
    for _start, end in _entry_ranges(bytes(data), model[5:6]):
        data[end - 1] ^= 0x01  # last command byte of entry 6, every copy
    (tmp_path / "j" / "data.mdb").write_bytes(bytes(data))
    journal = _open(tmp_path / "j", verify_on_open=False)
    try:
        assert journal[4] == model[4]
        with pytest.raises(CorruptData, match="entry 6 failed its checksum"):
            journal[5]
        with pytest.raises(CorruptData, match="entry 6"):
            journal.verify()
    finally:
        journal.close()
    with pytest.raises(CorruptData, match="entry 6"):
        _open(tmp_path / "j")  # verify_on_open: the node does not start


@pytest.mark.parametrize("batch", [40, 7], ids=["live-copies-only", "with-stale-copies"])
def test_300_single_bit_flips_are_detected_or_harmless(tmp_path: Path, batch: int) -> None:
    """One batch: every stored copy is the live one. Seven: LMDB also keeps stale page copies,
    whose flips are harmless (never read)."""
    pristine = tmp_path / "pristine"
    model = _build(pristine, batch=batch)
    data = (pristine / "data.mdb").read_bytes()
    ranges = _entry_ranges(data, model)
    assert len(ranges) >= len(model)
    if batch == len(model):
        assert len(ranges) == len(model)
    positions = [p for start, end in ranges for p in range(start, end)]
    rng = random.Random(2024)
    detected = harmless = 0
    for trial in range(300):
        pos, bit = rng.choice(positions), rng.randrange(8)
        flipped = bytearray(data)
        flipped[pos] ^= 1 << bit
        work = tmp_path / f"t{trial}"
        work.mkdir()
        (work / "data.mdb").write_bytes(bytes(flipped))
        try:
            journal = _open(work)
        except CorruptData:
            detected += 1
        else:
            try:
                assert _entries(journal) == model, f"flip at {pos} bit {bit} was applied"
                harmless += 1
            except CorruptData:
                detected += 1
            finally:
                journal.close()
        shutil.rmtree(work)
    assert detected + harmless == 300
    assert detected > 0
    if batch == len(model):
        assert detected == 300  # a flip in a live entry (key or value) is always caught
    print(f"bit flips (batch={batch}): {detected} detected, {harmless} harmless")


def test_meta_record_corruption_is_refused(tmp_path: Path) -> None:
    _build(tmp_path / "j")
    path = tmp_path / "j" / "data.mdb"
    data = bytearray(path.read_bytes())
    at = data.find(b"node_id")
    assert at > 0
    data[at] ^= 0x20
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptData, match="identity record"):
        _open(tmp_path / "j")


# ------------------------------------------------------------------------ identity


def test_identity_mismatch_is_refused(tmp_path: Path) -> None:
    _open(tmp_path / "j", cluster_id="c1").close()
    with pytest.raises(InvalidArgument, match="belongs to node 'n1'"):
        _open(tmp_path / "j", node_id="n2", cluster_id="c1")
    with pytest.raises(InvalidArgument, match="belongs to cluster 'c1'"):
        _open(tmp_path / "j", cluster_id="c2")
    _open(tmp_path / "j", cluster_id="c1").close()


def test_foreign_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "journal.bin").write_bytes(b"PYSYNCOBJ")
    with pytest.raises(CorruptData, match="not a coreplane journal directory"):
        _open(tmp_path / "j")
    assert os.listdir(tmp_path / "j") == ["journal.bin"]


def test_non_lmdb_data_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "data.mdb").write_bytes(os.urandom(16384))
    with pytest.raises(CorruptData, match=r"not an LMDB file|cannot open"):
        _open(tmp_path / "j")


def test_lmdb_env_without_identity_is_refused(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "j"), max_dbs=3)
    db = env.open_db(b"log")
    with env.begin(write=True) as txn:
        txn.put(b"\x00" * 8, b"something", db=db)
    env.close()
    with pytest.raises(CorruptData, match="without an identity record"):
        _open(tmp_path / "j")


def test_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(InvalidArgument):
        _open(tmp_path / "f")


def test_same_dir_twice_in_one_process_is_refused(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    try:
        with pytest.raises(InvalidArgument, match="already open"):
            _open(tmp_path / "j")
    finally:
        journal.close()


# ------------------------------------------------------------------------ map full


def test_map_grows_until_its_cap(tmp_path: Path) -> None:
    journal = _open(
        tmp_path / "j",
        map_size_bytes=64 * 1024,
        map_size_max_bytes=8 * 1024 * 1024,
        durability="relaxed",
    )
    try:
        for i in range(1, 401):
            journal.add(b"\x00" + b"v" * 1000, i, 1)
        journal.flush()
        assert journal.stats()["map_size_bytes"] > 64 * 1024
    finally:
        journal.close()
    journal = _open(tmp_path / "j")
    try:
        assert len(journal) == 400
    finally:
        journal.close()


def test_map_full_at_cap_raises_storage_full_keeps_synced_and_recovers(tmp_path: Path) -> None:
    cap = 256 * 1024
    journal = _open(
        tmp_path / "j", map_size_bytes=64 * 1024, map_size_max_bytes=cap, durability="relaxed"
    )
    synced = 0
    idx = 0
    with pytest.raises(StorageFull, match="map full"):
        while True:
            for _ in range(10):
                idx += 1
                journal.add(b"\x00" + b"v" * 500, idx, 1)
            journal.flush()
            synced = idx
    assert synced > 0 and len(journal) == idx  # the failed batch is kept in memory
    with pytest.raises(StorageFull):
        journal.flush()  # still full: fails again, loudly, without corrupting
    stored = _raw_log(journal)
    assert sorted(stored) == list(range(1, synced + 1))  # nothing of the failed batch
    journal.set_map_size_max(4 * cap)  # space returns
    journal.flush()
    journal.close()
    journal = _open(tmp_path / "j", map_size_bytes=64 * 1024, map_size_max_bytes=4 * cap)
    try:
        assert [e[1] for e in _entries(journal)] == list(range(1, idx + 1))
    finally:
        journal.close()


# ------------------------------------------------------------------------ snapshots


def test_snapshot_round_trip_and_marker(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    try:
        assert journal.load_snapshot() is None
        assert not os.path.exists(snapshot_marker_path(str(tmp_path / "j")))
        for i in range(1, 21):
            journal.add(_cmd(i), i, 1)
        journal.flush()
        payload = os.urandom(3 * 1024 * 1024 + 5)  # several chunks
        journal.save_snapshot(payload, last_entry=journal[10], prev_entry=journal[9])
        snap = journal.load_snapshot()
        assert snap is not None and snap.payload == payload
        assert snap.last_entry == (_cmd(11), 11, 1) and snap.prev_entry == (_cmd(10), 10, 1)
        assert os.path.exists(snapshot_marker_path(str(tmp_path / "j")))
        assert len(journal) == 20  # pysyncobj drops the prefix itself (deleteEntriesTo)
    finally:
        journal.close()


def test_published_snapshot_compacts_the_log_at_open(tmp_path: Path) -> None:
    """A crash between publishing and pysyncobj's deleteEntriesTo loses nothing."""
    journal = _open(tmp_path / "j")
    model = [(_cmd(i), i, 1) for i in range(1, 31)]
    for entry in model:
        journal.add(*entry)
    journal.flush()
    journal.save_snapshot(b"state", last_entry=model[20], prev_entry=model[19])
    journal.close()
    os.remove(snapshot_marker_path(str(tmp_path / "j")))  # derived: must come back
    journal = _open(tmp_path / "j")
    try:
        assert _entries(journal) == model[19:]
        assert os.path.exists(snapshot_marker_path(str(tmp_path / "j")))
    finally:
        journal.close()


def test_log_that_contradicts_the_snapshot_is_reset_to_it(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    for i in range(1, 11):
        journal.add(_cmd(i), i, 1)
    journal.flush()
    prev, last = (b"\x01", 49, 4), (b"\x01", 50, 4)  # installed from a leader, far ahead
    journal.save_snapshot(b"leader state", last_entry=last, prev_entry=prev)
    journal.close()
    journal = _open(tmp_path / "j")
    try:
        assert _entries(journal) == [prev, last]
        journal.add(b"\x01", 51, 4)
    finally:
        journal.close()
    journal = _open(tmp_path / "j")
    try:
        assert _entries(journal) == [prev, last, (b"\x01", 51, 4)]
    finally:
        journal.close()


def test_corrupt_snapshot_is_refused(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    for i in range(1, 4):
        journal.add(_cmd(i), i, 1)
    journal.flush()
    payload = b"S" * 5000
    journal.save_snapshot(payload, last_entry=journal[1], prev_entry=journal[0])
    journal.close()
    path = tmp_path / "j" / "data.mdb"
    data = bytearray(path.read_bytes())
    at = data.find(payload)
    data[at + 100] ^= 0x04
    path.write_bytes(bytes(data))
    journal = _open(tmp_path / "j")
    try:
        with pytest.raises(CorruptData, match=r"snapshot .* failed its checksum"):
            journal.load_snapshot()
    finally:
        journal.close()


def test_an_older_snapshot_never_replaces_a_newer_one(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    try:
        for i in range(1, 31):
            journal.add(_cmd(i), i, 1)
        journal.flush()
        assert journal.save_snapshot(
            b"new" * 400_000, last_entry=journal[20], prev_entry=journal[19]
        )
        assert not journal.save_snapshot(b"old", last_entry=journal[5], prev_entry=journal[4])
        snap = journal.load_snapshot()
        assert snap is not None and snap.payload == b"new" * 400_000
    finally:
        journal.close()


def test_concurrent_snapshot_writers_leave_one_intact_snapshot(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j", durability="relaxed")
    try:
        for i in range(1, 41):
            journal.add(_cmd(i), i, 1)
        journal.flush()
        payloads = {k: bytes([k]) * 2_500_000 for k in range(4)}
        threads = [
            threading.Thread(
                target=journal.save_snapshot,
                args=(payloads[k],),
                kwargs={"last_entry": journal[10 + k], "prev_entry": journal[9 + k]},
            )
            for k in range(4)
        ]
        for t in threads:
            t.start()
        for i in range(41, 61):  # the tick thread keeps flushing meanwhile
            journal.add(_cmd(i), i, 1)
            journal.flush()
        for t in threads:
            t.join(30)
        snap = journal.load_snapshot()
        assert snap is not None and snap.payload == payloads[3]
        assert snap.last_entry == journal[13]
    finally:
        journal.close()
    journal = _open(tmp_path / "j")
    try:
        snap = journal.load_snapshot()
        assert snap is not None and snap.payload == payloads[3]
        assert journal[0][1] == 13  # compacted below the snapshot at open
    finally:
        journal.close()


def test_a_log_starting_after_the_snapshot_is_refused(tmp_path: Path) -> None:
    journal = _open(tmp_path / "j")
    for i in range(1, 31):
        journal.add(_cmd(i), i, 1)
    journal.flush()
    journal.save_snapshot(b"s", last_entry=journal[10], prev_entry=journal[9])
    journal.deleteEntriesTo(20)  # a gap no crash can explain
    journal.close()
    with pytest.raises(CorruptData, match="after the snapshot boundary"):
        _open(tmp_path / "j")
