"""ControlPlane configuration: checked once, at construction, with the field named.

A bad cluster config found at runtime is an outage (a node that never joins, a split cluster),
so every check that can be done before any thread or socket exists is done here and raises
`InvalidArgument(field, reason)`. The secret is kept out of repr and never logged.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field

from coreplane.core.address import endpoint_key, parse_address
from coreplane.errors import InvalidArgument
from coreplane.raft.wire import SECRET_BYTES_MIN

__all__ = [
    "SECRET_BYTES_MIN",
    "NodeConfig",
    "check_node_id",
    "parse_address",
    "validate_config",
]

_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The validated identity of one node and its cluster."""

    node_id: str
    address: str
    peers: dict[str, str]  # node_id -> "host:port", self excluded
    data_dir: str
    secret: bytes = field(repr=False)

    @property
    def members(self) -> dict[str, str]:
        """Every voter including this node, id -> address."""
        return {self.node_id: self.address, **self.peers}


def check_node_id(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not _NODE_ID.match(value):
        raise InvalidArgument(
            field_name, f"{value!r} is not a node id ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 64)"
        )
    return value


def _check_data_dir(value: object) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidArgument("data_dir", "must be a path")
    if not os.fspath(value):
        raise InvalidArgument("data_dir", "must not be empty (say '.' for the working directory)")
    path = os.path.abspath(os.fspath(value))
    try:
        os.makedirs(path, exist_ok=True)
        # os.access lies for root; only a real write proves the directory is writable.
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InvalidArgument("data_dir", f"{path} is not a writable directory: {exc}") from None
    return path


def validate_config(
    *,
    node_id: object,
    address: object,
    peers: object,
    data_dir: object,
    secret: object,
) -> NodeConfig:
    """Check everything that can be checked before starting; InvalidArgument names the field."""
    node_id = check_node_id(node_id, "node_id")
    parse_address(address, "address")
    if not isinstance(peers, Mapping):
        raise InvalidArgument("peers", "must be a mapping of node_id -> 'host:port'")
    clean: dict[str, str] = {}
    seen_addresses = {endpoint_key(str(address)): node_id}
    for peer_id, peer_address in peers.items():
        check_node_id(peer_id, f"peers[{peer_id!r}]")
        if peer_id == node_id:
            raise InvalidArgument("peers", f"duplicate node id {peer_id!r}: it is this node's id")
        parse_address(peer_address, f"peers[{peer_id!r}]")
        key = endpoint_key(peer_address)
        other = seen_addresses.get(key)
        if other is not None:
            raise InvalidArgument(
                "peers", f"duplicate address {peer_address} (nodes {other!r} and {peer_id!r})"
            )
        seen_addresses[key] = peer_id
        clean[peer_id] = peer_address
    if not isinstance(secret, (bytes, bytearray)):
        raise InvalidArgument("secret", "must be bytes")
    if len(secret) < SECRET_BYTES_MIN:
        raise InvalidArgument("secret", f"must be at least {SECRET_BYTES_MIN} bytes")
    path = _check_data_dir(data_dir)
    return NodeConfig(node_id, str(address), dict(sorted(clean.items())), path, bytes(secret))
