"""The built-in quota machine: global rate limits per key, allotted to routers per epoch.

A **limit** (`limit_milli`, milli-requests per second) lives on a key with `routers_max`, the
most routers that may share it. The leader's runtime turns the routers' demand reports (soft
state on the leader, like fleet heartbeats) into an **epoch**: one internal `QuotaAllot` entry
whose log index is the epoch's **token** and which gives every router a share, valid for
`lease_ms` of tick time from its commit. Routers enforce their share with a local token bucket.

**The budget.** Routers' buckets may burst: a bucket holds at most `BURST_MS` of its share plus
one request, so over any window of at least one second a router admits at most its share's
worth plus that depth. The usable budget reserves room for every bucket's depth
(`usable_milli`), and the **fallback** share a router spends once it has lost the leader is
``usable // routers_max``: ``routers_max`` routers all on fallback, buckets full, stay within
the limit.

**The overlap rule (why the sum never exceeds the limit).** A router may still spend its share
of an older epoch while a newer one is granted, and one that lost the leader may be spending
its fallback share. At every instant a router spends at most one of: a share of a *live* epoch
(one whose lease has not ended in tick time), its new share, or its fallback share. An epoch
lists two sets of routers that may be on fallback during its life: `reserved_now` while shares
of the live epochs are still spent (phase A), `reserved` once they are not (phase B). Apply
accepts it only if, in each phase, summed over every router, the largest of what it may spend
there stays within the usable budget (`spend_bounds`); shrinking shares take effect at once,
growing ones once the larger old shares have expired. Why a router outside those sets cannot
be on fallback then is the runtime's reservation rule (coreplane/runtime/quotas.py), checked by
tests/property/test_quota_props.py. Apply insists on one case it can see: the first epoch under
a new leader reserves every router the key lists (that leader cannot know who fell back).

Pure and deterministic: no clock (time is the committed tick time passed in), integers only,
every map bounded (`QuotaLimits`), explicit order (keys and routers sorted). Imports only
`coreplane.core.codec` and `coreplane.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from coreplane.core.codec import Value
from coreplane.errors import CommandRejected, DecodeError

__all__ = [
    "BURST_MS",
    "HYSTERESIS_PERMILLE",
    "Epoch",
    "KeyQuota",
    "QuotaLimits",
    "QuotaMachine",
    "fallback_milli",
    "plan_allotment",
    "spend_bounds",
    "usable_milli",
]

_U63 = 2**63 - 1
BURST_MS = 20  # a router's bucket holds this much of its share, plus one request
HYSTERESIS_PERMILLE = 50  # a live share is kept while the target is within 5% under it
TOKEN_MILLI = 1000  # one request


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Bounds on the quota machine; at a bound apply refuses with a stable code."""

    keys_max: int = 10_000
    key_bytes_max: int = 256
    router_bytes_max: int = 128
    routers_max_max: int = 1_000  # routers sharing one key
    limit_milli_max: int = 10**15
    lease_ms_min: int = 200
    lease_ms_max: int = 600_000
    live_epochs_max: int = 4  # epochs of one key whose leases overlap


