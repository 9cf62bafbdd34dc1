"""Suite-wide settings and shared fixtures.

Hypothesis profiles are chosen by COREPLANE_HYPOTHESIS_PROFILE: `dev` (default) is quick; `ci`
is derandomized and prints reproduction blobs; `chaos` runs many examples for long fault
searches.

Fixtures for driving one Raft node by hand, with no socket and no thread (`auto_tick=False`,
messages delivered directly): `recording_transport` (a pysyncobj Transport that is always ready
and records what it would send), `make_follower` and `append_entries`. Test modules share set-up
through these fixtures, never by importing each other.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from pysyncobj import SyncObj
from pysyncobj.journal import MemoryJournal
from pysyncobj.node import Node
from pysyncobj.transport import Transport

from coreplane.raft import engine as E
from coreplane.runtime.controlplane import ControlPlane

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "chaos",
    max_examples=2000,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("COREPLANE_HYPOTHESIS_PROFILE", "dev"))


# ------------------------------------------------------------------ one Raft node, by hand


class RecordingTransport(Transport):
    """Always ready, every sent message recorded; `tryGetReady()` connects every peer."""

    def __init__(self, syncObj: Any, selfNode: Node, otherNodes: Any) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._others = list(otherNodes)

    def tryGetReady(self) -> None:
        for node in self._others:
            self._onNodeConnected(node)

    @property
    def ready(self) -> bool:
        return True

    def send(self, node: Node, message: Any) -> bool:
        self.sent.append((node.id, message))
        return True

    def addNode(self, node: Node) -> None:
        self._others.append(node)

    def dropNode(self, node: Node) -> None:
        pass

    def destroy(self) -> None:
        pass


def _manual_conf() -> Any:
    return E.build_conf(timing=E.EngineTiming(), journal_file=None, dump_file=None, auto_tick=False)


def _follower(upstream: bool = False) -> Any:
    if upstream:
        return SyncObj(
            Node("f"),
            [Node("leader"), Node("other")],
            _manual_conf(),
            nodeClass=Node,
            transportClass=RecordingTransport,
        )
    return E.RaftEngine(
        self_node=Node("f"),
        other_nodes=[Node("leader"), Node("other")],
        conf=_manual_conf(),
        apply_fn=lambda data, index: None,
        transport_class=RecordingTransport,
        journal=MemoryJournal(),
        node_class=Node,
    )


def _append(
    node: Any,
    *,
    prev: int,
    prev_term: int,
    entries: list[tuple[int, int]],
    commit: int,
    term: int = 1,
) -> dict[str, Any]:
    """Deliver one AppendEntries from 'leader'; return the follower's reply."""
    transport = node._SyncObj__transport
    transport.sent.clear()
    message = {
        "type": "append_entries",
        "term": term,
        "commit_index": commit,
        "prevLogIdx": prev,
        "prevLogTerm": prev_term,
        "entries": [(E.ENTRY_COMMAND_TYPE + bytes([i]), i, t) for i, t in entries],
    }
    node._SyncObj__onMessageReceived(Node("leader"), message)
    replies = [m for to, m in transport.sent if m["type"] == "next_node_idx"]
    assert len(replies) == 1
    return replies[0]


@pytest.fixture
def recording_transport() -> type[RecordingTransport]:
    """The no-network Transport class, for ``transportClass=`` / ``transport_class=``."""
    return RecordingTransport


@pytest.fixture
def make_follower() -> Callable[..., Any]:
    """``make_follower(upstream=False)``: node "f" with peers "leader" and "other", on a
    `RecordingTransport` and a memory journal, not yet ticked; coreplane's `RaftEngine`, or
    pysyncobj's own `SyncObj` with ``upstream=True`` (to show a defect the engine fixes)."""
    return _follower


@pytest.fixture
def append_entries() -> Callable[..., dict[str, Any]]:
    """``append_entries(node, prev=, prev_term=, entries=[(index, term)], commit=, term=1)``:
    deliver one AppendEntries from "leader" to a `make_follower` node; its one reply."""
    return _append


# ------------------------------------------------------------------ no node outlives its module

_STARTED: weakref.WeakSet[ControlPlane] = weakref.WeakSet()


@pytest.fixture(scope="session", autouse=True)
def _track_started_control_planes() -> Iterator[None]:
    """Remember every ControlPlane started in this process (weakly), for the check below."""
    real = ControlPlane.start

    def start(self: ControlPlane) -> None:
        _STARTED.add(self)
        real(self)

    ControlPlane.start = start  # type: ignore[method-assign]
    try:
        yield
    finally:
        ControlPlane.start = real  # type: ignore[method-assign]


def _running(cp: ControlPlane) -> bool:
    thread: threading.Thread | None = getattr(cp, "_thread", None)
    return thread is not None and thread.is_alive()


@pytest.fixture(scope="module", autouse=True)
def _no_control_plane_outlives_its_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """A node a test module left running (a finalizer that raised half-way once did) kept
    ticking and dialling its peers' ports into later modules, where another test's listener
    had taken one of them: that test then saw a stranger's frames. Stop such nodes when their
    module ends, warn naming the module, and fail only if a node cannot be stopped."""
    yield
    leaked = [cp for cp in list(_STARTED) if _running(cp)]
    for cp in leaked:
        warnings.warn(
            f"{request.module.__name__} left ControlPlane {cp.node_id!r} running; stopped it",
            stacklevel=1,
        )
        try:
            cp.stop()
        except Exception as exc:  # noqa: BLE001 - reported below with the node
            warnings.warn(f"stopping leaked ControlPlane {cp.node_id!r}: {exc!r}", stacklevel=1)
    stuck = [cp.node_id for cp in leaked if _running(cp)]
    if stuck:
        pytest.fail(f"{request.module.__name__}: ControlPlane(s) {stuck} could not be stopped")
