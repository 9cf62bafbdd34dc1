"""Red team, in process and without a network: what a careless or hostile host can hand the
public API. Every bad input is refused with a coreplane error naming the field, before anything
is proposed, written or started (issue 10). Future layers (the HTTP API, the SDK) extend this
module with their own routes; the data-dir and multi-process attacks live in
test_redteam_storage.py and tests/integration/test_redteam_cluster.py.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coreplane import CoreplaneError, InvalidArgument
from coreplane.core import codec
from coreplane.core import commands as C
from coreplane.core.machines.kv import Limits
from coreplane.runtime.controlplane import ControlPlane

SECRET = b"redteam-secret-0123456789abcdef!"
PEERS = {"b": "127.0.0.1:7102", "c": "127.0.0.1:7103"}
_made: list[ControlPlane] = []


@pytest.fixture(autouse=True)
def _stop_all() -> Iterator[None]:
    yield
    while _made:
        _made.pop().stop()


def make(tmp_path: Path, **overrides: Any) -> ControlPlane:
    args: dict[str, Any] = {
        "node_id": "a",
        "address": "127.0.0.1:7101",
        "peers": dict(PEERS),
        "data_dir": tmp_path / "a",
        "secret": SECRET,
    }
    args.update(overrides)
    cp = ControlPlane(**args)
    _made.append(cp)
    return cp


def refused(tmp_path: Path, **overrides: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        make(tmp_path, **overrides)
    return info.value


# ---------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"address": "127.0.0.1:\uff17\uff11\uff10\uff11"}, "address"),  # Unicode digits
        ({"address": "127.0.0.1:07101"}, "address"),  # zero-padded: a second spelling
        ({"peers": {"b": "127.0.0.1:0007102"}}, "peers['b']"),
        ({"peers": {"b": "localhost:7101"}}, "peers"),  # this node's own endpoint
        ({"peers": {"b": "127.0.0.1:7102", "c": "LOCALHOST:7102"}}, "peers"),
        ({"election_timeout_ms": (300.0, 700)}, "election_timeout_ms"),  # never int()-ed
        ({"election_timeout_ms": ("300", "700")}, "election_timeout_ms"),
        ({"election_timeout_ms": (10**9, 10**9 + 1)}, "election_timeout_ms"),  # would never elect
        ({"election_timeout_ms": 300}, "election_timeout_ms"),
        ({"tick_interval_ms": True}, "tick_interval_ms"),
        ({"tick_interval_ms": 200.0}, "tick_interval_ms"),
        ({"heartbeat_ms": True}, "heartbeat_ms"),
        ({"propose_timeout_s": True}, "propose_timeout_s"),
        ({"propose_timeout_s": math.inf}, "propose_timeout_s"),
        ({"propose_timeout_s": math.nan}, "propose_timeout_s"),
        ({"propose_timeout_s": "10"}, "propose_timeout_s"),
        ({"log_compaction_min_time_s": -5}, "log_compaction_min_time_s"),
        ({"log_compaction_min_time_s": 1.5}, "log_compaction_min_time_s"),
        ({"log_compaction_min_entries": True}, "log_compaction_min_entries"),
        ({"data_dir": ""}, "data_dir"),
        ({"limits": {"value_bytes_max": 10}}, "limits"),  # a dict once stopped the node for good
    ],
)
def test_bad_options_are_refused_at_construction(
    tmp_path: Path, overrides: dict[str, Any], field: str
) -> None:
    assert refused(tmp_path, **overrides).field == field


def test_a_refused_option_leaves_no_data_dir(tmp_path: Path) -> None:
    refused(tmp_path, log_compaction_min_time_s=-5)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"key_bytes_max": 0}, "limits.key_bytes_max"),
        ({"value_bytes_max": "1"}, "limits.value_bytes_max"),
        ({"keys_max": True}, "limits.keys_max"),
        ({"ttl_ms_min": 10, "ttl_ms_max": 5}, "limits.ttl_ms_min"),
        ({"entry_bytes_max": 1024}, "limits.entry_bytes_max"),  # smaller than one max value
    ],
)
def test_limits_are_validated_by_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Limits(**kwargs)
    assert info.value.field == field


def test_ipv6_literals_are_one_address_syntax(tmp_path: Path) -> None:
    cp = make(tmp_path, peers={"b": "[::1]:7102", "c": "127.0.0.1:7103"})
    assert cp.members()["b"] == "[::1]:7102"
    assert refused(tmp_path / "x", peers={"b": "[::1]:7102", "c": "[0:0::1]:7102"}).field == "peers"
    assert refused(tmp_path / "y", peers={"b": "[nope]:7102"}).field == "peers['b']"


# ---------------------------------------------------------------------------- forged commands


FORGED = [
    C.Tick(n=2**63 - 1, elapsed_ms=0),  # once froze tick time: leases never expired
    C.Leader(node_id="a", term=2**62),  # once meant no leader was ever established again
]


@pytest.mark.parametrize("command", FORGED, ids=["tick", "leader"])
def test_internal_commands_are_refused_from_hosts(tmp_path: Path, command: C.Command) -> None:
    cp = make(tmp_path)
    body = command.to_body()
    for attempt in (
        command,
        codec.encode(command.TAG, body),
        codec.encode(command.TAG, body, internal=True),
    ):
        with pytest.raises(InvalidArgument, match="internal command") as info:
            cp.propose(attempt)  # type: ignore[arg-type]
        assert info.value.field == "command"
    with pytest.raises(InvalidArgument):
        cp.call_command(command)


def test_a_client_command_cannot_wear_the_runtime_marker(tmp_path: Path) -> None:
    cp = make(tmp_path)
    marked = codec.encode(C.Put.TAG, C.Put("k", b"v").to_body(), internal=True)
    with pytest.raises(InvalidArgument, match="internal"):
        cp.propose(marked)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"not msgpack at all", codec.encode(999, {})])
def test_undecodable_bytes_are_refused_before_proposing(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InvalidArgument) as info:
        make(tmp_path).propose(data)
    assert info.value.field == "command"


def test_non_commands_are_refused(tmp_path: Path) -> None:
    cp = make(tmp_path)
    for thing in ("a str", 5, None, {"tag": 10}):
        with pytest.raises(InvalidArgument):
            cp.propose(thing)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- oversize


def test_oversize_proposals_are_refused_naming_the_limit(tmp_path: Path) -> None:
    """Once: 20 MB entered the leader's log, could not be sent and deposed the leader; a 15 MB
    put was replicated and fsynced everywhere before apply refused it."""
    cp = make(tmp_path)
    with pytest.raises(InvalidArgument) as info:
        cp.propose(os.urandom(20 * 1024 * 1024))
    assert info.value.field == "limits.entry_bytes_max"
    with pytest.raises(InvalidArgument) as info:
        cp.kv.put("k", b"x" * (15 * 1024 * 1024))
    assert info.value.field in ("limits.entry_bytes_max", "limits.value_bytes_max")
    with pytest.raises(InvalidArgument) as info:
        cp.kv.put("k", b"x" * (1024 * 1024 + 1))
    assert info.value.field == "limits.value_bytes_max"
    with pytest.raises(InvalidArgument) as info:
        cp.kv.put("k" * 5000, b"")
    assert info.value.field == "limits.key_bytes_max"
    with pytest.raises(InvalidArgument) as info:
        cp.call("m", {"blob": b"x" * (3 * 1024 * 1024)})
    assert info.value.field == "limits.entry_bytes_max"
    with pytest.raises(InvalidArgument) as info:
        cp.propose(C.LeaseGrant(ttl_ms=1))
    assert info.value.field == "ttl_ms"


def test_custom_limits_are_checked_before_proposing(tmp_path: Path) -> None:
    cp = make(tmp_path, limits=Limits(value_bytes_max=10, key_bytes_max=8, entry_bytes_max=100))
    with pytest.raises(InvalidArgument) as info:
        cp.kv.put("k", b"x" * 11)
    assert info.value.field == "limits.value_bytes_max"


# ---------------------------------------------------------------------------- bad calls


@pytest.mark.parametrize(
    "call",
    [
        lambda cp: cp.kv.put("\ud800", b"v"),  # a lone surrogate: once a UnicodeEncodeError
        lambda cp: cp.kv.put("", b"v"),
        lambda cp: cp.kv.put("k", "str, not bytes"),
        lambda cp: cp.kv.put("k", b"v", lease_id=-1),
        lambda cp: cp.kv.put("k", b"v", timeout_s="x"),
        lambda cp: cp.kv.put("k", b"v", timeout_s=-1),
        lambda cp: cp.kv.put("k", b"v", timeout_s=math.inf),
        lambda cp: cp.kv.get(5),
        lambda cp: cp.kv.range("p", limit="5"),
        lambda cp: cp.kv.range("p", limit=-1),
        lambda cp: cp.kv.range("p", limit=2.5),
        lambda cp: cp.kv.cas("k", -1, b"v"),
        lambda cp: cp.call("m", 0.5),  # floats are not replicated
        lambda cp: cp.call("m", {"\udcff": 1}),
        lambda cp: cp.add_voter("d", "127.0.0.1:7102"),  # b's address: a phantom voter
        lambda cp: cp.add_voter("d", "localhost:7101"),  # this node's own endpoint
        lambda cp: cp.add_voter("d", "127.0.0.1:07104"),
        lambda cp: cp.add_voter("bad id", "127.0.0.1:7104"),
        lambda cp: cp.on_leadership("not callable"),
    ],
)
def test_bad_calls_raise_invalid_argument_only(tmp_path: Path, call: Any) -> None:
    cp = make(tmp_path)
    with pytest.raises(CoreplaneError) as info:
        call(cp)
    assert isinstance(info.value, InvalidArgument), repr(info.value)


def test_start_after_stop_is_refused(tmp_path: Path) -> None:
    cp = make(tmp_path)
    cp.stop()
    with pytest.raises(InvalidArgument, match="stopped"):
        cp.start()
    assert cp.leader_id is None
