"""`coreplane.testing.FencedHttpResource`: the fenced resource lock-safety tests write to."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from coreplane.testing import FencedHttpResource, violations


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("POST", parts.path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def _write(url: str, token: Any, holder: Any = "h") -> tuple[int, Any]:
    return _post(url, json.dumps({"token": token, "holder": holder}).encode())


def test_a_fenced_resource_refuses_a_token_below_one_it_accepted() -> None:
    with FencedHttpResource("db") as res:
        assert _write(res.url, 7, "a")[0] == 200
        assert _write(res.url, 7, "a")[0] == 200  # one holder, many writes, one token
        status, body = _write(res.url, 5, "stale")
        assert (status, body["error"]) == (409, "stale_token")
        assert _write(res.url, 9, "b")[0] == 200
        assert res.accepted == [(7, "a"), (7, "a"), (9, "b")]
        assert res.refused == [(5, "stale")]
        assert res.violations() == []


def test_the_negative_control_lets_the_stale_write_through_and_the_checker_sees_it() -> None:
    with FencedHttpResource("db", fenced=False) as res:
        for token, holder in ((7, "a"), (5, "stale"), (9, "b")):
            assert _write(res.url, token, holder)[0] == 200
        assert res.refused == []
        assert res.violations() == ["write 1 by stale with token 5 after token 7"]


def test_in_process_writes_go_through_the_same_check() -> None:
    with FencedHttpResource("db") as res:
        assert res.write("a", 3) is True
        assert res.write("b", 2) is False
        assert (res.accepted, res.refused) == ([(3, "a")], [(2, "b")])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"holder": "a"}', "token"),
        (b'{"token": -1, "holder": "a"}', "token"),
        (b'{"token": true, "holder": "a"}', "token"),
        (b'{"token": 1.5, "holder": "a"}', "token"),
        (b'{"token": 1}', "holder"),
        (b'{"token": 1, "holder": ""}', "holder"),
    ],
)
def test_bad_writes_get_a_400_naming_the_field_and_change_nothing(body: bytes, field: str) -> None:
    with FencedHttpResource("db") as res:
        status, answer = _post(res.url, body)
        assert (status, answer["field"]) == (400, field)
        assert res.accepted == [] and res.refused == []


def test_an_oversized_body_is_refused_before_it_is_read() -> None:
    with FencedHttpResource("db") as res:
        status, answer = _post(res.url, b"{}", {"Content-Length": "1000000"})
        assert (status, answer["field"]) == (400, "Content-Length")


def test_violations_reports_each_write_below_the_highest_before_it() -> None:
    log = [(1, "a"), (3, "b"), (2, "a"), (3, "b"), (1, "c")]
    assert violations(log) == [
        "write 2 by a with token 2 after token 3",
        "write 4 by c with token 1 after token 3",
    ]
