"""The built-in KV machine and its leases: the etcd-like primitive everything else leans on.

A global `revision` grows with every write; each key keeps its create and mod revisions and a
version. Leases live in tick time: a lease granted with a TTL expires when a committed tick
reaches its deadline, and the keys attached to it are deleted then (as etcd does). Every map is
bounded and a command past a bound is refused with a stable code, identically on every replica.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from coreplane.core import codec
from coreplane.core.codec import Value
from coreplane.core.machines.history import History
from coreplane.errors import CommandRejected, DecodeError, InvalidArgument

__all__ = [
    "RECORD_OVERHEAD_BYTES",
    "KVMachine",
    "KeyRecord",
    "Lease",
    "Limits",
    "Record",
    "record_bytes",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on replicated state; at a bound apply refuses deterministically.

    Every node of a cluster must use the same limits (they decide what apply refuses). The
    size bounds are also checked before a proposal leaves the node (`check_entry`), so an
    oversize command is refused at the call instead of being replicated and fsynced first.
    """

    key_bytes_max: int = 4096
    value_bytes_max: int = 1024 * 1024
    keys_max: int = 2_000_000
    leases_max: int = 100_000
    ttl_ms_min: int = 1_000
    ttl_ms_max: int = 7 * 24 * 3600 * 1000
    keys_per_lease_max: int = 100_000
    # One log entry, encoded: far below what one AppendEntries frame carries, so an entry that
    # passes can always be replicated (a 20 MB entry once deposed a leader that tried).
    entry_bytes_max: int = 2 * 1024 * 1024
    # The stored keys and values (`KVMachine.stored_bytes`): a write that would grow them past
    # this is refused (`space_exceeded`), as etcd's NOSPACE alarm refuses writes at its quota.
    # The whole state is one snapshot, capped at `codec.SNAPSHOT_BYTES_MAX` (1 GiB): a state
    # past that cannot be snapshotted, so its log is never compacted and grows until the disk
    # is full. Half the cap leaves room for leases, sessions, fleet and user machines. (Last,
    # so that a positional ``Limits(...)`` keeps its meaning.)
    kv_bytes_max: int = codec.SNAPSHOT_BYTES_MAX // 2

    def __post_init__(self) -> None:
        for name in (
            "key_bytes_max",
            "value_bytes_max",
            "keys_max",
            "leases_max",
            "ttl_ms_min",
            "ttl_ms_max",
            "keys_per_lease_max",
            "entry_bytes_max",
            "kv_bytes_max",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
                raise InvalidArgument(
                    f"limits.{name}", f"must be a positive integer, got {value!r}"
                )
        if self.ttl_ms_min > self.ttl_ms_max:
            raise InvalidArgument("limits.ttl_ms_min", "must not exceed limits.ttl_ms_max")
        if self.kv_bytes_max > codec.SNAPSHOT_BYTES_MAX // 2:
            raise InvalidArgument(
                "limits.kv_bytes_max",
                f"must be at most {codec.SNAPSHOT_BYTES_MAX // 2} (half the "
                f"{codec.SNAPSHOT_BYTES_MAX}-byte snapshot cap), got {self.kv_bytes_max}",
            )
        if self.entry_bytes_max < self.value_bytes_max + self.key_bytes_max:
            raise InvalidArgument(
                "limits.entry_bytes_max",
                "must hold the largest key and value (>= value_bytes_max + key_bytes_max)",
            )


class KeyRecord(NamedTuple):
    """One key's record, by field name: what `KVMachine.record` returns."""

    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease_id: int


# The live map stores each record as a plain tuple in KeyRecord's field order, not as a
# KeyRecord: CPython stops GC-tracking a plain tuple of atomics (bytes, ints), but never a
# tuple subclass or a slots dataclass. Measured with 1M keys: a full collection took 120 ms
# with records as dataclasses or NamedTuples and 1.4 ms with plain tuples, and one falls due
# after every ~25% growth of long-lived objects (each write makes a new record), a pause a
# leader's tick thread cannot afford next to its 274 ms lease. Records are immutable either
# way, so a snapshot view can share them with the live state (copy-on-write).
Record = tuple[bytes, int, int, int, int]
_VALUE: Final = 0  # field positions in a Record (Final: mypy then types each field)
_CREATE: Final = 1
_MOD: Final = 2
_VERSION: Final = 3
_LEASE: Final = 4
# What a record costs in a snapshot beyond its key and value: its row's array, string and bin
# headers and four integers, at most 1 + 5 + 5 + 4 * 9 bytes. Counted per key, so a state of
# many tiny keys meets `kv_bytes_max` before its snapshot meets the cap.
RECORD_OVERHEAD_BYTES: Final = 48


def record_bytes(key: str, value: bytes) -> int:
    """What one key counts against `Limits.kv_bytes_max`: UTF-8 key, value and overhead."""
    key_bytes = len(key) if key.isascii() else len(key.encode("utf-8", "surrogatepass"))
    return key_bytes + len(value) + RECORD_OVERHEAD_BYTES


@dataclass(slots=True)
class Lease:
    ttl_ms: int
    expires_ms: int
    keys: set[str] = field(default_factory=set)


class KVMachine:
    """Keys, revisions and leases. Mutated only through the apply methods below."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.history = History()  # for watches: derived, not snapshotted (history.py)
        self.revision = 0
        self.keys: dict[str, Record] = {}  # plain tuples: see Record
        # sum of `record_bytes` over `keys`: derived (rebuilt by from_plain), never snapshotted
        self.stored_bytes = 0
        self.leases: dict[int, Lease] = {}
        self.next_lease_id = 1
        self._sorted_keys: list[str] | None = None  # lazily rebuilt for prefix ranges
        self._next_expiry_ms: int | None = None  # cached min(expires_ms); None = recompute

    # ------------------------------------------------------------------------- reads

    def get(self, key: str) -> tuple[bytes, int] | None:
        record = self.keys.get(key)
        return None if record is None else (record[_VALUE], record[_MOD])

    def record(self, key: str) -> KeyRecord | None:
        """The whole record of `key` by field name (revisions, version, lease)."""
        record = self.keys.get(key)
        return None if record is None else KeyRecord(*record)

    def range(self, prefix: str, limit: int = 0) -> list[tuple[str, bytes, int]]:
        """Keys starting with `prefix`, in key order, as ``(key, value, mod_revision)``."""
        if self._sorted_keys is None:
            self._sorted_keys = sorted(self.keys)
        keys = self._sorted_keys
        out: list[tuple[str, bytes, int]] = []
        for i in range(bisect.bisect_left(keys, prefix), len(keys)):
            key = keys[i]
            if not key.startswith(prefix) or (limit and len(out) >= limit):
                break
            record = self.keys[key]
            out.append((key, record[_VALUE], record[_MOD]))
        return out

    # ------------------------------------------------------------------------- writes

    def _check_key(self, key: str) -> None:
        if not key:
            raise CommandRejected("key_empty", "key must not be empty")
        if len(key.encode("utf-8", "surrogatepass")) > self.limits.key_bytes_max:
            raise CommandRejected("key_too_large", f"key over {self.limits.key_bytes_max} bytes")

    def _check_write(self, key: str, value: bytes, lease_id: int) -> None:
        self._check_key(key)
        if len(value) > self.limits.value_bytes_max:
            raise CommandRejected(
                "value_too_large", f"value over {self.limits.value_bytes_max} bytes"
            )
        if key not in self.keys and len(self.keys) >= self.limits.keys_max:
            raise CommandRejected("too_many_keys", f"at the bound of {self.limits.keys_max} keys")
        if lease_id:
            lease = self.leases.get(lease_id)
            if lease is None:
                raise CommandRejected("lease_not_found", f"lease {lease_id} does not exist")
            if key not in lease.keys and len(lease.keys) >= self.limits.keys_per_lease_max:
                raise CommandRejected("lease_full", f"lease {lease_id} holds too many keys")

    def put(self, key: str, value: bytes, lease_id: int) -> int:
        keys, limits = self.keys, self.limits
        record = keys.get(key)
        # `_check_write`'s checks, answered here when they all pass without encoding the key
        # (UTF-8 takes at most 4 bytes a character, surrogates included); else it decides.
        if (
            lease_id
            or not key
            or len(key) * 4 > limits.key_bytes_max
            or len(value) > limits.value_bytes_max
            or (record is None and len(keys) >= limits.keys_max)
        ):
            self._check_write(key, value, lease_id)
        if record is not None:
            grow = len(value) - len(record[_VALUE])
        elif key.isascii():  # `record_bytes`, inlined: every put of a new key runs it
            grow = len(key) + len(value) + RECORD_OVERHEAD_BYTES
        else:
            grow = record_bytes(key, value)
        if grow > 0 and self.stored_bytes + grow > limits.kv_bytes_max:
            raise CommandRejected(
                "space_exceeded",
                f"the keys and values stored would pass limits.kv_bytes_max "
                f"({self.stored_bytes} + {grow} > {limits.kv_bytes_max} bytes); delete keys "
                "or shrink values first (writes that do not grow the state still apply)",
            )
        self.stored_bytes += grow
        revision = self.revision = self.revision + 1
        if record is None:
            keys[key] = (value, revision, revision, 1, lease_id)
            self._sorted_keys = None
        else:
            if record[_LEASE] and record[_LEASE] != lease_id:
                self._detach(key, record[_LEASE])
            keys[key] = (value, record[_CREATE], revision, record[_VERSION] + 1, lease_id)
        if lease_id:
            self.leases[lease_id].keys.add(key)
        self.history.record(revision, "put", key, value, revision)
        return revision

    def cas(self, key: str, expected_mod_revision: int, value: bytes, lease_id: int) -> int:
        record = self.keys.get(key)
        actual = 0 if record is None else record[_MOD]
        if actual != expected_mod_revision:
            raise CommandRejected(
                "compare_failed", f"mod revision is {actual}, not {expected_mod_revision}"
            )
        return self.put(key, value, lease_id)

    def delete(self, key: str) -> int:
        """Delete a key; returns how many were deleted (0 or 1). Only a deletion bumps revision."""
        self._check_key(key)
        if key not in self.keys:
            return 0
        self.revision += 1
        self._remove(key)
        self.history.record(self.revision, "delete", key, b"", self.revision)
        return 1

    def _remove(self, key: str) -> None:
        record = self.keys.pop(key)
        self.stored_bytes -= record_bytes(key, record[_VALUE])
        self._sorted_keys = None
        if record[_LEASE]:
            self._detach(key, record[_LEASE])

    def _detach(self, key: str, lease_id: int) -> None:
        lease = self.leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    # ------------------------------------------------------------------------- leases

    def lease_grant(self, ttl_ms: int, lease_id: int, now_ms: int) -> int:
        if not self.limits.ttl_ms_min <= ttl_ms <= self.limits.ttl_ms_max:
            raise CommandRejected(
                "ttl_out_of_range",
                f"ttl_ms must be in [{self.limits.ttl_ms_min}, {self.limits.ttl_ms_max}]",
            )
        if len(self.leases) >= self.limits.leases_max:
            raise CommandRejected("too_many_leases", f"at the bound of {self.limits.leases_max}")
        if lease_id == 0:
            while self.next_lease_id in self.leases:
                self.next_lease_id += 1
            lease_id = self.next_lease_id
            self.next_lease_id += 1
        elif lease_id in self.leases:
            raise CommandRejected("lease_exists", f"lease {lease_id} already exists")
        self.leases[lease_id] = Lease(ttl_ms, now_ms + ttl_ms)
        self._next_expiry_ms = None
        return lease_id

    def lease_keep_alive(self, lease_id: int, now_ms: int) -> int:
        lease = self.leases.get(lease_id)
        if lease is None:
            raise CommandRejected("lease_not_found", f"lease {lease_id} does not exist")
        lease.expires_ms = now_ms + lease.ttl_ms
        self._next_expiry_ms = None
        return lease.expires_ms

    def lease_revoke(self, lease_id: int) -> int:
        """Revoke a lease and delete its keys in one revision; returns keys deleted."""
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            raise CommandRejected("lease_not_found", f"lease {lease_id} does not exist")
        self._next_expiry_ms = None
        if lease.keys:
            self.revision += 1
            for key in sorted(lease.keys):
                record = self.keys.pop(key)
                self.stored_bytes -= record_bytes(key, record[_VALUE])
                self.history.record(self.revision, "delete", key, b"", self.revision)
            self._sorted_keys = None
        return len(lease.keys)

    def expire(self, now_ms: int) -> list[int]:
        """Revoke every lease whose deadline `now_ms` has reached, in (deadline, id) order."""
        if self._next_expiry_ms is None:
            self._next_expiry_ms = min(
                (lease.expires_ms for lease in self.leases.values()), default=-1
            )
        if self._next_expiry_ms < 0 or now_ms < self._next_expiry_ms:
            return []
        due = sorted(
            (lease.expires_ms, lease_id)
            for lease_id, lease in self.leases.items()
            if lease.expires_ms <= now_ms
        )
        for _, lease_id in due:
            self.lease_revoke(lease_id)
        return [lease_id for _, lease_id in due]

    # ------------------------------------------------------------------------- snapshot

    def to_plain(self) -> dict[str, Value]:
        return self.capture()()

    def capture(self, *, encoded: bool = False) -> Callable[[], dict[str, Value]]:
        """A consistent view taken in pointer copies; the returned thunk builds the plain form.

        Records are immutable and leases are copied, so the thunk may run on another thread
        while apply goes on: the apply thread pays a dict copy, not an encode. `encoded`: the
        rows come as one `codec.EncodedList`, encoded in short chunks (for snapshots: see
        `codec.encode_snapshot`), instead of a list of lists.
        """
        keys = self.keys.copy()
        leases = [[i, lease.ttl_ms, lease.expires_ms] for i, lease in self.leases.items()]
        revision, next_lease_id = self.revision, self.next_lease_id

        def build() -> dict[str, Value]:
            if encoded:
                rows: Value = codec.encode_record_rows(sorted(keys), keys)
            else:
                rows = [[k, *r] for k, r in sorted(keys.items())]
            return {
                "revision": revision,
                "next_lease_id": next_lease_id,
                "keys": rows,
                "leases": sorted(leases),
            }

        return build

    @classmethod
    def from_plain(cls, plain: dict[str, Value], limits: Limits | None = None) -> KVMachine:
        machine = cls(limits)
        try:
            machine.revision = _int(plain["revision"])
            machine.history.floor = machine.revision  # events before the snapshot: unknown
            machine.next_lease_id = _int(plain["next_lease_id"])
            for lease_id, ttl_ms, expires_ms in plain["leases"]:
                machine.leases[_int(lease_id)] = Lease(_int(ttl_ms), _int(expires_ms))
            keys, leases, rows = machine.keys, machine.leases, plain["keys"]
            stored = RECORD_OVERHEAD_BYTES * len(rows)
            # One pass, checks inline (a restore is one step of the tick thread: 300k keys)
            for key, value, create, mod, version, lease_id in rows:
                if (
                    type(key) is not str
                    or type(value) is not bytes
                    or type(create) is not int
                    or type(mod) is not int
                    or type(version) is not int
                    or type(lease_id) is not int
                ):
                    raise DecodeError(
                        f"snapshot kv: row {key!r} is not [str, bytes, int, int, int, int]"
                    )
                keys[key] = (value, create, mod, version, lease_id)
                stored += (
                    len(key) if key.isascii() else len(key.encode("utf-8", "surrogatepass"))
                ) + len(value)
                if lease_id:
                    lease = leases.get(lease_id)
                    if lease is None:
                        raise DecodeError(f"snapshot kv: key {key!r} names missing lease")
                    lease.keys.add(key)
            if len(keys) != len(rows):
                raise DecodeError("snapshot kv: a key appears twice")
            machine.stored_bytes = stored
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"snapshot kv section is malformed: {exc!r}") from exc
        return machine


def _int(value: Value) -> int:
    if type(value) is not int:
        raise DecodeError(f"snapshot: expected int, got {type(value).__name__}")
    return value
