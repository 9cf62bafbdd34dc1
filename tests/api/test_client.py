"""The SDK clients against a real ApiServer over a LocalControlPlane (fast, exact)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from coreplane.errors import (
    CommandRejected,
    InvalidArgument,
    LockLost,
    PermissionDenied,
    Unavailable,
)
from coreplane.sdk import AsyncClient, Client, FencedResource, LongRunningConfig
from coreplane.testing.ports import free_ports
from tests.api.local import AGENT, CLIENT

FAST = LongRunningConfig(
    backoff_base_ms=1,
    backoff_cap_ms=5,
    health_check_interval_ms=0,
    lock_poll_ms=5,
    connect_timeout_ms=500,
    request_timeout_ms=2_000,
)


def test_kv_and_leases_through_the_client(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    with Client([server.url], CLIENT, FAST) as c:
        rev = c.put("sdk/a", b"1")
        assert c.get("sdk/a") == (b"1", rev)
        assert c.get("sdk/none", stale_ok=True) is None
        with pytest.raises(CommandRejected) as info:
            c.cas("sdk/a", rev + 1000, b"2")
        assert info.value.code == "compare_failed"
        assert c.cas("sdk/a", rev, b"2") > rev
        c.put("sdk/b", b"3")
        assert [k for k, _v, _r in c.range("sdk/")] == ["sdk/a", "sdk/b"]
        assert c.delete("sdk/b") == 1
        lease = c.lease_grant(5_000)
        c.put("sdk/leased", b"x", lease_id=lease)
        assert c.lease_keep_alive(lease) > 0
        assert c.lease_revoke(lease) == 1
        assert c.status()["node_id"] == "n1"
        assert c.members()["leader"] == "n1"
        with pytest.raises(InvalidArgument) as bad:
            c.put("", b"x")
        assert bad.value.field == "key"


def test_wrong_role_is_permission_denied_and_not_retried(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    with Client([server.url], AGENT, FAST) as c:
        with pytest.raises(PermissionDenied):
            c.get("k")
        assert c.endpoints.breakers[server.url].failures == 0


def test_a_dead_endpoint_is_skipped_and_the_leader_is_preferred(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    with Client([dead, server.url], CLIENT, FAST) as c:
        for i in range(5):
            c.put(f"fail/{i}", b"v")  # the first attempt hits the dead one, then moves on
        assert c.endpoints.breakers[dead].failures == 1  # then the leader was learned
        assert c.endpoints.order()[0] == server.url == c.endpoints.leader_url


def test_the_breaker_opens_on_a_dead_endpoint_and_then_fails_fast() -> None:
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    with Client([dead], CLIENT, FAST.with_(max_attempts=2)) as c:
        for _ in range(3):
            with pytest.raises(Unavailable):
                c.get("k")
        breaker = c.endpoints.breakers[dead]
        assert breaker.state == "open" and breaker.opened == 1
        with pytest.raises(Unavailable, match="circuit breaker is open"):
            c.get("k")


def test_unavailable_is_retried_within_the_budget_then_raised(served) -> None:  # type: ignore[no-untyped-def]
    cp, server = served
    cp.down = True
    try:
        with Client([server.url], CLIENT, FAST.with_(max_attempts=3)) as c:
            with pytest.raises(Unavailable) as info:
                c.get("k")
            assert "3 attempts" in str(info.value)
    finally:
        cp.down = False


def test_draining_sends_no_new_request_and_forgets_when_idle(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    other = "http://127.0.0.1:9"  # never used: drained before any call
    with Client([other, server.url], CLIENT, FAST) as c:
        c.drain(other)
        assert c.endpoints.all() == [server.url]
        c.put("drain/k", b"v")
        assert c.endpoints.breakers[server.url].failures == 0


def test_lock_fifo_between_two_clients_and_fenced_writes(served) -> None:  # type: ignore[no-untyped-def]
    cp, server = served
    fence = FencedResource()
    order: list[str] = []
    with Client([server.url], CLIENT, FAST) as a, Client([server.url], CLIENT, FAST) as b:
        with a.lock("fifo", ttl_ms=5_000) as la:
            fence.check("res", la.token)
            got_b = threading.Event()

            def second() -> None:
                with b.lock("fifo", ttl_ms=5_000) as lb:
                    order.append("b")
                    fence.check("res", lb.token)
                    got_b.set()

            t = threading.Thread(target=second)
            t.start()
            deadline = time.monotonic() + 5
            while cp.read(lambda sm: sm.locks.describe("fifo")["waiters"]) != 1:
                assert time.monotonic() < deadline, "b never queued"
                time.sleep(0.01)
            assert not got_b.is_set()  # queued behind a
            order.append("a")
            a.put("fifo/owner", b"a", guard=la)
            first_token = la.token
        t.join(5)
        assert order == ["a", "b"] and got_b.is_set()
        assert fence.highest("res") > first_token
        with pytest.raises(LockLost):
            la.check()  # released


def test_lock_lost_when_the_session_expires(served) -> None:  # type: ignore[no-untyped-def]
    cp, server = served
    cp.tick(10_000)
    lost: list[object] = []
    with Client([server.url], CLIENT, FAST) as c:
        lock = c.lock("expiring", ttl_ms=1_000, on_lost=lost.append).acquire()
        token = lock.check()
        cp.tick(10_000 + 1_000)  # cluster time passes the TTL: the session expires
        deadline = time.monotonic() + 5
        while not lock.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lock.lost and lost == [lock]
        with pytest.raises(LockLost):
            c.put("expiring/x", b"v", guard=lock)
        assert token > 0
        lock.release()


def test_the_async_client_has_the_same_shape(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served

    async def main() -> None:
        async with AsyncClient([server.url], CLIENT, FAST) as c:
            rev = await c.put("async/a", b"1")
            assert await c.get("async/a") == (b"1", rev)
            assert [k for k, _v, _r in await c.range("async/")] == ["async/a"]
            async with c.lock("async-lock", ttl_ms=2_000) as lock:
                assert lock.check() > 0
                await c.put("async/b", b"2", guard=lock)
            with pytest.raises(LockLost):
                lock.check()
            with pytest.raises(CommandRejected):
                await c.cas("async/a", 0, b"x")

    asyncio.run(main())


def test_watch_through_the_client_resumes_by_revision(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    with Client([server.url], CLIENT, FAST) as c:
        first = c.put("watch/a", b"1")
        c.put("other/z", b"-")
        c.delete("watch/a")
        events = c.watch_events("watch/", start_revision=first, wait_ms=100)
        got = [next(events), next(events)]
        assert [(kind, key) for _r, kind, key, _v in got] == [
            ("put", "watch/a"),
            ("delete", "watch/a"),
        ]
        assert got[0][3] == b"1"
        batch, resume = c.watch("watch/", start_revision=got[1][0] + 1, wait_ms=50)
        assert batch == [] and resume >= got[1][0] + 1


def test_a_client_reuses_one_lock_session_per_ttl_until_it_is_lost(served) -> None:  # type: ignore[no-untyped-def]
    from coreplane.core import commands as C

    cp, server = served

    def grants() -> int:
        return sum(C.decode(p).TAG == C.LockSessionGrant.TAG for p in cp.proposed)

    with Client([server.url], CLIENT, FAST) as c:
        before = grants()
        tokens = []
        for _ in range(3):
            with c.lock("reuse", ttl_ms=4_000) as lock:
                tokens.append(lock.token)
        assert grants() == before + 1 and tokens == sorted(set(tokens))  # 2 proposals a cycle
        session = lock._session
        cp.tick(cp.sm.tick_ms + 4_000)  # the cluster expires the idle session
        with c.lock("reuse", ttl_ms=4_000) as again:
            assert again._session is not session and again.token > tokens[-1]
        assert grants() == before + 2


def test_health_checks_open_a_dead_endpoints_breaker_without_user_traffic(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    config = FAST.with_(health_check_interval_ms=20, breaker_failures=3)
    with Client([dead, server.url], CLIENT, config) as c:
        deadline = time.monotonic() + 10
        while c.endpoints.breakers[dead].state == "closed":
            assert time.monotonic() < deadline, "the health checks never opened the breaker"
            time.sleep(0.01)
        assert c.endpoints.breakers[server.url].state == "closed"
        assert c.endpoints.leader_url == server.url  # refreshed by the health loop too
    assert not c._health.is_alive()  # close() waited for the health thread


def test_a_followers_not_leader_hint_redirects_at_once_without_a_failure() -> None:
    import httpx

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.host == "follower":
            return httpx.Response(
                503, json={"error": "not_leader", "message": "go to l", "leader": "l"}
            )
        return httpx.Response(200, json={"found": False})

    # https: the calls go through httpx (plain http takes the SDK's own wire), mocked here.
    with Client(["https://follower", "https://leader"], CLIENT, FAST) as c:
        c._http = httpx.Client(transport=httpx.MockTransport(handler))
        c.endpoints.learn({"api": {"f": "https://follower", "l": "https://leader"}, "leader": None})
        c.endpoints.leader_url = "https://follower"  # a stale idea of who leads
        assert c.get("k") is None
        assert seen == ["follower", "leader"]
        assert c.endpoints.breakers["https://follower"].failures == 0  # healthy, not failed
        assert c.endpoints.leader_url == "https://leader"
        seen.clear()
        c.get("k")
        assert seen == ["leader"]  # the next call goes to the leader first


def test_an_election_retries_without_opening_the_breakers_of_live_nodes() -> None:
    """While no leader is known every node answers 503 ``not_leader`` without a hint: the
    call is retried after backoff until a leader is elected, and neither live node's
    breaker counts a failure, even at a threshold of one."""
    import dataclasses

    import httpx

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/members":
            api = {"a": "https://a", "b": "https://b"}
            return httpx.Response(200, json={"api": api, "leader": None})
        seen.append(request.url.host)
        if len(seen) <= 3:
            return httpx.Response(503, json={"error": "not_leader", "message": "no leader"})
        return httpx.Response(200, json={"found": False})

    config = dataclasses.replace(FAST, breaker_failures=1, max_attempts=6)
    with Client(["https://a", "https://b"], CLIENT, config) as c:
        c._http = httpx.Client(transport=httpx.MockTransport(handler))
        assert c.get("k") is None
        assert len(seen) == 4
        assert {u: b.failures for u, b in c.endpoints.breakers.items()} == {
            "https://a": 0,
            "https://b": 0,
        }


def test_stale_reads_go_to_the_followers_in_turn_and_the_rest_to_the_leader() -> None:
    import httpx

    seen: list[tuple[str, bool]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        from coreplane.core.codec import decode_value

        body = decode_value(request.content)
        seen.append((request.url.host, bool(body.get("stale_ok"))))
        if request.url.host == "f2" and body.get("stale_ok"):
            return httpx.Response(503, json={"error": "unavailable", "message": "down"})
        if request.url.path == "/v1/kv/put":
            return httpx.Response(200, json={"revision": 1})
        if request.url.path == "/v1/kv/range":
            return httpx.Response(200, json={"items": []})
        return httpx.Response(200, json={"found": False})

    urls = {"l": "https://l", "f1": "https://f1", "f2": "https://f2"}
    with Client(list(urls.values()), CLIENT, FAST) as c:
        c._http = httpx.Client(transport=httpx.MockTransport(handler))
        c.endpoints.learn({"api": urls, "leader": "l"})
        c.get("k", stale_ok=True)
        c.get("k", stale_ok=True)
        c.range("k", stale_ok=True)
        c.get("k")
        c.put("k", b"v")
    hosts = [h for h, _stale in seen]
    assert seen[-2:] == [("l", False), ("l", False)]  # linearizable read and write: leader
    stale = hosts[:-2]
    assert "l" not in stale[:1] and set(stale) <= {"f1", "f2"}  # never the leader first
    assert stale.count("f1") == 3  # every stale read was answered by f1 in the end ...
    assert "f2" in stale  # ... after f2 was asked first in its turn (and failed over)
    with Client(list(urls.values()), CLIENT, FAST) as c:
        c.endpoints.learn({"api": urls, "leader": "l"})
        firsts = {c.endpoints.order(followers_first=True)[0] for _ in range(4)}
        assert firsts == {"https://f1", "https://f2"}  # in turn
        assert c.endpoints.order(followers_first=True)[-1] == "https://l"
        assert c.endpoints.order()[0] == "https://l"


def _routes_answered(server) -> dict[str, float]:  # type: ignore[no-untyped-def]
    out: dict[str, float] = {}
    for metric in server.obs.metrics.api.requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                route = sample.labels["route"]
                out[route] = out.get(route, 0.0) + sample.value
    return out


def test_a_deferred_release_rides_on_the_next_acquire(served) -> None:  # type: ignore[no-untyped-def]
    from coreplane.core import commands as C

    cp, server = served
    slow = FAST.with_(lock_release_linger_ms=60_000)  # only an acquire or close sends it
    with Client([server.url], CLIENT, slow) as c:
        with c.lock("ride", ttl_ms=5_000) as first:
            pass
        with pytest.raises(LockLost):
            first.check()  # ended here at once
        holder = lambda: cp.read(lambda sm: sm.locks.describe("ride")["holder"])  # noqa: E731
        assert holder() == first.session_id  # the cluster has not seen the release yet
        before, proposed = _routes_answered(server), len(cp.proposed)
        with c.lock("ride", ttl_ms=5_000) as second:
            assert second.token > first.token  # released, then granted afresh
        after = _routes_answered(server)
        assert after.get("/v1/locks/acquire", 0) - before.get("/v1/locks/acquire", 0) == 1
        assert after.get("/v1/locks/release", 0) == before.get("/v1/locks/release", 0)
        both = [C.decode(p) for p in cp.proposed[proposed:]]
        assert [type(x) for x in both] == [C.LockReleaseAcquire]  # one request, one entry
        assert both[0].release == both[0].name == "ride"
        assert both[0].release_seq and both[0].release_seq != both[0].seq
    assert holder() == 0  # closing the client released the last one


def test_a_deferred_release_goes_on_its_own_after_the_linger(served) -> None:  # type: ignore[no-untyped-def]
    cp, server = served
    holder = lambda: cp.read(lambda sm: sm.locks.describe("linger")["holder"])  # noqa: E731
    lingering = FAST.with_(lock_release_linger_ms=20)
    with Client([server.url], CLIENT, lingering) as a, Client([server.url], CLIENT, FAST) as b:
        with a.lock("linger", ttl_ms=5_000):
            pass
        deadline = time.monotonic() + 5
        while holder() != 0:  # no other request from a: its timer sent the release
            assert time.monotonic() < deadline, "the deferred release never went out"
            time.sleep(0.01)
        with b.lock("linger", ttl_ms=5_000) as lb:
            assert lb.check() > 0


def test_without_linger_the_release_is_sent_at_once(served) -> None:  # type: ignore[no-untyped-def]
    from coreplane.sdk import ServerlessConfig

    cp, server = served
    assert ServerlessConfig().lock_release_linger_ms == 0
    with Client([server.url], CLIENT, FAST.with_(lock_release_linger_ms=0)) as c:
        with c.lock("at-once", ttl_ms=5_000):
            pass
        assert cp.read(lambda sm: sm.locks.describe("at-once")["holder"]) == 0


def test_the_async_lock_defers_its_release_too(served) -> None:  # type: ignore[no-untyped-def]
    cp, server = served
    holder = lambda: cp.read(lambda sm: sm.locks.describe("async-ride")["holder"])  # noqa: E731

    async def main() -> list[int]:
        async with AsyncClient([server.url], CLIENT, FAST.with_(lock_release_linger_ms=20)) as c:
            tokens = []
            for _ in range(3):
                async with c.lock("async-ride", ttl_ms=5_000) as lock:
                    tokens.append(lock.token)
            deadline = time.monotonic() + 5
            while holder() != 0:  # the loop's timer sent the last one
                assert time.monotonic() < deadline, "the deferred release never went out"
                await asyncio.sleep(0.01)
            return tokens

    tokens = asyncio.run(main())
    assert tokens == sorted(set(tokens))


def test_acquire_with_a_release_is_checked(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    with Client([server.url], CLIENT, FAST) as c:
        body = {"name": "chk", "session_id": 1, "release": "other", "release_seq": 5}
        with pytest.raises(InvalidArgument) as info:
            c.request("POST", "/v1/locks/acquire", body, idempotent=True)  # no client_id
        assert info.value.field == "release_seq"


class _SeqClient:
    """What a lock session uses of its client: the config, seqs, nothing else."""

    def __init__(self) -> None:
        self.config = FAST.with_(lock_release_linger_ms=60_000)
        self.seq = 0

    def _write(self, body: dict[str, object]) -> dict[str, object]:
        self.seq += 1
        return {**body, "client_id": "c", "seq": self.seq}


def test_a_release_being_flushed_is_carried_with_its_own_seq_and_settled_once() -> None:
    from coreplane.sdk.lock import _SessionState

    client = _SeqClient()
    session = _SessionState(client, 5_000)
    r1 = client._write({"name": "L", "session_id": session.session_id})
    assert session.defer(r1)
    flush = session._flush_steps()
    assert next(flush) == ("call", ("/v1/locks/release", r1))  # in flight ...
    assert session.take_deferred("L") is r1  # ... and a re-acquire carries the same seq
    with pytest.raises(StopIteration):
        flush.send({"released": True})
    assert session.take_deferred("L") is None  # settled once, nothing left to send

    r2 = client._write({"name": "M", "session_id": session.session_id})
    session.defer(r2)
    flush = session._flush_steps()
    next(flush)
    with pytest.raises(StopIteration):
        flush.throw(Unavailable("no quorum"))
    assert session.take_deferred("M") is r2  # kept (same seq) for the next try
    session.defer(r2)
    flush = session._flush_steps()
    next(flush)
    with pytest.raises(StopIteration):
        flush.throw(CommandRejected("seq_expired", "too old"))
    again = session.take_deferred("M")
    assert again is not None and again["name"] == "M" and again["seq"] > r2["seq"]  # new seq
    assert session.take_deferred("M") is None
