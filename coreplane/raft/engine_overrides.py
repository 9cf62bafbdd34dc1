"""Corrections to pysyncobj 0.3.17 behaviour that coreplane's engine applies, in one place.

Everything here reaches into pysyncobj's private (name-mangled ``_SyncObj__x``) names. Each
upstream function overridden or relied on is pinned by source hash in `coreplane.raft.seams`
(`UPSTREAM`), so a pysyncobj upgrade fails a test and forces a review of this module.

What is corrected, and why:

1. **Log safety** (`ConflictAwareLog` + `RaftOverrides._cp_after_append`). On ``append_entries``
   a pysyncobj follower deletes its whole log after ``prevLogIdx`` whenever it holds more entries
   than that, then appends what the message carries, with no term check. A leader moves a
   follower's ``nextIndex`` back on every ``reset`` reply, including a stale one that arrives
   after the follower caught up, so it resends entries the follower acknowledged; a reordered or
   duplicated message does the same. The follower then dropped entries the leader had counted
   towards a commit (pysyncobj's CRITICAL "truncating already-applied log entries"); a leader
   crash in that window loses an acknowledged write. Now, as Raft §5.3 says: a follower skips
   entries it holds with the same term, truncates only from the first entry whose term differs,
   never at or below its commit index (that would be a broken invariant: the node stops), keeps
   a tail past the message, and commits at most up to the message's last entry; a snapshot
   chunk that installs nothing moves no commit index (pysyncobj committed up to its own last
   index after any ``append_entries``, so a rejoining ex-leader applied its own stale entries).
   The leader also ignores a ``reset`` that would move ``nextIndex`` at or below what the
   follower acknowledged.

2. **Check-quorum lease and leader stickiness**. pysyncobj's leader steps down only after
   ``leaderFallbackTimeout`` without replies (30 s by default), counted from when replies were
   *received*, and every voter grants a vote whenever asked. Now: the leader stamps each
   ``append_entries`` with its monotonic send time (``cp_t``, integer microseconds); followers
   echo the stamp in their reply (``cp_echo``); the leader's lease runs until the quorum-th
   newest echoed stamp plus ``lease_s``. A voter that heard from a live leader within
   ``stick_s`` (the minimum election timeout, on its own clock) ignores vote requests, except
   for a leadership transfer (flagged ``cp_transfer`` by the candidate the leader asked). So
   no other leader can be elected before ``stamp + stick_s``, and
   ``lease_s = stick_s * (1 - DRIFT_MAX) - margin`` keeps the lease strictly inside that window
   on a leader clock that runs up to ``DRIFT_MAX`` slow. A node that hears a leader of an older
   term answers ``cp_term`` so that leader steps down (pysyncobj says nothing, and a candidate
   partitioned at a higher term would never rejoin).

3. **Fast failover**: when a follower's connection to its leader drops (the leader process
   died), it schedules its election just after its stickiness window instead of a full random
   election timeout later; a voter that ignores a vote request because it still heard its
   leader recently answers ``cp_vote_later`` with when it will listen, and the candidate
   retries then (rather than a whole random election timeout later).

4. **Adaptive batching and fair sending**. With ``appendEntriesUseBatch=False`` pysyncobj sends
   to every follower once per proposal (O(proposals x followers) messages under load) and
   writes to its wake-up pipe once per proposal; with it, entries wait for the next heartbeat
   (100 ms by default). Now the proposals drained in one loop iteration go out in one message
   per follower: one proposal when idle (sent at once), many under load, like etcd's and
   group-commit databases' batching; the tick thread is woken once per batch. The send loop
   gives each follower its own time budget (upstream shares one, so the first follower in set
   order starved the others).

5. **Pre-vote** (Raft §9.6; `_cp_prevote_gate`). Upstream raises its term at every election,
   so a node cut off from the others climbed terms alone and, on rejoining, its higher term
   made a healthy leader step down (a new election, a new fencing token, for nothing). Now an
   election that falls due first asks every peer ``cp_prevote`` ("would you vote for me at
   term+1?"), which changes no one's term or vote; only a majority of yeses starts the real
   election. Voters that still hear their leader say no, with when they will listen (as for
   ``cp_vote_later``). A leadership transfer skips it. After a leader crash, a voter whose log
   is more complete than a candidate's, or the larger id of two split candidates, stands at
   once instead of a random election timeout later (`_cp_should_stand`).

6. **No silent wedge**: a leader that steps down fails its uncommitted proposals at once with
   ``UNKNOWN_OUTCOME`` (upstream kept them until some entry reached their index, which may be
   never), and a tick that keeps raising (pysyncobj's autoTick thread logs and retries
   forever) marks the engine failed after `TICK_FAILURES_MAX` consecutive failures; the runtime
   stops the node and reports the error.

7. **Full disk is not fatal** (etcd's NOSPACE alarm). A journal write that fails with
   `StorageFull` keeps its batch in memory and is retried by every later flush; nothing that
   depends on it leaves the node: the wire holds every outgoing message until a flush succeeds
   (so a follower acks no entry and sends no vote that is not durable: `setCurrentTerm` here
   only records the failure, and the vote waits with everything else), a leader with a full
   journal syncs before it sends (`may_send_before_sync` is false) and, since pysyncobj counts
   the leader's own copy towards a commit at the next tick, steps down in the same tick its
   flush failed, so an entry only it holds unsynced is never counted. Such ticks do not count
   towards `TICK_FAILURES_MAX`; the engine resumes by itself at the first successful flush,
   and the runtime refuses proposals with `StorageFull` meanwhile.

8. **No phantom voter**: a membership change that adds a second id at an existing member's
   address is ignored where it applies, on every node alike (`_SyncObj__doChangeCluster`).

9. **Bounded apply per tick** (`_SyncObj__applyLogEntries`). Upstream applies every committed
   entry from ``raftLastApplied + 1`` to the commit index in one tick, and a node reads no
   socket while it applies. A restarted node restores its commit index from the journal and
   loads its snapshot in its first tick, so that tick replayed the whole log tail (up to about
   as many writes as the snapshot holds keys: seconds at 250k keys) without answering a vote
   or a heartbeat; a far-behind follower did the same with what one poll brought. Now a tick
   applies at most `APPLY_ENTRIES_MAX` entries and stops starting new ones after
   `APPLY_BUDGET_MS` of applying, then wakes the next tick at once (`_cp_notify`): the poll in
   between answers messages, and the next tick goes on from ``raftLastApplied + 1``. Entries
   are still applied exactly once, in order, each with its callbacks, and the applied index
   stays a consistent point (a snapshot is taken there). A leader that still has committed
   entries to apply takes no new proposals in that tick (they wait in the bounded queue), so
   under overload its log cannot run ahead of what it applies. A node with entries left to
   apply answers votes but does not stand itself until it caught up (`_cp_hold_candidacy`:
   after a restart, the membership changes in its log take effect only as they are applied).

Clocks: every decision here reads `monotonic_s()`, which calls the module global
``pysyncobj.syncobj.monotonicTime`` at call time, so a simulation that patches it reaches them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import pysyncobj.syncobj as _so

from coreplane.core.address import endpoint_key
from coreplane.errors import InvalidArgument, InvariantViolation, StorageFull

__all__ = [
    "APPLY_BUDGET_MS",
    "APPLY_ENTRIES_MAX",
    "DRIFT_MAX",
    "MEMBERSHIP_COMMAND_TYPE",
    "TICK_FAILURES_MAX",
    "ConflictAwareLog",
    "RaftOverrides",
    "monotonic_s",
    "stamping_transport",
]

logger = logging.getLogger(__name__)

MEMBERSHIP_COMMAND_TYPE = b"\x02"  # pysyncobj _COMMAND_TYPE.MEMBERSHIP, first byte of a command
DRIFT_MAX = 0.02  # how much slower than a follower's clock the leader's may run (2%, generous)
TICK_FAILURES_MAX = 50  # consecutive failed ticks (about a second) before the engine gives up
APPLY_BUDGET_MS = 10  # a tick starts no new entry after this long applying (then polls)
APPLY_ENTRIES_MAX = 4096  # entries one tick applies at most (a simulated clock never moves)
_APPLY_READ_ENTRIES = 16  # entries the bounded apply reads from the journal at a time
_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2


def _last_log_of(request: dict[str, Any]) -> tuple[int, int]:
    """(term, index) of a candidate's last entry, from its (pre-)vote request."""
    return int(request["last_log_term"]), int(request["last_log_index"])


