"""codec properties: round trip, canonical bytes, and hostile bytes raise only DecodeError."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from coreplane.core import codec, commands
from coreplane.errors import DecodeError

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(tag=st.integers(0, 2**16 - 1), body=st.dictionaries(st.text(max_size=8), plain, max_size=6))
def test_envelope_round_trip(tag: int, body: dict[str, object]) -> None:
    env = codec.decode(codec.encode(tag, body))
    assert (env.tag, env.body) == (tag, body)


@given(value=plain, seed=st.integers(0, 2**32))
def test_canonical_bytes_do_not_depend_on_insertion_order(value: object, seed: int) -> None:
    rng = random.Random(seed)

    def shuffled(v: object) -> object:
        if isinstance(v, dict):
            items = list(v.items())
            rng.shuffle(items)
            return {k: shuffled(x) for k, x in items}
        if isinstance(v, list):
            return [shuffled(x) for x in v]
        return v

    data = codec.encode_value(value)
    assert codec.encode_value(shuffled(value)) == data
    assert codec.decode_value(data) == value


@given(value=plain)
def test_tree_round_trip(value: object) -> None:
    assert codec.decode_tree(codec.encode_tree(value)) == value


def _seeds() -> list[bytes]:
    cmds = [
        commands.Put("key", b"value", client_id="c", seq=3),
        commands.Tick(9, 123_456),
        commands.UserCommand("m", {"a": [1, 2, {"b": b"x"}]}),
        commands.LeaseGrant(5_000),
    ]
    out = [
        commands.encode_internal(c) if c.TAG in commands.INTERNAL_TAGS else commands.encode(c)
        for c in cmds
    ]
    out.append(codec.encode_tree({"t": (1, [b"x", (2, 3)])}))
    return out


def _hostile_inputs(n_random: int, n_mutated: int) -> list[bytes]:
    rng = random.Random(20261129)
    inputs = [rng.randbytes(rng.randint(0, 64)) for _ in range(n_random)]
    seeds = _seeds()
    for _ in range(n_mutated):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data)) if data else 0
            if op == 0 and data:
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1 and data:
                data[pos] = rng.choice([0xC1, 0xDD, 0xDF, 0xC6, 0xFF, 0x00, 0x91, 0xCB])
            elif op == 2:
                data[pos:pos] = rng.randbytes(rng.randint(1, 5))
            else:
                del data[pos : pos + rng.randint(1, 4)]
        inputs.append(bytes(data))
    return inputs


DECODERS = {
    "decode": codec.decode,
    "decode_value": codec.decode_value,
    "decode_tree": codec.decode_tree,
    "commands.decode": commands.decode,
}


def test_hostile_bytes_raise_only_decode_error() -> None:
    """2,000 random and 2,000 mutated inputs per decoder: each decodes or raises DecodeError.

    Any other exception (IndexError, TypeError, RecursionError, MemoryError, ...) escapes and
    fails the test. How long a refusal takes is a benchmark's question, not this test's.
    """
    inputs = _hostile_inputs(2_000, 2_000)
    for name, decoder in DECODERS.items():
        refused = 0
        for data in inputs:
            try:
                decoder(data)  # type: ignore[operator]
            except DecodeError:
                refused += 1
        # the seeded inputs are mostly garbage: a decoder that accepted them all is broken
        assert refused > len(inputs) // 2, f"{name} accepted {len(inputs) - refused} inputs"
