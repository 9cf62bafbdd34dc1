"""Replicated command types with fixed integer tags, and their codec envelopes.

Tags are constants chosen once and never derived from names or declaration order: a log written
by one version must decode the same way in the next. Client commands carry ``(client_id, seq)``
so the state machine applies a retried duplicate once; an empty `client_id` opts out (internal
commands such as ticks are idempotent by their own numbering).

Decoding validates every field's type and range and raises `DecodeError` naming the field, so
the apply path only ever sees well-formed commands.

*Internal* commands (`INTERNAL_TAGS`: ticks, leader establishment, quota allotments) move
cluster time, fencing tokens and routers' shares, so only the runtime may write them:
`encode_internal` marks their envelope, `encode` and `check_proposable` refuse them, and apply
refuses an internal command without the marker (or a client command with it). A host, a client
of the HTTP API or a forged log entry therefore cannot freeze time or mint a leader term.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeAlias, cast

from coreplane.core import codec
from coreplane.core.codec import Value
from coreplane.errors import DecodeError, InvalidArgument

__all__ = [
    "FLEET_INTERNAL_TAGS",
    "FLEET_TAGS",
    "INTERNAL_TAGS",
    "LOCK_COMMANDS",
    "QUOTA_COMMANDS",
    "TICK_ELAPSED_MS_MAX",
    "Cas",
    "Command",
    "Delete",
    "EntryDecoder",
    "FleetAck",
    "FleetCancelMove",
    "FleetCordon",
    "FleetCreatePartition",
    "FleetDecommission",
    "FleetDeletePartition",
    "FleetDrain",
    "FleetOrphans",
    "FleetPlan",
    "FleetProviderRequest",
    "FleetProviderResult",
    "FleetReport",
    "FleetSetRF",
    "FleetUncordon",
    "Leader",
    "LeaseGrant",
    "LeaseKeepAlive",
    "LeaseRevoke",
    "LockAcquire",
    "LockRelease",
    "LockReleaseAcquire",
    "LockSessionClose",
    "LockSessionGrant",
    "LockSessionKeepAlive",
    "Proposable",
    "Put",
    "PutFields",
    "QuotaAllot",
    "QuotaDeleteLimit",
    "QuotaSetLimit",
    "Tick",
    "UserCommand",
    "check_proposable",
    "decode",
    "decode_entry",
    "encode",
    "encode_internal",
]

_U63 = 2**63 - 1


def _check(cls_name: str, name: str, kind: type, value: Any) -> None:
    ok = kind is object or type(value) is kind
    if kind is int and ok and not 0 <= value <= _U63:
        raise DecodeError(f"{cls_name}.{name}: {value} is out of range [0, 2**63)")
    if kind is str and ok and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError(f"{cls_name}.{name}: not valid UTF-8 (a lone surrogate)") from None
    if not ok:
        raise DecodeError(
            f"{cls_name}.{name}: expected {kind.__name__}, got {type(value).__name__}"
        )


@dataclass(frozen=True, slots=True)
class _Base:
    TAG: ClassVar[int]
    # field name -> exact type; `object` admits any plain value (already checked by the codec).
    TYPES: ClassVar[dict[str, type]]

    def to_body(self) -> dict[str, Value]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_body(cls, body: dict[str, Value]) -> Any:
        if body.keys() != cls.TYPES.keys():
            unknown = sorted(set(body) - set(cls.TYPES))
            if unknown:
                raise DecodeError(f"{cls.__name__}: unknown field {unknown[0]!r}")
            missing = sorted(set(cls.TYPES) - set(body))
            raise DecodeError(f"{cls.__name__}.{missing[0]}: missing")
        for field_name, kind in cls.TYPES.items():
            value = body[field_name]
            if type(value) is not kind or (kind is int and not 0 <= cast(int, value) <= _U63):
                _check(cls.__name__, field_name, kind, value)
        return cls(**body)

    def validate(self) -> None:
        """Raise `InvalidArgument` naming the field if this command cannot be encoded."""
        for field_name, kind in self.TYPES.items():
            value = getattr(self, field_name)
            # What `_check` passes without a word, decided inline (it runs for every field
            # of every write a caller makes); anything else gets its verdict from `_check`.
            if type(value) is kind:
                if kind is int:
                    if 0 <= cast(int, value) <= _U63:
                        continue
                elif kind is not str or cast(str, value).isascii():
                    continue
            elif kind is object:
                continue
            try:
                _check(type(self).__name__, field_name, kind, value)
            except DecodeError as exc:
                raise InvalidArgument(f"{type(self).__name__}.{field_name}", str(exc)) from None


# Apply advances cluster time by at most this much per tick, whatever the entry says: a sanity
# bound far above any tick interval (the runtime itself caps a tick at two of its intervals).
TICK_ELAPSED_MS_MAX = 600_000


@dataclass(frozen=True, slots=True)
class Tick(_Base):
    """Leader-stamped time: the only way time enters replicated state.

    It carries the leader's *monotonic* time elapsed since its previous tick, not a wall-clock
    reading: cluster time is the sum of those steps, so a wall clock stepped by a day (NTP, an
    operator, a VM restore) moves nothing, and a new leader continues from the last committed
    tick instead of from its own clock.
    """

    TAG = 1
    TYPES = {"n": int, "elapsed_ms": int}
    n: int
    elapsed_ms: int


@dataclass(frozen=True, slots=True)
class Leader(_Base):
    """A new leader's first entry; its log index is that leader's fencing token."""

    TAG = 2
    TYPES = {"node_id": str, "term": int}
    node_id: str
    term: int


@dataclass(frozen=True, slots=True)
class Put(_Base):
    TAG = 10
    TYPES = {"key": str, "value": bytes, "lease_id": int, "client_id": str, "seq": int}
    key: str
    value: bytes
    lease_id: int = 0
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Delete(_Base):
    TAG = 11
    TYPES = {"key": str, "client_id": str, "seq": int}
    key: str
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Cas(_Base):
    """Write `value` only if the key's mod revision is `expected_mod_revision` (0: absent)."""

    TAG = 12
    TYPES = {
        "key": str,
        "expected_mod_revision": int,
        "value": bytes,
        "lease_id": int,
        "client_id": str,
        "seq": int,
    }
    key: str
    expected_mod_revision: int
    value: bytes
    lease_id: int = 0
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class LeaseGrant(_Base):
    """Grant a lease of `ttl_ms` in tick time; `lease_id` 0 lets the state machine choose."""

    TAG = 20
    TYPES = {"ttl_ms": int, "lease_id": int, "client_id": str, "seq": int}
    ttl_ms: int
    lease_id: int = 0
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class LeaseKeepAlive(_Base):
    TAG = 21
    TYPES = {"lease_id": int, "client_id": str, "seq": int}
    lease_id: int
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class LeaseRevoke(_Base):
    TAG = 22
    TYPES = {"lease_id": int, "client_id": str, "seq": int}
    lease_id: int
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class UserCommand(_Base):
    """A command routed to the user machine registered under `machine`."""

    TAG = 30
    TYPES = {"machine": str, "body": object, "client_id": str, "seq": int}
    machine: str
    body: Value
    client_id: str = ""
    seq: int = 0


