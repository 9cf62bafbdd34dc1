"""The laws that keep replicas identical, checked on random logs.

1. Two fresh replicas applying the same log produce identical results, snapshots and hashes.
2. Restoring `snapshot(log[:k])` then applying `log[k:]` equals applying the whole log.
3. The same log gives the same hash under different PYTHONHASHSEED values (subprocesses).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from coreplane.core import commands as C
from coreplane.core.state import StateMachine
from coreplane.errors import DecodeError

from .logs import apply_all, command_logs, fresh


@given(log=command_logs())
def test_two_replicas_agree(log: list[bytes]) -> None:
    a, b = fresh(), fresh()
    assert apply_all(a, log) == apply_all(b, log)
    assert a.snapshot() == b.snapshot()
    assert a.state_hash() == b.state_hash()


@given(log=command_logs(), data=st.data())
def test_snapshot_then_rest_equals_whole_log(log: list[bytes], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(log)))
    whole = fresh()
    results = apply_all(whole, log)
    prefix = fresh()
    apply_all(prefix, log[:k])
    restored = fresh()
    restored.restore(prefix.snapshot())
    assert apply_all(restored, log[k:], start_index=k) == results[k:]
    assert restored.state_hash() == whole.state_hash()
    assert restored.snapshot() == whole.snapshot()


@given(log=command_logs(max_len=40))
def test_duplicated_delivery_of_client_commands_applies_once(log: list[bytes]) -> None:
    """Delivering every client command twice in a row changes nothing a client can observe."""
    client_log = []
    for entry in log:
        try:
            command = C.decode(entry)
        except DecodeError:
            continue
        if getattr(command, "client_id", ""):
            client_log.append(entry)
    once, twice = fresh(), fresh()
    results = apply_all(once, client_log)
    doubled = [entry for entry in client_log for _ in range(2)]
    doubled_results = apply_all(twice, doubled)
    assert doubled_results[::2] == results
    assert doubled_results[1::2] == results
    assert twice.kv.to_plain() == once.kv.to_plain()
    assert twice.machine_states == once.machine_states


def test_hash_is_independent_of_python_hash_seed() -> None:
    script = Path(__file__).with_name("logs.py")
    root = Path(__file__).resolve().parents[2]
    outputs = set()
    for hash_seed in ["0", "1", "4242", "random"]:
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(root))
        out = subprocess.run(
            [sys.executable, "-m", "tests.property.logs", "7", "3000"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.strip()
        outputs.add(out)
    assert len(outputs) == 1, outputs
    digest, applied = outputs.pop().split()
    assert int(applied) == 3000
    assert digest == SEED7_3000_HASH  # pinned too: a format change must fail here as well
    assert script.exists()


# The empty state's snapshot and its digest, as this format writes them. If one of these fails,
# the snapshot encoding changed: that is a format change (SNAPSHOT_FORMAT, old snapshots and
# logs on disk, mixed-version clusters); make it deliberately, then update the literals.
# (The "fleet" and "locks" sections appear only once used: a state without them is encoded as
# before, and a snapshot without them restores an empty fleet or lock table.)
EMPTY_SNAPSHOT_HEX = (
    "87ad6170706c6965645f696e64657800a6666f726d617401a26b7684a46b65797390a66c656173657390"
    "ad6e6578745f6c656173655f696401a87265766973696f6e00a66c65616465729300a000a86d61636869"
    "6e657380a873657373696f6e7390a47469636b920000"
)
EMPTY_STATE_HASH = "776f4e56dd3e3cbc5ff56c35ed6df194"
# state_hash after `python3 -m tests.property.logs 7 3000` (keys, sessions, a user machine, ticks)
SEED7_3000_HASH = "06b103d1f61c64c6e687f32b3e8718f3"


def test_empty_state_hash_is_pinned() -> None:
    """A change to the snapshot encoding is a format change: it must be deliberate."""
    assert StateMachine().snapshot().hex() == EMPTY_SNAPSHOT_HEX
    assert StateMachine().state_hash() == EMPTY_STATE_HASH
