"""`Client.request` / `AsyncClient.request`: the SDK's public door to any route."""

from __future__ import annotations

import asyncio

import pytest

from coreplane.errors import InvalidArgument, Unavailable
from coreplane.sdk import AsyncClient, Client, LongRunningConfig
from tests.api.local import CLIENT

FAST = LongRunningConfig(
    backoff_base_ms=1,
    backoff_cap_ms=5,
    health_check_interval_ms=0,
    connect_timeout_ms=500,
    request_timeout_ms=2_000,
)


def test_request_reaches_any_route_with_the_same_decoding(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    with Client([server.url], CLIENT, FAST) as c:
        rev = c.put("req/a", b"1")
        got = c.request("POST", "/v1/kv/get", {"key": "req/a"}, idempotent=True)
        assert (got["found"], got["value"], got["mod_revision"]) == (True, b"1", rev)
        assert c.request("GET", "/v1/status", idempotent=True)["node_id"] == "n1"


def test_request_checks_its_arguments_by_name(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served
    with Client([server.url], CLIENT, FAST) as c:
        for kwargs, field in (
            ({"method": "PUT", "path": "/v1/status"}, "method"),
            ({"method": "GET", "path": "v1/status"}, "path"),
            ({"method": "GET", "path": "/v1/status", "body": {}}, "body"),
            ({"method": "POST", "path": "/v1/kv/get", "body": [1]}, "body"),
        ):
            with pytest.raises(InvalidArgument) as info:
                c.request(**kwargs, idempotent=True)  # type: ignore[arg-type]
            assert info.value.field == field
        with pytest.raises(InvalidArgument) as info:
            c.request("GET", "/v1/status", idempotent=1)  # type: ignore[arg-type]
        assert info.value.field == "idempotent"
        with pytest.raises(TypeError):
            c.request("GET", "/v1/status")  # type: ignore[call-arg]  # the caller must say


def test_a_request_that_is_not_idempotent_is_sent_once(served) -> None:  # type: ignore[no-untyped-def]
    cp, server = served
    cp.down = True
    try:
        with Client([server.url], CLIENT, FAST.with_(max_attempts=3)) as c:
            with pytest.raises(Unavailable) as once:
                c.request("POST", "/v1/kv/get", {"key": "k"}, idempotent=False)
            assert "not safe to retry" in str(once.value)
            with pytest.raises(Unavailable) as retried:
                c.request("POST", "/v1/kv/get", {"key": "k"}, idempotent=True)
            assert "3 attempts" in str(retried.value)
    finally:
        cp.down = False


def test_the_async_request_is_the_same(served) -> None:  # type: ignore[no-untyped-def]
    _cp, server = served

    async def main() -> None:
        async with AsyncClient([server.url], CLIENT, FAST) as c:
            await c.put("req/async", b"2")
            got = await c.request("POST", "/v1/kv/get", {"key": "req/async"}, idempotent=True)
            assert got["value"] == b"2"
            with pytest.raises(InvalidArgument):
                await c.request("DELETE", "/v1/status", idempotent=True)

    asyncio.run(main())