# ---------------------------------------------------------------------------- the fleet
# Tags 40..69 belong to the fleet (70..99 to locks and quotas). Client commands carry
# (client_id, seq); the internal ones (FLEET_INTERNAL_TAGS) only the leader's runtime proposes.


@dataclass(frozen=True, slots=True)
class FleetCreatePartition(_Base):
    """Desired state: partition `pid` with `rf` replicas of `heat` milli-units each."""

    TAG = 40
    TYPES = {"pid": str, "rf": int, "heat": int, "client_id": str, "seq": int}
    pid: str
    rf: int = 3
    heat: int = 1
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FleetSetRF(_Base):
    TAG = 41
    TYPES = {"pid": str, "rf": int, "client_id": str, "seq": int}
    pid: str
    rf: int
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FleetDeletePartition(_Base):
    TAG = 42
    TYPES = {"pid": str, "client_id": str, "seq": int}
    pid: str
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FleetCordon(_Base):
    """No new replicas on the node; the ones it holds stay."""

    TAG = 43
    TYPES = {"node_id": str, "client_id": str, "seq": int}
    node_id: str
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FleetUncordon(_Base):
    """Back to active (also ends a drain)."""

    TAG = 44
    TYPES = {"node_id": str, "client_id": str, "seq": int}
    node_id: str
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FleetDrain(_Base):
    """Move every replica off the node; it stays registered."""

    TAG = 45
    TYPES = {"node_id": str, "client_id": str, "seq": int}
    node_id: str
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FleetDecommission(_Base):
    """Drain, then mark the node decommissioned once it holds nothing."""

    TAG = 46
    TYPES = {"node_id": str, "client_id": str, "seq": int}
    node_id: str
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FleetAck(_Base):
    """An agent's answer to action `action_id`, fenced by the action's `token`."""

    TAG = 47
    TYPES = {
        "node_id": str,
        "action_id": str,
        "token": int,
        "ok": bool,
        "detail": str,
        "client_id": str,
        "seq": int,
    }
    node_id: str
    action_id: str
    token: int
    ok: bool = True
    detail: str = ""
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FleetCancelMove(_Base):
    """Cancel one move in flight (`operation`: its id, such as ``p6@1045``) while it copies:
    the copy is rolled back through the fenced action protocol (a new token; the partial copy
    removed from the target), `reason` journaled. After the cutover it is too late."""

    TAG = 48
    TYPES = {"operation": str, "reason": str, "client_id": str, "seq": int}
    operation: str
    reason: str = ""
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FleetReport(_Base):
    """Internal: the leader's batch of liveness changes, registrations, heat and lost replicas.

    `nodes` [[id, zone, weight, slots]], `heard` [id], `silent` [[id, since_ms]],
    `heat` [[pid, heat]], `lost` [[node_id, pid]], `sizes` [[pid, size_bytes]]; checked in
    apply (a bad batch is refused whole). `sizes` came later: an entry written without it
    decodes with none."""

    TAG = 50
    TYPES = {
        "nodes": list,
        "heard": list,
        "silent": list,
        "heat": list,
        "lost": list,
        "sizes": list,
    }
    nodes: list[Any]
    heard: list[Any]
    silent: list[Any]
    heat: list[Any]
    lost: list[Any]
    sizes: list[Any] = field(default_factory=list)

    @classmethod
    def from_body(cls, body: dict[str, Value]) -> Any:
        if "sizes" not in body:  # written before partition sizes existed
            body = {**body, "sizes": []}
        return _Base.from_body.__func__(cls, body)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class FleetPlan(_Base):
    """Internal: the solver's moves [[pid, source, target]] ("" for none), computed on the
    fleet state at log index `base_index`, and the split candidates it found; `more` says the
    plan had further moves (the leader solves again once these drain)."""

    TAG = 51
    TYPES = {"base_index": int, "moves": list, "splits": list, "more": bool}
    base_index: int
    moves: list[Any]
    splits: list[Any]
    more: bool = False