def monotonic_s() -> float:
    """The engine's clock: pysyncobj's, looked up at call time (simulations patch it)."""
    return float(_so.monotonicTime())


# ---------------------------------------------------------------------------------- the log


class ConflictAwareLog:
    """A pysyncobj journal that truncates only on a term conflict (see the module docstring).

    Used with `RaftOverrides`, which sets `commit_floor` before each ``append_entries`` and
    fixes the commit index and membership after it (`deleteEntriesFrom` only defers).
    """

    def __init__(self, journal: Any) -> None:
        self._journal = journal
        self._pending: int | None = None  # list position of a deferred truncation
        self.deferred_truncations = 0  # how often pysyncobj's truncation was avoided (tests)
        self.conflict_truncations = 0  # truncations done at a real term conflict
        self.commit_floor = 0  # never delete an entry at or below this Raft index
        self.deferred_in_message = False
        self.refused: str | None = None  # set if asked to replace a committed entry

    def __getattr__(self, name: str) -> Any:  # flush, save_snapshot, stats, ...
        return getattr(self._journal, name)

    def __len__(self) -> int:
        return len(self._journal)

    def __getitem__(self, item: Any) -> Any:
        return self._journal[item]

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Defer: the entries go only where a new entry's term differs (`add`)."""
        self._pending = None
        if 0 <= entryFrom < len(self._journal):
            self._pending = entryFrom
            self.deferred_truncations += 1
            self.deferred_in_message = True
            return
        self._journal.deleteEntriesFrom(entryFrom)

    def add(self, command: bytes, idx: int, term: int) -> None:
        """Skip an entry already stored with the same term; truncate at the first conflict."""
        pending, self._pending = self._pending, None
        journal = self._journal
        if pending is not None and len(journal) and idx - journal[0][1] == pending < len(journal):
            stored = journal[pending]
            if stored[1] == idx and stored[2] == term:
                self._pending = pending + 1  # same index and term: the same entry (Raft)
                return
            if idx <= self.commit_floor:
                self.refused = (
                    f"leader sent term {term} at index {idx}, which is committed "
                    f"here with term {stored[2]}"
                )
                logger.critical("refusing to replace a committed entry: %s", self.refused)
                self._pending = pending + 1
                return
            journal.deleteEntriesFrom(pending)
            self.conflict_truncations += 1
        journal.add(command, idx, term)

    def clear(self) -> None:
        self._pending = None
        self._journal.clear()

    def deleteEntriesTo(self, entryTo: int) -> None:
        self._pending = None  # positions shift
        self._journal.deleteEntriesTo(entryTo)

    # Explicit delegation for the rest of pysyncobj's journal interface.

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._journal.setRaftCommitIndex(raftCommitIndex)

    def getRaftCommitIndex(self) -> int:
        return int(self._journal.getRaftCommitIndex())

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        """Store term and vote. On a full disk they stay in memory, unsynced: the journal stays
        dirty, so nothing (the vote included) leaves before a flush succeeds (the wire)."""
        try:
            self._journal.setCurrentTerm(term, votedForNodeId)
        except StorageFull:
            logger.warning(
                "term %d not durable yet (storage full); nothing is sent until it is", term
            )

    @property
    def storage_full(self) -> bool:
        return bool(getattr(self._journal, "storage_full", False))

    def getCurrentTerm(self) -> int:
        return int(self._journal.getCurrentTerm())

    def getVotedForNodeId(self) -> Any:
        return self._journal.getVotedForNodeId()

    def onOneSecondTimer(self) -> None:
        with contextlib.suppress(StorageFull):  # recorded by the journal; retried every tick
            self._journal.onOneSecondTimer()

    def _destroy(self) -> None:
        self._journal._destroy()


