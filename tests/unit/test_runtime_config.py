"""ControlPlane refuses bad configuration at construction, naming the field; no thread starts.

Also: a foreign, corrupted or half-made data dir is refused with a clear error and never reset,
and the secret stays out of repr.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coreplane.errors import CorruptData, InvalidArgument
from coreplane.runtime.controlplane import ControlPlane
from coreplane.runtime.datadir import META_FILE

SECRET = b"unit-test-secret-0123456789abcdef"
PEERS = {"b": "127.0.0.1:7002", "c": "127.0.0.1:7003"}


_made: list[ControlPlane] = []


@pytest.fixture(autouse=True)
def _close_journals() -> Iterator[None]:
    """A constructed ControlPlane holds its data dir's journal open until stop()."""
    yield
    while _made:
        _made.pop().stop()


def make(tmp_path: Path, **overrides: Any) -> ControlPlane:
    args: dict[str, Any] = {
        "node_id": "a",
        "address": "127.0.0.1:7001",
        "peers": dict(PEERS),
        "data_dir": tmp_path / "a",
        "secret": SECRET,
    }
    args.update(overrides)
    cp = ControlPlane(**args)
    _made.append(cp)
    return cp


def field_of(tmp_path: Path, **overrides: Any) -> str:
    with pytest.raises(InvalidArgument) as info:
        make(tmp_path, **overrides)
    return info.value.field


def test_valid_config_constructs_without_threads(tmp_path: Path) -> None:
    before = threading.active_count()
    cp = make(tmp_path)
    assert threading.active_count() == before
    assert cp.node_id == "a" and cp.members() == {"a": "127.0.0.1:7001", **PEERS}
    assert (tmp_path / "a" / META_FILE).exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"peers": {"a": "127.0.0.1:7009"}}, "peers"),  # own id among peers
        ({"peers": {"b": "127.0.0.1:7001"}}, "peers"),  # own address among peers
        ({"peers": {"b": "127.0.0.1:7002", "c": "127.0.0.1:7002"}}, "peers"),
        ({"node_id": ""}, "node_id"),
        ({"node_id": "has space"}, "node_id"),
        ({"address": "127.0.0.1"}, "address"),
        ({"address": "127.0.0.1:0"}, "address"),
        ({"address": "127.0.0.1:99999"}, "address"),
        ({"address": "not a host:80"}, "address"),
        ({"address": "localhost:7001"}, "address"),  # the wire binds IP literals only
        ({"peers": {"b": "nope"}}, "peers['b']"),
        ({"peers": ["127.0.0.1:7002"]}, "peers"),
        ({"secret": b"short"}, "secret"),
        ({"secret": "a str, not bytes, long enough"}, "secret"),
        ({"election_timeout_ms": (300, 200)}, "election_timeout_ms"),
        ({"election_timeout_ms": ("x", 200)}, "election_timeout_ms"),
        ({"election_timeout_ms": (100, 200)}, "election_timeout_ms"),  # < 3 heartbeats
        ({"heartbeat_ms": 0}, "heartbeat_ms"),
        ({"heartbeat_ms": 0.05}, "heartbeat_ms"),
        ({"propose_timeout_s": 0}, "propose_timeout_s"),
        ({"tick_interval_ms": 0}, "tick_interval_ms"),
        ({"durability": "none"}, "durability"),
        ({"log_compaction_min_entries": 1}, "log_compaction_min_entries"),
    ],
)
def test_bad_values_name_their_field(tmp_path: Path, overrides: dict[str, Any], field: str) -> None:
    assert field_of(tmp_path, **overrides) == field


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert field_of(tmp_path, data_dir=blocker / "sub") == "data_dir"


def test_peers_must_agree_with_the_data_dir(tmp_path: Path) -> None:
    make(tmp_path).stop()
    assert field_of(tmp_path, peers={"b": "127.0.0.1:7002", "c": "127.0.0.1:7004"}) == "peers"
    assert field_of(tmp_path, peers={"b": "127.0.0.1:7002"}) == "peers"
    make(tmp_path)  # the recorded membership still opens


def test_foreign_data_dirs_are_refused_not_reset(tmp_path: Path) -> None:
    make(tmp_path).stop()
    meta = (tmp_path / "a" / META_FILE).read_bytes()
    with pytest.raises(CorruptData, match="belongs to node 'a'"):
        make(tmp_path, node_id="x", peers=dict(PEERS))
    with pytest.raises(CorruptData, match="another cluster"):
        make(tmp_path, secret=b"another-cluster-secret-0123456789")
    assert (tmp_path / "a" / META_FILE).read_bytes() == meta  # untouched


def test_same_data_dir_twice_in_one_process(tmp_path: Path) -> None:
    make(tmp_path)
    assert field_of(tmp_path) == "data_dir"


def test_corrupted_data_dirs_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "something.db").write_bytes(b"\0" * 10)
    with pytest.raises(CorruptData, match="not a coreplane data dir"):
        make(tmp_path, data_dir=junk)

    make(tmp_path).stop()
    meta_path = tmp_path / "a" / META_FILE
    good = meta_path.read_bytes()
    meta_path.write_bytes(b"{not json")
    with pytest.raises(CorruptData, match="unreadable"):
        make(tmp_path)
    meta_path.write_bytes(json.dumps({**json.loads(good), "format": 99}).encode())
    with pytest.raises(CorruptData):
        make(tmp_path)
    meta_path.write_bytes(good)
    make(tmp_path).stop()
    (tmp_path / "a" / "journal.lmdb" / "data.mdb").write_bytes(b"garbage, not LMDB" * 512)
    with pytest.raises(CorruptData, match="journal"):
        make(tmp_path)


def test_secret_never_in_repr(tmp_path: Path) -> None:
    cp = make(tmp_path)
    text = repr(cp) + repr(cp._config)
    assert SECRET.decode() not in text and repr(SECRET) not in text
