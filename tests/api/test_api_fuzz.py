"""Fuzz: malformed bodies and headers at every route never make a 500 (or a traceback)."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coreplane.core import codec
from tests.api.local import ADMIN, AGENT, CLIENT

ROUTES = [
    ("GET", "/v1/health"),
    ("GET", "/v1/status"),
    ("GET", "/v1/members"),
    ("POST", "/v1/members/add"),
    ("POST", "/v1/members/remove"),
    ("POST", "/v1/kv/get"),
    ("POST", "/v1/kv/range"),
    ("POST", "/v1/kv/put"),
    ("POST", "/v1/kv/cas"),
    ("POST", "/v1/kv/delete"),
    ("POST", "/v1/leases/grant"),
    ("POST", "/v1/leases/keepalive"),
    ("POST", "/v1/leases/revoke"),
    ("POST", "/v1/locks/session"),
    ("POST", "/v1/locks/keepalive"),
    ("POST", "/v1/locks/close"),
    ("POST", "/v1/locks/acquire"),
    ("POST", "/v1/locks/release"),
    ("POST", "/v1/locks/describe"),
    ("POST", "/v1/kv/watch"),
    ("POST", "/v1/nope"),
    ("PUT", "/v1/kv/put"),
]
FIELDS = [
    "key",
    "value",
    "prefix",
    "limit",
    "stale_ok",
    "lease_id",
    "ttl_ms",
    "session_id",
    "name",
    "client_id",
    "seq",
    "expected_mod_revision",
    "timeout_ms",
    "node_id",
    "address",
    "start_revision",
    "wait_ms",
    "zzz",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=20),
    st.sampled_from(["", "aGk=", "!!", "k", "\ud800"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5)
    ),
    max_leaves=12,
)
plain_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.text(max_size=10),
        st.binary(max_size=10),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5)
    ),
    max_leaves=12,
)


def _json_bytes(value: object) -> bytes:
    try:
        return json.dumps(value).encode("utf-8", "surrogatepass")
    except ValueError:
        return b"{"


bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(_json_bytes),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(_json_bytes),
    plain_values.map(codec.encode_value),
    st.dictionaries(st.sampled_from(FIELDS), plain_values, max_size=6).map(codec.encode_value),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"1e999",
            b"NaN",
            b'{"key": 1.0}',
            b"\xef\xbb\xbf{}",
            b'{"key":"k","key":"k"}',
            b"[" * 5000 + b"]" * 5000,
        ]
    ),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
auth = st.one_of(
    st.none(),
    st.sampled_from(
        [
            f"Bearer {ADMIN}",
            f"Bearer {CLIENT}",
            f"Bearer {AGENT}",
            "Bearer",
            "Basic abc",
            f"bearer {ADMIN}",
            f"Bearer  {CLIENT}",
        ]
    ),
    header_text,
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/msgpack",
            "text/plain",
            "application/xml",
            "application/json; charset=latin-1",
            "multipart/form-data; boundary=x",
        ]
    ),
    header_text,
)
accepts = st.one_of(
    st.none(), st.sampled_from(["application/msgpack", "application/json", "*/*"]), header_text
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    route=st.sampled_from(ROUTES),
    body=bodies,
    authorization=auth,
    content_type=content_types,
    accept=accepts,
    extra=st.dictionaries(
        st.sampled_from(
            ["X-A", "Content-Encoding", "Transfer-Encoding", "Expect", "Range", "X-Forwarded-For"]
        ),
        header_text,
        max_size=2,
    ),
)
def test_no_input_makes_a_server_error(
    served,
    route: tuple[str, str],
    body: bytes,  # type: ignore[no-untyped-def]
    authorization: str | None,
    content_type: str | None,
    accept: str | None,
    extra: dict[str, str],
) -> None:
    _cp, server = served
    headers = dict(extra)
    for name, value in (
        ("Authorization", authorization),
        ("Content-Type", content_type),
        ("Accept", accept),
    ):
        if value is not None:
            headers[name] = value
    method, path = route
    try:
        r = httpx.request(method, server.url + path, content=body, headers=headers, timeout=10)
    except httpx.HTTPError:
        return  # the client refused to send it (an illegal header); nothing reached the server
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code != 200 and r.content:
        text = r.content
        assert b"Traceback" not in text and b'File "' not in text
