"""`kv.put` / `kv.put_async`'s own encoding of a Put (`ControlPlane._put_bytes`): the bytes,
the refusals and the session seq are those of the generic path (`C.encode`, `check_limits`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coreplane import InvalidArgument
from coreplane.core import commands as C
from coreplane.core.machines.kv import Limits
from coreplane.runtime.controlplane import ControlPlane
from coreplane.testing.ports import free_ports

SECRET = b"put-path-test-secret-0123456789"


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[ControlPlane]:
    limits = Limits(key_bytes_max=16, value_bytes_max=64, entry_bytes_max=1024)
    node = ControlPlane(
        "a", f"127.0.0.1:{free_ports(1)[0]}", {}, tmp_path / "a", SECRET, limits=limits
    )
    yield node
    node.stop()


def _in_flight(cp: ControlPlane) -> int:
    lanes = cp._lanes
    return 0 if lanes is None else sum(len(lane.inflight) for lane in lanes._lanes)


@pytest.mark.parametrize(
    ("key", "value", "lease_id"),
    [
        ("k", b"", 0),
        ("a/b/c", b"v" * 64, 7),
        ("x" * 16, b"\x00\xff", 2**63 - 1),
        ("é", b"v", 0),  # not ASCII: the generic path, same bytes
    ],
)
def test_the_bytes_are_the_generic_encoding_and_apply_gets_the_same_command(
    cp: ControlPlane, key: str, value: bytes, lease_id: int
) -> None:
    ticket = cp._ticket()
    data = cp._put_bytes(key, value, lease_id, ticket)
    expected = C.Put(key, value, lease_id, ticket.client_id, ticket.seq)
    assert data == C.encode(expected)
    assert cp._own_writes[data] == expected  # apply takes it instead of decoding
    assert C.decode_entry(data) == (expected, False)
    ticket()


@pytest.mark.parametrize(
    ("key", "value", "lease_id", "field"),
    [
        ("", b"v", 0, "key"),
        ("x" * 17, b"v", 0, "limits.key_bytes_max"),
        ("k", b"v" * 65, 0, "limits.value_bytes_max"),
        ("k", "text", 0, "Put.value"),
        (b"k", b"v", 0, "Put.key"),
        ("k", b"v", True, "Put.lease_id"),
        ("k", b"v", -1, "Put.lease_id"),
        ("k", b"v", 2**63, "Put.lease_id"),
        ("\ud800", b"v", 0, "Put.key"),
    ],
)
def test_a_refused_put_names_its_field_and_frees_its_seq(
    cp: ControlPlane, key: Any, value: Any, lease_id: Any, field: str
) -> None:
    ticket = cp._ticket()
    assert _in_flight(cp) == 1
    with pytest.raises(InvalidArgument) as raised:
        cp._put_bytes(key, value, lease_id, ticket)
    assert raised.value.field == field
    with pytest.raises(InvalidArgument) as generic:
        cp._proposal(C.Put(key, value, lease_id, "c", 1))
    assert generic.value.field == field  # what the generic path says
    assert _in_flight(cp) == 0


def test_an_entry_over_the_limit_is_refused_by_the_generic_check(tmp_path: Path) -> None:
    limits = Limits(key_bytes_max=16, value_bytes_max=64, entry_bytes_max=80)
    node = ControlPlane(
        "a", f"127.0.0.1:{free_ports(1)[0]}", {}, tmp_path / "b", SECRET, limits=limits
    )
    try:
        ticket = node._ticket()
        with pytest.raises(InvalidArgument) as raised:
            node._put_bytes("k" * 16, b"v" * 64, 0, ticket)  # each field within its limit
        assert raised.value.field == "limits.entry_bytes_max"
        assert _in_flight(node) == 0
    finally:
        node.stop()


@pytest.mark.parametrize("timeout_s", [float("nan"), float("inf"), -1.0, True, "1"])
def test_a_bad_timeout_is_refused_and_frees_its_seq(cp: ControlPlane, timeout_s: Any) -> None:
    with pytest.raises(InvalidArgument) as raised:
        cp.kv.put("k", b"v", timeout_s=timeout_s)
    assert raised.value.field == "timeout_s"
    with pytest.raises(InvalidArgument):
        cp.kv.put_async("k", b"v", timeout_s=timeout_s)
    assert _in_flight(cp) == 0


def test_a_plain_timeout_is_taken_as_given(cp: ControlPlane) -> None:
    assert cp._timeout(0.0) == 0.0
    assert cp._timeout(2.5) == 2.5
    assert cp._timeout(3) == 3.0
    assert cp._timeout(None) == cp._propose_timeout_s
