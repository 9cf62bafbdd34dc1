"""`from coreplane import ControlPlane` with ``api_address=``: the node and its HTTP API as one
object, used from outside through the SDK (three voters on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

import coreplane
from coreplane import InvalidArgument
from coreplane.sdk import Client
from coreplane.testing.ports import free_ports
from tests.integration.api_support import CONFIG, TOKEN

pytestmark = pytest.mark.slow

SECRET = b"host-api-test-secret-0123456789"
FAST = {"election_timeout_ms": (200, 400), "heartbeat_ms": 40, "tick_interval_ms": 100}


def test_three_hosts_serve_the_api_and_stop_cleanly(tmp_path: Path) -> None:
    raft_ports, api_ports = free_ports(3), free_ports(3)
    ids = ("a", "b", "c")
    raft = {n: f"127.0.0.1:{p}" for n, p in zip(ids, raft_ports, strict=True)}
    apis = {n: f"http://127.0.0.1:{p}" for n, p in zip(ids, api_ports, strict=True)}
    nodes = []
    try:
        for n in ids:
            cp = coreplane.ControlPlane(
                n,
                raft[n],
                {k: v for k, v in raft.items() if k != n},
                tmp_path / n,
                SECRET,
                api_address=apis[n].removeprefix("http://"),
                api_tokens={TOKEN: "client"},
                api_peers={k: v for k, v in apis.items() if k != n},
                **FAST,
            )
            nodes.append(cp)
            cp.start()
        assert [cp.api_url for cp in nodes] == [apis[n] for n in ids]
        with Client([apis["c"]], TOKEN, CONFIG) as client:
            revision = client.put("host/k", b"v")
            assert client.get("host/k") == (b"v", revision)
        assert nodes[0].kv.get("host/k") == (b"v", revision)
    finally:
        for cp in nodes:
            cp.stop()
    assert all(cp.status().role == "stopped" for cp in nodes)


def test_api_options_are_checked(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    args = ("a", f"127.0.0.1:{port}", {}, tmp_path / "a", SECRET)
    with pytest.raises(InvalidArgument) as info:
        coreplane.ControlPlane(*args, api_tokens={TOKEN: "client"})
    assert info.value.field == "api_address"
    with pytest.raises(InvalidArgument) as info:
        coreplane.ControlPlane(*args, api_address="127.0.0.1:0")
    assert info.value.field == "api_tokens"
    with pytest.raises(InvalidArgument) as info:
        coreplane.ControlPlane(*args, api_address="127.0.0.1:0", api_tokens={"short": "client"})
    assert info.value.field == "tokens"
    cp = coreplane.ControlPlane(*args)  # the data dir was released by every refusal above
    cp.stop()
