"""`cp.quotas`: global rate limits as the leader runs them (core/machines/quotas.py has the rules).

Two faces:

- **routers** call `report(key, router, demand_milli, held_epoch)` on the leader (a follower
  raises `NotLeader` with the leader's id): the demand is leader soft state, never a log entry
  (routers report several times a second); the answer is the router's share of the newest
  epoch *this* leader allotted, with two remaining-lease bounds the router takes the smaller of
  (tick time, and this leader's monotonic time since it proposed the epoch);
- **admins** `set_limit` / `delete_limit` (replicated writes) and read `describe`.

The leader's work (`leader_step`, from `ControlPlane._step`): once per `epoch_ms` per key it
proposes one internal `QuotaAllot`, shares proportional to the reported demands
(`plan_allotment`; a new leader uses the newest epoch's recorded demands for routers it has not
heard yet). A router that lost the leader spends nothing for `zone_ms` after its share's lease,
then its fallback share. The **reservation rules** (why a router left out cannot be on
fallback while the epoch's shares are spent; a share's real end is at most its proposal time
plus `lease_ms`, a router's fallback starts at least ``lease_ms + zone_ms - rtt_max_ms - tick
slack - margin`` after the proposal of the newest epoch it holds):

- `reserved` (once the live epochs' shares have ended): every router the key knows, except
  one that reported holding the previous epoch, proposed by this leader at most
  `spacing_max_ms` earlier (``zone_ms >= spacing_max_ms + rtt_max_ms + tick slack + margin``
  puts its fallback after this epoch's shares), and one that holds nothing and was never
  listed. After a leader change, every router the key lists (apply insists).
- `reserved_now` (while the newest live epoch's shares may still be spent): that epoch's
  `reserved`, less the routers that reported holding it (their fallback comes after its shares
  end). A router it did not reserve cannot be on fallback before its shares end, by the rule
  above applied to that epoch.

**Catching up after a leader change.** A new leader's first epoch must reserve every router's
fallback (it cannot know who fell back), which caps the large shares. The second epoch lifts
the cap for every router that reported holding the first, so this leader does not wait a whole
`epoch_ms` for it: while its first epoch is the newest, its answers ask routers to report every
``epoch_ms // 20``, and the second epoch is proposed as soon as every router the first one
reserved has reported holding it (`Allotter.caught_up`), and at the latest once tick time is
within one tick of `epoch_ms` after the first's start (`Allotter.catch_up_due`), so it starts
less than `epoch_ms` after the first in tick time whoever is late (a router still retrying its
report to the dead leader keeps its fallback reserved in it). Full use is back well within one
epoch of the first (tests/property/test_quota_props.py asserts it in simulated time).

tests/property/test_quota_props.py checks the sum law on random histories with crashes, late
commits, dropped and slow answers and routers cut off alone, and shows that an allotter
without reservations breaks it.

`Allotter` holds the decisions with explicit times (no clock), so the property test drives the
very code the leader runs. Tick time is read only from the state machine.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from coreplane.core import commands as C
from coreplane.core.codec import Value
from coreplane.core.machines.quotas import BURST_MS, KeyQuota, plan_allotment
from coreplane.errors import InvalidArgument, NotLeader

if TYPE_CHECKING:
    from coreplane.runtime.controlplane import ControlPlane
    from coreplane.runtime.view import StateView

__all__ = ["Allotter", "QuotaConfig", "Quotas"]

_ID_BYTES_MAX = 128
_KEY_BYTES_MAX = 256


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    """Timing of the quota epochs (milliseconds). `zone_ms` must cover `spacing_max_ms`, the
    slowest answer a router accepts (`rtt_max_ms`), the tick slack and a margin."""

    epoch_ms: int = 1000
    lease_ms: int = 2000  # > epoch_ms + tick slack + margin + a report interval + a commit
    spacing_max_ms: int = 1500
    rtt_max_ms: int = 500
    margin_ms: int = 100
    active_ms: int = 3000  # a router silent longer gets no share (it stays reserved)
    expiry_ms: int = 120_000  # ... and is forgotten after this (its fallback failed closed)

    def zone_ms(self, tick_slack_ms: int) -> int:
        return self.spacing_max_ms + self.rtt_max_ms + tick_slack_ms + self.margin_ms

    def fallback_max_ms(self, tick_slack_ms: int) -> int:
        """How long a router spends its fallback before it fails closed: the leader forgets a
        silent router only after its share, dead zone and fallback have all run out."""
        return (
            self.expiry_ms
            - self.lease_ms
            - self.zone_ms(tick_slack_ms)
            - self.rtt_max_ms
            - self.margin_ms
        )


@dataclass(slots=True)
class _Router:
    demand_milli: int
    heard_ms: int  # leader monotonic, ms
    held_epoch: int


@dataclass(slots=True)
class _Key:
    routers: dict[str, _Router] = field(default_factory=dict)
    proposed: dict[int, int] = field(default_factory=dict)  # epoch -> propose time (mono ms)
    last_epoch: int = 0
    last_propose_ms: int = -1
    first_epoch: int = 0  # the first epoch this leader proposed for the key


class Allotter:
    """The leader's soft state and decisions for one leadership; times are passed in (ms of
    the leader's monotonic clock), so the same code runs in the runtime and in tests."""

    def __init__(
        self, config: QuotaConfig, leader_token: int, start_ms: int, tick_slack_ms: int
    ) -> None:
        self.config = config
        self.leader_token = leader_token
        self.start_ms = start_ms
        self.tick_slack_ms = tick_slack_ms
        self.keys: dict[str, _Key] = {}

    def report(
        self, key: str, router: str, demand_milli: int, held_epoch: int, now_ms: int
    ) -> None:
        k = self.keys.setdefault(key, _Key())
        k.routers[router] = _Router(demand_milli, now_ms, held_epoch)

    def may_decide(self, key: str, now_ms: int) -> bool:
        """False when `decide` would answer None whatever the key's record holds: its next
        epoch is not due and this leader is past catching up on it (`caught_up` and
        `catch_up_due` only hold while its newest proposal is its first). Lets the leader skip
        reading the record."""
        k = self.keys.get(key)
        if k is None or k.last_propose_ms < 0 or now_ms - k.last_propose_ms >= self.config.epoch_ms:
            return True
        return k.first_epoch != 0 and k.last_epoch == k.first_epoch

    def decide(self, key: str, quota: KeyQuota, tick_ms: int, now_ms: int) -> C.QuotaAllot | None:
        """The next epoch of `key` if one is due and can pass apply's check now, else None."""
        cfg = self.config
        k = self.keys.setdefault(key, _Key())
        if (
            k.last_propose_ms >= 0
            and now_ms - k.last_propose_ms < cfg.epoch_ms
            and not self.caught_up(key, quota)
            and not self.catch_up_due(key, quota, tick_ms)
        ):
            return None
        for name in sorted(k.routers):  # forget routers silent past expiry
            if now_ms - k.routers[name].heard_ms > cfg.expiry_ms:
                del k.routers[name]
        forgotten_ok = now_ms - self.start_ms > cfg.expiry_ms
        known = {r for r in quota.routers() if r in k.routers or not forgotten_ok}
        known |= set(k.routers)
        demands = {
            name: r.demand_milli
            for name, r in k.routers.items()
            if now_ms - r.heard_ms <= cfg.active_ms
        }
        if quota.epochs and now_ms - self.start_ms <= cfg.active_ms:
            # A new leader has heard few routers yet: the newest epoch's demands stand in for
            # the others, so its first epoch does not take their shares away.
            for name, _share, demand in quota.epochs[-1].shares:
                if name not in k.routers:
                    demands.setdefault(name, demand)
        previous = quota.next_epoch - 1
        continuous = (
            quota.leader_token == self.leader_token
            and previous in k.proposed
            and now_ms - k.proposed[previous] <= cfg.spacing_max_ms
        )
        listed = set(quota.routers())

        def may_fall_back(name: str) -> bool:
            r = k.routers.get(name)
            if r is None:
                return True
            if continuous and r.held_epoch >= previous:
                return False  # its fallback starts after this epoch's shares end
            # Never listed by the key and holding nothing: it has no share to lose.
            return not (r.held_epoch == 0 and name not in listed)

        reserved = tuple(sorted(name for name in known if may_fall_back(name)))
        if len(known) > quota.routers_max:
            # Routers the key already lists (they may hold a share or spend a fallback) keep
            # their place; newcomers are admitted by how recently they were heard.
            newcomers = sorted(known - listed, key=lambda n: (-k.routers[n].heard_ms, n))
            keep = listed | set(newcomers[: max(0, quota.routers_max - len(listed))])
            demands = {n: d for n, d in demands.items() if n in keep}
            reserved = tuple(n for n in reserved if n in keep)
        # While the newest live epoch's shares are spent, only routers it reserved can be on
        # fallback, and of those not the ones that have since picked it up (their fallback
        # comes after its shares end).
        newest = quota.epochs[-1] if quota.epochs else None
        reserved_now: tuple[str, ...] = ()
        if newest is not None and newest.end_ms > tick_ms:
            reserved_now = tuple(
                n
                for n in newest.reserved
                if not (n in k.routers and k.routers[n].held_epoch >= newest.n)
            )
        plan = plan_allotment(quota, tick_ms, demands, reserved, reserved_now)
        if plan is None:
            return None
        return C.QuotaAllot(
            key=key,
            epoch=quota.next_epoch,
            lease_ms=cfg.lease_ms,
            shares=plan,
            reserved=list(reserved),
            reserved_now=list(reserved_now),
        )

    def catching_up(self, key: str, quota: KeyQuota) -> bool:
        """Is this leader's first epoch of `key` the newest (committed) one?"""
        k = self.keys.get(key)
        return (
            k is not None
            and k.first_epoch != 0
            and quota.leader_token == self.leader_token
            and bool(quota.epochs)
            and quota.epochs[-1].n == k.first_epoch
        )

    def caught_up(self, key: str, quota: KeyQuota) -> bool:
        """This leader's first epoch is the newest and every router it reserved has reported
        holding it: the next epoch may lift the cap now rather than an epoch later."""
        if not self.catching_up(key, quota):
            return False
        k = self.keys[key]
        first = quota.epochs[-1]
        if k.last_epoch != first.n:
            return False  # the next one is proposed already
        return all(
            name in k.routers and k.routers[name].held_epoch >= first.n for name in first.reserved
        )

    def catch_up_due(self, key: str, quota: KeyQuota, tick_ms: int) -> bool:
        """This leader's first epoch is the newest and tick time has come within one tick of
        `epoch_ms` after its start: the second is due now, caught up or not (its reservations
        keep the fallback of every router that has not said it holds the first).

        Decided in tick time, the clock the epochs are stamped in, not in this leader's own:
        a tick advances tick time by at most `tick_slack_ms` (two intervals), so an epoch
        decided in the first pass after the tick that reached ``start + epoch_ms -
        tick_slack_ms`` commits at a tick time under ``start + epoch_ms``: the runtime
        proposes one entry at a time and waits for it, so no tick commits in between (unless
        an earlier proposal outlived its wait), and its passes run between ticks while a
        commit takes less than a tick interval. Counted in this leader's monotonic time
        instead, it could commit up to a tick interval late (the first epoch's start is the
        tick *before* its proposal)."""
        if not self.catching_up(key, quota):
            return False
        first = quota.epochs[-1]
        if self.keys[key].last_epoch != first.n:
            return False  # the next one is proposed already
        return tick_ms - first.start_ms >= self.config.epoch_ms - self.tick_slack_ms

    def proposed(self, key: str, epoch: int, now_ms: int) -> None:
        k = self.keys.setdefault(key, _Key())
        if k.first_epoch == 0:
            k.first_epoch = epoch
        k.proposed.setdefault(epoch, now_ms)  # the earliest: a retry may commit the first
        k.last_epoch, k.last_propose_ms = epoch, now_ms
        for old in sorted(k.proposed):
            if old < epoch - 8:
                del k.proposed[old]

    def serve(
        self, key: str, router: str, quota: KeyQuota, tick_ms: int, now_ms: int
    ) -> dict[str, Value]:
        """The router's answer: the newest epoch if this leader proposed it, else epoch 0
        ("nothing new: keep what you hold")."""
        cfg = self.config
        slack = self.tick_slack_ms
        out: dict[str, Value] = {
            "epoch": 0,
            "token": 0,
            "share_milli": 0,
            "remaining_ms": 0,
            "limit_milli": quota.limit_milli,
            "fallback_milli": quota.fallback_milli,
            "zone_ms": cfg.zone_ms(slack),
            "rtt_max_ms": cfg.rtt_max_ms,
            "fallback_max_ms": cfg.fallback_max_ms(slack),
            "report_ms": cfg.epoch_ms // 20 if self.catching_up(key, quota) else cfg.epoch_ms // 4,
            "burst_ms": BURST_MS,
        }
        k = self.keys.get(key)
        if not quota.epochs or k is None or quota.leader_token != self.leader_token:
            return out
        epoch = quota.epochs[-1]
        proposed = k.proposed.get(epoch.n)
        listed = router in epoch.reserved or any(r == router for r, _s, _d in epoch.shares)
        if proposed is None or not listed:
            # A router the epoch does not list holds nothing of it: were it to take the
            # epoch, it would spend a fallback later that no epoch has reserved room for.
            return out
        remaining_tick = epoch.end_ms - tick_ms - slack
        remaining_real = proposed + cfg.lease_ms - now_ms
        remaining = min(remaining_tick, remaining_real) - cfg.margin_ms
        if remaining <= 0:
            return out
        out.update(
            epoch=epoch.n,
            token=epoch.token,
            share_milli=epoch.share(router),
            remaining_ms=remaining,
        )
        return out


