"""Corrections to pysyncobj 0.3.17 behaviour that coreplane's engine applies, in one place.

`ConflictAwareLog` wraps the journal handed to SyncObj. Why: on ``append_entries`` a pysyncobj
follower deletes its whole log after ``prevLogIdx`` whenever it holds more entries than that,
then appends what the message carries, with no term check (``SyncObj.__onMessageReceived``;
Raft §5.3 says to truncate only from the first *conflicting* entry). A leader moves a
follower's ``nextIndex`` back on every ``reset`` reply, including a stale one that arrives after
the follower has already caught up, so it then resends entries the follower has acknowledged;
if the follower held more than the message carries, it drops entries the leader already counted
towards a commit. Seen in kill -9 runs as pysyncobj's CRITICAL "truncating already-applied log
entries" line. A leader crash in that window can lose an acknowledged write.

The wrapper defers such a truncation and applies it only at the first new entry whose term
differs from the stored one, as Raft does, under a conservative condition: every entry that
would be deleted carries the follower's current term (so the current leader wrote it and still
has it; pysyncobj sets the term before it appends, and commits up to min(leader commit, last
index), which is then safe) and none is a membership change (pysyncobj has already reverted
their effect). Otherwise it deletes at once, exactly as pysyncobj asked. Nothing else changes:
every other call goes straight to the journal.

The upstream function this depends on is pinned by source hash in `coreplane.raft.seams`
(``SyncObj.__onMessageReceived``), so a pysyncobj upgrade forces a review of this module.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["MEMBERSHIP_COMMAND_TYPE", "ConflictAwareLog"]

logger = logging.getLogger(__name__)

MEMBERSHIP_COMMAND_TYPE = b"\x02"  # pysyncobj _COMMAND_TYPE.MEMBERSHIP, first byte of a command


class ConflictAwareLog:
    """A pysyncobj journal that truncates only on a term conflict (see the module docstring)."""

    def __init__(self, journal: Any) -> None:
        self._journal = journal
        self._pending: int | None = None  # list position of a deferred truncation
        self.deferred_truncations = 0  # how often pysyncobj's truncation was avoided (tests)

    def __getattr__(self, name: str) -> Any:  # flush, save_snapshot, stats, ...
        return getattr(self._journal, name)

    def __len__(self) -> int:
        return len(self._journal)

    def __getitem__(self, item: Any) -> Any:
        return self._journal[item]

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Defer the truncation when the tail is the current leader's own entries."""
        self._pending = None
        journal = self._journal
        if 0 <= entryFrom < len(journal):
            term = journal.getCurrentTerm()
            tail = journal[entryFrom:]
            if all(e[2] == term and bytes(e[0][:1]) != MEMBERSHIP_COMMAND_TYPE for e in tail):
                self._pending = entryFrom
                self.deferred_truncations += 1
                logger.info("kept %d log entries of term %d past index %d that pysyncobj would "
                            "have truncated without a conflict", len(tail), term, tail[0][1])
                return
        journal.deleteEntriesFrom(entryFrom)

    def add(self, command: bytes, idx: int, term: int) -> None:
        """Skip an entry already stored with the same term; truncate at the first conflict."""
        pending, self._pending = self._pending, None
        journal = self._journal
        if pending is not None and len(journal) and idx - journal[0][1] == pending < len(journal):
            stored = journal[pending]
            if stored[1] == idx and stored[2] == term:
                self._pending = pending + 1  # same index and term: the same entry (Raft)
                return
            journal.deleteEntriesFrom(pending)
        journal.add(command, idx, term)

    def clear(self) -> None:
        self._pending = None
        self._journal.clear()

    def deleteEntriesTo(self, entryTo: int) -> None:
        self._pending = None  # positions shift
        self._journal.deleteEntriesTo(entryTo)

    # Explicit delegation for the rest of pysyncobj's journal interface (clearer than
    # relying on __getattr__ for the calls SyncObj makes on every tick).

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._journal.setRaftCommitIndex(raftCommitIndex)

    def getRaftCommitIndex(self) -> int:
        return int(self._journal.getRaftCommitIndex())

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self._journal.setCurrentTerm(term, votedForNodeId)

    def getCurrentTerm(self) -> int:
        return int(self._journal.getCurrentTerm())

    def getVotedForNodeId(self) -> Any:
        return self._journal.getVotedForNodeId()

    def onOneSecondTimer(self) -> None:
        self._journal.onOneSecondTimer()

    def _destroy(self) -> None:
        self._journal._destroy()