# ---------------------------------------------------------------------------- the transport


def stamping_transport(base: type) -> type:
    """`base` plus the lease fields: send stamps, their echoes, the transfer flag."""

    class StampingTransport(base):  # type: ignore[misc, valid-type]
        def __init__(self, syncObj: Any, *args: Any, **kwargs: Any) -> None:
            self._cp_sync = syncObj
            super().__init__(syncObj, *args, **kwargs)

        def send(self, node: Any, message: Any) -> Any:
            if isinstance(message, dict):
                message = _stamp(self._cp_sync, node, message)
            return super().send(node, message)

    StampingTransport.__name__ = StampingTransport.__qualname__ = f"Stamping{base.__name__}"
    return StampingTransport


def _stamp_us(t_s: float) -> int:
    """Stamps cross the wire as integer microseconds (the codec carries no floats)."""
    return int(t_s * 1_000_000)


def _stamp(engine: Any, node: Any, message: dict[str, Any]) -> dict[str, Any]:
    kind = message.get("type")
    if kind == "append_entries":
        return {**message, "cp_t": _stamp_us(monotonic_s())}
    if kind == "next_node_idx":
        echo = getattr(engine, "_cp_echo", None)
        if echo is not None and echo[0] == node:
            return {**message, "cp_echo": echo[1]}
    elif kind == "request_vote" and message.get("term") == getattr(
        engine, "_cp_transfer_term", None
    ):
        return {**message, "cp_transfer": True}
    return message


# ---------------------------------------------------------------------------- the overrides


def _endpoint(address: str) -> tuple[str, int] | str:
    """An address's canonical endpoint (the address itself if it does not parse)."""
    try:
        return endpoint_key(address)
    except InvalidArgument:
        return address


