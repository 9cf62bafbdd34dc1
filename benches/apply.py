"""Apply throughput of the replicated state machine, and snapshot/restore at scale.

Measures, in one run, on seeded inputs:
- `put_us`: apply of a small KV put (decode + session dedup + write), per entry;
- `encode_put_us`: what the proposer's own thread pays in the core for one `kv.put`:
  `commands.encode` of the Put with its session, then `check_limits`;
- `batch`: the cost per write of a raft batch entry of `kv.put`s as every replica applies
  it (`split_batch`, then `StateMachine.apply_batch`): `follower_us` decodes each command,
  `leader_us` is handed the proposer's own decoded commands (`ControlPlane._own_writes`);
  at ~27 and ~125 writes per entry (what the raft bench's sync and async phases coalesce),
  64-byte values to fresh keys, with the node's session lanes, as `cp.kv.put` makes them;
- `mix_apply_per_s`: entries/s for a realistic mix (puts with client sessions, CAS, deletes,
  ticks, lease keep-alives, user-machine commands);
- snapshot, restore and `state_hash` of a state holding `keys` keys (100k by default), and
  `gc_full_ms`, one full garbage collection with that state alive (every GC-tracked object
  is scanned, and all threads wait: records are kept out of its sight).
The anchor, measured in the same run on the same bytes, is the floor any design pays: a raw
`msgpack.unpackb` plus a dict store per entry, and a raw `msgpack.packb`/`unpackb` of the same
keys and values. Ratios against it are what to compare across machines.
"""

from __future__ import annotations

import gc
import random
import time
from typing import Any

import msgpack

from coreplane.core import commands as C
from coreplane.core.state import StateMachine, check_limits
from coreplane.raft.engine import join_batch, split_batch


