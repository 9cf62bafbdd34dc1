"""A linearizability checker for client histories: Wing-Gong with Lowe's memoization.

Given operations with real-time call and return times, the history is linearizable if some
total order of them respects real time (an operation that returned before another was called
comes first) and replays correctly against a sequential model. This is the check Jepsen's
Knossos and Porcupine perform. Two properties make it practical here:

- **P-compositionality**: a KV history is linearizable iff each key's sub-history is, so
  histories are checked per key (`check_kv`), which keeps each search small.
- **Unknown outcomes**: an operation whose client never heard back (a timeout, a crash, a
  LEADER_CHANGED) may have taken effect at any time after its call, or never. It is given an
  infinite return time, which admits both (placed last, it affects nothing observed), and its
  result is not checked.

The search is bounded: past `max_steps` it answers `UNKNOWN`, never `OK`. A checker that passes
on a timeout would hide the bugs it exists to find.

`check_brute_force` enumerates orders directly; it is exponential and exists to cross-check the
fast checker on small histories in the tests.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "INFINITY",
    "CheckResult",
    "Model",
    "Operation",
    "Verdict",
    "check",
    "check_brute_force",
    "check_kv",
    "kv_register_model",
]

INFINITY = 2**63 - 1


class Verdict(enum.Enum):
    OK = "ok"
    VIOLATION = "violation"
    UNKNOWN = "unknown"  # search budget exhausted: not a pass


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation. `ret` None means the outcome is unknown; `result` is then ignored."""

    client: Hashable
    call: int
    ret: int | None
    kind: str  # "read" | "write" | "cas" for the KV model; any label for a custom model
    key: Hashable
    arg: Any = None
    result: Any = None

    @property
    def unknown(self) -> bool:
        return self.ret is None


