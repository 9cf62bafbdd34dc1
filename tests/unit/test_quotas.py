"""The quota machine through the replicated state machine: limits, epochs, the overlap rule,
reservations after a leader change, bounds, snapshots; and the leader's `Allotter`."""

from __future__ import annotations

import pytest

from coreplane.core import commands as C
from coreplane.core.machines.quotas import (
    BURST_MS,
    KeyQuota,
    fallback_milli,
    plan_allotment,
    usable_milli,
)
from coreplane.core.state import StateMachine
from coreplane.errors import CommandRejected, InvalidArgument
from coreplane.runtime.quotas import Allotter, QuotaConfig
from tests.unit.replicated_log import Log

LIMIT = 100_000_000  # 100,000 requests/s
USABLE = usable_milli(LIMIT, 4)
FALLBACK = fallback_milli(LIMIT, 4)


def allot(
    epoch: int,
    shares: list[list[object]],
    reserved: list[str] = (),  # type: ignore[assignment]
    lease_ms: int = 1500,
) -> C.QuotaAllot:
    return C.QuotaAllot(
        key="api",
        epoch=epoch,
        lease_ms=lease_ms,
        shares=shares,
        reserved=list(reserved),
        reserved_now=[],
    )


def started() -> Log:
    log = Log()
    log.tick(1_000)
    log.leader()
    log.ok(C.QuotaSetLimit(key="api", limit_milli=LIMIT, routers_max=4))
    return log


def test_tags_are_fixed_and_the_allotment_is_internal() -> None:
    assert [c.TAG for c in C.QUOTA_COMMANDS] == [90, 91, 92]
    assert C.QuotaAllot.TAG in C.INTERNAL_TAGS
    assert C.QuotaSetLimit.TAG not in C.INTERNAL_TAGS
    with pytest.raises(InvalidArgument):
        C.encode(allot(1, []))
    with pytest.raises(InvalidArgument):
        C.check_proposable(C.encode_internal(allot(1, [])))


def test_a_forged_allotment_without_the_marker_is_refused_in_apply() -> None:
    log = started()
    from coreplane.core import codec

    forged = codec.encode(92, allot(1, [["a", 1, 1]]).to_body())
    log.index += 1
    got = log.sm.apply(forged, log.index)
    assert not got.ok and got.code == "internal_only"


