"""The pysyncobj seams: the version pin, the upstream source pins and the constructor swap."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pysyncobj.journal
import pysyncobj.serializer
import pysyncobj.syncobj
import pytest
from pysyncobj import SyncObj, SyncObjConf

from coreplane.errors import InvalidArgument
from coreplane.raft import seams, serialization
from coreplane.raft.journal import LmdbJournal


def _conf() -> SyncObjConf:
    return SyncObjConf(
        autoTick=False, raftMinTimeout=0.1, raftMaxTimeout=0.2, appendEntriesPeriod=0.02
    )


def test_pinned_version_and_upstream_sources_unchanged() -> None:
    assert pysyncobj.version.VERSION == seams.PINNED_VERSION == "0.3.17"
    assert seams.check_upstream() == []


def test_a_changed_upstream_function_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(seams.UPSTREAM, "SyncObj._onTick", "0" * 64)
    problems = seams.check_upstream()
    assert len(problems) == 1 and problems[0].startswith("SyncObj._onTick: source changed")


def test_every_pinned_target_is_hashed() -> None:
    assert set(seams.UPSTREAM) == set(seams.current_hashes())


def test_journal_factory_installs_a_per_instance_journal(
    tmp_path: Path, recording_transport: Any
) -> None:
    journal = LmdbJournal(str(tmp_path / "j"), node_id="n1")
    seen: list[Any] = []

    def factory(path: str | None) -> LmdbJournal:
        seen.append(path)
        return journal

    with seams.journal_factory(factory) as installed:
        obj = SyncObj("127.0.0.1:4001", [], _conf(), transportClass=recording_transport)
    try:
        assert seen == [None]
        assert installed.journal is journal
        assert obj._SyncObj__raftLog is journal
        assert isinstance(installed.serializer, pysyncobj.serializer.Serializer)
        assert pysyncobj.syncobj.createJournal is pysyncobj.journal.createJournal
        assert pysyncobj.syncobj.Serializer is pysyncobj.serializer.Serializer
        assert len(journal) == 1  # pysyncobj's initial no-op went into our journal
    finally:
        obj._doDestroy()


def test_swap_is_undone_when_the_constructor_fails() -> None:
    with pytest.raises(RuntimeError), seams.journal_factory(lambda _p: None):
        raise RuntimeError("boom")
    assert pysyncobj.syncobj.createJournal is pysyncobj.journal.createJournal
    assert pysyncobj.syncobj.Serializer is pysyncobj.serializer.Serializer
    with pytest.raises(InvalidArgument), seams.journal_factory("not callable"):  # type: ignore[arg-type]
        pass


def test_concurrent_constructions_each_get_their_own_journal(recording_transport: Any) -> None:
    objs: dict[int, Any] = {}
    journals = {i: pysyncobj.journal.MemoryJournal() for i in range(4)}

    def build(i: int) -> None:
        with seams.journal_factory(lambda _p: journals[i]):
            objs[i] = SyncObj(
                f"127.0.0.1:{4001 + i}", [], _conf(), transportClass=recording_transport
            )

    threads = [threading.Thread(target=build, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    try:
        assert sorted(objs) == [0, 1, 2, 3]
        for i, obj in objs.items():
            assert obj._SyncObj__raftLog is journals[i]
    finally:
        for obj in objs.values():
            obj._doDestroy()


def test_serializer_factory_receives_the_journal(tmp_path: Path, recording_transport: Any) -> None:
    serialization.install()
    journal = LmdbJournal(str(tmp_path / "j"), node_id="n1")
    got: list[Any] = []

    def make(journal_arg: Any, *args: Any) -> Any:
        got.append((journal_arg, args))
        return serialization.SnapshotSerializer(journal_arg)

    try:
        with seams.journal_factory(lambda _p: journal, serializer_factory=make) as installed:
            obj = SyncObj("127.0.0.1:4001", [], _conf(), transportClass=recording_transport)
        assert got and got[0][0] is journal
        assert obj._SyncObj__serializer is installed.serializer
        obj._doDestroy()
    finally:
        serialization.uninstall()