def usable_milli(limit_milli: int, routers_max: int) -> int:
    """What the shares of a key may add up to: the limit less every bucket's depth."""
    return max(0, limit_milli - limit_milli * BURST_MS // 1000 - routers_max * TOKEN_MILLI)


def fallback_milli(limit_milli: int, routers_max: int) -> int:
    """The static share a router spends once it has lost the leader past its lease."""
    return usable_milli(limit_milli, routers_max) // max(1, routers_max)


@dataclass(frozen=True, slots=True)
class Epoch:
    n: int
    token: int  # log index of the allotment
    start_ms: int
    end_ms: int  # tick time its shares expire
    shares: tuple[tuple[str, int, int], ...]  # (router, share_milli, demand_milli), sorted
    reserved: tuple[str, ...]  # sorted

    def share(self, router: str) -> int:
        for name, share, _demand in self.shares:
            if name == router:
                return share
        return 0

    def to_plain(self) -> list[Value]:
        return [
            self.n,
            self.token,
            self.start_ms,
            self.end_ms,
            [list(s) for s in self.shares],
            list(self.reserved),
        ]


@dataclass(slots=True)
class KeyQuota:
    limit_milli: int
    routers_max: int
    next_epoch: int = 1
    leader_token: int = 0  # the leader token under which the newest epoch was allotted
    epochs: list[Epoch] = field(default_factory=list)  # oldest first; may include expired ones

    @property
    def fallback_milli(self) -> int:
        return fallback_milli(self.limit_milli, self.routers_max)

    @property
    def usable_milli(self) -> int:
        return usable_milli(self.limit_milli, self.routers_max)

    def live(self, now_ms: int) -> list[Epoch]:
        return [e for e in self.epochs if e.end_ms > now_ms]

    def routers(self) -> tuple[str, ...]:
        """The routers the key knows: those of its newest epoch (shares and reserved)."""
        if not self.epochs:
            return ()
        newest = self.epochs[-1]
        return tuple(sorted({r for r, _s, _d in newest.shares} | set(newest.reserved)))


def spend_bounds(
    quota: KeyQuota,
    now_ms: int,
    new: Mapping[str, int],
    reserved_now: Collection[str],
    reserved: Collection[str],
) -> tuple[int, int]:
    """What the routers could spend at once during the new epoch, in its two phases.

    (A) while a share of a live epoch may still be spent: per router the largest of its new
    share, its live shares, and its fallback if `reserved_now` names it;
    (B) once no live epoch's share is spent any more: the largest of its new share and its
    fallback if `reserved` names it. Both must stay within the usable budget."""
    fallback = quota.fallback_milli
    live = quota.live(now_ms)
    names_a = sorted(set(new) | set(reserved_now) | {r for e in live for r, _s, _d in e.shares})
    total_a = 0
    for name in names_a:
        spend = max([new.get(name, 0), *(e.share(name) for e in live)])
        total_a += max(spend, fallback) if name in reserved_now else spend
    total_b = sum(new.values()) + sum(max(0, fallback - new.get(name, 0)) for name in set(reserved))
    return total_a, total_b


def plan_allotment(
    quota: KeyQuota,
    now_ms: int,
    demands: Mapping[str, int],
    reserved: tuple[str, ...],
    reserved_now: tuple[str, ...] = (),
) -> list[list[Value]] | None:
    """Shares proportional to demand that pass apply's two checks (`spend_bounds`) at tick
    time `now_ms`, as [[router, share_milli, demand_milli]] sorted; None if none can pass yet
    (what the routers may already be spending fills the budget: wait for it to end).

    A router's *floor* in each phase is what it may already be spending there (phase A: its
    largest live share, its fallback if in `reserved_now`; phase B: its fallback if in
    `reserved`); granting up to the floor costs nothing, and the headroom above the sum of the
    floors goes to the routers whose target exceeds their floor, in proportion. A live share
    a little over its new target (`HYSTERESIS_PERMILLE`) is kept: shrinking it would free
    budget only from the next epoch on, and leave it unused in this one."""
    usable, fallback = quota.usable_milli, quota.fallback_milli
    live = quota.live(now_ms)
    names = sorted(
        set(demands)
        | set(reserved)
        | set(reserved_now)
        | {r for e in live for r, _s, _d in e.shares}
    )
    held = {n: max((e.share(n) for e in live), default=0) for n in names}
    floor_a = {n: max(held[n], fallback if n in reserved_now else 0) for n in names}
    floor_b = {n: fallback if n in reserved else 0 for n in names}
    room_a = usable - sum(floor_a.values())
    room_b = usable - sum(floor_b.values())
    if room_a < 0 or room_b < 0:
        return None
    total_demand = sum(max(0, d) for d in demands.values())
    targets = {
        n: (usable * max(0, demands.get(n, 0)) // total_demand if total_demand else 0)
        for n in names
    }
    for n in names:
        if held[n] > targets[n] >= held[n] - held[n] * HYSTERESIS_PERMILLE // 1000:
            targets[n] = held[n]
    grants = []
    for floors, room in ((floor_a, room_a), (floor_b, room_b)):
        wants = {n: targets[n] - floors[n] for n in names if targets[n] > floors[n]}
        want_total = sum(wants.values())
        grants.append(
            {n: (w if want_total <= room else w * room // want_total) for n, w in wants.items()}
        )
    out: list[list[Value]] = []
    for n in names:
        if n not in demands:
            continue
        share = targets[n]
        for floors, grant in zip((floor_a, floor_b), grants, strict=True):
            if n in grant:
                share = min(share, floors[n] + grant[n])
        out.append([n, share, demands[n]])
    return out


class QuotaMachine:
    """Limits and epochs per key; mutated only through the apply methods below."""

    def __init__(self, limits: QuotaLimits | None = None) -> None:
        self.limits = limits or QuotaLimits()
        self.keys: dict[str, KeyQuota] = {}

    @property
    def used(self) -> bool:
        return bool(self.keys)

    # ------------------------------------------------------------------------- reads

    def describe(self, key: str, now_ms: int) -> dict[str, Value] | None:
        q = self.keys.get(key)
        if q is None:
            return None
        return {
            "key": key,
            "limit_milli": q.limit_milli,
            "routers_max": q.routers_max,
            "usable_milli": q.usable_milli,
            "fallback_milli": q.fallback_milli,
            "next_epoch": q.next_epoch,
            "routers": list(q.routers()),
            "epochs": [e.to_plain() for e in q.live(now_ms)],
        }

    def share(self, key: str, router: str) -> dict[str, Value] | None:
        """The newest epoch's share for `router` (0 if the epoch does not list it)."""
        q = self.keys.get(key)
        if q is None:
            return None
        if not q.epochs:
            return {
                "epoch": 0,
                "token": 0,
                "share_milli": 0,
                "end_ms": 0,
                "limit_milli": q.limit_milli,
                "fallback_milli": q.fallback_milli,
            }
        e = q.epochs[-1]
        return {
            "epoch": e.n,
            "token": e.token,
            "share_milli": e.share(router),
            "end_ms": e.end_ms,
            "limit_milli": q.limit_milli,
            "fallback_milli": q.fallback_milli,
        }

    # ------------------------------------------------------------------------- limits

    def set_limit(self, key: str, limit_milli: int, routers_max: int) -> int:
        """Create or change a limit; a lower limit binds new epochs (live ones run out)."""
        lim = self.limits
        self._check_key(key)
        if not 1 <= limit_milli <= lim.limit_milli_max:
            raise CommandRejected(
                "limit_out_of_range", f"limit_milli must be in [1, {lim.limit_milli_max}]"
            )
        if not 1 <= routers_max <= lim.routers_max_max:
            raise CommandRejected(
                "routers_max_out_of_range", f"routers_max must be in [1, {lim.routers_max_max}]"
            )
        q = self.keys.get(key)
        if q is None:
            if len(self.keys) >= lim.keys_max:
                raise CommandRejected("too_many_keys", f"at the bound of {lim.keys_max}")
            self.keys[key] = KeyQuota(limit_milli, routers_max)
            return 1
        q.limit_milli, q.routers_max = limit_milli, routers_max
        return 0

    def delete_limit(self, key: str) -> int:
        self._check_key(key)
        return 1 if self.keys.pop(key, None) is not None else 0

    def _check_key(self, key: str) -> None:
        if not key:
            raise CommandRejected("key_empty", "quota key must not be empty")
        if len(key.encode("utf-8", "surrogatepass")) > self.limits.key_bytes_max:
            raise CommandRejected("key_too_large", f"over {self.limits.key_bytes_max} bytes")

    # ------------------------------------------------------------------------- epochs

    def allot(
        self,
        key: str,
        epoch: int,
        lease_ms: int,
        shares: list[Value],
        reserved: list[Value],
        reserved_now: list[Value],
        index: int,
        now_ms: int,
        leader_token: int,
    ) -> dict[str, Value]:
        """Accept epoch `epoch` of `key` at log `index` (its token) if it passes the overlap
        rule at tick time `now_ms`; refused with a stable code otherwise."""
        q = self.keys.get(key)
        if q is None:
            raise CommandRejected("no_limit", f"no limit is set on {key!r}")
        if epoch != q.next_epoch:
            raise CommandRejected("stale_epoch", f"epoch {epoch}, expected {q.next_epoch}")
        lim = self.limits
        if not lim.lease_ms_min <= lease_ms <= lim.lease_ms_max:
            raise CommandRejected(
                "lease_out_of_range",
                f"lease_ms must be in [{lim.lease_ms_min}, {lim.lease_ms_max}]",
            )
        rows = self._check_shares(shares, q.routers_max)
        marks = self._check_reserved(reserved)
        if len({r for r, _s, _d in rows} | set(marks)) > q.routers_max:
            raise CommandRejected("too_many_routers", f"over routers_max={q.routers_max}")
        live = q.live(now_ms)
        if len(live) >= lim.live_epochs_max:
            raise CommandRejected(
                "too_many_live_epochs", f"{len(live)} epochs of {key!r} are still live"
            )
        if q.leader_token != leader_token and not set(q.routers()) <= set(marks):
            raise CommandRejected(
                "reserve_required",
                "the first epoch under a new leader must reserve every known router",
            )
        new = {r: s for r, s, _d in rows}
        now_marks = self._check_reserved(reserved_now)
        total_a, total_b = spend_bounds(q, now_ms, new, now_marks, marks)
        total = max(total_a, total_b)
        if total > q.usable_milli:
            raise CommandRejected(
                "over_limit",
                f"the routers could spend {total} > {q.usable_milli} milli-requests/s at once",
            )
        q.epochs = [*live, Epoch(epoch, index, now_ms, now_ms + lease_ms, rows, marks)]
        q.next_epoch += 1
        q.leader_token = leader_token
        return {"epoch": epoch, "token": index, "end_ms": now_ms + lease_ms, "spend": total}

    def _check_shares(
        self, shares: list[Value], routers_max: int
    ) -> tuple[tuple[str, int, int], ...]:
        if len(shares) > routers_max:
            raise CommandRejected("too_many_routers", f"over routers_max={routers_max}")
        rows: list[tuple[str, int, int]] = []
        for row in shares:
            if (
                type(row) is not list
                or len(row) != 3
                or type(row[0]) is not str
                or type(row[1]) is not int
                or type(row[2]) is not int
                or not 0 <= row[1] <= _U63
                or not 0 <= row[2] <= _U63
            ):
                raise CommandRejected(
                    "bad_share",
                    "each share is [router, share_milli, demand_milli] with non-negative ints",
                )
            self._check_router(row[0])
            if rows and row[0] <= rows[-1][0]:
                raise CommandRejected("bad_share", "shares must be sorted by router, unique")
            rows.append((row[0], row[1], row[2]))
        return tuple(rows)

    def _check_reserved(self, reserved: list[Value]) -> tuple[str, ...]:
        out: list[str] = []
        for name in reserved:
            if type(name) is not str:
                raise CommandRejected("bad_reserved", "reserved lists router ids")
            self._check_router(name)
            if out and name <= out[-1]:
                raise CommandRejected("bad_reserved", "reserved must be sorted, unique")
            out.append(name)
        if len(out) > self.limits.routers_max_max:
            raise CommandRejected("too_many_routers", "reserved is over the bound")
        return tuple(out)

    def _check_router(self, name: str) -> None:
        if not name or len(name.encode("utf-8", "surrogatepass")) > self.limits.router_bytes_max:
            raise CommandRejected(
                "bad_router", f"router ids are 1..{self.limits.router_bytes_max} bytes"
            )

    # ------------------------------------------------------------------------- snapshot

    def capture(self) -> Callable[[], list[Value]]:
        """A consistent copy taken on the apply thread (epochs are immutable)."""
        rows = [
            (key, q.limit_milli, q.routers_max, q.next_epoch, q.leader_token, list(q.epochs))
            for key, q in sorted(self.keys.items())
        ]

        def build() -> list[Value]:
            return [
                [key, limit, rmax, nxt, lt, [e.to_plain() for e in epochs]]
                for key, limit, rmax, nxt, lt, epochs in rows
            ]

        return build

    def to_plain(self) -> list[Value]:
        return self.capture()()

    @classmethod
    def from_plain(cls, plain: Value, limits: QuotaLimits | None = None) -> QuotaMachine:
        machine = cls(limits)
        if plain is None:  # a snapshot written before quotas were used
            return machine
        try:
            for key, limit, rmax, nxt, lt, epochs in plain:
                if type(key) is not str:
                    raise DecodeError("snapshot quotas: key must be a str")
                q = KeyQuota(_int(limit), _int(rmax), _int(nxt), _int(lt))
                for n, token, start, end, shares, reserved in epochs:
                    rows = tuple((str(r), _int(s), _int(d)) for r, s, d in shares)
                    q.epochs.append(
                        Epoch(
                            _int(n),
                            _int(token),
                            _int(start),
                            _int(end),
                            rows,
                            tuple(str(r) for r in reserved),
                        )
                    )
                machine.keys[key] = q
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"snapshot quotas section is malformed: {exc!r}") from exc
        return machine


def _int(value: Value) -> int:
    if type(value) is not int or not 0 <= value <= _U63:
        raise DecodeError(f"snapshot quotas: expected a non-negative int, got {value!r}")
    return value
