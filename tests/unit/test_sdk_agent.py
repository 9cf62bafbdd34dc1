"""`coreplane.sdk.Agent` with a scripted client: fencing per partition, idempotent re-delivery,
a failing handler reported in the ack, and the heartbeat's heat and size reports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coreplane.errors import CommandRejected, InvalidArgument
from coreplane.sdk import Agent, FleetAction


class Script:
    """Answers the agent routes from `actions`; records every call."""

    def __init__(self, actions: list[dict[str, Any]]) -> None:
        self.actions = actions
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def request(self, method: str, path: str, body: dict[str, Any], *, idempotent: bool) -> Any:
        assert method == "POST" and idempotent  # every agent call may be repeated harmlessly
        self.calls.append((path, body))
        if path == "/v1/fleet/actions":
            return {"actions": self.actions}
        if path == "/v1/fleet/ack" and body["action_id"] == "already":
            raise CommandRejected("stale_token", "acknowledged before")
        return {"result": None}

    def acks(self) -> list[tuple[str, bool]]:
        return [(b["action_id"], b["ok"]) for p, b in self.calls if p == "/v1/fleet/ack"]


def action(aid: str, pid: str, token: int, kind: str = "add_replica") -> dict[str, Any]:
    return {
        "id": aid,
        "kind": kind,
        "partition": pid,
        "source": "",
        "token": token,
        "operation": "op",
    }


def test_actions_run_once_fenced_per_partition_and_acked() -> None:
    ran: list[FleetAction] = []
    client = Script([action("a1", "p", 10), action("a0", "p", 7), action("b1", "q", 3)])
    agent = Agent(
        client,
        "n1",
        zone="z",
        handlers={"add_replica": ran.append},
        heat=lambda: {"p": 5},
        sizes=lambda: {"p": 3 << 30, "q": 0},
        start=False,
    )
    assert agent.step() == 2
    assert [(a.id, a.token) for a in ran] == [("a1", 10), ("b1", 3)]
    assert agent.refused == 1 and agent.highest == {"p": 10, "q": 3}
    assert client.acks() == [("a1", True), ("a0", False), ("b1", True)]
    beat = client.calls[0][1]
    assert client.calls[0][0] == "/v1/fleet/heartbeat" and json.loads(beat["heat"]) == {"p": 5}
    assert json.loads(beat["sizes"]) == {"p": 3 << 30, "q": 0}
    # delivered again (its ack was lost): acknowledged again, not run again
    client.actions = [action("a1", "p", 10)]
    assert agent.step() == 0 and len(ran) == 2 and client.acks()[-1] == ("a1", True)


def test_a_failing_handler_is_acked_not_ok_and_a_refused_ack_is_done() -> None:
    def boom(_a: FleetAction) -> None:
        raise OSError("disk full")

    client = Script([action("x", "p", 4), action("already", "q", 5, "remove_replica")])
    agent = Agent(
        client,
        "n1",
        zone="z",
        handlers={"add_replica": boom, "remove_replica": lambda a: None},
        start=False,
    )
    assert agent.step() == 2
    acks = [b for p, b in client.calls if p == "/v1/fleet/ack"]
    assert acks[0]["ok"] is False and "disk full" in acks[0]["detail"]


def test_arguments_are_checked() -> None:
    with pytest.raises(InvalidArgument):
        Agent(Script([]), "", zone="z", handlers={}, start=False)
    with pytest.raises(InvalidArgument):
        Agent(Script([]), "n", zone="z", handlers={"add_replica": 3}, start=False)  # type: ignore[dict-item]
