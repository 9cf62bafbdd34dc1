"""`FencedResource`: per-resource highest token; lower tokens refused, equal ones accepted."""

from __future__ import annotations

import threading

import pytest

from coreplane.errors import CommandRejected, InvalidArgument
from coreplane.runtime.fencing import FencedResource


def test_lower_tokens_are_refused_per_resource() -> None:
    fence = FencedResource()
    assert fence.check("disk-1", 10) == 10
    assert fence.check("disk-1", 10) == 10  # same holder, another request
    assert fence.check("disk-2", 3) == 3  # resources are independent
    with pytest.raises(CommandRejected) as info:
        fence.check("disk-1", 9)  # the old leader, back from a pause
    assert info.value.code == "stale_token"
    assert fence.highest("disk-1") == 10
    assert fence.check("disk-1", 12) == 12
    assert not fence.accepts("disk-1", 11) and fence.accepts("disk-1", 12)
    assert fence.highest("nothing") is None


def test_bad_arguments_name_the_field() -> None:
    fence = FencedResource()
    for resource, token, field in (
        ("", 1, "resource"),
        ("r", -1, "token"),
        ("r", True, "token"),
        ("r", 1.5, "token"),
    ):
        with pytest.raises(InvalidArgument) as info:
            fence.check(resource, token)  # type: ignore[arg-type]
        assert info.value.field == field
    with pytest.raises(InvalidArgument):
        FencedResource(resources_max=0)


def test_bounded_number_of_resources() -> None:
    fence = FencedResource(resources_max=2)
    fence.check("a", 1)
    fence.check("b", 1)
    with pytest.raises(CommandRejected) as info:
        fence.check("c", 1)
    assert info.value.code == "too_many_resources"
    assert fence.check("a", 2) == 2  # known resources still work


def test_concurrent_checks_keep_the_maximum() -> None:
    fence = FencedResource()
    accepted: list[int] = []
    lock = threading.Lock()

    def worker(tokens: range) -> None:
        for token in tokens:
            try:
                fence.check("r", token)
            except CommandRejected:
                continue
            with lock:
                accepted.append(token)

    threads = [threading.Thread(target=worker, args=(range(i, 4000, 4),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert fence.highest("r") == 3999
    assert 3999 in accepted
