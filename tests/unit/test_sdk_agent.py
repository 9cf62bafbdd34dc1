"""`coreplane.sdk.Agent` with a scripted client: fencing per partition, idempotent re-delivery,
a failing handler reported in the ack, the heartbeat's heat and size reports, and handlers on
worker threads (a handler that blocks does not stop the heartbeats). No timings: events and
counters only; every wait has a generous bound so a broken agent fails instead of hanging."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from coreplane.errors import CommandRejected, InvalidArgument, Unavailable
from coreplane.sdk import Agent, FleetAction

WAIT_S = 10.0  # a bound on waiting for another thread, not a timing claim


class Script:
    """Answers the agent routes from `actions` (thread-safe: acks come from the workers);
    records every call; `changed` is notified on each call."""

    def __init__(self, actions: list[dict[str, Any]]) -> None:
        self.actions = actions
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.changed = threading.Condition()
        self.fail_acks = False

    def request(self, method: str, path: str, body: dict[str, Any], *, idempotent: bool) -> Any:
        assert method == "POST" and idempotent  # every agent call may be repeated harmlessly
        with self.changed:
            self.calls.append((path, body))
            self.changed.notify_all()
            actions = list(self.actions)
        if path == "/v1/fleet/actions":
            return {"actions": actions}
        if path == "/v1/fleet/ack" and self.fail_acks:
            raise Unavailable("no leader")
        if path == "/v1/fleet/ack" and body["action_id"] == "already":
            raise CommandRejected("stale_token", "acknowledged before")
        return {"result": None}

    def count(self, path: str) -> int:
        with self.changed:
            return sum(1 for p, _b in self.calls if p == path)

    def wait_for(self, predicate: Any) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout=WAIT_S)

    def acks(self) -> list[tuple[str, bool]]:
        with self.changed:
            return [(b["action_id"], b["ok"]) for p, b in self.calls if p == "/v1/fleet/ack"]


class Gate:
    """A handler that blocks until released; `started` is set when it is running."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs: list[str] = []

    def __call__(self, a: FleetAction) -> None:
        self.runs.append(a.id)
        self.started.set()
        assert self.release.wait(WAIT_S)


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
    assert agent.step() == 3  # handed to the workers; a0 is refused when its turn comes
    assert agent.wait_idle(WAIT_S)
    assert sorted((a.id, a.token) for a in ran) == [("a1", 10), ("b1", 3)]
    assert agent.refused == 1 and agent.highest == {"p": 10, "q": 3}
    assert sorted(client.acks()) == [("a0", False), ("a1", True), ("b1", True)]
    beat = client.calls[0][1]
    assert client.calls[0][0] == "/v1/fleet/heartbeat" and json.loads(beat["heat"]) == {"p": 5}
    assert json.loads(beat["sizes"]) == {"p": 3 << 30, "q": 0}
    # delivered again (its ack was lost): acknowledged again, not run again
    client.actions = [action("a1", "p", 10)]
    assert agent.step() == 0 and len(ran) == 2 and client.acks()[-1] == ("a1", True)
    agent.close()


def test_memory_of_actions_run_is_bounded_and_past_the_bound_only_the_fence_holds() -> None:
    runs: list[str] = []
    client = Script([])
    handlers = {"add_replica": lambda a: runs.append(a.id)}
    agent = Agent(client, "n1", zone="z", handlers=handlers, workers=1, ran_max=3, start=False)
    for i in range(1, 6):  # five actions, one partition each, run one round at a time
        client.actions = [action(f"a{i}", f"p{i}", 10)]
        assert agent.step() == 1 and agent.wait_idle(WAIT_S)
    assert [a.id for a in agent.ran] == ["a3", "a4", "a5"]  # the last ran_max, oldest first
    agent.ran.clear()  # a copy: the agent's memory is its own
    assert len(agent.ran) == 3
    # within the bound: delivered again (ack lost), acknowledged again, not run again
    client.actions = [action("a3", "p3", 10)]
    assert agent.step() == 0 and runs == ["a1", "a2", "a3", "a4", "a5"]
    assert client.acks()[-1] == ("a3", True)
    # past the bound a1 is forgotten: still its partition's highest token, so it runs again
    # (handlers are idempotent); the fence is never forgotten, so an older one is refused
    client.actions = [action("a1", "p1", 10), action("old", "p2", 9)]
    assert agent.step() == 1 and agent.wait_idle(WAIT_S)  # "old" is refused on arrival
    assert runs == ["a1", "a2", "a3", "a4", "a5", "a1"] and agent.refused == 1
    assert [a.id for a in agent.ran] == ["a4", "a5", "a1"] and len(agent._done) == 3
    assert ("old", False) in client.acks()
    agent.close()


def test_ran_max_is_checked() -> None:
    for bad in (0, -1, 1.5, True, 2_000_000):
        with pytest.raises(InvalidArgument, match="ran_max"):
            Agent(Script([]), "n1", zone="z", handlers={}, ran_max=bad, start=False)  # type: ignore[arg-type]


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
    assert agent.wait_idle(WAIT_S)
    acks = {b["action_id"]: b for p, b in client.calls if p == "/v1/fleet/ack"}
    assert acks["x"]["ok"] is False and "disk full" in acks["x"]["detail"]
    assert acks["already"]["ok"] is True  # refused by the fleet as acknowledged: done
    agent.close()


def test_arguments_are_checked() -> None:
    with pytest.raises(InvalidArgument):
        Agent(Script([]), "", zone="z", handlers={}, start=False)
    with pytest.raises(InvalidArgument):
        Agent(Script([]), "n", zone="z", handlers={"add_replica": 3}, start=False)  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument):
        Agent(Script([]), "n", zone="z", handlers={}, workers=0, start=False)