def _check_str(name: str, value: object, max_bytes: int) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value.encode("utf-8", "surrogatepass")) > max_bytes
    ):
        raise InvalidArgument(name, f"must be a non-empty str of at most {max_bytes} bytes")
    return value


def _check_int(name: str, value: object) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise InvalidArgument(name, "must be an integer in [0, 2**63)")
    return value


class Quotas:
    """`cp.quotas`: see the module docstring."""

    def __init__(self, cp: ControlPlane, config: QuotaConfig | None = None) -> None:
        self._cp = cp
        self.config = config or QuotaConfig()
        self._lock = threading.Lock()
        self._allotter: Allotter | None = None

    # -- admin ---------------------------------------------------------------------------

    def set_limit(
        self, key: str, limit_milli: int, *, routers_max: int = 16, timeout_s: float | None = None
    ) -> Value:
        command = C.QuotaSetLimit(
            key=_check_str("key", key, _KEY_BYTES_MAX),
            limit_milli=_check_int("limit_milli", limit_milli),
            routers_max=_check_int("routers_max", routers_max),
        )
        return self._cp.call_command(command, timeout_s=timeout_s)

    def delete_limit(self, key: str, *, timeout_s: float | None = None) -> Value:
        command = C.QuotaDeleteLimit(key=_check_str("key", key, _KEY_BYTES_MAX))
        return self._cp.call_command(command, timeout_s=timeout_s)

    def describe(
        self, key: str, *, stale_ok: bool = False, timeout_s: float | None = None
    ) -> Value:
        _check_str("key", key, _KEY_BYTES_MAX)
        return self._cp.read(
            lambda view: view.quotas.describe(key), stale_ok=stale_ok, timeout_s=timeout_s
        )

    # -- routers -------------------------------------------------------------------------

    def report(
        self, key: str, router: str, demand_milli: int, held_epoch: int = 0
    ) -> dict[str, Value]:
        """A router's demand report and share fetch in one call (leader only)."""
        return self._serve(key, router, demand_milli, held_epoch)

    def share(self, key: str, router: str, held_epoch: int = 0) -> dict[str, Value]:
        """The router's share, keeping the demand it last reported (leader only)."""
        return self._serve(key, router, None, held_epoch)

    def _serve(
        self, key: str, router: str, demand_milli: int | None, held_epoch: int
    ) -> dict[str, Value]:
        _check_str("key", key, _KEY_BYTES_MAX)
        _check_str("router", router, _ID_BYTES_MAX)
        if demand_milli is not None:
            _check_int("demand_milli", demand_milli)
        _check_int("held_epoch", held_epoch)
        cp = self._cp
        now_ms = self._now_ms()
        with self._lock:
            allotter = self._allotter
            if (
                allotter is None
                or not cp.is_leader()
                or cp.leadership_token() != allotter.leader_token
            ):
                leader = cp.leader_id
                raise NotLeader(
                    leader if leader != cp.node_id else None, "quota reports go to the leader"
                )
            # A copy of the key's record and the tick time, read together at one index.
            quota, tick_ms = cp.read(
                lambda view: (view.quotas.record(key), view.tick_ms), stale_ok=True
            )
            if quota is None:
                return {"epoch": 0, "no_limit": True}
            if demand_milli is None:
                known = allotter.keys.get(key)
                current = known.routers.get(router) if known is not None else None
                demand_milli = current.demand_milli if current is not None else 0
            allotter.report(key, router, demand_milli, held_epoch, now_ms)
            return allotter.serve(key, router, quota, tick_ms, now_ms)

    # -- leader work (runtime thread) ----------------------------------------------------
    # Three ControlPlane internals have no public seam yet, so they are read here and only
    # here: its clock (`Seams.clock`, simulated in tests), its tick period, and the runtime's
    # internal proposal path (which marks the entry and ends this pass of the leader work).

    def _now_ms(self) -> int:
        return int(self._cp._clock.monotonic() * 1000)

    def _tick_slack_ms(self) -> int:
        return 2 * round(self._cp._tick_interval_s * 1000)

    def _propose(self, decision: C.QuotaAllot) -> None:
        self._cp._propose_internal(decision, timeout_s=2.0)

    def leader_step(self) -> None:
        """The leader's quota work; runtime thread, only while this node leads."""
        cp = self._cp
        token = cp.leadership_token()
        if token is None:
            return
        now_ms = self._now_ms()
        with self._lock:
            if self._allotter is None or self._allotter.leader_token != token:
                self._allotter = Allotter(self.config, token, now_ms, self._tick_slack_ms())
            allotter = self._allotter

            def decide(view: StateView) -> C.QuotaAllot | None:
                for key in view.quotas.limited_keys():
                    if not allotter.may_decide(key, now_ms):
                        continue  # not due: no need to copy its record
                    quota = view.quotas.record(key)
                    if quota is None:
                        continue
                    decision = allotter.decide(key, quota, view.tick_ms, now_ms)
                    if decision is not None:
                        return decision
                return None

            decision = cp.read(decide, stale_ok=True)
            if decision is None:
                return
            allotter.proposed(decision.key, decision.epoch, now_ms)
        self._propose(decision)

    def lost_leadership(self) -> None:
        with self._lock:
            self._allotter = None