@dataclass(frozen=True, slots=True)
class FleetProviderRequest(_Base):
    """Internal: the leader asks the host's provider to ``provision`` a node for `subject` (a
    need such as ``zone-4``) in `zone` ("" = a zone the fleet lacks), or to ``decommission``
    node `subject`; apply derives the request id."""

    TAG = 52
    TYPES = {"kind": str, "subject": str, "zone": str}
    kind: str
    subject: str
    zone: str = ""


@dataclass(frozen=True, slots=True)
class FleetProviderResult(_Base):
    """Internal: the provider's answer to `request_id` (`result`: the new node id, or why not)."""

    TAG = 53
    TYPES = {"request_id": str, "ok": bool, "result": str}
    request_id: str
    ok: bool
    result: str = ""


@dataclass(frozen=True, slots=True)
class FleetOrphans(_Base):
    """Internal: copies agents report that no replica set holds, ``[[node_id, pid,
    since_ms]]`` (reported since tick time `since_ms`); apply removes each through a fenced
    ``remove_replica`` once it is still an orphan past the grace (`FleetMachine.orphans`)."""

    TAG = 54
    TYPES = {"orphans": list}
    orphans: list[Any]


FLEET_TAGS = frozenset(range(40, 70))
FLEET_INTERNAL_TAGS = frozenset(
    {
        FleetReport.TAG,
        FleetPlan.TAG,
        FleetProviderRequest.TAG,
        FleetProviderResult.TAG,
        FleetOrphans.TAG,
    }
)


