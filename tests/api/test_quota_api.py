"""Quota routes and `coreplane.sdk.Router` against a LocalControlPlane running the real quota
runtime (`Quotas`, `Allotter`, the machine): roles, 400s naming the field, fuzzed bodies, and a
router that reports, gets a share and admits from its bucket."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coreplane.api.server import ApiServer
from coreplane.core import commands as C
from coreplane.core.machines.quotas import BURST_MS, usable_milli
from coreplane.runtime.quotas import Quotas
from coreplane.sdk import Client, LongRunningConfig, Router
from coreplane.sdk.router import Schedule
from tests.api.local import ADMIN, AGENT, CLIENT, TOKENS, LocalControlPlane


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


class QuotaLocal(LocalControlPlane):
    """The stand-in plus what the quota runtime reads: the leadership token, and the clock, tick
    period and internal proposal path it still reads from ControlPlane's internals."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()
        self._tick_interval_s = 0.2
        self.results: list[Any] = []
        self._index += 1
        self._token = self._index
        self.sm.apply(C.encode_internal(C.Leader(node_id=self.node_id, term=1)), self._index)
        self.quotas = Quotas(self)  # type: ignore[arg-type]
        self.quotas.leader_step()  # this leader's allotter: reports are served from now on

    def leadership_token(self) -> int | None:
        return self._token

    def _propose_internal(self, command: C.Command, *, timeout_s: float) -> None:
        with self._lock:
            self._index += 1
            self.results.append(self.sm.apply(C.encode_internal(command), self._index))


@pytest.fixture(scope="module")
def quota_served() -> Iterator[tuple[QuotaLocal, ApiServer]]:
    cp = QuotaLocal()
    server = ApiServer(cp, "127.0.0.1:0", tokens=TOKENS, body_bytes_max=64 * 1024)
    server.start()
    try:
        yield cp, server
    finally:
        server.stop()


