"""The replicated state machine: ``apply(entry, index) -> Applied``, snapshots and `state_hash`.

Every replica applies the same committed entries in the same order through this class and must
reach the same state, so apply depends only on the state and the entry: no clock (time comes
from `Tick` entries), no randomness, no iteration over unordered collections into results, no
floats. A refused command is an `Applied` with a stable `code`, the same on every replica; apply
raises only `InvariantViolation`, for a bug such as an index that goes backwards.

Client commands carry ``(client_id, seq)``. Each client session remembers the results of its last
`SESSION_WINDOW` sequence numbers, so a retried duplicate returns its original result without
applying twice, even when a client has several writes in flight; a seq older than the window is
refused (``seq_expired``) rather than risk applying it twice. Sessions are bounded and evicted
least-recently-used, an order that depends only on the log.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coreplane.core import codec, commands
from coreplane.core.codec import Value
from coreplane.core.machines.fleet import FleetConfig, FleetMachine
from coreplane.core.machines.kv import KVMachine, Limits
from coreplane.core.machines.locks import LockMachine
from coreplane.core.machines.quotas import QuotaMachine
from coreplane.core.machines.user import ApplyContext, UserMachine
from coreplane.errors import CommandRejected, DecodeError, InvalidArgument, require

__all__ = [
    "BATCHABLE_TAGS",
    "SESSIONS_MAX",
    "SESSION_WINDOW",
    "Applied",
    "StateMachine",
    "check_limits",
]

SNAPSHOT_FORMAT = 1
SESSION_WINDOW = 128
SESSIONS_MAX = 10_000
# Commands that may share a log entry (`StateMachine.apply_batch`): their effect does not
# depend on the entry's index (the KV's revision is its own counter).
BATCHABLE_TAGS = frozenset({commands.Put.TAG, commands.Delete.TAG, commands.Cas.TAG})
SNAPSHOT_BYTES_MAX = codec.SNAPSHOT_BYTES_MAX  # see there: the raft layer's cap is derived from it


@dataclass(frozen=True, slots=True)
class Applied:
    """The result of applying one entry: a plain `value`, or a refusal with a stable `code`."""

    ok: bool
    value: Value = None
    code: str = ""
    message: str = ""

    def unwrap(self) -> Value:
        """The value, or `CommandRejected(code)` if the state machine refused the command."""
        if not self.ok:
            raise CommandRejected(self.code, self.message)
        return self.value

    def to_plain(self) -> list[Value]:
        return [self.ok, self.value, self.code, self.message]

    @staticmethod
    def from_plain(plain: Any) -> Applied:
        if (
            not isinstance(plain, (list, tuple))
            or len(plain) != 4
            or type(plain[0]) is not bool
            or type(plain[2]) is not str
            or type(plain[3]) is not str
        ):
            raise DecodeError("an apply result is [ok, value, code, message]")
        return Applied(plain[0], plain[1], plain[2], plain[3])


_SLOTS = {name: Applied.__dict__[name].__set__ for name in ("ok", "value", "code", "message")}


def _applied_ok(
    value: Value,
    _new: Callable[[type[Applied]], Applied] = object.__new__,
    _set_ok: Callable[[Applied, bool], None] = _SLOTS["ok"],
    _set_value: Callable[[Applied, Value], None] = _SLOTS["value"],
    _set_code: Callable[[Applied, str], None] = _SLOTS["code"],
    _set_message: Callable[[Applied, str], None] = _SLOTS["message"],
) -> Applied:
    """``Applied(True, value)``, built through its slots: the frozen dataclass's __init__
    sets each field with ``object.__setattr__`` (a lookup per field), and every applied
    write makes one. Equal to the constructor's (test_apply_fast_path)."""
    applied = _new(Applied)
    _set_ok(applied, True)
    _set_value(applied, value)
    _set_code(applied, "")
    _set_message(applied, "")
    return applied


