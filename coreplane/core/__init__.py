"""The pure, deterministic core: codec, commands, state machines, reconcile.

Must not import clocks, threads, sockets, randomness, os or pickle; stdlib and msgpack (through
codec.py) only. Enforced by tests/unit/test_layers.py.
"""
