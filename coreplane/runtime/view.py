"""`StateView`: what `ControlPlane.read(fn)` hands to `fn`, a read-only view of the state.

`read` once passed the live `StateMachine`: a host's read function could call `apply`, mutate a
user machine's state in place or keep a reference and read it later from another thread, and
that replica would silently diverge from the others (different `state_hash`, no error). The view
exposes only queries; values that are containers (user machine states) are copies, so nothing a
read function does can reach replicated state. It is valid only during the read call.
"""

from __future__ import annotations

from collections.abc import Callable

from coreplane.core import codec
from coreplane.core.codec import Value
from coreplane.core.machines.kv import KeyRecord
from coreplane.core.machines.quotas import KeyQuota
from coreplane.core.state import StateMachine

__all__ = ["KVView", "LeaseView", "LocksView", "QuotasView", "StateView"]


class _ReadOnly:
    """Attributes are set once, in __init__; any later assignment raises AttributeError."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def _init(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)


class LeaseView(_ReadOnly):
    """A KV lease as of the read: its TTL, its expiry in cluster time, its keys (sorted)."""

    __slots__ = ("expires_ms", "keys", "lease_id", "ttl_ms")
    lease_id: int
    ttl_ms: int
    expires_ms: int
    keys: tuple[str, ...]

    def __init__(self, lease_id: int, ttl_ms: int, expires_ms: int, keys: tuple[str, ...]):
        self._init(lease_id=lease_id, ttl_ms=ttl_ms, expires_ms=expires_ms, keys=keys)

    def __repr__(self) -> str:
        return (
            f"LeaseView(lease_id={self.lease_id}, ttl_ms={self.ttl_ms}, "
            f"expires_ms={self.expires_ms}, keys={len(self.keys)})"
        )


class KVView(_ReadOnly):
    """Queries on the replicated KV (records are immutable, so they are shared, not copied)."""

    __slots__ = ("events", "get", "lease", "range", "record", "revision")
    revision: int
    get: Callable[[str], tuple[bytes, int] | None]  # (value, mod_revision)
    record: Callable[[str], KeyRecord | None]
    range: Callable[..., list[tuple[str, bytes, int]]]  # (prefix, limit=0)
    lease: Callable[[int], LeaseView | None]
    # (start_revision, prefix="", limit=1000) -> (events, next_revision); events are tuples of
    # immutable values; CommandRejected("compacted") past the history (machines/history.py)
    events: Callable[..., tuple[list[tuple[int, str, str, bytes, int]], int]]

    def __init__(self, sm: StateMachine) -> None:
        kv = sm.kv

        def lease(lease_id: int) -> LeaseView | None:
            found = kv.leases.get(lease_id)
            if found is None:
                return None
            return LeaseView(lease_id, found.ttl_ms, found.expires_ms, tuple(sorted(found.keys)))

        get: Callable[[str], tuple[bytes, int] | None] = kv.get
        record: Callable[[str], KeyRecord | None] = kv.record
        range_: Callable[..., list[tuple[str, bytes, int]]] = kv.range
        self._init(
            revision=kv.revision,
            get=get,
            record=record,
            range=range_,
            lease=lease,
            events=kv.history.since,
        )


class LocksView(_ReadOnly):
    """Queries on the lock machine; both answer fresh plain dicts (nothing shared)."""

    __slots__ = ("describe", "session")
    describe: Callable[..., dict[str, Value]]  # (name, session_id=0)
    session: Callable[[int], dict[str, Value] | None]

    def __init__(self, sm: StateMachine) -> None:
        self._init(describe=sm.locks.describe, session=sm.locks.session)


class QuotasView(_ReadOnly):
    """Queries on the quota machine; nothing they answer is shared with replicated state:
    `describe` and `share` build fresh plain dicts, `record` copies the key's record (its
    epochs are frozen, so the copy's list holds the same immutable epochs)."""

    __slots__ = ("describe", "limited_keys", "record", "share")
    describe: Callable[[str], dict[str, Value] | None]  # (key): limit, live epochs, routers
    share: Callable[[str, str], dict[str, Value] | None]  # (key, router): newest epoch's share
    limited_keys: Callable[[], tuple[str, ...]]  # every key with a limit, sorted
    record: Callable[[str], KeyQuota | None]  # (key): a copy of its record (the leader's input)

    def __init__(self, sm: StateMachine) -> None:
        quotas, tick_ms = sm.quotas, sm.tick_ms

        def describe(key: str) -> dict[str, Value] | None:
            return quotas.describe(key, tick_ms)

        def limited_keys() -> tuple[str, ...]:
            return tuple(sorted(quotas.keys))

        def record(key: str) -> KeyQuota | None:
            q = quotas.keys.get(key)
            if q is None:
                return None
            # Built directly (dataclasses.replace costs 3x): the leader's step copies many.
            return KeyQuota(
                limit_milli=q.limit_milli,
                routers_max=q.routers_max,
                next_epoch=q.next_epoch,
                leader_token=q.leader_token,
                epochs=[*q.epochs],
            )

        self._init(describe=describe, share=quotas.share, limited_keys=limited_keys, record=record)


class StateView(_ReadOnly):
    """The replica's state at one applied index, for reading only."""

    __slots__ = (
        "applied_index",
        "kv",
        "leader_node",
        "leader_term",
        "leader_token",
        "locks",
        "machine_state",
        "machines",
        "quotas",
        "tick_ms",
        "tick_n",
    )
    applied_index: int
    tick_n: int
    tick_ms: int
    leader_token: int
    leader_node: str
    leader_term: int
    kv: KVView
    locks: LocksView
    quotas: QuotasView
    machine_state: Callable[[str], Value]
    machines: tuple[str, ...]

    def __init__(self, sm: StateMachine) -> None:
        states = sm.machine_states

        def machine_state(name: str) -> Value:
            """A copy of a registered machine's state (None if there is no such machine)."""
            state = states.get(name)
            if state is None or isinstance(state, (bool, int, str, bytes)):
                return state
            return codec.decode_value(codec.encode_value(state))

        # tick_ms is cluster time (the sum of the leaders' ticks), never a wall clock.
        self._init(
            applied_index=sm.applied_index,
            tick_n=sm.tick_n,
            tick_ms=sm.tick_ms,
            leader_token=sm.leader_token,
            leader_node=sm.leader_node,
            leader_term=sm.leader_term,
            kv=KVView(sm),
            locks=LocksView(sm),
            quotas=QuotasView(sm),
            machine_state=machine_state,
            machines=tuple(sorted(states)),
        )
