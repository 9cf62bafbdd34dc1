"""The public face is pinned: adding or removing an export is a deliberate, reviewed change."""

from __future__ import annotations

import coreplane
import coreplane.errors as errors


def test_all_is_sorted_and_exact() -> None:
    # isort-style order (constant-case names first), as ruff's RUF022 keeps it
    assert coreplane.__all__ == [
        "KV",
        "Applied",
        "ApplyContext",
        "CommandRejected",
        "ControlPlane",
        "CoreplaneError",
        "CorruptData",
        "DecodeError",
        "InvalidArgument",
        "InvariantViolation",
        "Limits",
        "Machine",
        "NodeStatus",
        "NotLeader",
        "PeerStatus",
        "Proposable",
        "ProposalFuture",
        "Retryable",
        "Seams",
        "StaleReadBound",
        "StateMachine",
        "StateView",
        "StorageFull",
        "Unavailable",
    ]
    for name in coreplane.__all__:
        assert getattr(coreplane, name) is not None


def test_error_tree_has_one_root() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.CoreplaneError), name
    assert issubclass(errors.InvalidArgument, ValueError)
    assert issubclass(errors.NotLeader, errors.Retryable)


def test_invalid_argument_names_the_field() -> None:
    err = errors.InvalidArgument("peers.b", "address must be host:port")
    assert err.field == "peers.b"
    assert str(err) == "peers.b: address must be host:port"


def test_require_raises_not_asserts() -> None:
    errors.require(True, "fine")
    try:
        errors.require(False, "two leaders in term 3")
    except errors.InvariantViolation as exc:
        assert "two leaders" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("require(False) did not raise")


def test_lazy_names_are_listed_and_resolve_to_their_home() -> None:
    from coreplane.core.state import Applied, StateMachine
    from coreplane.runtime.controlplane import KV, ControlPlane

    assert set(coreplane.__all__) <= set(dir(coreplane))
    assert coreplane.ControlPlane is ControlPlane
    assert coreplane.KV is KV
    assert coreplane.Applied is Applied
    assert coreplane.StateMachine is StateMachine
    assert not hasattr(coreplane, "NoSuchName")