def test_budget_leaves_room_for_every_bucket_and_fallback_splits_it() -> None:
    assert USABLE == LIMIT - LIMIT * BURST_MS // 1000 - 4 * 1000
    assert FALLBACK * 4 <= USABLE
    # routers_max routers all on fallback with full buckets stay within the limit
    assert 4 * (FALLBACK + FALLBACK * BURST_MS // 1000 + 1000) <= LIMIT


def test_epoch_token_is_its_log_index_and_shares_expire_in_tick_time() -> None:
    log = started()
    got = log.ok(allot(1, [["a", 60_000_000, 6], ["b", 30_000_000, 3]], ["a", "b"]))
    assert got["token"] == log.index and got["end_ms"] == 1_000 + 1500
    share = log.sm.quotas.share("api", "a")
    assert (
        share is not None and share["share_milli"] == 60_000_000 and share["token"] == got["token"]
    )
    log.tick(2_499)
    assert len(log.sm.quotas.keys["api"].live(log.sm.tick_ms)) == 1
    log.tick(2_500)
    assert log.sm.quotas.keys["api"].live(log.sm.tick_ms) == []


def test_first_epoch_under_a_new_leader_must_reserve_every_known_router() -> None:
    log = started()
    log.ok(allot(1, [["a", 10_000_000, 1], ["b", 10_000_000, 1]], ["a", "b"]))
    log.ok(allot(2, [["a", 10_000_000, 1], ["b", 10_000_000, 1]]))  # same leader: no reserve
    log.leader("n2")
    log.tick(10_000)  # everything expired
    refused = log.run(allot(3, [["a", 10_000_000, 1]], ["a"]))
    assert not refused.ok and refused.code == "reserve_required"
    assert log.run(allot(3, [["a", 10_000_000, 1]], ["a", "b"])).ok


def test_growth_waits_for_live_larger_shares_to_end() -> None:
    log = started()
    half = USABLE // 2
    log.ok(allot(1, [["a", half, 1], ["b", half, 1]], ["a", "b"]))
    # b shrinks at once, a may not grow while b's larger share of epoch 1 is live
    refused = log.run(allot(2, [["a", USABLE - 1000, 9], ["b", 1000, 1]]))
    assert not refused.ok and refused.code == "over_limit"
    assert log.run(allot(2, [["a", half, 9], ["b", 1000, 1]])).ok
    log.tick(1_000 + 1500)  # epoch 1 over
    assert log.run(allot(3, [["a", USABLE - 1000, 9], ["b", 1000, 1]])).ok


def test_reserved_routers_count_their_fallback() -> None:
    log = started()
    refused = log.run(allot(1, [["a", USABLE, 1]], ["a", "b"]))
    assert not refused.ok and refused.code == "over_limit"
    assert log.run(allot(1, [["a", USABLE - FALLBACK, 1]], ["a", "b"])).ok


@pytest.mark.parametrize(
    ("shares", "reserved", "code"),
    [
        ([["b", 1, 1], ["a", 1, 1]], [], "bad_share"),
        ([["a", 1, 1], ["a", 1, 1]], [], "bad_share"),
        ([["a", -1, 1]], [], "bad_share"),
        ([["a", 1]], [], "bad_share"),
        ([[1, 1, 1]], [], "bad_share"),
        ([["", 1, 1]], [], "bad_router"),
        ([], ["b", "a"], "bad_reserved"),
        ([["a", 1, 1], ["b", 1, 1], ["c", 1, 1], ["d", 1, 1], ["e", 1, 1]], [], "too_many_routers"),
        ([["a", 1, 1]], ["b", "c", "d", "e"], "too_many_routers"),
    ],
)
def test_malformed_allotments_are_refused_with_stable_codes(
    shares: list[object], reserved: list[str], code: str
) -> None:
    log = started()
    got = log.run(
        C.QuotaAllot(
            key="api", epoch=1, lease_ms=1500, shares=shares, reserved=reserved, reserved_now=[]
        )
    )
    assert not got.ok and got.code == code


def test_stale_epoch_no_limit_and_lease_range() -> None:
    log = started()
    assert log.run(allot(2, [])).code == "stale_epoch"
    assert log.run(allot(1, [], lease_ms=10)).code == "lease_out_of_range"
    assert (
        log.run(
            C.QuotaAllot(
                key="nope", epoch=1, lease_ms=1500, shares=[], reserved=[], reserved_now=[]
            )
        ).code
        == "no_limit"
    )


def test_set_limit_bounds_and_delete() -> None:
    log = Log()
    assert log.run(C.QuotaSetLimit(key="k", limit_milli=0)).code == "limit_out_of_range"
    assert (
        log.run(C.QuotaSetLimit(key="k", limit_milli=1, routers_max=0)).code
        == "routers_max_out_of_range"
    )
    assert log.run(C.QuotaSetLimit(key="x" * 300, limit_milli=1)).code == "key_too_large"
    assert log.ok(C.QuotaSetLimit(key="k", limit_milli=5)) == 1
    assert log.ok(C.QuotaSetLimit(key="k", limit_milli=6)) == 0
    assert log.ok(C.QuotaDeleteLimit(key="k")) == 1
    assert log.ok(C.QuotaDeleteLimit(key="k")) == 0


def test_snapshot_has_no_quota_section_until_used_and_round_trips() -> None:
    empty = StateMachine().snapshot()
    log = started()
    log.ok(allot(1, [["a", 5, 1]], ["a"]))
    snap = log.sm.snapshot()
    assert snap != empty
    back = StateMachine.from_snapshot(snap)
    assert back.snapshot() == snap and back.state_hash() == log.sm.state_hash()
    log.ok(C.QuotaDeleteLimit(key="api"))
    assert b"quotas" not in log.sm.snapshot()


def test_plan_is_proportional_when_nothing_is_live() -> None:
    q = KeyQuota(LIMIT, 4)
    plan = plan_allotment(q, 0, {"a": 3, "b": 1}, ())
    assert plan == [["a", USABLE * 3 // 4, 3], ["b", USABLE // 4, 1]]


def test_plan_waits_when_reservations_and_live_shares_fill_the_budget() -> None:
    log = started()
    log.ok(allot(1, [["a", USABLE, 1]]))  # the key knew no router: nothing to reserve
    q = log.sm.quotas.keys["api"]
    # b on fallback while a may still spend its whole live share: nothing can pass
    assert plan_allotment(q, log.sm.tick_ms, {"b": 1}, ("a", "b"), ("b",)) is None
    # fallback only after the live shares end: b gets nothing now, a keeps its share
    assert plan_allotment(q, log.sm.tick_ms, {"b": 1}, ("a", "b")) == [["b", 0, 1]]
    log.tick(1_000 + 1500)
    assert plan_allotment(q, log.sm.tick_ms, {"b": 1}, ("a", "b")) == [["b", USABLE - FALLBACK, 1]]


def test_a_new_leader_allots_at_once_within_old_shares_and_fallbacks() -> None:
    """Phase A (old shares live, nobody on fallback yet) and phase B (everyone may be on
    fallback) both bound the first epoch: min(target, old share, fallback) passes at once."""
    log = started()
    big, small = USABLE * 3 // 4, USABLE // 4
    log.ok(allot(1, [["a", big, 3], ["b", small, 1]]))
    log.leader("n2")
    q = log.sm.quotas.keys["api"]
    plan = plan_allotment(q, log.sm.tick_ms, {"a": 3, "b": 1}, ("a", "b"))
    # two of four routers: phase B leaves room for a's old share next to b's fallback
    assert plan == [["a", big, 3], ["b", small, 1]]
    got = log.run(
        C.QuotaAllot(
            key="api", epoch=2, lease_ms=1500, shares=plan, reserved=["a", "b"], reserved_now=[]
        )
    )
    assert got.ok, got
    over = [["a", USABLE - 1000, 3], ["b", 1000, 1]]  # b's fallback on top: phase B overflows
    refused = log.run(
        C.QuotaAllot(
            key="api", epoch=3, lease_ms=1500, shares=over, reserved=["a", "b"], reserved_now=[]
        )
    )
    assert refused.code == "over_limit"


def test_allotter_reserves_everyone_first_then_only_routers_that_missed_the_last_epoch() -> None:
    log = started()
    cfg = QuotaConfig()
    allotter = Allotter(cfg, log.sm.leader_token, 0, 400)
    q = log.sm.quotas.keys["api"]
    for r in "abc":
        allotter.report("api", r, 1000, 0, 0)
    first = allotter.decide("api", q, log.sm.tick_ms, 0)
    assert first is not None and first.reserved == []  # nobody held anything yet
    assert first.shares == [[r, USABLE // 3, 1000] for r in "abc"]
    log.ok(first)
    allotter.proposed("api", 1, 0)
    allotter.report("api", "a", 1000, 1, 300)
    allotter.report("api", "b", 1000, 1, 300)
    allotter.report("api", "c", 1000, 0, 300)  # c has not picked up epoch 1
    second = allotter.decide("api", q, log.sm.tick_ms, 1000)
    assert second is not None and second.reserved == ["c"]
    # too long since the previous epoch: nobody can be trusted to still hold it
    late = allotter.decide("api", q, log.sm.tick_ms, 1000 + cfg.spacing_max_ms + 1)
    assert late is not None and late.reserved == ["a", "b", "c"]


def test_allotter_serves_only_its_own_epochs_with_the_smaller_remaining_lease() -> None:
    log = started()
    cfg = QuotaConfig()
    allotter = Allotter(cfg, log.sm.leader_token, 0, 400)
    allotter.report("api", "a", 1000, 0, 0)
    q = log.sm.quotas.keys["api"]
    decision = allotter.decide("api", q, log.sm.tick_ms, 0)
    assert decision is not None
    log.ok(decision)
    assert allotter.serve("api", "a", q, log.sm.tick_ms, 0)["epoch"] == 0  # not proposed here
    allotter.proposed("api", 1, 0)
    got = allotter.serve("api", "a", q, log.sm.tick_ms, 700)
    assert got["epoch"] == 1 and got["token"] == log.index - 0
    assert got["remaining_ms"] == min(cfg.lease_ms - 400, cfg.lease_ms - 700) - cfg.margin_ms
    other = Allotter(cfg, log.sm.leader_token + 99, 0, 400)
    assert other.serve("api", "a", q, log.sm.tick_ms, 0)["epoch"] == 0


def test_refused_set_limit_names_the_field() -> None:
    with pytest.raises(CommandRejected):
        started().ok(C.QuotaSetLimit(key="", limit_milli=1))


def test_state_view_reads_quotas_as_plain_data() -> None:
    from coreplane.runtime.view import StateView

    log = started()
    log.ok(allot(1, [["a", 5, 1]]))
    view = StateView(log.sm)
    described = view.quotas.describe("api")
    assert described is not None and described["limit_milli"] == LIMIT
    assert view.quotas.share("api", "a")["share_milli"] == 5  # type: ignore[index]
    assert view.quotas.describe("nope") is None


def test_state_view_quota_records_are_copies_of_replicated_state() -> None:
    from coreplane.runtime.view import StateView

    log = started()
    log.ok(C.QuotaSetLimit(key="aaa", limit_milli=LIMIT))
    log.ok(allot(1, [["a", 5, 1]]))
    before = log.sm.state_hash()
    view = StateView(log.sm)
    assert view.quotas.limited_keys() == ("aaa", "api")
    record = view.quotas.record("api")
    assert record is not None and record.next_epoch == 2 and record.epochs[-1].share("a") == 5
    record.epochs.clear()
    record.next_epoch = 99
    assert log.sm.quotas.keys["api"].next_epoch == 2 and len(log.sm.quotas.keys["api"].epochs) == 1
    assert log.sm.state_hash() == before
    assert view.quotas.record("nope") is None


class _PublicSeams:
    """What `Quotas` may use of a ControlPlane: its public face (`node_id`, `leader_id`,
    `is_leader`, `leadership_token`, `read`, `call_command`) and the three internals its
    docstring names (`_clock`, `_tick_interval_s`, `_propose_internal`). Nothing else exists
    here, so a reach into any other private (`_sm`, `_sm_lock`, `_emitted_token`) fails."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.node_id = "n1"
        self.leader_id: str | None = "n1"
        self.token: int | None = log.sm.leader_token
        self.proposed: list[C.Command] = []
        self._tick_interval_s = 0.2
        self._clock = self
        self.now_s = 10.0

    def monotonic(self) -> float:
        return self.now_s

    def is_leader(self) -> bool:
        return self.token is not None

    def leadership_token(self) -> int | None:
        return self.token

    def read(self, fn, *, stale_ok: bool = False, timeout_s: float | None = None):  # type: ignore[no-untyped-def]
        from coreplane.runtime.view import StateView

        return fn(StateView(self.log.sm))

    def call_command(self, command: C.Command, *, timeout_s: float | None = None):  # type: ignore[no-untyped-def]
        return self.log.ok(command)

    def _propose_internal(self, command: C.Command, *, timeout_s: float) -> None:
        self.proposed.append(command)
        self.log.ok(command)


def test_quota_runtime_reads_the_control_plane_only_through_its_public_seams() -> None:
    from coreplane.errors import NotLeader
    from coreplane.runtime.quotas import Quotas

    log = started()
    cp = _PublicSeams(log)
    quotas = Quotas(cp)  # type: ignore[arg-type]
    quotas.leader_step()  # this leadership's allotter; nobody reported yet: an empty epoch
    assert [type(c) for c in cp.proposed] == [C.QuotaAllot]
    # Epoch 1 lists no router: r1 holds nothing of it (epoch 0, "keep what you hold").
    assert quotas.report("api", "r1", 1_000)["epoch"] == 0
    assert quotas.report("nope", "r1", 1)["no_limit"] is True
    assert quotas.describe("api")["limit_milli"] == LIMIT  # type: ignore[index]
    cp.now_s += 1.0  # an epoch later: the next one shares by the reported demand
    quotas.leader_step()
    assert len(cp.proposed) == 2 and cp.proposed[-1].shares == [["r1", USABLE, 1_000]]  # type: ignore[attr-defined]
    got = quotas.share("api", "r1", held_epoch=2)
    assert got["epoch"] == 2 and got["share_milli"] == USABLE
    cp.token = None  # leadership ended: routers are sent away, naming no leader of its own
    with pytest.raises(NotLeader):
        quotas.report("api", "r1", 1_000)


def test_may_decide_is_false_only_where_decide_answers_none() -> None:
    log = started()
    cfg = QuotaConfig()
    allotter = Allotter(cfg, log.sm.leader_token, 0, 400)
    assert allotter.may_decide("api", 0)  # never proposed: due
    allotter.report("api", "a", 1000, 0, 0)
    first = allotter.decide("api", log.sm.quotas.keys["api"], log.sm.tick_ms, 0)
    assert first is not None
    log.ok(first)
    allotter.proposed("api", first.epoch, 0)
    assert allotter.may_decide("api", 10)  # catching up: caught_up may hold at any time
    allotter.report("api", "a", 1000, first.epoch, 20)
    second = allotter.decide("api", log.sm.quotas.keys["api"], log.sm.tick_ms, 30)
    assert second is not None  # caught up: proposed before the epoch is over
    log.ok(second)
    allotter.proposed("api", second.epoch, 30)
    for now_ms in (40, 30 + cfg.epoch_ms - 1):
        assert not allotter.may_decide("api", now_ms)
        assert allotter.decide("api", log.sm.quotas.keys["api"], log.sm.tick_ms, now_ms) is None
    assert allotter.may_decide("api", 30 + cfg.epoch_ms)  # due again


def _new_leader_epochs(late_from_ms: int) -> tuple[QuotaConfig, list[C.QuotaAllot], list[int]]:
    """The leader's work after a leader change, driven as the runtime drives it: a pass every
    20 ms of the new leader's monotonic clock, a Tick every 200 ms carrying the time since the
    previous one (a pass that proposes ends there; its entry applies 30 ms later), routers a
    and b reporting as the answers ask, router c silent until `late_from_ms` (its report to
    the dead leader failed and it is still retrying). The new leader's allotments and, for
    each, the tick time it committed at (its epoch's start)."""
    log = started()
    third = USABLE // 3
    log.ok(allot(1, [["a", third, 1_000], ["b", third, 1_000], ["c", third, 1_000]]))
    token = log.leader("n2")
    cfg = QuotaConfig()
    allotter = Allotter(cfg, token, 0, 2 * 200)
    quota = log.sm.quotas.keys["api"]
    held = {"a": 1, "b": 1, "c": 1}
    due = {"a": 0, "b": 0, "c": late_from_ms}
    proposed: list[C.QuotaAllot] = []
    starts: list[int] = []
    next_tick_ms, last_tick_ms = 0, -1
    now = 0
    while now < 2 * cfg.epoch_ms and len(proposed) < 2:
        for router in "abc":
            if now >= due[router]:
                allotter.report("api", router, 1_000, held[router], now)
                answer = allotter.serve("api", router, quota, log.sm.tick_ms, now)
                held[router] = max(held[router], int(answer["epoch"]))  # type: ignore[call-overload]
                due[router] = now + int(answer["report_ms"])  # type: ignore[call-overload]
        if now >= next_tick_ms:
            elapsed = 200 if last_tick_ms < 0 else now - last_tick_ms
            log.tick(log.sm.tick_ms + min(elapsed, 400))
            next_tick_ms, last_tick_ms = now + 200, now
            now += 30
            continue
        decision = allotter.decide("api", quota, log.sm.tick_ms, now)
        if decision is None:
            now += 20
            continue
        allotter.proposed("api", decision.epoch, now)
        now += 30
        log.ok(decision)
        proposed.append(decision)
        starts.append(quota.epochs[-1].start_ms)
    return cfg, proposed, starts


@pytest.mark.parametrize(("late_from_ms", "still_reserved"), [(0, []), (300, []), (10_000, ["c"])])
def test_a_new_leader_s_second_epoch_starts_within_an_epoch_of_its_first_in_tick_time(
    late_from_ms: int, still_reserved: list[str]
) -> None:
    """The catch-up after a leader change (coreplane/runtime/quotas.py): the second epoch
    lifts the first one's cap as soon as every router holds the first, and in any case
    commits less than `epoch_ms` of tick time after it, a router still silent or not (it once
    came 1,062 tick-ms after, a router still in its client's retry backoff); a router that has
    not said it holds the first keeps its fallback reserved."""
    cfg, (first, second), (first_ms, second_ms) = _new_leader_epochs(late_from_ms)
    assert first.reserved == ["a", "b", "c"]  # the first under a new leader reserves all
    assert second_ms - first_ms < cfg.epoch_ms
    assert second.reserved == still_reserved
    assert second.reserved_now == still_reserved
    if not still_reserved:  # everyone holds the first: the cap is lifted at once
        assert sum(s[1] for s in second.shares) > USABLE * 95 // 100