# Locks (tags 70..89; see coreplane/core/machines/locks.py): sessions with a TTL in tick time
# hold locks or wait for them in a FIFO queue; a grant's log index is its fencing token.


@dataclass(frozen=True, slots=True)
class LockSessionGrant(_Base):
    """Open a lock session of `ttl_ms` in tick time; `session_id` 0 lets the machine choose."""

    TAG = 70
    TYPES = {"ttl_ms": int, "session_id": int, "client_id": str, "seq": int}
    ttl_ms: int
    session_id: int = 0
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class LockSessionKeepAlive(_Base):
    TAG = 71
    TYPES = {"session_id": int, "client_id": str, "seq": int}
    session_id: int
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class LockSessionClose(_Base):
    """End a session: its locks go to their next waiters, its queue places are dropped."""

    TAG = 72
    TYPES = {"session_id": int, "client_id": str, "seq": int}
    session_id: int
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class LockAcquire(_Base):
    """Take lock `name` for the session or join its FIFO queue."""

    TAG = 73
    TYPES = {"name": str, "session_id": int, "client_id": str, "seq": int}
    name: str
    session_id: int
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class LockRelease(_Base):
    """Release lock `name` (holder) or leave its queue (waiter)."""

    TAG = 74
    TYPES = {"name": str, "session_id": int, "client_id": str, "seq": int}
    name: str
    session_id: int
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class LockReleaseAcquire(_Base):
    """Release lock `release` of the session, then take `name` or join its queue: one log
    entry for a lock cycle whose release rides on the next acquire, so a grant's token is
    still its entry's index. Applied exactly as `LockRelease` then `LockAcquire` at this
    index, the release refused or not. With a `client_id`, the acquire is `seq` and the
    release `release_seq` of that session, each applied once (a retry, or a release already
    applied on its own, is answered from the session); `release_seq` 0 makes the pair one
    command of `seq`. The answer is the acquire's."""

    TAG = 75
    TYPES = {
        "release": str,
        "name": str,
        "session_id": int,
        "client_id": str,
        "seq": int,
        "release_seq": int,
    }
    release: str
    name: str
    session_id: int
    client_id: str = ""
    seq: int = 0
    release_seq: int = 0


LOCK_COMMANDS = (
    LockSessionGrant,
    LockSessionKeepAlive,
    LockSessionClose,
    LockAcquire,
    LockRelease,
    LockReleaseAcquire,
)


# Quotas (tags 90..99; see coreplane/core/machines/quotas.py): global rate limits per key,
# allotted to routers per epoch by the leader; an allotment's log index is its fencing token.


@dataclass(frozen=True, slots=True)
class QuotaSetLimit(_Base):
    """Set key's global limit (milli-requests/s) for at most `routers_max` routers."""

    TAG = 90
    TYPES = {"key": str, "limit_milli": int, "routers_max": int, "client_id": str, "seq": int}
    key: str
    limit_milli: int
    routers_max: int = 16
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class QuotaDeleteLimit(_Base):
    TAG = 91
    TYPES = {"key": str, "client_id": str, "seq": int}
    key: str
    client_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class QuotaAllot(_Base):
    """Internal: the leader's epoch `epoch` of key's limit: `shares` [[router, share_milli,
    demand_milli]] sorted by router; the routers (sorted) that may be spending their fallback
    share during this epoch, `reserved_now` while live epochs' shares are still spent and
    `reserved` after; valid `lease_ms` of tick time from its commit."""

    TAG = 92
    TYPES = {
        "key": str,
        "epoch": int,
        "lease_ms": int,
        "shares": list,
        "reserved": list,
        "reserved_now": list,
    }
    key: str
    epoch: int
    lease_ms: int
    shares: list[Any]
    reserved: list[Any]
    reserved_now: list[Any]


