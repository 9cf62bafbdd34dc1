"""Global rate limits on a real 3-node cluster on 127.0.0.1: ten routers with skewed demand.

Each router runs in a thread of this process with its own `Client` (HTTP to the cluster's
ApiServers) and offers requests at its own paced rate; every admitted request is timestamped.
The admitted rate of the whole fleet is then counted in every 1 s window (sliding, 50 ms apart):

- steady state: within 5% of the limit (the budget keeps 2% plus one request per router for the
  buckets' depth, so it sits just under the limit); asserted on the mean over the windows whose
  offering threads all ran on time (a starved thread loses tokens), the minimum reported;
- the leader is stopped: no window ever exceeds the limit, and full use is back within one
  epoch of the new leader's first. The new leader's first epoch reserves every router's
  fallback (it cannot know who fell back), so it caps the largest shares; its second epoch lifts
  the cap as soon as every router holds the first (coreplane/runtime/quotas.py, "Catching up").
  Asserted in epoch terms: the second epoch's tick time is less than `epoch_ms` after the
  first's, and it allots the budget; and the admitted rate from one epoch after the first new
  share on is the steady one.

The numbers are printed (run with ``-s``) and written to ``$COREPLANE_QUOTA_REPORT`` if set.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from coreplane.sdk import Client, Router
from tests.integration.api_support import CONFIG, TOKEN

pytestmark = pytest.mark.slow

LIMIT_RPS = 1_000
DEMANDS_RPS = [10, 20, 40, 60, 80, 100, 150, 200, 300, 400]  # 1,360 offered in all
WINDOW_S = 1.0
STEP_S = 0.05
# A starved offering thread lost tokens a router's 20 ms bucket cannot hold: not the limit's doing.
LATE_S = 0.03


class Offered(threading.Thread):
    """Offers `rps` requests per second to `router`, paced every 10 ms; logs admissions."""

    def __init__(self, router: Router, rps: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.router, self.rps, self.stop = router, rps, stop
        self.admitted: list[float] = []
        self.late: list[float] = []  # when this thread ran later than a router's bucket holds

    def run(self) -> None:
        start = time.monotonic()
        offered = 0
        while not self.stop.is_set():
            now = time.monotonic()
            due = int((now - start) * self.rps)
            if due - offered > self.rps * LATE_S:
                self.late.append(now)
            while offered < due:
                offered += 1
                if self.router.try_acquire():
                    self.admitted.append(time.monotonic())
            time.sleep(0.01)


def windows(stamps: list[float], start: float, end: float) -> list[tuple[float, int]]:
    """(window start, admitted in [start, start + 1 s)) every STEP_S."""
    stamps = sorted(stamps)
    out = []
    lo = hi = 0
    t = start
    while t + WINDOW_S <= end:
        while lo < len(stamps) and stamps[lo] < t:
            lo += 1
        while hi < len(stamps) and stamps[hi] < t + WINDOW_S:
            hi += 1
        out.append((t, hi - lo))
        t += STEP_S
    return out


def test_ten_routers_share_one_limit_through_a_leader_change(
    api_cluster: Any, wait_until: Callable[..., Any]
) -> None:
    cluster, servers = api_cluster
    leader = cluster.leader()
    leader.quotas.set_limit("global", LIMIT_RPS * 1000, routers_max=len(DEMANDS_RPS))
    urls = [s.url for s in servers.values()]
    stop = threading.Event()
    clients = [Client(urls, TOKEN, CONFIG) for _ in DEMANDS_RPS]
    routers = [Router(c, "global", f"edge-{i}") for i, c in enumerate(clients)]
    offered = [Offered(r, rps, stop) for r, rps in zip(routers, DEMANDS_RPS, strict=True)]
    t0 = time.monotonic()
    for o in offered:
        o.start()
    try:
        time.sleep(12.0)
        kill_at = time.monotonic()
        servers[leader.node_id].stop()
        leader.stop()
        del cluster.nodes[leader.node_id]
        new_leader = cluster.leader(timeout_s=15)
        elected_at = time.monotonic()
        # The new leader's epochs are those allotted after its Leader entry (their tokens are
        # log indexes). Not "newer than any share a router held at the kill": the old leader
        # may commit an epoch no router picks up (proposed just before the kill, or after its
        # API server stopped and before it did), full-budget and before the election; taken
        # for the new leader's first, it made the check of the gap measure old-to-new.
        new_token = new_leader.fencing_token
        assert new_token is not None
        picked = {}  # router -> (time, epoch) it first held a share of the new leader

        def watch_pickups() -> None:
            while len(picked) < len(routers) and not stop.is_set():
                for r in routers:
                    if r.router_id not in picked and r.schedule.token > new_token:
                        picked[r.router_id] = (time.monotonic(), r.schedule.epoch)
                time.sleep(0.005)

        threading.Thread(target=watch_pickups, daemon=True).start()
        first_new = wait_until(
            lambda: next((time.monotonic() for r in routers if r.schedule.token > new_token), None),
            15,
            "a share from the new leader",
        )
        new_epochs: dict[int, list[Any]] = {}  # epoch n -> [n, token, start_ms, end_ms, ...]

        def two_new_epochs() -> bool:
            got = new_leader.quotas.describe("global", stale_ok=True) or {"epochs": []}
            for e in got["epochs"]:
                if e[1] > new_token:
                    new_epochs.setdefault(e[0], e)
            return len(new_epochs) >= 2

        wait_until(two_new_epochs, 15, "two epochs from the new leader")
        time.sleep(10.0)
    finally:
        stop.set()
        for o in offered:
            o.join(5)
        for r in routers:
            r.close()
        for c in clients:
            c.close()
    end = time.monotonic()
    stamps = [t for o in offered for t in o.admitted]
    every = windows(stamps, t0, end)
    steady = [n for t, n in every if t0 + 5.0 <= t and t + WINDOW_S <= kill_at]
    late = sorted(t for o in offered for t in o.late)
    on_time = [
        n
        for t, n in every
        if t0 + 5.0 <= t
        and t + WINDOW_S <= kill_at
        and not any(t <= x < t + WINDOW_S for x in late)
    ]
    after_kill = [(t, n) for t, n in every if t + WINDOW_S > kill_at]
    epoch_s = new_leader.quotas.config.epoch_ms / 1000
    report_s = routers[0].report_ms / 1000
    first_epoch, second_epoch = (new_epochs[n] for n in sorted(new_epochs)[:2])
    usable_milli = new_leader.quotas.describe("global", stale_ok=True)["usable_milli"]
    recovered = [n for t, n in every if t >= first_new + epoch_s]
    first_full = next((t for t, n in every if t >= first_new and n >= 0.95 * LIMIT_RPS), None)
    report = {
        "limit_rps": LIMIT_RPS,
        "demands_rps": DEMANDS_RPS,
        "window_s": WINDOW_S,
        "steady_min": min(steady),
        "steady_max": max(steady),
        "steady_mean": round(sum(steady) / len(steady), 1),
        "steady_windows_on_time": len(on_time),
        "steady_mean_on_time": round(sum(on_time) / len(on_time), 1) if on_time else None,
        "max_window_overall": max(n for _t, n in every),
        "max_window_after_kill": max(n for _t, n in after_kill),
        "min_window_after_kill": min(n for _t, n in after_kill),
        "leader_elected_after_kill_s": round(elected_at - kill_at, 3),
        "first_new_share_after_kill_s": round(first_new - kill_at, 3),
        "full_use_again_after_kill_s": None
        if first_full is None
        else round(first_full + WINDOW_S - kill_at, 3),
        "full_window_starts_after_first_new_share_s": None
        if first_full is None
        else round(first_full - first_new, 3),
        "recovered_min_from_one_epoch_after_first_new_share": min(recovered),
        "recovered_mean_from_one_epoch_after_first_new_share": round(
            sum(recovered) / len(recovered), 1
        ),
        "new_leader_epochs_tick_ms_apart": second_epoch[2] - first_epoch[2],
        "new_leader_first_epoch_shares_sum_milli": sum(s[1] for s in first_epoch[4]),
        "new_leader_second_epoch_shares_sum_milli": sum(s[1] for s in second_epoch[4]),
        "usable_milli": usable_milli,
        "new_leader_epochs": [e[:4] for e in (first_epoch, second_epoch)],
        "new_leader_epochs_reserved": [e[5] for e in (first_epoch, second_epoch)],
        "routers_first_new_share_after_first_new_s": {
            name: (round(t - first_new, 3), n) for name, (t, n) in sorted(picked.items())
        },
        "routers_last_error": {r.router_id: repr(r.last_error) for r in routers if r.last_error},
        "epoch_s": epoch_s,
        "report_s": report_s,
        "windows_after_kill": [(round(t - kill_at, 2), n) for t, n in after_kill][::4],
        "shares_milli": [r.schedule.share_milli for r in routers],
        "admitted_per_router": [len(o.admitted) for o in offered],
    }
    print(json.dumps(report, indent=1))
    path = os.environ.get("COREPLANE_QUOTA_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(report, fh, indent=1)
    # Safety holds on any machine; the use figures depend on the offering threads getting the
    # CPU (a starved one loses the tokens its 20 ms bucket cannot hold), so the test asserts
    # means and the report gives every window's minimum.
    assert report["max_window_overall"] <= LIMIT_RPS  # never above the limit, kill included
    # Within 5% of the limit in steady state, counted over the windows in which every offering
    # thread ran on time; a machine too loaded to give any such window still owes 90%.
    if len(on_time) >= 5:
        assert report["steady_mean_on_time"] >= 0.95 * LIMIT_RPS
    else:
        assert report["steady_mean"] >= 0.90 * LIMIT_RPS
    # Full use within one epoch of the new leader's first, in epoch terms (tick time from the
    # log): the second epoch follows the first by less than an epoch, and one of the two allots
    # the budget (the first does when every router's fallback is already covered; a second
    # that follows it so soon must reserve what routers may still spend of the first).
    assert report["new_leader_epochs_tick_ms_apart"] < new_leader.quotas.config.epoch_ms
    allotted = max(
        report["new_leader_first_epoch_shares_sum_milli"],
        report["new_leader_second_epoch_shares_sum_milli"],
    )
    assert allotted >= 0.95 * usable_milli
    # ... and the routers use it: from one epoch after the first new share on, the admitted
    # rate is the steady one (compared with steady state, so a starved offering thread on a
    # loaded machine, which the steady assertion already answers for, does not count twice).
    recovered_mean = report["recovered_mean_from_one_epoch_after_first_new_share"]
    assert recovered_mean >= report["steady_mean"] - 0.02 * LIMIT_RPS
