"""Random command logs for the state-machine laws (shared by the property tests)."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from coreplane.core import codec
from coreplane.core import commands as C
from coreplane.core.state import StateMachine

KEYS = [f"k{i}" for i in range(6)] + ["dir/a", "dir/b", "ü/é"]
CLIENTS = ["", "c1", "c2"]


class TagSet:
    """A user machine whose state is a map of sets (as sorted lists) and that reacts to ticks."""

    initial: dict[str, list[str]] = {}

    def apply(self, state: dict[str, list[str]], cmd: list[str], ctx: object) -> tuple:
        group, tag = cmd
        tags = set(state.get(group, []))
        tags.symmetric_difference_update({tag})
        new = dict(state)
        new[group] = sorted(tags)
        return new, len(tags)

    def on_tick(self, state: dict[str, list[str]], ctx: object) -> dict[str, list[str]]:
        # drop empty groups on ticks, iterating a set of names in a hash-independent order
        return {g: t for g, t in sorted(state.items()) if t}


def encode(cmd: C.Command) -> bytes:
    """A log entry as the runtime writes it: internal commands carry its marker."""
    return C.encode_internal(cmd) if cmd.TAG in C.INTERNAL_TAGS else C.encode(cmd)


def fresh() -> StateMachine:
    sm = StateMachine()
    sm.register("tags", TagSet())
    return sm


def _client(draw_client: str, seq: int) -> dict[str, object]:
    return {"client_id": draw_client, "seq": seq if draw_client else 0}


@st.composite
def command_logs(draw: st.DrawFn, max_len: int = 60) -> list[bytes]:
    n = draw(st.integers(1, max_len))
    log: list[bytes] = []
    seqs = {c: 0 for c in CLIENTS}
    tick_n = 0
    for _ in range(n):
        kind = draw(
            st.sampled_from(
                [
                    "put",
                    "put",
                    "delete",
                    "cas",
                    "tick",
                    "grant",
                    "keep",
                    "revoke",
                    "user",
                    "dup",
                    "leader",
                    "forged",
                    "garbage",
                ]
            )
        )
        client = draw(st.sampled_from(CLIENTS))
        if client:
            seqs[client] += 1
        meta = _client(client, seqs[client])
        key = draw(st.sampled_from(KEYS))
        lease = draw(st.integers(0, 3))
        if kind == "put":
            cmd: C.Command = C.Put(key, draw(st.binary(max_size=8)), lease_id=lease, **meta)
        elif kind == "delete":
            cmd = C.Delete(key, **meta)
        elif kind == "cas":
            cmd = C.Cas(key, draw(st.integers(0, 12)), b"cas", lease_id=lease, **meta)
        elif kind == "tick":
            tick_n += draw(st.integers(0, 2))  # 0 makes a stale tick
            cmd = C.Tick(tick_n, draw(st.integers(0, 3_000)))
        elif kind == "grant":
            cmd = C.LeaseGrant(draw(st.sampled_from([1_000, 2_000, 5_000, 10])), **meta)
        elif kind == "keep":
            cmd = C.LeaseKeepAlive(lease, **meta)
        elif kind == "revoke":
            cmd = C.LeaseRevoke(lease, **meta)
        elif kind == "user":
            cmd = C.UserCommand(
                "tags", [draw(st.sampled_from("xyz")), draw(st.sampled_from("abcd"))], **meta
            )
        elif kind == "leader":
            cmd = C.Leader(draw(st.sampled_from(["a", "b"])), draw(st.integers(0, 4)))
        elif kind == "forged":  # an internal command without the runtime's marker
            log.append(
                codec.encode(
                    C.Tick.TAG,
                    {"n": draw(st.integers(0, 9)), "elapsed_ms": draw(st.integers(0, 10**9))},
                )
            )
            continue
        elif kind == "dup" and log:
            log.append(log[draw(st.integers(0, len(log) - 1))])
            continue
        else:
            log.append(draw(st.binary(max_size=12)))
            continue
        log.append(encode(cmd))
    return log


def apply_all(sm: StateMachine, log: list[bytes], start_index: int = 0) -> list[list[object]]:
    return [sm.apply(entry, start_index + i + 1).to_plain() for i, entry in enumerate(log)]


def seeded_log(seed: int, n: int) -> list[bytes]:
    """A log from a plain seeded RNG (for subprocesses, where hypothesis is not driving)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    tick = 0
    for i in range(n):
        r = rng.random()
        key = rng.choice(KEYS)
        if r < 0.4:
            out.append(
                C.encode(
                    C.Put(
                        key,
                        rng.randbytes(4),
                        lease_id=rng.randint(0, 4),
                        client_id=rng.choice(["a", "b"]),
                        seq=i + 1,
                    )
                )
            )
        elif r < 0.5:
            tick += 1
            out.append(encode(C.Tick(tick, 700)))
        elif r < 0.6:
            out.append(C.encode(C.LeaseGrant(rng.choice([1_000, 3_000]))))
        elif r < 0.8:
            out.append(C.encode(C.UserCommand("tags", [rng.choice("xyz"), rng.choice("abcdef")])))
        elif r < 0.9:
            out.append(C.encode(C.Delete(key)))
        else:
            out.append(C.encode(C.LeaseRevoke(rng.randint(1, 4))))
    return out


if __name__ == "__main__":  # used by test_state_laws: prints the hash of a seeded log
    import sys

    machine = fresh()
    apply_all(machine, seeded_log(int(sys.argv[1]), int(sys.argv[2])))
    print(machine.state_hash(), machine.applied_index)