@dataclass(frozen=True, slots=True)
class Model:
    """A sequential specification: `step(state, op) -> (accepted, new_state)`.

    For an operation with an unknown outcome `step` must not check `op.result`.
    States must be hashable (they are memoized).
    """

    init: Hashable
    step: Callable[[Hashable, Operation], tuple[bool, Hashable]]


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    ops_checked: int
    steps: int
    # For a violation: the key and the longest linearizable prefix found (op indexes).
    key: Hashable = None
    detail: str = ""
    partial: tuple[int, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK


def _kv_step(state: Hashable, op: Operation) -> tuple[bool, Hashable]:
    if op.kind == "read":
        return (op.unknown or op.result == state), state
    if op.kind == "write":
        return True, op.arg
    if op.kind == "cas":
        expected, new = op.arg
        swapped = state == expected
        if not op.unknown and op.result != swapped:
            return False, state
        return True, (new if swapped else state)
    raise ValueError(f"unknown KV operation kind {op.kind!r}")


def kv_register_model(initial: Hashable = None) -> Model:
    """One register per key: read returns the value, write sets it, cas(expected, new)."""
    return Model(initial, _kv_step)


def check(ops: Sequence[Operation], model: Model, *, max_steps: int = 2_000_000) -> CheckResult:
    """Wing-Gong-Lowe search over one (sub-)history. Unknown-outcome reads are dropped."""
    ops = [op for op in ops if not (op.unknown and op.kind == "read")]
    n = len(ops)
    if n == 0:
        return CheckResult(Verdict.OK, 0, 0)
    # Events in time order; at equal times calls come before returns (concurrent, permissive).
    events: list[tuple[int, int, int]] = []  # (time, 0=call/1=return, op index)
    for i, op in enumerate(ops):
        ret = INFINITY if op.ret is None else op.ret
        if ret < op.call:
            raise ValueError(f"operation {i} returns before it is called")
        events.append((op.call, 0, i))
        events.append((ret, 1, i))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    # A doubly linked list over event positions, with a sentinel head at index `size`:
    # linearizing an operation lifts its call and return out; backtracking puts them back.
    size = len(events)
    head = size
    nxt = [*range(1, size), -1, 0]
    prv = [head, *range(size - 1), -1]
    call_pos: dict[int, int] = {}
    match_ret: dict[int, int] = {}
    for pos, (_, is_ret, i) in enumerate(events):
        (match_ret if is_ret else call_pos)[i] = pos

    def unlink(pos: int) -> None:
        p, q = prv[pos], nxt[pos]
        nxt[p] = q
        if q != -1:
            prv[q] = p

    def relink(pos: int) -> None:
        p, q = prv[pos], nxt[pos]
        nxt[p] = pos
        if q != -1:
            prv[q] = pos

    state: Hashable = model.init
    linearized = 0
    cache: set[tuple[int, Hashable]] = set()
    stack: list[tuple[int, Hashable]] = []  # (op index, state before it)
    entry = nxt[head]
    steps = 0
    best: tuple[int, ...] = ()
    while nxt[head] != -1:
        steps += 1
        if steps > max_steps:
            return CheckResult(Verdict.UNKNOWN, n, steps, detail="search budget exhausted")
        _, is_ret, i = events[entry]
        if not is_ret:
            accepted, new_state = model.step(state, ops[i])
            if accepted:
                new_linearized = linearized | (1 << i)
                if (new_linearized, new_state) not in cache:
                    cache.add((new_linearized, new_state))
                    stack.append((i, state))
                    state, linearized = new_state, new_linearized
                    unlink(call_pos[i])
                    unlink(match_ret[i])
                    if len(stack) > len(best):
                        best = tuple(j for j, _ in stack)
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:
            # A return whose call is not linearized yet: backtrack.
            if not stack:
                return CheckResult(
                    Verdict.VIOLATION,
                    n,
                    steps,
                    key=ops[0].key,
                    detail=_describe(ops, best),
                    partial=best,
                )
            i, state = stack.pop()
            linearized &= ~(1 << i)
            relink(match_ret[i])
            relink(call_pos[i])
            entry = nxt[call_pos[i]]
    return CheckResult(Verdict.OK, n, steps)


def _describe(ops: Sequence[Operation], prefix: tuple[int, ...]) -> str:
    done = set(prefix)
    stuck = [op for i, op in enumerate(ops) if i not in done]
    first = min(stuck, key=lambda op: (INFINITY if op.ret is None else op.ret, op.call))
    return (
        f"no linearization: after {len(prefix)} operations none of the remaining fits; "
        f"first to return among them: {first}"
    )


def check_kv(
    ops: Iterable[Operation], *, initial: Hashable = None, max_steps_per_key: int = 2_000_000
) -> CheckResult:
    """Check a KV history key by key; the first violation or unknown wins, in key order."""
    by_key: dict[Hashable, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    model = kv_register_model(initial)
    total_ops, total_steps = 0, 0
    for key in sorted(by_key, key=repr):
        result = check(by_key[key], model, max_steps=max_steps_per_key)
        total_ops += result.ops_checked
        total_steps += result.steps
        if not result.ok:
            return CheckResult(
                result.verdict,
                total_ops,
                total_steps,
                key=key,
                detail=result.detail,
                partial=result.partial,
            )
    return CheckResult(Verdict.OK, total_ops, total_steps)


def check_brute_force(ops: Sequence[Operation], model: Model) -> Verdict:
    """Try every order (and every subset of unknown-outcome ops). Small histories only."""
    ops = [op for op in ops if not (op.unknown and op.kind == "read")]
    if len(ops) > 8:
        raise ValueError("brute force is for histories of at most 8 operations")
    known = [i for i, op in enumerate(ops) if not op.unknown]
    unknown = [i for i, op in enumerate(ops) if op.unknown]

    def ret(i: int) -> int:
        r = ops[i].ret
        return INFINITY if r is None else r

    for k in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, k):
            members = known + list(chosen)
            for order in itertools.permutations(members):
                position = {i: p for p, i in enumerate(order)}
                if any(
                    ret(a) < ops[b].call and position[a] > position[b]
                    for a in members
                    for b in members
                ):
                    continue
                state = model.init
                for i in order:
                    accepted, state = model.step(state, ops[i])
                    if not accepted:
                        break
                else:
                    return Verdict.OK
    return Verdict.VIOLATION