def post(server: ApiServer, path: str, body: object, token: str = CLIENT) -> httpx.Response:
    return httpx.post(
        server.url + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_only_admins_set_limits_and_agents_do_not_route(quota_served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = quota_served
    body = {"key": "roles", "limit_milli": 5_000}
    assert post(server, "/v1/quotas/limits/set", body).status_code == 403
    r = post(server, "/v1/quotas/limits/set", {**body, "client_id": "a", "seq": 1}, ADMIN)
    assert r.status_code == 200 and r.json() == {"created": True}
    report = {"key": "roles", "router": "r1", "demand_milli": 1}
    assert post(server, "/v1/quotas/report", report, AGENT).status_code == 403
    assert post(server, "/v1/quotas/report", report).status_code == 200
    r = post(
        server, "/v1/quotas/limits/delete", {"key": "roles", "client_id": "a", "seq": 2}, ADMIN
    )
    assert r.json() == {"deleted": True}
    assert post(server, "/v1/quotas/report", report).json() == {"epoch": 0, "no_limit": True}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/quotas/report", {"key": "k", "router": "r", "demand_milli": "1"}, "demand_milli"),
        ("/v1/quotas/report", {"key": "k", "router": "r", "demand_milli": -1}, "demand_milli"),
        ("/v1/quotas/report", {"key": "k", "router": "r", "demand_milli": 10**16}, "demand_milli"),
        ("/v1/quotas/report", {"key": "k", "router": "r" * 129, "demand_milli": 1}, "router"),
        ("/v1/quotas/report", {"key": "", "router": "r", "demand_milli": 1}, "key"),
        ("/v1/quotas/report", {"router": "r", "demand_milli": 1}, "key"),
        ("/v1/quotas/report", {"key": "k", "router": "r", "demand_milli": 1, "x": 1}, "x"),
        ("/v1/quotas/share", {"key": "k", "router": "r", "held_epoch": True}, "held_epoch"),
        ("/v1/quotas/limits/set", {"key": "k", "limit_milli": 0}, "limit_milli"),
        ("/v1/quotas/limits/set", {"key": "k", "limit_milli": 1, "routers_max": 0}, "routers_max"),
        ("/v1/quotas/limits/set", {"key": "k" * 257, "limit_milli": 1}, "key"),
        ("/v1/quotas/limits/delete", {"key": "k", "seq": 3}, "client_id"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    quota_served,
    path: str,
    body: dict[str, Any],  # type: ignore[no-untyped-def]
    field: str,
) -> None:
    cp, server = quota_served
    before = len(cp.proposed)
    r = post(server, path, body, ADMIN)
    assert r.status_code == 400 and r.json()["field"] == field
    assert len(cp.proposed) == before  # refused before anything was proposed


FIELDS = [
    "key",
    "router",
    "demand_milli",
    "held_epoch",
    "limit_milli",
    "routers_max",
    "client_id",
    "seq",
    "stale_ok",
    "timeout_ms",
    "epoch",
    "shares",
    "zzz",
]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
    st.lists(st.integers(), max_size=3),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=60
)
@given(
    path=st.sampled_from(
        [
            "/v1/quotas/report",
            "/v1/quotas/share",
            "/v1/quotas/describe",
            "/v1/quotas/limits/set",
            "/v1/quotas/limits/delete",
        ]
    ),
    body=st.dictionaries(st.sampled_from(FIELDS), values, max_size=6),
    token=st.sampled_from([ADMIN, CLIENT, AGENT]),
)
def test_fuzzed_bodies_never_make_a_server_error(
    quota_served,
    path: str,  # type: ignore[no-untyped-def]
    body: dict[str, Any],
    token: str,
) -> None:
    _cp, server = quota_served
    r = post(server, path, body, token)
    assert r.status_code in (200, 400, 403, 409), (r.status_code, r.text[:300])
    assert b"Traceback" not in r.content


def test_router_reports_gets_a_share_and_admits_from_its_bucket(quota_served) -> None:  # type: ignore[no-untyped-def]
    cp, server = quota_served
    cp.call_command(C.QuotaSetLimit(key="edge", limit_milli=100_000, routers_max=2))
    cp.tick(1_000)
    client = Client([server.url], CLIENT, LongRunningConfig(health_check_interval_ms=0))
    clock = [1000.0]
    routers = [
        Router(client, "edge", f"r{i}", start=False, clock=lambda: clock[0]) for i in range(2)
    ]
    try:
        for _ in range(6):  # two reports per epoch: demand, then "I hold it"
            for i, router in enumerate(routers):
                for _ in range(10 * (i + 1)):
                    router.try_acquire()
                router.report_once()
            cp._clock.now += 0.5
            for _ in range(50):  # one key per pass; other tests' keys come first
                cp.quotas.leader_step()
        used = [router.report_once() for router in routers]
        assert used == [True, True], cp.results
        usable = usable_milli(100_000, 2)
        shares = [router.schedule.share_milli for router in routers]
        assert sum(shares) <= usable and shares[1] > shares[0] > 0
        epoch = cp.sm.quotas.keys["edge"].epochs[-1]
        assert routers[0].schedule.token == epoch.token and routers[0].mode == "share"
        # one simulated second at the share's rate, plus the bucket's depth, and no more
        admitted = 0
        for _ in range(100):  # 10 ms steps, as many requests as it admits each time
            clock[0] += 0.01
            while routers[1].try_acquire():
                admitted += 1
        rate = shares[1] / 1000
        assert int(rate) - 1 <= admitted <= int(rate + rate * BURST_MS / 1000) + 1
    finally:
        client.close()


def test_schedule_spends_share_then_nothing_then_fallback_then_closes() -> None:
    s = Schedule()
    answer = {
        "epoch": 3,
        "token": 77,
        "share_milli": 50_000,
        "remaining_ms": 1_000,
        "zone_ms": 2_000,
        "fallback_milli": 10_000,
        "fallback_max_ms": 5_000,
        "rtt_max_ms": 500,
        "burst_ms": 20,
    }
    assert not s.accept(answer, 0, 600)  # too slow an answer is not used
    assert s.accept(answer, 100, 200)
    assert [s.mode(t) for t in (500, 1_200, 3_200, 9_000)] == [
        "share",
        "zone",
        "fallback",
        "closed",
    ]
    assert [s.rate(t) for t in (500, 1_200, 3_200, 9_000)] == [50_000, 0, 10_000, 0]
    assert s.integral(0, 1_100) == 55_000 and s.integral(1_100, 3_100) == 0
    assert not s.accept({**answer, "epoch": 2}, 300, 310)  # an older epoch never replaces


def test_router_thread_stops_on_close(quota_served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = quota_served
    client = Client([server.url], CLIENT, LongRunningConfig(health_check_interval_ms=0))
    router = Router(client, "nokey", "r9")
    router.close()
    client.close()
    assert not any(t.name == "coreplane-router-r9" for t in threading.enumerate())


class _Failover:
    """Three API endpoints through httpx's MockTransport: `old` (the dead leader: connection
    refused), `a` and `b` (followers that know no leader while `elected` is None, then name
    it; the leader answers a share). Records each report sent."""

    SHARE = {
        "epoch": 7,
        "token": 90,
        "share_milli": 10_000,
        "remaining_ms": 1_800,
        "limit_milli": 100_000,
        "fallback_milli": 5_000,
        "zone_ms": 2_100,
        "rtt_max_ms": 500,
        "fallback_max_ms": 110_000,
        "report_ms": 50,
        "burst_ms": BURST_MS,
    }

    def __init__(self) -> None:
        self.elected: str | None = None
        self.reports: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "old":
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/v1/members":
            api = {n: f"https://{n}" for n in ("old", "a", "b")}
            return httpx.Response(200, json={"api": api, "leader": self.elected})
        self.reports.append(host)
        if host != self.elected:
            leader = self.elected or ""
            return httpx.Response(
                503, json={"error": "not_leader", "message": "not me", "leader": leader}
            )
        return httpx.Response(200, json=self.SHARE)


def test_a_router_that_lost_the_leader_retries_at_its_own_pace_and_finds_the_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A report is one attempt, not a call the client retries with its growing backoff (a
    router once sat in that backoff and reached the new leader 0.75 s after its first epoch,
    which held up the epoch that lifts the new leader's cap): the router reports again after
    a jittered wait doubling from 50 ms to its report interval, and the first report after
    the election that reaches a live node gets the new leader's share."""
    slept: list[float] = []
    monkeypatch.setattr("coreplane.sdk.client.time.sleep", slept.append)
    cluster = _Failover()
    config = LongRunningConfig(health_check_interval_ms=0, max_attempts=8)
    with Client(["https://old", "https://a", "https://b"], CLIENT, config) as client:
        client._http = httpx.Client(transport=httpx.MockTransport(cluster))
        client.endpoints.learn({"api": {n: f"https://{n}" for n in ("old", "a", "b")}})
        client.endpoints.leader_url = "https://old"
        router = Router(client, "edge", "r1", start=False, clock=lambda: 5.0)
        assert router.next_report_ms() == router.report_ms == 250  # before any answer
        waits = []
        for _ in range(8):  # the election: nobody leads
            before = len(cluster.reports)
            assert not router.report_once()
            assert len(cluster.reports) - before <= 1  # the dead leader's never arrives
            waits.append(router.next_report_ms())
        assert not any(slept)  # no backoff inside a report
        caps = [min(250, 50 << i) for i in range(8)]
        assert all(cap - cap // 2 <= w <= cap for w, cap in zip(waits, caps, strict=True)), waits
        cluster.elected = "b"
        used = [router.report_once() for _ in range(2)]
        assert used[0] or used[1]  # at most one more failure: the client learns who leads
        assert router.schedule.epoch == 7 and router.mode == "share"
        assert router.next_report_ms() == 50  # as the new leader's answer asks
        assert not any(slept)  # a redirect to the leader named goes at once