def check_limits(command: commands.Command, entry_bytes: int, limits: Limits) -> None:
    """Refuse, before it is proposed, a command that apply would refuse for its size alone.

    Raises `InvalidArgument` naming the limit. Apply re-checks every one of these (the entry
    size here, the key, value and TTL bounds in `KVMachine`), so this only moves a refusal that
    is certain from after replication and fsync on every node to the caller's own thread.
    """
    if entry_bytes > limits.entry_bytes_max:
        raise InvalidArgument(
            "limits.entry_bytes_max",
            f"the command encodes to {entry_bytes} bytes, over the "
            f"{limits.entry_bytes_max}-byte limit of one log entry",
        )
    key = getattr(command, "key", None)
    if isinstance(key, str):
        if not key:
            raise InvalidArgument("key", "must not be empty")
        if (  # UTF-8 takes at most 4 bytes a character: most keys need no encoding here
            len(key) * 4 > limits.key_bytes_max
            and len(key.encode("utf-8", "surrogatepass")) > limits.key_bytes_max
        ):
            raise InvalidArgument(
                "limits.key_bytes_max", f"key is over the {limits.key_bytes_max}-byte limit"
            )
    value = getattr(command, "value", None)
    if isinstance(value, bytes) and len(value) > limits.value_bytes_max:
        raise InvalidArgument(
            "limits.value_bytes_max",
            f"value is {len(value)} bytes, over the {limits.value_bytes_max}-byte limit",
        )
    if isinstance(command, commands.LeaseGrant) and not (
        limits.ttl_ms_min <= command.ttl_ms <= limits.ttl_ms_max
    ):
        raise InvalidArgument(
            "ttl_ms",
            f"must be in [{limits.ttl_ms_min}, {limits.ttl_ms_max}]"
            " (limits.ttl_ms_min, limits.ttl_ms_max)",
        )


@dataclass(slots=True)
class _Session:
    results: dict[int, list[Value]]
    floor: int  # every seq <= floor has been forgotten
    # results' seqs in insertion order (derived, not snapshotted), to forget the oldest in
    # O(1): `next(iter(results))` walks past every slot deleted since the dict last resized.
    order: deque[int] = field(default_factory=deque)


