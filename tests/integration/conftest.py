"""Fixtures for real-network tests on 127.0.0.1: free ports and in-process clusters.

Every ControlPlane a test builds is stopped in the fixture's finalizer, pass or fail, so a failed
test never leaves threads or sockets behind for the next one.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from coreplane.runtime.controlplane import ControlPlane
from coreplane.testing.ports import free_ports

SECRET = b"integration-test-secret-0123456789"
FAST = {"election_timeout_ms": (200, 400), "heartbeat_ms": 40, "tick_interval_ms": 100}


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
    """Poll `predicate` until truthy (bounded); its value, or AssertionError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")


class InProcessCluster:
    """ControlPlanes in this process on 127.0.0.1, one data dir each under `base`."""

    def __init__(self, base: Path, ids: tuple[str, ...] = ("a", "b", "c"), **options: Any):
        self.base = base
        self.options = {**FAST, **options}
        self.addresses = {
            nid: f"127.0.0.1:{p}" for nid, p in zip(ids, free_ports(len(ids)), strict=True)
        }
        self.nodes: dict[str, ControlPlane] = {}
        self.created: list[ControlPlane] = []

    def make(self, node_id: str, *, start: bool = True, **extra: Any) -> ControlPlane:
        peers = {p: a for p, a in self.addresses.items() if p != node_id}
        cp = ControlPlane(
            node_id,
            self.addresses[node_id],
            peers,
            self.base / node_id,
            SECRET,
            **{**self.options, **extra},
        )
        self.created.append(cp)
        self.nodes[node_id] = cp
        if start:
            cp.start()
        return cp

    def start_all(self, **extra: Any) -> InProcessCluster:
        for nid in self.addresses:
            self.make(nid, **extra)
        return self

    def leader(self, timeout_s: float = 10.0) -> ControlPlane:
        def find() -> ControlPlane | None:
            for cp in self.nodes.values():
                if cp.is_leader() and cp.fencing_token is not None:
                    return cp
            return None

        return wait_until(find, timeout_s, "an established leader")  # type: ignore[no-any-return]

    def followers(self) -> list[ControlPlane]:
        return [cp for cp in self.nodes.values() if not cp.is_leader()]

    def stop_all(self) -> None:
        """Stop every node made, even when stopping one raises (then re-raise the first
        error): a raise half-way once left the rest of a cluster running into later tests."""
        errors: list[BaseException] = []
        for cp in self.created:
            try:
                cp.stop()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def demo_harness() -> ModuleType:
    """examples/_demo_harness.py (ProcCluster: real node processes), loaded from its file.

    The examples are scripts, not a package: loading the file keeps `sys.path` untouched."""
    path = Path(__file__).resolve().parents[2] / "examples" / "_demo_harness.py"
    spec = importlib.util.spec_from_file_location("coreplane_examples_demo_harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    """`wait_until(predicate, timeout_s=10.0, what="")`, for tests (never import conftest)."""
    return wait_until


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., InProcessCluster]]:
    made: list[InProcessCluster] = []

    def factory(ids: tuple[str, ...] = ("a", "b", "c"), **options: Any) -> InProcessCluster:
        c = InProcessCluster(tmp_path / f"cluster{len(made)}", ids, **options)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.stop_all()


@pytest.fixture
def cli_cluster(tmp_path: Path) -> Iterator[Any]:
    """Three voters serving the HTTP API, for the CLI as a separate process
    (tests/integration/cli_support.py: `cli()`, `pause_ticks()`, `hashes()`); stopped in the
    finalizer."""
    from tests.integration.cli_support import Cluster

    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def api_cluster(
    cluster_factory: Callable[..., InProcessCluster],
) -> Iterator[tuple[InProcessCluster, dict[str, Any]]]:
    """A started 3-node cluster with an ApiServer per node (tests/integration/api_support.py);
    the servers stop in the finalizer, before the cluster does."""
    from tests.integration.api_support import start_api_servers

    cluster = cluster_factory().start_all()
    cluster.leader()
    servers = start_api_servers(dict(cluster.nodes))
    try:
        yield cluster, servers
    finally:
        for server in servers.values():
            server.stop()