def test_a_blocked_handler_does_not_stop_the_heartbeats() -> None:
    gate = Gate()
    client = Script([action("slow", "p", 5)])
    agent = Agent(client, "n1", zone="z", handlers={"add_replica": gate}, start=False)
    assert agent.step() == 1
    assert gate.started.wait(WAIT_S)
    # the copy is still running: the next rounds heartbeat, and the re-delivered action is
    # neither run again nor acknowledged before its handler returns
    assert agent.step() == 0 and agent.step() == 0
    assert client.count("/v1/fleet/heartbeat") == 3 and client.acks() == []
    gate.release.set()
    assert agent.wait_idle(WAIT_S)
    assert client.acks() == [("slow", True)] and gate.runs == ["slow"]
    agent.close()


def test_the_heartbeat_thread_keeps_beating_while_a_handler_blocks() -> None:
    gate = Gate()
    client = Script([action("slow", "p", 5)])
    agent = Agent(client, "n1", zone="z", handlers={"add_replica": gate}, heartbeat_ms=10)
    try:
        assert gate.started.wait(WAIT_S)
        beats = client.count("/v1/fleet/heartbeat")
        assert client.wait_for(lambda: client.count("/v1/fleet/heartbeat") >= beats + 5)
        assert client.acks() == [] and gate.runs == ["slow"]
        gate.release.set()
        assert client.wait_for(lambda: client.acks() == [("slow", True)])
    finally:
        gate.release.set()
        agent.close()
    assert gate.runs == ["slow"]


def test_one_action_per_partition_at_a_time_others_go_on() -> None:
    gate = Gate()
    order: list[str] = []
    handlers = {
        "add_replica": lambda a: (gate(a) if a.id == "p1" else None, order.append(a.id)),
    }
    client = Script([action("p1", "p", 1), action("p2", "p", 2), action("q1", "q", 1)])
    agent = Agent(client, "n1", zone="z", handlers=handlers, workers=2, start=False)
    assert agent.step() == 3
    assert gate.started.wait(WAIT_S)
    # q runs on the other worker while p1 blocks; p2 waits for p1
    assert client.wait_for(lambda: ("q1", True) in client.acks())
    assert order == ["q1"]
    gate.release.set()
    assert agent.wait_idle(WAIT_S)
    assert order == ["q1", "p1", "p2"] and sorted(client.acks()) == [
        ("p1", True),
        ("p2", True),
        ("q1", True),
    ]
    agent.close()


def test_an_older_action_queued_behind_a_newer_one_is_refused_when_its_turn_comes() -> None:
    gate = Gate()
    client = Script([action("busy", "p", 1), action("new", "q", 4)])
    handlers = {"add_replica": lambda a: gate(a) if a.id == "busy" else None}
    agent = Agent(client, "n1", zone="z", handlers=handlers, workers=1, start=False)
    assert agent.step() == 2  # the only worker is busy with p: q's action waits in the queue
    assert gate.started.wait(WAIT_S)
    client.actions = [action("busy", "p", 1), action("new", "q", 4), action("old", "q", 3)]
    assert agent.step() == 1  # delivered late, behind "new"
    gate.release.set()
    assert agent.wait_idle(WAIT_S)
    assert dict(client.acks()) == {"busy": True, "old": False, "new": True}
    assert [a.id for a in agent.ran] == ["busy", "new"] and agent.refused == 1
    agent.close()


def test_handler_and_ack_failures_never_kill_a_worker() -> None:
    def boom(a: FleetAction) -> None:
        raise RuntimeError(f"bad {a.id}")

    client = Script([action("x", "p", 1), action("y", "q", 1)])
    agent = Agent(client, "n1", zone="z", handlers={"add_replica": boom}, workers=1, start=False)
    client.fail_acks = True  # the leader is away: the acks fail
    assert agent.step() == 2 and agent.wait_idle(WAIT_S)
    assert isinstance(agent.last_error, Unavailable)
    client.fail_acks = False  # delivered again: acknowledged from memory, not run again
    assert agent.step() == 0
    acks = {b["action_id"]: b for p, b in client.calls if p == "/v1/fleet/ack"}
    assert acks["x"]["ok"] is False and [a.id for a in agent.ran] == ["x", "y"]
    client.actions = [action("z", "r", 1)]  # the single worker is still alive
    assert agent.step() == 1 and agent.wait_idle(WAIT_S)
    assert client.acks()[-1] == ("z", False) and "RuntimeError: bad z" in str(client.calls[-1])
    agent.close()


def test_close_abandons_a_handler_still_running_without_acking_it() -> None:
    gate = Gate()
    client = Script([action("slow", "p", 1), action("next", "p", 2)])
    agent = Agent(client, "n1", zone="z", handlers={"add_replica": gate}, start=False)
    assert agent.step() == 2 and gate.started.wait(WAIT_S)
    assert agent.close(drain_s=0) is False  # abandoned; "next" dropped from the queue
    gate.release.set()
    assert agent.wait_idle(WAIT_S)
    assert client.acks() == [] and gate.runs == ["slow"]  # delivered again to the next agent


def test_close_drains_a_running_handler_and_acks_it() -> None:
    gate = Gate()
    client = Script([action("slow", "p", 1)])
    agent = Agent(client, "n1", zone="z", handlers={"add_replica": gate}, start=False)
    assert agent.step() == 1 and gate.started.wait(WAIT_S)
    result: list[bool] = []
    closer = threading.Thread(target=lambda: result.append(agent.close(drain_s=WAIT_S)))
    closer.start()
    gate.release.set()
    closer.join(WAIT_S)
    assert result == [True] and client.acks() == [("slow", True)]
