"""The HTTP API against a LocalControlPlane: routes, roles, codecs, errors named by field."""

from __future__ import annotations

import base64

import httpx
import pytest

from coreplane.api.server import ApiServer
from coreplane.core import codec
from coreplane.core import commands as C
from coreplane.errors import InvalidArgument
from tests.api.local import ADMIN, AGENT, CLIENT

B64 = lambda b: base64.b64encode(b).decode()  # noqa: E731


def post(
    server: ApiServer, path: str, body: object, token: str = CLIENT, **kw: object
) -> httpx.Response:
    return httpx.post(
        server.url + path, json=body, headers={"Authorization": f"Bearer {token}"}, **kw
    )


def test_kv_round_trip_in_json(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    r = post(
        server, "/v1/kv/put", {"key": "a/1", "value": B64(b"\x00hi"), "client_id": "c1", "seq": 1}
    )
    assert r.status_code == 200 and r.json()["revision"] >= 1
    rev = r.json()["revision"]
    got = post(server, "/v1/kv/get", {"key": "a/1"}).json()
    assert got == {"found": True, "value": B64(b"\x00hi"), "mod_revision": rev}
    assert post(server, "/v1/kv/get", {"key": "nope", "stale_ok": True}).json()["found"] is False
    r = post(
        server,
        "/v1/kv/cas",
        {
            "key": "a/1",
            "expected_mod_revision": rev + 100,
            "value": B64(b"x"),
            "client_id": "c1",
            "seq": 2,
        },
    )
    assert r.status_code == 409 and r.json()["code"] == "compare_failed"
    r = post(
        server,
        "/v1/kv/cas",
        {
            "key": "a/1",
            "expected_mod_revision": rev,
            "value": B64(b"y"),
            "client_id": "c1",
            "seq": 3,
        },
    )
    assert r.status_code == 200
    post(server, "/v1/kv/put", {"key": "a/2", "value": B64(b"z"), "client_id": "c1", "seq": 4})
    items = post(server, "/v1/kv/range", {"prefix": "a/"}).json()["items"]
    assert [(i["key"], base64.b64decode(i["value"])) for i in items] == [
        ("a/1", b"y"),
        ("a/2", b"z"),
    ]
    assert post(server, "/v1/kv/delete", {"key": "a/2", "client_id": "c1", "seq": 5}).json() == {
        "deleted": 1
    }


def test_a_retried_write_applies_once(served) -> None:  # type: ignore[no-untyped-def]
    cp, server = served
    body = {"key": "once", "value": B64(b"1"), "client_id": "retry", "seq": 1}
    first = post(server, "/v1/kv/put", body).json()
    before = cp.sm.kv.revision
    assert post(server, "/v1/kv/put", body).json() == first
    assert cp.sm.kv.revision == before


def test_msgpack_in_and_out(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    body = codec.encode_value({"key": "mp", "value": b"\xff\x00", "client_id": "m", "seq": 1})
    r = httpx.post(
        server.url + "/v1/kv/put",
        content=body,
        headers={"Authorization": f"Bearer {CLIENT}", "Content-Type": "application/msgpack"},
    )
    assert r.headers["content-type"].startswith("application/msgpack")
    assert codec.decode_value(r.content)["revision"] >= 1
    r = httpx.post(
        server.url + "/v1/kv/get",
        content=codec.encode_value({"key": "mp"}),
        headers={"Authorization": f"Bearer {CLIENT}", "Content-Type": "application/msgpack"},
    )
    assert codec.decode_value(r.content)["value"] == b"\xff\x00"
    status = httpx.get(
        server.url + "/v1/status",
        headers={"Authorization": f"Bearer {CLIENT}", "Accept": "application/msgpack"},
    )
    assert codec.decode_value(status.content)["ratio"] == "0.5"  # floats travel as text


def test_locks_over_http_fifo_and_tokens(served) -> None:  # type: ignore[no-untyped-def]
    cp, server = served
    cp.tick(1_000)
    a = post(server, "/v1/locks/session", {"ttl_ms": 2_000, "client_id": "la", "seq": 1}).json()
    b = post(server, "/v1/locks/session", {"ttl_ms": 5_000, "client_id": "lb", "seq": 1}).json()
    sa, sb = a["session_id"], b["session_id"]
    got = post(
        server, "/v1/locks/acquire", {"name": "L", "session_id": sa, "client_id": "la", "seq": 2}
    ).json()
    assert got["held"] and got["token"] > 0
    queued = post(
        server, "/v1/locks/acquire", {"name": "L", "session_id": sb, "client_id": "lb", "seq": 2}
    ).json()
    assert queued == {"held": False, "token": 0, "position": 1}
    cp.tick(3_500)  # a's session lapses: b is granted at the tick's index
    d = post(server, "/v1/locks/describe", {"name": "L", "session_id": sb}).json()
    assert d["held"] and d["token"] > got["token"] and d["session"]["session_id"] == sb
    assert (
        post(server, "/v1/locks/keepalive", {"session_id": sa, "client_id": "la", "seq": 3}).json()[
            "code"
        ]
        == "session_not_found"
    )
    assert (
        post(
            server,
            "/v1/locks/release",
            {"name": "L", "session_id": sb, "client_id": "lb", "seq": 3},
        ).json()["released"]
        is True
    )


def test_leases_status_members(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    lease = post(server, "/v1/leases/grant", {"ttl_ms": 5_000, "client_id": "L", "seq": 1})
    lease_id = lease.json()["lease_id"]
    assert (
        post(
            server, "/v1/leases/keepalive", {"lease_id": lease_id, "client_id": "L", "seq": 2}
        ).status_code
        == 200
    )
    assert post(
        server, "/v1/leases/revoke", {"lease_id": lease_id, "client_id": "L", "seq": 3}
    ).json() == {"deleted_keys": 0}
    m = httpx.get(server.url + "/v1/members", headers={"Authorization": f"Bearer {AGENT}"})
    assert m.json()["leader"] == "n1" and m.json()["api"]["n1"] == server.url


@pytest.mark.parametrize(
    ("token", "path", "status"),
    [
        (None, "/v1/kv/get", 401),
        ("not-a-token-at-all-xx", "/v1/kv/get", 401),
        (AGENT, "/v1/kv/get", 403),
        (CLIENT, "/v1/members/add", 403),
        (ADMIN, "/v1/kv/get", 200),
    ],
)
def test_tokens_and_roles(served, token: str | None, path: str, status: int) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.post(server.url + path, json={"key": "k"}, headers=headers)
    assert r.status_code == status
    if status >= 400:
        assert r.json()["error"] in ("unauthorized", "forbidden")
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/kv/put", {"key": "k"}, "value"),
        ("/v1/kv/put", {"key": "", "value": ""}, "key"),
        ("/v1/kv/put", {"key": "k", "value": "not base64!"}, "value"),
        ("/v1/kv/put", {"key": "k", "value": "", "lease_id": -1}, "lease_id"),
        ("/v1/kv/put", {"key": "k", "value": "", "lease_id": 2**64}, "lease_id"),
        ("/v1/kv/put", {"key": "k", "value": "", "seq": 3}, "client_id"),
        ("/v1/kv/put", {"key": "k", "value": "", "extra": 1}, "extra"),
        ("/v1/kv/get", {"key": "k", "stale_ok": 1}, "stale_ok"),
        ("/v1/kv/get", {"key": 1.5}, "body"),
        ("/v1/kv/get", [1, 2], "body"),
        ("/v1/kv/get", {"key": "k" * 5000}, "key"),
        ("/v1/kv/range", {"prefix": "", "limit": 10**6}, "limit"),
        ("/v1/locks/acquire", {"name": "x"}, "session_id"),
        ("/v1/leases/grant", {"ttl_ms": True}, "ttl_ms"),
        ("/v1/kv/get", {"key": "k", "timeout_ms": 10**9}, "timeout_ms"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(served, path: str, body: object, field: str) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    r = post(server, path, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_argument" and r.json()["field"] == field


def test_transport_level_errors_are_json(served) -> None:  # type: ignore[no-untyped-def]
    cp, server = served
    h = {"Authorization": f"Bearer {CLIENT}"}
    big = httpx.post(server.url + "/v1/kv/get", content=b"x" * (65 * 1024), headers=h)
    assert big.status_code == 413 and big.json()["error"] == "body_too_large"
    assert httpx.get(server.url + "/v1/nope", headers=h).status_code == 404
    assert httpx.get(server.url + "/v1/kv/get", headers=h).json()["error"] == "method_not_allowed"
    r = httpx.post(
        server.url + "/v1/kv/get", content=b"{}", headers={**h, "Content-Type": "application/xml"}
    )
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    bad_mp = httpx.post(
        server.url + "/v1/kv/get",
        content=b"\xc1",
        headers={**h, "Content-Type": "application/msgpack"},
    )
    assert bad_mp.status_code == 400  # answered in the request's own type
    assert codec.decode_value(bad_mp.content)["field"] == "body"
    cp.down = True
    try:
        r = post(server, "/v1/kv/get", {"key": "k"})
        assert r.status_code == 503 and r.json()["error"] == "unavailable"
    finally:
        cp.down = False


def test_no_route_accepts_internal_commands(served) -> None:  # type: ignore[no-untyped-def]
    cp, server = served
    # Even with the runtime's internal marker (a forged log entry), not just plain envelopes.
    tick = C.encode_internal(C.Tick(n=10**6, elapsed_ms=500_000))
    leader = C.encode_internal(C.Leader(node_id="evil", term=10**6))
    for _method, path, _roles in server.routes:
        for payload in (tick, leader):
            r = httpx.post(
                server.url + path,
                content=payload,
                headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/msgpack"},
            )
            assert r.status_code in (400, 405)
    assert cp.sm.tick_n < 10**6 and cp.sm.leader_node != "evil"
    assert all(C.decode(p).TAG not in (C.Tick.TAG, C.Leader.TAG) for p in cp.proposed)


def test_constructor_validates() -> None:
    from tests.api.local import LocalControlPlane

    cp = LocalControlPlane()
    for kwargs, field in (
        ({"tokens": {}}, "tokens"),
        ({"tokens": {"short": "admin"}}, "tokens"),
        ({"tokens": {"x" * 20: "root"}}, "tokens"),
        ({"tokens": {"x" * 20: "agent"}}, "tokens"),
    ):
        with pytest.raises(InvalidArgument) as info:
            ApiServer(cp, "127.0.0.1:0", **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
    with pytest.raises(InvalidArgument):
        ApiServer(cp, "nonsense", tokens={"x" * 20: "admin"})


def test_watch_long_poll_answers_when_an_event_arrives(served) -> None:  # type: ignore[no-untyped-def]
    import threading

    cp, server = served
    start = cp.sm.kv.revision + 1
    timer = threading.Timer(0.05, lambda: cp.call_command(C.Put(key="w/1", value=b"x")))
    timer.start()
    r = post(server, "/v1/kv/watch", {"prefix": "w/", "start_revision": start, "wait_ms": 5_000})
    timer.join()
    answer = r.json()
    assert [(e["type"], e["key"]) for e in answer["events"]] == [("put", "w/1")]
    assert answer["next_revision"] == answer["events"][0]["revision"] + 1
    empty = post(
        server, "/v1/kv/watch", {"start_revision": answer["next_revision"], "wait_ms": 50}
    ).json()
    assert empty["events"] == [] and empty["next_revision"] == answer["next_revision"]
    cp.sm.kv.history.floor = max(cp.sm.kv.history.floor, 1)  # as if revision 1 was evicted
    compacted = post(server, "/v1/kv/watch", {"start_revision": 1})
    assert compacted.status_code == 409 and compacted.json()["code"] == "compacted"


def test_an_agent_token_acts_only_for_its_own_node() -> None:
    from coreplane.api.server import F
    from tests.api.local import LocalControlPlane

    server = ApiServer(
        LocalControlPlane(), "127.0.0.1:0", tokens={AGENT: "agent:n7", ADMIN: "admin"}
    )
    seen: list[str] = []
    server.add_route(
        "POST",
        "/v1/fleet/heartbeat",
        roles={"agent", "admin"},
        fields={"node_id": F("str", None, 128, True)},
        handler=lambda b: seen.append(b["node_id"]) or {"ok": True},
        node_field="node_id",
    )
    with server:
        own = post(server, "/v1/fleet/heartbeat", {"node_id": "n7"}, token=AGENT)
        other = post(server, "/v1/fleet/heartbeat", {"node_id": "n8"}, token=AGENT)
        admin = post(server, "/v1/fleet/heartbeat", {"node_id": "n8"}, token=ADMIN)
        with pytest.raises(InvalidArgument):
            server.add_route("GET", "/v1/late", roles={"admin"}, fields={}, handler=dict)
    assert own.status_code == 200 and admin.status_code == 200
    assert other.status_code == 403 and other.json()["field"] == "node_id"
    assert seen == ["n7", "n8"]


def test_writes_run_on_the_event_loop_when_the_control_plane_pipelines_them() -> None:
    """With `propose_async`, a write handler only proposes: it runs on the server's loop
    thread (no pool hop) and its future is awaited there; reads still go to the pool."""
    import concurrent.futures
    import threading

    from tests.api.local import TOKENS, LocalControlPlane

    class Pipelined(LocalControlPlane):
        def __init__(self) -> None:
            super().__init__()
            self.threads: list[str] = []

        def propose_async(self, command, *, timeout_s=None, transform=None):  # type: ignore[no-untyped-def]
            self.threads.append(threading.current_thread().name)
            future: concurrent.futures.Future[object] = concurrent.futures.Future()
            applied = self.propose(command, timeout_s=timeout_s)
            future.set_result(transform(applied) if transform else applied)
            return future

    cp = Pipelined()
    with ApiServer(cp, "127.0.0.1:0", tokens=TOKENS, obs=False) as server:
        headers = {"Authorization": f"Bearer {CLIENT}"}
        put = {"key": "k", "value": base64.b64encode(b"v").decode(), "client_id": "c", "seq": 1}
        r = httpx.post(server.url + "/v1/kv/put", json=put, headers=headers)
        assert r.status_code == 200 and r.json()["revision"] >= 1
        assert cp.threads == ["coreplane-api"]  # the server's loop thread, not a pool worker
        r = httpx.post(server.url + "/v1/kv/get", json={"key": "k"}, headers=headers)
        assert base64.b64decode(r.json()["value"]) == b"v"


def test_gets_run_on_the_event_loop_when_the_control_plane_reads_without_blocking() -> None:
    """With `read_async`, /v1/kv/get never takes a pool thread: an answer ready at once
    (stale_ok, a leased leader) is encoded on the loop, a pending one is awaited there."""
    import concurrent.futures
    import threading

    from tests.api.local import TOKENS, LocalControlPlane

    class AsyncReads(LocalControlPlane):
        def __init__(self) -> None:
            super().__init__()
            self.threads: list[tuple[str, bool]] = []
            self.pending: list[concurrent.futures.Future[object]] = []

        def propose_async(self, command, *, timeout_s=None, transform=None):  # type: ignore[no-untyped-def]
            future: concurrent.futures.Future[object] = concurrent.futures.Future()
            applied = self.propose(command, timeout_s=timeout_s)
            future.set_result(transform(applied) if transform else applied)
            return future

        def read_async(self, fn, *, stale_ok=False, timeout_s=None):  # type: ignore[no-untyped-def]
            raise AssertionError("the route reads through kv.get_async")

        def _read_state_async(self, fn, *, stale_ok=False, timeout_s=None):  # type: ignore[no-untyped-def]
            self.threads.append((threading.current_thread().name, stale_ok))
            future: concurrent.futures.Future[object] = concurrent.futures.Future()
            value = self._read_state(fn, stale_ok=True)
            if stale_ok:
                future.set_result(value)
            else:  # completed later, from another thread (as the Raft thread does)
                threading.Timer(0.05, future.set_result, args=(value,)).start()
            return future

    cp = AsyncReads()
    with ApiServer(cp, "127.0.0.1:0", tokens=TOKENS, obs=False) as server:
        headers = {"Authorization": f"Bearer {CLIENT}"}
        put = {"key": "k", "value": base64.b64encode(b"v").decode(), "client_id": "c", "seq": 1}
        assert httpx.post(server.url + "/v1/kv/put", json=put, headers=headers).status_code == 200
        for stale in (True, False):
            r = httpx.post(
                server.url + "/v1/kv/get", json={"key": "k", "stale_ok": stale}, headers=headers
            )
            assert base64.b64decode(r.json()["value"]) == b"v" and r.json()["found"]
        r = httpx.post(server.url + "/v1/kv/get", json={"key": "nope"}, headers=headers)
        assert r.json() == {"found": False, "value": "", "mod_revision": 0}
    assert cp.threads == [("coreplane-api", stale) for stale in (True, False, False)]


def test_request_metrics_have_bounded_labels_whatever_the_method_or_path(served) -> None:  # type: ignore[no-untyped-def]
    import uuid

    _cp, server = served
    auth = {"Authorization": f"Bearer {CLIENT}"}
    with httpx.Client() as http:
        for method in ("PROPFIND", "PURGE", "MKCOL", "SEARCH", "GET", "POST"):
            for _ in range(2):
                path = f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}"  # never the same path twice
                http.request(method, server.url + path, headers=auth)
                http.request(method, server.url + "/v1/kv/get", headers=auth)
    labels = {
        (s.labels["route"], s.labels["method"])
        for metric in server.obs.metrics.api.requests.collect()
        for s in metric.samples
    }
    methods = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
    assert {m for _r, m in labels} <= methods
    assert ("unmatched", "other") in labels and ("/v1/kv/get", "POST") in labels
    known = {path for _method, path, _roles in server.routes}
    assert {r for r, _m in labels} <= known | {"unmatched", "/health", "/metrics"}


def test_the_table_routes_answer_alike_on_both_ways_in_and_pass_host_middlewares() -> None:
    """A table route is found by an exact (method, path) lookup, past aiohttp's router; a
    query string or an ``Expect`` header takes the Application's way. Both answer the same,
    a host's middleware sees every request with its route's match info, and the request
    metrics count each under the route's pattern."""
    from aiohttp import web

    from tests.api.local import LocalControlPlane

    seen: list[tuple[str, str, int]] = []

    @web.middleware
    async def host_mw(request: web.Request, handler):  # type: ignore[no-untyped-def]
        response = await handler(request)
        seen.append((request.path, request.match_info.route.resource.canonical, response.status))
        return response

    cp = LocalControlPlane()
    server = ApiServer(cp, "127.0.0.1:0", tokens={CLIENT: "client"})
    server.add_middleware(host_mw)
    server.start()
    try:
        auth = {"Authorization": f"Bearer {CLIENT}"}
        put = {"key": "k", "value": B64(b"v"), "client_id": "c", "seq": 1}
        fast = httpx.post(server.url + "/v1/kv/put", json=put, headers=auth)
        app = httpx.post(server.url + "/v1/kv/put?x=1", json=put, headers=auth)  # a retry
        assert fast.status_code == app.status_code == 200 and fast.json() == app.json()
        cont = httpx.post(
            server.url + "/v1/kv/get", json={"key": "k"}, headers={**auth, "Expect": "100-continue"}
        )
        assert cont.status_code == 200 and cont.json()["found"]
        bad = httpx.post(server.url + "/v1/kv/put", json={**put, "seq": "1"}, headers=auth)
        bad_app = httpx.post(server.url + "/v1/kv/put?y", json={**put, "seq": "1"}, headers=auth)
        assert bad.status_code == bad_app.status_code == 400
        assert bad.json() == bad_app.json() and bad.json()["field"] == "seq"
        denied = httpx.post(server.url + "/v1/kv/put", json=put)
        assert denied.status_code == 401 and denied.headers["WWW-Authenticate"]
        assert seen == [
            ("/v1/kv/put", "/v1/kv/put", 200),
            ("/v1/kv/put", "/v1/kv/put", 200),
            ("/v1/kv/get", "/v1/kv/get", 200),
            ("/v1/kv/put", "/v1/kv/put", 400),
            ("/v1/kv/put", "/v1/kv/put", 400),
            ("/v1/kv/put", "/v1/kv/put", 401),
        ]
        assert server.obs is not None
        counts = {
            (s.labels["route"], s.labels["code"]): s.value
            for metric in server.obs.metrics.api.requests.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        }
        assert counts == {
            ("/v1/kv/put", "200"): 2.0,
            ("/v1/kv/get", "200"): 1.0,
            ("/v1/kv/put", "400"): 2.0,
            ("/v1/kv/put", "401"): 1.0,
        }
    finally:
        server.stop()


def test_the_server_loop_is_uvloops_when_installed_unless_forced_to_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from coreplane.api.server import _new_event_loop

    monkeypatch.setenv("COREPLANE_API_LOOP", "asyncio")
    loop = _new_event_loop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv("COREPLANE_API_LOOP")
    loop = _new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