QUOTA_COMMANDS = (QuotaSetLimit, QuotaDeleteLimit, QuotaAllot)


Command: TypeAlias = (
    Tick
    | Leader
    | Put
    | Delete
    | Cas
    | LeaseGrant
    | LeaseKeepAlive
    | LeaseRevoke
    | UserCommand
    | LockSessionGrant
    | LockSessionKeepAlive
    | LockSessionClose
    | LockAcquire
    | LockRelease
    | LockReleaseAcquire
    | FleetCreatePartition
    | FleetSetRF
    | FleetDeletePartition
    | FleetCordon
    | FleetUncordon
    | FleetDrain
    | FleetDecommission
    | FleetAck
    | FleetCancelMove
    | FleetReport
    | FleetPlan
    | FleetProviderRequest
    | FleetProviderResult
    | FleetOrphans
    | QuotaSetLimit
    | QuotaDeleteLimit
    | QuotaAllot
)
# What `ControlPlane.propose` accepts: a client command, or its codec bytes.
Proposable: TypeAlias = bytes | Command
_BY_TAG: dict[int, Callable[[dict[str, Value]], Any]] = {
    cls.TAG: cls.from_body
    for cls in (
        Tick,
        Leader,
        Put,
        Delete,
        Cas,
        LeaseGrant,
        LeaseKeepAlive,
        LeaseRevoke,
        UserCommand,
        *LOCK_COMMANDS,
        FleetCreatePartition,
        FleetSetRF,
        FleetDeletePartition,
        FleetCordon,
        FleetUncordon,
        FleetDrain,
        FleetDecommission,
        FleetAck,
        FleetCancelMove,
        FleetReport,
        FleetPlan,
        FleetProviderRequest,
        FleetProviderResult,
        FleetOrphans,
        *QUOTA_COMMANDS,
    )
}


INTERNAL_TAGS: frozenset[int] = (
    frozenset({Tick.TAG, Leader.TAG, QuotaAllot.TAG}) | FLEET_INTERNAL_TAGS
)


def _refuse_internal(name: str) -> InvalidArgument:
    return InvalidArgument(
        "command",
        f"{name} is an internal command: only the runtime "
        "proposes it (ticks and leader entries are never accepted "
        "from a host or a client)",
    )


# class -> its field names sorted and a getter of their values in that order, when every
# field is a scalar (no `object` field): such a command's validated fields are already
# canonical, so `encode` packs them directly.
_SCALAR_FIELDS: dict[type, tuple[tuple[str, ...], Callable[[Any], Any]] | None] = {}


def _scalar_fields(cls: type[_Base]) -> tuple[tuple[str, ...], Callable[[Any], Any]] | None:
    if object in cls.TYPES.values():
        return None
    names = tuple(sorted(cls.TYPES))
    getter = operator.attrgetter(*names)
    if len(names) == 1:  # attrgetter of one name gives the value, not a tuple
        return names, lambda command: (getter(command),)
    return names, getter


def _encode_checked(command: _Base, internal: bool) -> bytes:
    cls = type(command)
    try:
        scalar = _SCALAR_FIELDS[cls]
    except KeyError:
        scalar = _SCALAR_FIELDS[cls] = _scalar_fields(cls)
    if scalar is None:
        return codec.encode(command.TAG, command.to_body(), internal=internal)
    names, getter = scalar
    return codec.encode_scalars(command.TAG, names, getter(command), internal=internal)


