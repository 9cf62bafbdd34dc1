"""`ConflictAwareLog`: a follower truncates its log only where a new entry conflicts (Raft §5.3),
and never at or below its commit index.

The calls are the ones pysyncobj 0.3.17 makes when an ``append_entries`` reaches a follower that
holds more entries than ``prevLogIdx``: ``deleteEntriesFrom(position)`` then ``add`` per entry.
"""

from __future__ import annotations

from pysyncobj.journal import MemoryJournal

from coreplane.raft.engine_overrides import ConflictAwareLog

REGULAR, MEMBERSHIP = b"\x00", b"\x02"


def log_with(entries: list[Entry], term: int) -> ConflictAwareLog:
    journal = MemoryJournal()
    for entry in entries:
        journal.add(*entry)
    journal.setCurrentTerm(term, None)
    return ConflictAwareLog(journal)


def contents(log: ConflictAwareLog) -> list[tuple[int, int]]:
    return [(e[1], e[2]) for e in log[:]]


Entry = tuple[bytes, int, int]


def entries(first: int, last: int, term: int, kind: bytes = REGULAR) -> list[Entry]:
    return [(kind + bytes([i]), i, term) for i in range(first, last + 1)]


def test_resent_prefix_keeps_the_acknowledged_tail() -> None:
    log = log_with(entries(1, 10, 3), term=3)
    log.deleteEntriesFrom(5)  # prevLogIdx = 5; the leader resends 6..8 only
    for entry in entries(6, 8, 3):
        log.add(*entry)
    assert contents(log) == [(i, 3) for i in range(1, 11)]  # 9 and 10 survive
    assert log.deferred_truncations == 1


def test_heartbeat_below_the_end_truncates_nothing() -> None:
    log = log_with(entries(1, 10, 3), term=3)
    log.deleteEntriesFrom(5)
    assert len(log) == 10


def test_older_term_tail_waits_for_a_real_conflict() -> None:
    log = log_with(entries(1, 10, 3), term=4)  # 6..10 are an older leader's
    log.deleteEntriesFrom(5)
    assert len(log) == 10  # nothing goes until an entry's term differs
    log.add(b"\x00z", 6, 4)
    assert contents(log) == [*[(i, 3) for i in range(1, 6)], (6, 4)]
    assert log.conflict_truncations == 1


def test_a_conflict_at_or_below_the_commit_index_is_refused() -> None:
    log = log_with(entries(1, 10, 3), term=4)
    log.commit_floor = 7
    log.deleteEntriesFrom(5)
    log.add(b"\x00z", 6, 4)  # index 6 is committed here: Raft says this cannot happen
    assert len(log) == 10
    assert log.refused is not None and "index 6" in log.refused


def test_same_term_conflict_is_still_applied() -> None:
    log = log_with(entries(1, 10, 3), term=3)
    log.deleteEntriesFrom(5)
    log.add(b"\x00x", 6, 3)  # identical (index, term): skipped
    log.add(b"\x00y", 7, 4)  # a different term at 7: truncate from 7, then append
    assert contents(log) == [*[(i, 3) for i in range(1, 7)], (7, 4)]


def test_membership_entries_are_kept_too() -> None:
    # The engine re-applies kept membership changes pysyncobj reverted (engine_overrides).
    log = log_with([*entries(1, 6, 3), *entries(7, 7, 3, MEMBERSHIP), *entries(8, 9, 3)], term=3)
    log.deleteEntriesFrom(5)
    assert len(log) == 9 and log.deferred_in_message


def test_a_lingering_deferral_never_deletes_a_leaders_own_appends() -> None:
    log = log_with(entries(1, 10, 3), term=3)
    log.deleteEntriesFrom(5)  # heartbeat: nothing deleted
    log.add(b"\x00n", 11, 4)  # later, as leader, it appends at the end
    assert contents(log)[-2:] == [(10, 3), (11, 4)]
    log.deleteEntriesTo(3)  # compaction resets any deferral
    log.clear()
    assert len(log) == 0


def test_other_calls_reach_the_journal() -> None:
    log = log_with(entries(1, 2, 1), term=5)
    log.setCurrentTerm(6, "b")
    assert (log.getCurrentTerm(), log.getVotedForNodeId()) == (6, "b")
    log.setRaftCommitIndex(2)
    assert log.getRaftCommitIndex() == 1  # MemoryJournal ignores it, as upstream
    log.onOneSecondTimer()
    log._destroy()