class RaftOverrides:
    """Mixin placed before SyncObj: the private-method overrides listed in the module doc.

    The host class calls `_cp_init_overrides` before ``SyncObj.__init__`` and defines
    ``_cp_on_custom(node, message)`` for coreplane's own message types (``cp_*``).
    """

    _cp_log: ConflictAwareLog | None

    def _cp_init_overrides(
        self,
        *,
        stick_s: float,
        lease_s: float,
        failover_spread_s: float,
        log: ConflictAwareLog | None,
        apply_budget_s: float = APPLY_BUDGET_MS / 1000,
        apply_entries_max: int = APPLY_ENTRIES_MAX,
    ) -> None:
        if apply_entries_max < 1 or apply_budget_s <= 0:
            raise InvalidArgument("apply_budget", "entries and time per tick must be positive")
        self._cp_stick_s = stick_s
        self._cp_apply_budget_s = apply_budget_s
        self._cp_apply_entries_max = apply_entries_max
        self._cp_apply_deadline = 0.0
        self._cp_apply_reading = False  # the next __getEntries call is __applyLogEntries' own
        self._cp_apply_told: int | None = None  # commit index last announced after an apply
        self._cp_apply_behind = False  # the last apply stopped at its budget
        self._cp_lease_s = lease_s
        self._cp_failover_spread_s = failover_spread_s
        self._cp_log = log
        self._cp_acks: dict[Any, float] = {}  # follower -> newest echoed send stamp
        self._cp_leader_since_floor = math.inf
        self._cp_heard_at = -math.inf  # when this node last heard its leader (follower)
        self._cp_echo: tuple[Any, Any] | None = None
        self._cp_transfer_until = -math.inf
        self._cp_transfer_term: int | None = None  # the election a leader asked this node for
        self._cp_coalesce = False
        self._cp_send_wanted = False
        self._cp_send_deferred = False
        self._cp_tick_failures = 0
        self._cp_fatal: BaseException | None = None
        self._cp_prevote: list[int] | None = None  # [term asked for, grants incl. own]
        self._cp_prevote_won: int | None = None  # the term a pre-vote round won
        self._cp_counters = {
            "votes_ignored": 0,
            "term_notices": 0,
            "stale_resets": 0,
            "prevotes_refused": 0,
            "prevote_rounds": 0,
            "stepdowns_on_notice": 0,
            "stood_for_better_log": 0,
            "stood_after_split": 0,
            "apply_yields": 0,  # ticks that left committed entries for the next tick
            "candidacy_held": 0,  # ticks an election was due with entries left to apply
        }

    # -------------------------------------------------------------------- lease

    def _cp_lease_start(self) -> float:
        """Send time of the newest heartbeat a quorum (this node included) acknowledged."""
        others = list(self._SyncObj__otherNodes)  # type: ignore[attr-defined]
        need = (len(others) + 1) // 2  # followers needed besides this node for a majority
        if need == 0:
            return math.inf
        stamps = sorted((self._cp_acks.get(n, -math.inf) for n in others), reverse=True)
        return stamps[need - 1]

    def lease_remaining_s(self) -> float:
        """How long this leader may still act; <= 0 when not leader or the lease ran out."""
        for _ in range(5):
            try:
                if self._SyncObj__raftState != _LEADER:  # type: ignore[attr-defined]
                    return 0.0
                now = monotonic_s()
                if now < self._cp_transfer_until:
                    return 0.0
                return self._cp_lease_start() + self._cp_lease_s - now
            except RuntimeError:  # a set changed size under us (tick thread); read again
                continue
        return 0.0

    def _cp_in_lease(self, now: float) -> bool:
        """True while this node must not help elect anyone else (leader stickiness)."""
        if self._SyncObj__raftState == _LEADER:  # type: ignore[attr-defined]
            return self.lease_remaining_s() > 0
        return (
            self._SyncObj__raftLeader is not None  # type: ignore[attr-defined]
            and now - self._cp_heard_at < self._cp_stick_s
        )

    def revoke_lease(self, duration_s: float) -> None:
        """Stop acting as leader for `duration_s` (a leadership transfer is under way)."""
        self._cp_transfer_until = monotonic_s() + duration_s

    # -------------------------------------------------------------------- messages

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        kind = message.get("type")
        now = monotonic_s()
        current = self._SyncObj__raftCurrentTerm  # type: ignore[attr-defined]
        if isinstance(kind, str) and kind.startswith("cp_"):
            self._cp_on_message(node, message, current)
            return
        if (
            kind == "timeout_now"
            and message["term"] >= current
            and node == self._SyncObj__raftLeader
        ):  # type: ignore[attr-defined]
            # pysyncobj clears its transfer flag before it asks for votes: remember the term.
            self._cp_transfer_term = current + 1
        if kind == "request_vote" and not message.get("cp_transfer") and self._cp_in_lease(now):
            self._cp_counters["votes_ignored"] += 1
            if self._SyncObj__raftState != _LEADER:  # type: ignore[attr-defined]
                # Tell the candidate when this voter will listen: it retries then, instead of
                # a whole random election timeout later (fast failover after a leader crash).
                wait_ms = int((self._cp_heard_at + self._cp_stick_s - now) * 1000) + 1
                self._SyncObj__transport.send(  # type: ignore[attr-defined]
                    node, {"type": "cp_vote_later", "term": message["term"], "ms": wait_ms}
                )
            return
        if kind == "request_vote":
            reason = self._cp_should_stand(node, message, current)
            if reason is not None:
                # Refused below (upstream sends no reply). Stand now instead of a whole random
                # election timeout later: the refused candidate votes for us at the next term.
                _so.SyncObj._SyncObj__onMessageReceived(self, node, message)  # type: ignore
                if self._SyncObj__raftState != _LEADER:  # type: ignore[attr-defined]
                    self._cp_stand_soon(reason, now)
                return
        if kind == "append_entries":
            if message["term"] < current:
                self._cp_counters["term_notices"] += 1
                self._SyncObj__transport.send(  # type: ignore[attr-defined]
                    node, {"type": "cp_term", "term": current}
                )
                return
            self._cp_on_append(node, message, now)
            return
        if kind == "next_node_idx" and self._SyncObj__raftState == _LEADER:  # type: ignore
            self._cp_on_reply(node, message)
        _so.SyncObj._SyncObj__onMessageReceived(self, node, message)  # type: ignore[attr-defined]

    def _cp_last_log(self) -> tuple[int, int]:
        """(term, index) of this node's last entry: what Raft §5.4.1 compares for votes."""
        return (
            self._SyncObj__getCurrentLogTerm(),  # type: ignore[attr-defined]
            self._SyncObj__getCurrentLogIndex(),
        )  # type: ignore[attr-defined]

    def _cp_should_stand(self, node: Any, request: dict[str, Any], current: int) -> str | None:
        """Why this node, refusing `request`, should call its own election at once, or None.

        Measured after a leader kill -9: the two survivors' elections often failed and waited a
        whole random timeout (0.3-0.7 s more, failovers of 0.85-1.0 s), in two ways:
        - ``stood_for_better_log``: the candidate's log is behind this node's (Raft §5.4.1), so
          it can never get this vote; this node can win, so it stands;
        - ``stood_after_split``: both are candidates of the same term with equal logs (a split
          vote: each voted for itself); the larger node id stands again, the smaller one votes
          for it at the next term. A fixed tie-break, so the two never both re-stand.
        Calling an election is always safe in Raft; this only decides who goes first.
        """
        if request["term"] < current:
            return None  # a stale request (upstream ignores it): nothing new about the leader
        mine, theirs = self._cp_last_log(), _last_log_of(request)
        if mine > theirs:
            return "stood_for_better_log"
        self_node = self._SyncObj__selfNode  # type: ignore[attr-defined]
        if (
            mine == theirs
            and request["term"] == current
            and self._SyncObj__raftState == _CANDIDATE  # type: ignore[attr-defined]
            and self_node is not None
            and str(self_node.id) > str(node.id)
        ):
            return "stood_after_split"
        return None

    def _cp_on_message(self, node: Any, message: dict[str, Any], current: int) -> None:
        if message["type"] == "cp_term":
            term = int(message["term"])
            if term > current and self._SyncObj__raftState != _FOLLOWER:  # type: ignore
                self._cp_counters["stepdowns_on_notice"] += 1
                self._SyncObj__setCurrentTerm(term, None)  # type: ignore[attr-defined]
                self._SyncObj__setState(_FOLLOWER)  # type: ignore[attr-defined]
                self._SyncObj__raftLeader = None
            return
        if message["type"] == "cp_prevote":
            self._cp_on_prevote(node, message, current)
            return
        if message["type"] == "cp_prevote_reply":
            self._cp_on_prevote_reply(message)
            return
        if message["type"] == "cp_vote_later":
            if self._SyncObj__raftState == _CANDIDATE and message["term"] == current:  # type: ignore
                retry_at = (
                    monotonic_s()
                    + min(int(message["ms"]), 1000) / 1000
                    + 0.02 * _so.random.random()
                )
                if retry_at < self._SyncObj__raftElectionDeadline:  # type: ignore[attr-defined]
                    self._SyncObj__raftElectionDeadline = retry_at
            return
        self._cp_on_custom(node, message)

    # -------------------------------------------------------------------- pre-vote

    def _cp_prevote_gate(self, now: float) -> None:
        """Before upstream's tick: an election that is due first needs a pre-vote round won.

        Upstream raises its term on every election, so a node cut off from the others climbs
        terms alone and, when it comes back, its higher term deposes a healthy leader (Raft
        §9.6). A pre-vote asks "would you vote for me at term+1?" without changing anyone's
        term or vote; only a majority of yeses lets the real election start. Voters that still
        hear their leader say no, so an isolated node never disrupts anyone. A leadership
        transfer (the leader asked) skips it.
        """
        if self._SyncObj__raftState == _LEADER or self._SyncObj__selfNode is None:  # type: ignore
            return
        if self._SyncObj__raftElectionDeadline >= now:  # type: ignore[attr-defined]
            return  # no election due
        if self._SyncObj__transferInProgress:  # type: ignore[attr-defined]
            return
        others = self._SyncObj__otherNodes  # type: ignore[attr-defined]
        term = self._SyncObj__raftCurrentTerm + 1  # type: ignore[attr-defined]
        if not others or self._cp_prevote_won == term:
            return  # upstream runs the election this tick
        if not self._SyncObj__connectedToAnyone():  # type: ignore[attr-defined]
            return  # upstream will not start one either
        self._cp_counters["prevote_rounds"] += 1
        self._cp_prevote = [term, 1]
        self._SyncObj__raftElectionDeadline = (  # the next round, if this one fails
            now + self._SyncObj__generateRaftTimeout()
        )  # type: ignore[attr-defined]
        last_term, last_index = self._cp_last_log()
        request = {
            "type": "cp_prevote",
            "term": term,
            "last_log_index": last_index,
            "last_log_term": last_term,
        }
        for node in list(others):
            self._SyncObj__transport.send(node, dict(request))  # type: ignore[attr-defined]

    def _cp_on_prevote(self, node: Any, request: dict[str, Any], current: int) -> None:
        """Would this node vote for `node` at the asked term? Answer; change nothing."""
        now = monotonic_s()
        mine, theirs = self._cp_last_log(), _last_log_of(request)
        in_lease = self._cp_in_lease(now)
        granted = int(request["term"]) > current and not in_lease and theirs >= mine
        wait_ms = 0
        if not granted:
            self._cp_counters["prevotes_refused"] += 1
            if in_lease and self._SyncObj__raftState != _LEADER:  # type: ignore[attr-defined]
                wait_ms = int((self._cp_heard_at + self._cp_stick_s - now) * 1000) + 1
            elif not in_lease and mine > theirs and int(request["term"]) > current:
                self._cp_stand_soon("stood_for_better_log", now)
        self._SyncObj__transport.send(
            node,
            {  # type: ignore[attr-defined]
                "type": "cp_prevote_reply",
                "term": int(request["term"]),
                "granted": granted,
                "ms": wait_ms,
            },
        )

    def _cp_on_prevote_reply(self, reply: dict[str, Any]) -> None:
        round_ = self._cp_prevote
        if round_ is None or reply["term"] != round_[0] or self._SyncObj__raftState == _LEADER:  # type: ignore[attr-defined]
            return
        now = monotonic_s()
        if reply.get("granted"):
            round_[1] += 1
            voters = len(self._SyncObj__otherNodes) + 1  # type: ignore[attr-defined]
            if 2 * round_[1] > voters:
                self._cp_prevote, self._cp_prevote_won = None, round_[0]
                self._SyncObj__raftElectionDeadline = 0  # due: the next tick elects (as upstream)
        elif reply.get("ms"):  # the voter still hears its leader: ask again when it will not
            retry_at = now + min(int(reply["ms"]), 1000) / 1000 + 0.02 * _so.random.random()
            if retry_at < self._SyncObj__raftElectionDeadline:  # type: ignore[attr-defined]
                self._SyncObj__raftElectionDeadline = retry_at

    def _cp_stand_soon(self, reason: str, now: float) -> None:
        """Call an election (pre-vote first) within 5 ms, for `reason` (a counter)."""
        self._cp_counters[reason] += 1
        soon = now + 0.005 * _so.random.random()
        if soon < self._SyncObj__raftElectionDeadline:  # type: ignore[attr-defined]
            self._SyncObj__raftElectionDeadline = soon

    def _cp_on_custom(self, node: Any, message: dict[str, Any]) -> None:
        """Coreplane message types other than ``cp_term``; the engine handles them."""

    def _cp_on_reply(self, node: Any, message: dict[str, Any]) -> None:
        stamp_us = message.get("cp_echo")
        if isinstance(stamp_us, int) and not isinstance(stamp_us, bool):
            stamp = stamp_us / 1_000_000  # floor-rounded at send: never later than the send
            if stamp >= self._cp_leader_since_floor and stamp > self._cp_acks.get(node, -math.inf):
                self._cp_acks[node] = stamp
        match = self._SyncObj__raftMatchIndex.get(node, 0)  # type: ignore[attr-defined]
        if (
            message.get("reset")
            and not message.get("success")
            and message.get("next_node_idx", 0) <= match
        ):
            # Stale (reordered) reply: the follower already acknowledged up to `match`.
            self._cp_counters["stale_resets"] += 1
            message["next_node_idx"] = match + 1

    def _cp_on_append(self, node: Any, message: dict[str, Any], now: float) -> None:
        log = self._cp_log
        before = self._SyncObj__raftCommitIndex  # type: ignore[attr-defined]
        if log is not None:
            log.commit_floor = before
            log.deferred_in_message = False
        self._cp_heard_at = now
        self._cp_prevote = self._cp_prevote_won = None  # a leader is alive: no election due
        self._cp_echo = (node, message.get("cp_t"))
        raft_log = self._SyncObj__raftLog  # type: ignore[attr-defined]
        head = raft_log[0] if "serialized" in message else None
        try:
            _so.SyncObj._SyncObj__onMessageReceived(self, node, message)  # type: ignore
        finally:
            self._cp_echo = None
        if head is not None and raft_log[0] == head and self._SyncObj__raftCommitIndex > before:  # type: ignore[attr-defined]
            # A snapshot chunk that installed nothing verified nothing about this log, but
            # pysyncobj still set commit = min(leader commit, own last index): undo that.
            self._SyncObj__raftCommitIndex = before
            raft_log.setRaftCommitIndex(before)
        if log is not None:
            if log.deferred_in_message:
                self._cp_after_append(message, before)
            if log.refused is not None and self._cp_fatal is None:
                self._cp_fatal = InvariantViolation(log.refused)

    def _cp_after_append(self, message: dict[str, Any], before: int) -> None:
        """Commit at most to the message's last entry; redo membership kept past it."""
        transmission = message.get("transmission")
        if "prevLogIdx" not in message or transmission in ("start", "process"):
            return
        raft_log = self._SyncObj__raftLog  # type: ignore[attr-defined]
        count = 1 if transmission == "finish" else len(message.get("entries", ()))
        last_new = int(message["prevLogIdx"]) + count
        if raft_log[-1][1] <= last_new:
            return
        cap = max(before, min(int(message["commit_index"]), last_new))
        if self._SyncObj__raftCommitIndex > cap:  # type: ignore[attr-defined]
            self._SyncObj__raftCommitIndex = cap
            raft_log.setRaftCommitIndex(cap)
        first = raft_log[0][1]
        for entry in raft_log[last_new + 1 - first :]:
            # pysyncobj reverted every membership change past prevLogIdx; these stay.
            request = self._SyncObj__parseChangeClusterRequest(entry[0])  # type: ignore
            if request is not None:
                self._SyncObj__doChangeCluster(request)  # type: ignore[attr-defined]

    # -------------------------------------------------------------------- leadership

    def _SyncObj__doChangeCluster(self, request: Any, reverse: bool = False) -> bool:
        """8. No phantom voter: adding a member at an address another member already has is
        ignored, identically on every node (membership applies in log order). A second id on
        one endpoint raised the quorum to count a voter that can never answer, and no config
        could reconstruct either node afterwards. The runtime refuses such a call up front;
        this is the same check where the change applies, for anything that reaches the log."""
        if not reverse and len(request) >= 3 and request[0] == "add":
            node = request[2]
            address = getattr(node, "address", None)
            if isinstance(address, str):
                key = _endpoint(address)
                members = [
                    self._SyncObj__selfNode,  # type: ignore[attr-defined]
                    *self._SyncObj__otherNodes,
                ]  # type: ignore[attr-defined]
                for member in members:
                    other = getattr(member, "address", None)
                    if member != node and isinstance(other, str) and _endpoint(other) == key:
                        logger.warning(
                            "membership: not adding %s at %s, already %s's address",
                            getattr(node, "id", node),
                            address,
                            getattr(member, "id", member),
                        )
                        return False
        result: bool = _so.SyncObj._SyncObj__doChangeCluster(  # type: ignore[attr-defined]
            self, request, reverse
        )
        return result

    def _SyncObj__onBecomeLeader(self) -> None:
        self._cp_acks.clear()
        self._cp_leader_since_floor = _stamp_us(monotonic_s()) / 1_000_000
        self._cp_transfer_until = -math.inf
        _so.SyncObj._SyncObj__onBecomeLeader(self)  # type: ignore[attr-defined]
        flush = getattr(self._cp_log, "flush", None)
        if flush is not None:
            try:
                flush()  # the no-op may leave before the tick's flush (may_send_before_sync)
            except StorageFull as exc:
                self._cp_step_down_unsynced(exc)

    def _cp_step_down_unsynced(self, exc: BaseException) -> None:
        """A leader whose own log is not durable must not lead: pysyncobj counts the leader's
        copy towards a commit at the start of the next tick. Step down now, in this tick, and
        wait a full election timeout before standing again (`_cp_storage_full_steps`)."""
        if self._SyncObj__raftState != _LEADER:  # type: ignore[attr-defined]
            return
        self._cp_counters["storage_full_stepdowns"] = (
            self._cp_counters.get("storage_full_stepdowns", 0) + 1
        )
        logger.error("leader steps down: its journal cannot be made durable (%s)", exc)
        self._SyncObj__setState(_FOLLOWER)  # type: ignore[attr-defined]
        self._SyncObj__raftLeader = None
        self._SyncObj__raftElectionDeadline = (  # type: ignore[attr-defined]
            monotonic_s() + self._SyncObj__generateRaftTimeout()
        )  # type: ignore[attr-defined]

    def _SyncObj__setState(self, new_state: int) -> None:
        """A leader that steps down fails, at once, its proposals still waiting to commit.

        Upstream keeps each callback until some entry reaches its index, which a deposed
        leader may never see (the next leader truncates its uncommitted tail, and a quiet
        cluster writes nothing there): the writer waited for its whole deadline, and a load
        generator draining its writes hung. Such an entry may still commit under the next
        leader, so the code is UNKNOWN_OUTCOME, which the runtime retries with the same
        session bytes (the core applies them once). Entries at or below the commit index are
        applied by this node anyway and keep their callbacks."""
        was_leader = self._SyncObj__raftState == _LEADER  # type: ignore[attr-defined]
        _so.SyncObj._SyncObj__setState(self, new_state)  # type: ignore[attr-defined]
        if not was_leader or new_state == _LEADER:
            return
        waiting = self._SyncObj__commandsWaitingCommit  # type: ignore[attr-defined]
        commit = self._SyncObj__raftCommitIndex  # type: ignore[attr-defined]
        for idx in sorted(i for i in waiting if i > commit):
            for _term, callback in waiting.pop(idx):
                callback(None, _so.FAIL_REASON.UNKNOWN_OUTCOME)

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:
        _so.SyncObj._SyncObj__onNodeDisconnected(self, node)  # type: ignore[attr-defined]
        self._cp_acks.pop(node, None)
        state = self._SyncObj__raftState  # type: ignore[attr-defined]
        if state == _LEADER:
            # It may come back with a shorter log (a memory journal): learn its match again.
            match = self._SyncObj__raftMatchIndex  # type: ignore[attr-defined]
            if node in match:
                match[node] = 0
        elif state == _FOLLOWER and node == self._SyncObj__raftLeader:  # type: ignore
            now = monotonic_s()
            soon = (
                max(now, self._cp_heard_at + self._cp_stick_s)
                + self._cp_failover_spread_s * _so.random.random()
            )
            if soon < self._SyncObj__raftElectionDeadline:  # type: ignore[attr-defined]
                self._SyncObj__raftElectionDeadline = soon

    # -------------------------------------------------------------------- sending

    def _applyCommand(self, command: Any, callback: Any, commandType: Any = None) -> None:
        """Queue a proposal; wake the tick thread only if the queue was empty.

        Upstream writes to its wake-up pipe for every proposal (a syscall and a GIL hand-off
        each); one wake-up per batch is enough, because the tick drains the whole queue and
        re-wakes itself if it stopped early (`_checkCommandsToApply`)."""
        queue = self._SyncObj__commandsQueue  # type: ignore[attr-defined]
        items = queue._FastQueue__queue
        if commandType is not None:
            command = bytes([commandType]) + command
        with queue._FastQueue__lock:
            size_max = queue._FastQueue__maxSize
            full = size_max > 0 and len(items) >= size_max
            was_empty = not items
            if not full:
                items.append((command, callback))
        if full:
            self._SyncObj__callErrCallback(_so.FAIL_REASON.QUEUE_FULL, callback)  # type: ignore
        elif was_empty:
            self._cp_notify()

    def _cp_notify(self) -> None:
        notifier = getattr(self, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            with contextlib.suppress(BlockingIOError):  # full of wake-ups already
                notifier.notify()

    def _checkCommandsToApply(self) -> None:
        """Drain queued proposals, then send once: adaptive batching.

        Not while a leader has committed entries left to apply (its apply stopped at its
        per-tick budget, 9.): the proposals wait in the bounded queue until it caught up,
        so an overloaded leader's log does not run ahead of what it applies."""
        if (
            self._SyncObj__raftState == _LEADER  # type: ignore[attr-defined]
            and self._SyncObj__raftLastApplied < self._SyncObj__raftCommitIndex  # type: ignore[attr-defined]
        ):
            self._cp_send_deferred_now()
            return
        self._cp_coalesce, self._cp_send_wanted = True, False
        try:
            _so.SyncObj._checkCommandsToApply(self)
        finally:
            self._cp_coalesce = False
        if self._cp_send_wanted:
            self._cp_send_wanted = False
            self._cp_send_now()
        self._cp_send_deferred_now()
        if self._SyncObj__commandsQueue._FastQueue__queue and self._SyncObj__raftLeader is not None:  # type: ignore[attr-defined]
            self._cp_notify()  # stopped at its time budget: come back at once

    def _SyncObj__sendAppendEntries(self) -> None:
        """Send now, or with the proposals this tick is about to drain.

        Upstream sends every follower a message whenever the leader's commit index moves
        (``__applyLogEntries`` returned True), then drains the proposal queue in the same tick
        and sends again: under load two messages per follower per tick, the first carrying
        only the new commit index. When proposals are queued and no heartbeat is due, that
        first send waits for the drain (`_checkCommandsToApply`, or the end of the tick at
        the latest), and one message carries both."""
        if self._cp_coalesce:
            self._cp_send_wanted = True
            return
        if (
            self._SyncObj__commandsQueue._FastQueue__queue  # type: ignore[attr-defined]
            and self._SyncObj__raftState == _LEADER  # type: ignore[attr-defined]
            and monotonic_s() <= self._SyncObj__newAppendEntriesTime  # type: ignore[attr-defined]
        ):
            self._cp_send_deferred = True
            return
        self._cp_send_now()

    def _cp_send_deferred_now(self) -> None:
        if self._cp_send_deferred:
            self._cp_send_deferred = False
            if self._SyncObj__raftState == _LEADER:  # type: ignore[attr-defined]
                self._cp_send_now()

    def _cp_send_now(self) -> None:
        """Upstream's send loop with one time budget per follower (not one shared)."""
        self._cp_send_deferred = False
        conf = self._SyncObj__conf  # type: ignore[attr-defined]
        period = conf.appendEntriesPeriod
        self._SyncObj__newAppendEntriesTime = monotonic_s() + period
        batch_bytes = conf.appendEntriesBatchSizeBytes
        connected = self._SyncObj__connectedNodes  # type: ignore[attr-defined]
        log = self._SyncObj__raftLog  # type: ignore[attr-defined]
        next_index = self._SyncObj__raftNextIndex  # type: ignore[attr-defined]
        term = self._SyncObj__raftCurrentTerm  # type: ignore[attr-defined]
        transport = self._SyncObj__transport  # type: ignore[attr-defined]
        serializer = self._SyncObj__serializer  # type: ignore[attr-defined]
        nodes = self._SyncObj__otherNodes | self._SyncObj__readonlyNodes  # type: ignore
        for node in nodes:
            if node not in connected:
                serializer.cancelTransmisstion(node)
                continue
            start = monotonic_s()
            send_single, sending_serialized = True, False
            node_next = next_index[node]
            while node_next <= log[-1][1] or send_single or sending_serialized:
                commit = self._SyncObj__raftCommitIndex  # type: ignore[attr-defined]
                if node_next > log[0][1]:
                    prev_idx, prev_term = self._SyncObj__getPrevLogIndexTerm(node_next)  # type: ignore
                    entries: list[Any] = []
                    if node_next <= log[-1][1]:
                        entries = self._SyncObj__getEntries(  # type: ignore[attr-defined]
                            node_next, None, batch_bytes
                        )
                        next_index[node] = entries[-1][1] + 1
                    if len(entries) == 1 and len(entries[0][0]) >= batch_bytes:
                        data = _so.pickle.dumps(entries[0])
                        for pos in range(0, len(data), batch_bytes):
                            if pos == 0:
                                transmission = "start"
                            elif pos + batch_bytes >= len(entries[0][0]):
                                transmission = "finish"
                            else:
                                transmission = "process"
                            transport.send(
                                node,
                                {
                                    "type": "append_entries",
                                    "transmission": transmission,
                                    "data": data[pos : pos + batch_bytes],
                                    "term": term,
                                    "commit_index": commit,
                                    "prevLogIdx": prev_idx,
                                    "prevLogTerm": prev_term,
                                },
                            )
                            if node not in connected:
                                break
                    else:
                        transport.send(
                            node,
                            {
                                "type": "append_entries",
                                "term": term,
                                "commit_index": commit,
                                "entries": entries,
                                "prevLogIdx": prev_idx,
                                "prevLogTerm": prev_term,
                            },
                        )
                        if node not in connected:
                            break
                else:
                    data = serializer.getTransmissionData(node)
                    transport.send(
                        node,
                        {
                            "type": "append_entries",
                            "term": term,
                            "commit_index": commit,
                            "serialized": data,
                        },
                    )
                    if node not in connected:
                        break
                    if data is not None and data[2]:
                        next_index[node] = log[1][1] + 1
                        sending_serialized = False
                    else:
                        sending_serialized = data is not None
                node_next = next_index[node]
                send_single = False
                if monotonic_s() - start > period:
                    break

    # -------------------------------------------------------------------- ticks

    def _SyncObj__applyLogEntries(self) -> bool:
        """9. Upstream's apply, bounded per tick (see the module doc): a backlog is applied
        over several ticks, each followed by a poll, and the next tick is woken at once.

        Upstream returns True whenever it applied anything, and a leader then sends every
        follower an AppendEntries (the new commit index); while it works through a backlog
        only a tick that sees a new commit index asks for that send."""
        self._cp_apply_deadline = monotonic_s() + self._cp_apply_budget_s
        self._cp_apply_reading = True
        try:
            applied_some = _so.SyncObj._SyncObj__applyLogEntries(self)  # type: ignore[attr-defined]
        finally:
            self._cp_apply_reading = False
        commit = self._SyncObj__raftCommitIndex  # type: ignore[attr-defined]
        self._cp_apply_behind = self._SyncObj__raftLastApplied < commit  # type: ignore[attr-defined]
        if self._cp_apply_behind:
            self._cp_counters["apply_yields"] += 1
            self._cp_notify()  # the rest right after the poll, not at the next auto tick
        told, self._cp_apply_told = self._cp_apply_told, commit
        return bool(applied_some) and commit != told

    def _cp_hold_candidacy(self, now: float) -> None:
        """A node with committed entries left to apply does not stand for election yet; it
        still votes. After a restart pysyncobj learns the membership changes in its log only
        as it applies them (`__doApplyCommand`), from the snapshot's member list on: with the
        replay spread over ticks, a candidate in mid-replay could count votes against a member
        list that misses voters added since, and win with no majority of the real cluster.
        It stands within a budget's time of catching up (the replay itself never waits).
        Held: before the first apply (a restart) and after a tick that stopped at its budget;
        not for a commit index that the last poll moved (applied in this very tick)."""
        if (
            self._SyncObj__raftElectionDeadline <= now  # type: ignore[attr-defined]
            and self._SyncObj__raftState != _LEADER  # type: ignore[attr-defined]
            and (self._cp_apply_behind or self._cp_apply_told is None)  # not just a new commit
            and self._SyncObj__raftLastApplied < self._SyncObj__raftCommitIndex  # type: ignore[attr-defined]
        ):
            self._SyncObj__raftElectionDeadline = now + self._cp_apply_budget_s
            self._cp_counters["candidacy_held"] += 1

    def _SyncObj__getEntries(
        self, fromIDx: Any, count: Any = None, maxSizeBytes: Any = None
    ) -> Any:
        """Upstream's read; the one `_SyncObj__applyLogEntries` makes comes back as a bounded
        iterator. Upstream's apply loop bumps ``raftLastApplied`` inside its body, after the
        entry's callbacks, so stopping the iteration stops after a whole entry (pinned in
        `seams`). Reads made while applying (a membership change) are not bounded."""
        if self._cp_apply_reading:
            self._cp_apply_reading = False
            if count is not None and count > 1 and maxSizeBytes is None:
                return self._cp_apply_chunk(fromIDx, count)
        return _so.SyncObj._SyncObj__getEntries(  # type: ignore[attr-defined]
            self, fromIDx, count, maxSizeBytes
        )

    def _cp_apply_chunk(self, first: int, count: int) -> Iterator[Any]:
        """The entries from `first` on, until `count` of them, `APPLY_ENTRIES_MAX` or the
        tick's time budget (the first entry always: every tick makes progress). Read a few
        at a time: a backlog read whole every tick (the journal reads a long slice in blocks
        of 256 entries, up to 32 KiB each) cost more than applying the chunk taken from it."""
        limit = min(count, self._cp_apply_entries_max)
        deadline = self._cp_apply_deadline
        n = 0
        while n < limit:
            part = _so.SyncObj._SyncObj__getEntries(  # type: ignore[attr-defined]
                self, first + n, min(limit - n, _APPLY_READ_ENTRIES)
            )
            if not part:
                return
            for entry in part:
                if n and monotonic_s() > deadline:
                    return
                yield entry
                n += 1

    def _onTick(self, timeToWait: float = 0.0) -> None:
        """Upstream's tick; a tick that keeps failing marks the engine failed (no wedge)."""
        if self._cp_fatal is not None:
            if timeToWait > 0:
                time.sleep(timeToWait)  # failed: no more Raft work; the runtime stops the node
            return
        try:
            self._cp_hold_candidacy(monotonic_s())
            self._cp_prevote_gate(monotonic_s())
            if timeToWait > 0 and self._SyncObj__raftState != _LEADER:  # type: ignore
                # Wake for the election deadline, not at the next auto tick (20 ms later):
                # with tick-rounded deadlines, two survivors' spread-out elections often fired
                # in the same tick and split the vote. A deadline already past (no peer
                # connected, so no election) keeps the normal tick: no busy loop.
                until = self._SyncObj__raftElectionDeadline - monotonic_s()  # type: ignore
                if 0 < until < timeToWait:
                    timeToWait = until + 0.0005
            _so.SyncObj._onTick(self, timeToWait)  # ends with the poll that handles messages
            self._cp_send_deferred_now()  # deferred where no drain followed (not the usual path)
            flush = getattr(self._SyncObj__transport, "flush", None)  # type: ignore[attr-defined]
            if flush is not None:
                flush()  # replies leave now, before the next tick applies what they committed
        except StorageFull as exc:
            # Not a failure of the engine: the batch waits in memory, nothing unsynced is sent,
            # and a later flush resumes. The poll may not have run: wait as it would have.
            self._cp_step_down_unsynced(exc)
            self._cp_tick_failures = 0
            if timeToWait > 0:
                time.sleep(timeToWait)
            return
        except Exception as exc:
            self._cp_tick_failures += 1
            if self._cp_tick_failures >= TICK_FAILURES_MAX:
                self._cp_fatal = InvariantViolation(
                    f"raft tick failed {self._cp_tick_failures} times in a row: {exc!r}"
                )
                logger.critical("engine stops ticking: %s", self._cp_fatal)
            raise
        self._cp_tick_failures = 0

    def fatal_error(self) -> BaseException | None:
        """Why this engine stopped working, or None while it works."""
        return self._cp_fatal