class StateMachine:
    """The whole replicated state and the one deterministic way to change it."""

    def __init__(self, *, limits: Limits | None = None, fleet: FleetConfig | None = None) -> None:
        self.limits = limits or Limits()
        self.kv = KVMachine(self.limits)
        self.locks = LockMachine()
        self.quotas = QuotaMachine()
        self.fleet = FleetMachine(fleet)  # built-in: nodes, partitions, operations (DESIGN 7)
        self.applied_index = 0
        self.tick_n = 0
        self.tick_ms = 0
        self.leader_token = 0  # log index of the last Leader entry: the fencing token
        self.leader_node = ""
        self.leader_term = 0
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self.machine_states: dict[str, Value] = {}
        self._machines: dict[str, UserMachine] = {}
        self._decoder = commands.EntryDecoder()  # apply's decoder (used under apply's lock)

    # ------------------------------------------------------------------------ user machines

    def register(self, name: str, machine: Any = None, **functions: Any) -> None:
        """Register a user machine (an object, or ``apply=``/``on_tick=``/``initial=``).

        Every replica must register the same machines before applying entries for them.
        """
        if name in self._machines:
            raise InvalidArgument("name", f"a machine named {name!r} is already registered")
        user = UserMachine.of(name, machine, **functions)
        codec.encode_value(user.initial)  # plain data only, checked once here
        self._machines[name] = user
        self.machine_states.setdefault(name, user.initial)

    # ------------------------------------------------------------------------ apply

    def apply(self, entry: bytes, index: int, decoded: commands.Command | None = None) -> Applied:
        """Apply one committed entry at log `index`; deterministic, never raises for bad input.

        `decoded` is an optional shortcut for the node that proposed the entry: the KV write
        (`BATCHABLE_TAGS`) it encoded into exactly these bytes, so it need not decode them
        again. Those commands' fields have exact types (str, bytes, int), checked by
        `commands.encode`, so decoding the bytes gives an equal command; anything else is
        decoded as usual."""
        require(
            index > self.applied_index,
            f"apply at index {index} after {self.applied_index}: the log went backwards",
        )
        self.applied_index = index
        return self._apply_one(entry, index, False, decoded)

    def apply_batch(
        self,
        entries: list[bytes],
        index: int,
        decoded: list[commands.Command | None] | None = None,
    ) -> list[Applied]:
        """Apply the commands of one batch entry at log `index`, in order, each exactly as if
        it were an entry of its own (sessions, limits, refusals), with one result each.

        Commands share the batch's index, so only commands whose effect does not depend on
        the index may be batched (`BATCHABLE_TAGS`: KV writes; fencing tokens, lock grants,
        leader entries and user machines see the index); any other is refused with
        ``not_batchable``, alike on every replica."""
        require(
            index > self.applied_index,
            f"apply at index {index} after {self.applied_index}: the log went backwards",
        )
        self.applied_index = index
        put, size_max = self._put, self.limits.entry_bytes_max
        out: list[Applied] = []
        if decoded is None or len(decoded) != len(entries):
            # A follower's batch: the loop of `_apply_one` with its Put case in line.
            put_fields = self._decoder.put
            for entry in entries:
                fields = put_fields(entry) if len(entry) <= size_max else None
                if fields is not None:
                    out.append(put(*fields))
                else:
                    out.append(self._apply_one(entry, index, True, None))
            return out
        # The proposer's batch: its own Puts straight to `_put` (as `_apply_one` does).
        put_type = commands.Put
        for entry, known in zip(entries, decoded, strict=True):
            if type(known) is put_type and len(entry) <= size_max:
                out.append(put(known.key, known.value, known.lease_id, known.client_id, known.seq))
            else:
                out.append(self._apply_one(entry, index, True, known))
        return out

    def _apply_one(
        self, entry: bytes, index: int, batched: bool, known: commands.Command | None
    ) -> Applied:
        if len(entry) > self.limits.entry_bytes_max:
            return Applied(
                False, None, "entry_too_large", f"{len(entry)} bytes, over limits.entry_bytes_max"
            )
        # The common entry, a KV put (the proposer's own, or decoded from bytes that hold a
        # valid unmarked Put), skips the command object: `_put` is what the steps below do
        # for a Put, field for field (tests/property/test_apply_fast_path.py).
        if known is None:
            fields = self._decoder.put(entry)
            if fields is not None:
                return self._put(*fields)
        elif type(known) is commands.Put:
            return self._put(known.key, known.value, known.lease_id, known.client_id, known.seq)
        command: commands.Command
        if known is not None and known.TAG in BATCHABLE_TAGS:
            command, internal = known, False  # the proposer's own KV write (see `apply`)
        else:
            try:
                command, internal = self._decoder.decode_entry(entry)
            except DecodeError as exc:
                return Applied(False, None, "decode_error", str(exc))
        if internal != (command.TAG in commands.INTERNAL_TAGS):
            # An internal command without the runtime's marker (a forged entry), or a client
            # command wearing it: refused alike on every replica.
            return Applied(
                False,
                None,
                "internal_only" if not internal else "not_internal",
                f"{type(command).__name__} {'lacks' if not internal else 'carries'}"
                " the runtime's marker",
            )
        if batched and command.TAG not in BATCHABLE_TAGS:
            return Applied(
                False,
                None,
                "not_batchable",
                f"{type(command).__name__} depends on its log index and cannot share an entry",
            )
        if isinstance(command, commands.LockReleaseAcquire) and command.release_seq:
            return self._release_acquire(command, index)
        return self._apply_session(command, index)

    def _put(self, key: str, value: bytes, lease_id: int, client_id: str, seq: int) -> Applied:
        """A valid `Put` without the command object: `_apply_session` then `_dispatch` of
        ``Put(key, value, lease_id, client_id, seq)``, inlined (a Put, unmarked and batchable,
        passes every check of `_apply_one` before them, at any index)."""
        if client_id:
            begun = self._session_begin(client_id, seq)
            if type(begun) is Applied:
                return begun
        try:
            revision = self.kv.put(key, value, lease_id)
        except CommandRejected as exc:
            result = Applied(False, None, exc.code, exc.message)
            plain = result.to_plain()
        else:
            result, plain = _applied_ok(revision), [True, revision, "", ""]
        if client_id:
            self._session_end(begun, seq, plain)  # type: ignore[arg-type]
        return result

    def _release_acquire(self, command: commands.LockReleaseAcquire, index: int) -> Applied:
        """A `LockReleaseAcquire` whose parts carry seqs of their own: applied as its
        `LockRelease` (`release_seq`) then its `LockAcquire` (`seq`) at this index, each
        through the session exactly as if it were an entry of its own; the acquire's answer."""
        client_id = command.client_id
        if client_id and command.release_seq == command.seq:
            return Applied(
                False, None, "seq_conflict", "release_seq must differ from seq (two commands)"
            )
        sid, release_seq = command.session_id, command.release_seq
        self._apply_session(
            commands.LockRelease(command.release, sid, client_id, release_seq), index
        )
        acquire = commands.LockAcquire(command.name, sid, client_id, command.seq)
        return self._apply_session(acquire, index)

    def _apply_session(self, command: commands.Command, index: int) -> Applied:
        """Apply through the client's session: a remembered (client_id, seq) is answered from
        it, a forgotten one refused, a new one executed once and remembered."""
        client_id: str = getattr(command, "client_id", "")
        if not client_id:
            return self._dispatch(command, index)
        seq: int = command.seq  # type: ignore[union-attr]
        begun = self._session_begin(client_id, seq)
        if type(begun) is Applied:
            return begun
        result = self._dispatch(command, index)
        self._session_end(begun, seq, result.to_plain())  # type: ignore[arg-type]
        return result

    def _session_begin(self, client_id: str, seq: int) -> Applied | _Session:
        """The answer to (client_id, seq) if the session settles it (a remembered result, or
        a refusal of a forgotten seq); else the session that will remember the result, made
        if new (evicting the least recently used past `SESSIONS_MAX`)."""
        session = self.sessions.get(client_id)
        if session is not None:
            self.sessions.move_to_end(client_id)
            cached = session.results.get(seq)
            if cached is not None:
                return Applied.from_plain(cached)
            if seq <= session.floor:
                return Applied(
                    False,
                    None,
                    "seq_expired",
                    f"seq {seq} of {client_id!r} is older than the session window",
                )
        else:
            session = _Session({}, 0)
            self.sessions[client_id] = session
            if len(self.sessions) > SESSIONS_MAX:
                self.sessions.popitem(last=False)
        return session

    @staticmethod
    def _session_end(session: _Session, seq: int, plain: list[Value]) -> None:
        """Remember `plain` (an `Applied.to_plain`) as seq's answer in `session`, forgetting
        the oldest past the window."""
        results = session.results
        results[seq] = plain
        session.order.append(seq)
        if len(results) > SESSION_WINDOW:
            # Forget the earliest-applied seq (O(1); insertion order depends only on the log).
            # Anything at or below the floor that is not remembered is refused, never re-run.
            oldest = session.order.popleft()
            del results[oldest]
            if oldest > session.floor:
                session.floor = oldest

    def _dispatch(self, command: commands.Command, index: int) -> Applied:
        try:
            return Applied(True, self._execute(command, index))
        except CommandRejected as exc:
            return Applied(False, None, exc.code, exc.message)

    def _execute(self, command: commands.Command, index: int) -> Value:
        kv = self.kv
        if command.TAG in commands.FLEET_TAGS:
            return self.fleet.execute(command, index, self.tick_ms)
        match command:
            case commands.Put(key=key, value=value, lease_id=lease_id):
                return kv.put(key, value, lease_id)
            case commands.Tick():
                return self._tick(command, index)
            case commands.Delete(key=key):
                return kv.delete(key)
            case commands.Cas(
                key=key, expected_mod_revision=expected, value=value, lease_id=lease_id
            ):
                return kv.cas(key, expected, value, lease_id)
            case commands.LeaseGrant(ttl_ms=ttl_ms, lease_id=lease_id):
                return kv.lease_grant(ttl_ms, lease_id, self.tick_ms)
            case commands.LeaseKeepAlive(lease_id=lease_id):
                return kv.lease_keep_alive(lease_id, self.tick_ms)
            case commands.LeaseRevoke(lease_id=lease_id):
                return kv.lease_revoke(lease_id)
            case commands.Leader(node_id=node_id, term=term):
                if term < self.leader_term:
                    raise CommandRejected(
                        "stale_leader", f"term {term} is older than {self.leader_term}"
                    )
                self.leader_token, self.leader_node, self.leader_term = index, node_id, term
                self.fleet.on_leader(index, self.tick_ms)
                return index
            case commands.UserCommand(machine=name, body=body, client_id=client_id):
                return self._user_apply(name, body, index, client_id)
            case commands.LockSessionGrant(ttl_ms=ttl_ms, session_id=session_id):
                return self.locks.session_grant(ttl_ms, session_id, self.tick_ms)
            case commands.LockSessionKeepAlive(session_id=session_id):
                return self.locks.session_keep_alive(session_id, self.tick_ms)
            case commands.LockSessionClose(session_id=session_id):
                return self.locks.session_close(session_id, index)
            case commands.LockAcquire(name=name, session_id=session_id):
                return self.locks.acquire(name, session_id, index)
            case commands.LockRelease(name=name, session_id=session_id):
                return self.locks.release(name, session_id, index)
            case commands.LockReleaseAcquire(
                release=release, name=name, session_id=session_id
            ):  # one seq for both (release_seq 0; see `_release_acquire` otherwise)
                with contextlib.suppress(CommandRejected):  # as a refused LockRelease entry
                    self.locks.release(release, session_id, index)
                return self.locks.acquire(name, session_id, index)
            case commands.QuotaSetLimit(key=key, limit_milli=limit, routers_max=routers_max):
                return self.quotas.set_limit(key, limit, routers_max)
            case commands.QuotaDeleteLimit(key=key):
                return self.quotas.delete_limit(key)
            case commands.QuotaAllot(
                key=key,
                epoch=epoch,
                lease_ms=lease_ms,
                shares=shares,
                reserved=reserved,
                reserved_now=reserved_now,
            ):
                return self.quotas.allot(
                    key,
                    epoch,
                    lease_ms,
                    shares,
                    reserved,
                    reserved_now,
                    index,
                    self.tick_ms,
                    self.leader_token,
                )
        raise CommandRejected("unknown_command", type(command).__name__)  # pragma: no cover

    def _tick(self, tick: commands.Tick, index: int) -> Value:
        if tick.n <= self.tick_n:
            raise CommandRejected("stale_tick", f"tick {tick.n} is not after {self.tick_n}")
        # Cluster time is the sum of the leaders' monotonic steps, each bounded: no clock, wall
        # or monotonic, stepped or skewed, can move it backwards or more than the bound at once.
        step_ms = min(tick.elapsed_ms, commands.TICK_ELAPSED_MS_MAX)
        self.tick_n, self.tick_ms = tick.n, self.tick_ms + step_ms
        expired = self.kv.expire(self.tick_ms)
        self.locks.expire(self.tick_ms, index)  # waiters granted at this tick's index
        self.fleet.on_tick(index, self.tick_ms)
        ctx = ApplyContext(index, self.tick_ms, "")
        for name in sorted(self._machines):
            machine = self._machines[name]
            if machine.on_tick is None:
                continue
            try:
                self.machine_states[name] = machine.on_tick(self.machine_states[name], ctx)
            except Exception:  # noqa: BLE001 - a failing on_tick fails alike everywhere
                continue
        return {"n": self.tick_n, "tick_ms": self.tick_ms, "expired_leases": expired}

    def _user_apply(self, name: str, body: Value, index: int, client_id: str) -> Value:
        machine = self._machines.get(name)
        if machine is None:
            raise CommandRejected("unknown_machine", f"no machine registered as {name!r}")
        ctx = ApplyContext(index, self.tick_ms, client_id)
        try:
            new_state, result = machine.apply(self.machine_states[name], body, ctx)
        except CommandRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - deterministic: same code, same exception
            raise CommandRejected("machine_error", f"{type(exc).__name__}: {exc}") from None
        try:
            codec.encode_value(result)
        except InvalidArgument as exc:
            raise CommandRejected("machine_error", f"result is not plain data: {exc}") from None
        self.machine_states[name] = new_state
        return result

    # ------------------------------------------------------------------------ snapshots

    def to_plain(self) -> dict[str, Value]:
        return self._capture_plain()()

    def _capture_plain(self, *, encoded: bool = False) -> Callable[[], dict[str, Value]]:
        """The state's plain form, captured now and built by the returned thunk; `encoded`:
        with the KV rows as a `codec.EncodedList` (for `codec.encode_snapshot`)."""
        kv = self.kv.capture(encoded=encoded)
        locks = self.locks.capture()
        quotas = self.quotas.capture() if self.quotas.used else None
        fleet = self.fleet.snapshot_capture()
        sessions = [(cid, s.floor, list(s.results.items())) for cid, s in self.sessions.items()]
        # User states are encoded now: a machine may (against its contract) mutate in place.
        machines = codec.encode_value(self.machine_states, max_bytes=SNAPSHOT_BYTES_MAX)
        head = {
            "format": SNAPSHOT_FORMAT,
            "applied_index": self.applied_index,
            "tick": [self.tick_n, self.tick_ms],
            "leader": [self.leader_token, self.leader_node, self.leader_term],
        }

        def build() -> dict[str, Value]:
            return {
                **head,
                "kv": kv(),
                **({"fleet": fleet_plain} if (fleet_plain := fleet()) is not None else {}),
                "sessions": [
                    [cid, floor, [[seq, r] for seq, r in results]]
                    for cid, floor, results in sessions
                ],
                "machines": codec.decode_value(machines, max_bytes=SNAPSHOT_BYTES_MAX),
                # Only once locks were used: states without them keep the snapshot bytes and
                # hashes they had before the lock machine existed (restore reads it as empty).
                **(
                    {"locks": lock_plain}
                    if (lock_plain := locks())["sessions"] or lock_plain["next_session_id"] != 1
                    else {}
                ),
                # Likewise for quotas: only once a limit exists (restore reads it as empty).
                **({"quotas": quotas()} if quotas is not None else {}),
            }

        return build

    def snapshot(self) -> bytes:
        """Canonical bytes of the whole state; equal states give equal bytes."""
        return self.snapshot_view()()

    def snapshot_view(self) -> Callable[[], bytes]:
        """Capture the state cheaply on the apply thread; call the result anywhere to encode.

        The capture costs pointer copies (records are immutable), so taking a snapshot blocks
        apply for milliseconds rather than for the whole encode.
        """
        try:
            build = self._capture_plain(encoded=True)
        except InvalidArgument as exc:  # a user machine stored something that is not plain
            raise InvalidArgument("machine_states", f"state is not plain data: {exc}") from exc

        def encode() -> bytes:
            # Its own cap, not a command's 16 MiB: a larger state must still compact its log
            # (it once could not: every attempt failed after a full encode, on every replica).
            return codec.encode_snapshot(build(), max_bytes=SNAPSHOT_BYTES_MAX)

        return encode

    def state_hash(self) -> str:
        """A stable digest: replicas agree on it at the same applied index."""
        return hashlib.blake2b(self.snapshot(), digest_size=16).hexdigest()

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's; registered machines stay registered."""
        plain = codec.decode_value(data, max_bytes=SNAPSHOT_BYTES_MAX)
        try:
            if plain["format"] != SNAPSHOT_FORMAT:
                raise DecodeError(f"unknown snapshot format {plain['format']!r}")
            kv = KVMachine.from_plain(plain["kv"], self.limits)
            locks = LockMachine.from_plain(plain.get("locks"), self.locks.limits)
            quotas = QuotaMachine.from_plain(plain.get("quotas"), self.quotas.limits)
            kind = type(self.fleet)  # a subclass given to this replica stays in force
            fleet = (
                kind.from_plain(plain["fleet"], self.fleet.config)
                if "fleet" in plain
                else kind(self.fleet.config)
            )
            tick_n, tick_ms = plain["tick"]
            token, node, term = plain["leader"]
            sessions: OrderedDict[str, _Session] = OrderedDict()
            for cid, floor, results in plain["sessions"]:
                remembered = {seq: r for seq, r in results}
                sessions[cid] = _Session(remembered, floor, deque(remembered))
            machines = dict(plain["machines"])
            applied_index = plain["applied_index"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"snapshot is malformed: {exc!r}") from exc
        self.kv, self.sessions, self.locks, self.fleet = kv, sessions, locks, fleet
        self.quotas = quotas
        self.applied_index, self.tick_n, self.tick_ms = applied_index, tick_n, tick_ms
        self.leader_token, self.leader_node, self.leader_term = token, node, term
        for name, user in self._machines.items():
            machines.setdefault(name, user.initial)
        self.machine_states = machines

    @classmethod
    def from_snapshot(cls, data: bytes, *, limits: Limits | None = None) -> StateMachine:
        machine = cls(limits=limits)
        machine.restore(data)
        return machine