def encode(command: Command) -> bytes:
    """Canonical codec bytes of a client command; bad fields raise `InvalidArgument` naming
    them, and an internal command (`INTERNAL_TAGS`) is refused: use `encode_internal`."""
    if not isinstance(command, _Base):
        raise InvalidArgument("command", f"{type(command).__name__} is not a coreplane command")
    if command.TAG in INTERNAL_TAGS:
        raise _refuse_internal(type(command).__name__)
    command.validate()
    return _encode_checked(command, False)


def encode_internal(command: Command) -> bytes:
    """The runtime's own path: an internal command's bytes, carrying the marker apply checks."""
    if not isinstance(command, _Base) or command.TAG not in INTERNAL_TAGS:
        raise InvalidArgument("command", f"{type(command).__name__} is not an internal command")
    command.validate()
    return _encode_checked(command, True)


def decode_entry(data: bytes) -> tuple[Command, bool]:
    """Decode and validate a log entry: (command, whether it carries the runtime's marker)."""
    envelope = codec.decode(data)
    from_body = _BY_TAG.get(envelope.tag)
    if from_body is None:
        raise DecodeError(f"unknown command tag {envelope.tag}")
    command: Command = from_body(envelope.body)
    return command, envelope.internal


# A Put's fields in declaration order: (key, value, lease_id, client_id, seq).
PutFields: TypeAlias = tuple[str, bytes, int, str, int]


class EntryDecoder:
    """`decode_entry` for the apply thread, with the same answers, cheaper for the common case
    (`codec.FlatDecoder`: an unmarked envelope whose body holds only scalars), and `put`,
    which hands back a KV put's fields without building the `Put`. Anything the fast path
    does not take goes through `decode_entry` itself, so every refusal and its message are
    the generic ones. Not for sharing between threads (see `codec.FlatDecoder`)."""

    __slots__ = ("_flat",)

    def __init__(self) -> None:
        self._flat = codec.FlatDecoder()

    def put(self, data: bytes) -> PutFields | None:
        """The fields of the `Put` that ``decode_entry(data)`` gives as ``(Put, False)``;
        None if it gives anything else (another command, the runtime's marker, a refusal)."""
        flat = self._flat.decode(data, check_body=False)  # checked here, field by field
        if flat is None or flat[0] != Put.TAG:
            return None
        body = flat[1]
        if len(body) != 5:
            return None
        # `Put.from_body`'s checks: exactly these five keys, each of its exact type, the
        # integers in [0, 2**63). Strings decoded by msgpack are valid UTF-8 already. Five
        # entries holding these five str keys with scalar values: the body is plain, as
        # `codec.decode` requires.
        key, value = body.get("key"), body.get("value")
        lease_id, client_id, seq = body.get("lease_id"), body.get("client_id"), body.get("seq")
        if (
            type(key) is str
            and type(value) is bytes
            and type(lease_id) is int
            and type(client_id) is str
            and type(seq) is int
            and 0 <= lease_id <= _U63
            and 0 <= seq <= _U63
        ):
            return key, value, lease_id, client_id, seq
        return None

    def decode_entry(self, data: bytes) -> tuple[Command, bool]:
        """Exactly `decode_entry(data)`: the same command, or the same `DecodeError`."""
        flat = self._flat.decode(data)
        if flat is not None:
            from_body = _BY_TAG.get(flat[0])
            if from_body is not None:
                with contextlib.suppress(DecodeError):  # refused: `decode_entry` says why
                    command: Command = from_body(flat[1])
                    return command, False
        return decode_entry(data)


def decode(data: bytes) -> Command:
    """Decode and validate a command; any bad input raises `DecodeError`."""
    return decode_entry(data)[0]


def check_proposable(data: bytes) -> Command:
    """What a public path (``propose(bytes)``, the HTTP API) must call before proposing bytes:
    the decoded command, or `InvalidArgument` for bytes that do not decode or that carry an
    internal command or the runtime's marker."""
    try:
        command, internal = decode_entry(data)
    except DecodeError as exc:
        raise InvalidArgument("command", f"not a valid command encoding: {exc}") from None
    if internal or command.TAG in INTERNAL_TAGS:
        raise _refuse_internal(type(command).__name__)
    return command
