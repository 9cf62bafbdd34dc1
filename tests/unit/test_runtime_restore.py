"""A snapshot restored by the runtime runs without cyclic GC (`controlplane._gc_paused`), and
leaves the process's GC setting as it found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from coreplane.core.state import StateMachine
from coreplane.runtime.controlplane import ControlPlane, _gc_paused, _SnapshotSource
from coreplane.testing.ports import free_ports

SECRET = b"restore-test-secret-0123456789ab"


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[ControlPlane]:
    node = ControlPlane("a", f"127.0.0.1:{free_ports(1)[0]}", {}, tmp_path / "a", SECRET)
    yield node
    node.stop()


@pytest.fixture
def gc_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.usefixtures("gc_enabled")
def test_a_restore_runs_without_gc_and_turns_it_back_on(
    cp: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = StateMachine()
    for i in range(100):
        source.kv.put(f"k{i}", b"v", 0)
    seen: list[bool] = []
    real = cp._sm.restore

    def restore(data: bytes) -> None:
        seen.append(gc.isenabled())
        real(data)

    monkeypatch.setattr(cp._sm, "restore", restore)
    _SnapshotSource(cp).restore(source.snapshot())
    assert seen == [False] and gc.isenabled()
    assert cp._sm.kv.get("k99") == (b"v", 100)


@pytest.mark.usefixtures("gc_enabled")
def test_gc_comes_back_after_a_failed_restore_and_stays_off_if_the_host_turned_it_off() -> None:
    with pytest.raises(ValueError), _gc_paused():
        assert not gc.isenabled()
        raise ValueError("a bad snapshot")
    assert gc.isenabled()
    gc.disable()
    with _gc_paused():
        pass
    assert not gc.isenabled()