def _best_of(fn: Any, repeat: int) -> float:
    """Best wall time of `repeat` runs: the least noisy estimate on a shared machine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _puts(n: int, rng: random.Random) -> list[bytes]:
    return [
        C.encode(
            C.Put(
                f"svc/{rng.randrange(10_000):05d}",
                rng.randbytes(32),
                client_id=f"client-{i % 16}",
                seq=i // 16 + 1,
            )
        )
        for i in range(n)
    ]


def _mix(n: int, rng: random.Random) -> list[bytes]:
    out: list[bytes] = [C.encode(C.LeaseGrant(60_000)) for _ in range(8)]
    tick = 0
    for i in range(n):
        r = rng.random()
        key = f"svc/{rng.randrange(10_000):05d}"
        meta = {"client_id": f"client-{i % 16}", "seq": i // 16 + 1}
        if r < 0.60:
            cmd: C.Command = C.Put(
                key, rng.randbytes(32), lease_id=rng.choice([0, 0, 0, 1]), **meta
            )
        elif r < 0.75:
            cmd = C.Cas(key, rng.randrange(3), rng.randbytes(32), **meta)
        elif r < 0.85:
            cmd = C.Delete(key, **meta)
        elif r < 0.90:
            tick += 1
            out.append(C.encode_internal(C.Tick(tick, 200)))  # as the leader's runtime does
            continue
        elif r < 0.95:
            cmd = C.LeaseKeepAlive(rng.randint(1, 8), **meta)
        else:
            cmd = C.UserCommand("counter", {"add": rng.randrange(100)}, **meta)
        out.append(C.encode(cmd))
    return out


BATCH_SIZES = (27, 125)  # writes per batch entry: the raft bench's sync and async phases
_LANES = 8  # session lanes in use (coreplane.runtime.sessions), each its own client_id


def _session_batches(n: int, per_batch: int) -> list[tuple[list[bytes], list[C.Command]]]:
    """Batch entries of `kv.put` commands as the leader's queue writes them: fresh keys,
    64-byte values, each with one of the node's session lanes and that lane's next seq.
    Each item: the commands' bytes (what a follower gets) and the decoded commands (what
    the proposer keeps for its own apply)."""
    out: list[tuple[list[bytes], list[C.Command]]] = []
    seqs = [0] * _LANES
    for start in range(0, n, per_batch):
        decoded: list[C.Command] = []
        for i in range(start, min(n, start + per_batch)):
            lane = i % _LANES
            seqs[lane] += 1
            client_id = "a/5f0e1d2c3b4a" + (f".{lane}" if lane else "")
            decoded.append(C.Put(f"k0sync-{i}", b"v" * 64, client_id=client_id, seq=seqs[lane]))
        out.append(([C.encode(c) for c in decoded], decoded))
    return out


def _apply_batches(
    batches: list[tuple[list[bytes], list[C.Command]]], payloads: list[bytes], leader: bool
) -> StateMachine:
    """Apply each batch entry as the engine does (split its payload, then `apply_batch`);
    the leader also looks up its own decoded commands by their bytes, as the runtime does."""
    sm = _fresh()
    if leader:
        owns = [dict(zip(cmds, decoded, strict=True)) for cmds, decoded in batches]
        for index, (payload, own) in enumerate(zip(payloads, owns, strict=True), 1):
            entries = split_batch(payload)
            sm.apply_batch(entries, index, [own.pop(e, None) for e in entries])
    else:
        for index, payload in enumerate(payloads, 1):
            sm.apply_batch(split_batch(payload), index)
    return sm


def _batch_at(n: int, per_batch: int, repeat: int) -> dict[str, float]:
    batches = _session_batches(n, per_batch)
    payloads = [join_batch(cmds) for cmds, _ in batches]
    flat = [c for cmds, _ in batches for c in cmds]
    follower_s = _best_of(lambda: _apply_batches(batches, payloads, False), repeat)
    leader_s = _best_of(lambda: _apply_batches(batches, payloads, True), repeat)
    anchor_s = _best_of(lambda: _anchor_apply(flat), repeat)
    return {
        "follower_us": follower_s / n * 1e6,
        "leader_us": leader_s / n * 1e6,
        "follower_over_anchor": follower_s / anchor_s,
        "anchor_us": anchor_s / n * 1e6,
    }


def _encode_puts(commands: list[C.Command]) -> None:
    limits = StateMachine().limits
    for command in commands:
        check_limits(command, len(C.encode(command)), limits)


def _batch_section(n: int, repeat: int) -> dict[str, Any]:
    return {str(per_batch): _batch_at(n, per_batch, repeat) for per_batch in BATCH_SIZES}


def _fresh() -> StateMachine:
    sm = StateMachine()
    sm.register("counter", apply=lambda s, c, ctx: (s + c["add"], s + c["add"]), initial=0)
    return sm


def _apply_all(entries: list[bytes]) -> StateMachine:
    sm = _fresh()
    for i, entry in enumerate(entries, 1):
        sm.apply(entry, i)
    return sm


def _anchor_apply(entries: list[bytes]) -> None:
    store: dict[Any, Any] = {}
    for entry in entries:
        _, _, body = msgpack.unpackb(entry)
        store[body.get("key")] = body


def run(*, json_out: str | None = None, smoke: bool = False) -> dict[str, Any]:
    rng = random.Random(20261129)
    n_put, n_mix, n_keys, repeat = (
        (2_000, 2_000, 5_000, 2) if smoke else (50_000, 50_000, 100_000, 3)
    )
    puts, mix = _puts(n_put, rng), _mix(n_mix, rng)
    put_s = _best_of(lambda: _apply_all(puts), repeat)
    anchor_put_s = _best_of(lambda: _anchor_apply(puts), repeat)
    mix_s = _best_of(lambda: _apply_all(mix), repeat)
    batch = _batch_section(n_put, repeat)
    to_encode = [c for _, decoded in _session_batches(n_put, 125) for c in decoded]
    encode_s = _best_of(lambda: _encode_puts(to_encode), repeat)

    big = _fresh()
    for i in range(n_keys):
        big.apply(C.encode(C.Put(f"key/{i:07d}", rng.randbytes(32))), i + 1)
    snap = big.snapshot()
    snapshot_s = _best_of(big.snapshot, repeat)
    restore_s = _best_of(lambda: _fresh().restore(snap), repeat)
    hash_s = _best_of(big.state_hash, repeat)
    gc.collect()
    gc_full_s = _best_of(gc.collect, repeat)  # a full collection with the big state alive
    raw = {k: v for k, v, _ in big.kv.range("")}
    anchor_pack_s = _best_of(lambda: msgpack.packb(raw), repeat)
    packed = msgpack.packb(raw)
    anchor_unpack_s = _best_of(lambda: msgpack.unpackb(packed), repeat)

    summary = {
        "put_us": put_s / n_put * 1e6,
        "put_over_anchor": put_s / anchor_put_s,
        "mix_apply_per_s": n_mix / mix_s,
        "mix_us": mix_s / n_mix * 1e6,
        "batch": batch,
        "encode_put_us": encode_s / n_put * 1e6,
        "keys": n_keys,
        "snapshot_s": snapshot_s,
        "snapshot_over_anchor": snapshot_s / anchor_pack_s,
        "restore_s": restore_s,
        "restore_over_anchor": restore_s / anchor_unpack_s,
        "state_hash_s": hash_s,
        "gc_full_ms": gc_full_s * 1000,
        "snapshot_bytes": len(snap),
        "anchor_put_us": anchor_put_s / n_put * 1e6,
        "anchor_pack_s": anchor_pack_s,
        "anchor_unpack_s": anchor_unpack_s,
    }
    return {
        "bench": "apply",
        "params": {
            "n_put": n_put,
            "n_mix": n_mix,
            "keys": n_keys,
            "repeat": repeat,
            "smoke": smoke,
            "seed": 20261129,
        },
        "summary": summary,
        "goals": {"put_us_max": 20.0, "snapshot_s_max_at_100k": 0.5},
    }
