"""The node type the wire and the serializer share: `PeerNode`, and how its fields are checked.

A `PeerNode` travels inside Raft data: membership entries and snapshots carry the cluster's
nodes, so the serializer must know how to rebuild one (ext code `PEER_NODE_EXT_CODE`, fixed
forever), and the wire hands the same objects to SyncObj. It lives here, below both, so that
neither has to import the other: `serialization` registers it and `wire` uses it.

Owns: `PeerNode`, its ext code, the node id and address checks (`check_node_id`,
`parse_address`). Imports pysyncobj's `Node`, `coreplane.errors` and `_frames` (for the node id
bound) only; must not import `serialization` or `wire`.
"""

from __future__ import annotations

from typing import Any

from pysyncobj.node import Node

from coreplane.core.address import parse_address as _parse_address
from coreplane.errors import DecodeError, InvalidArgument
from coreplane.raft import _frames

__all__ = ["PEER_NODE_EXT_CODE", "PeerNode", "check_node_id", "parse_address"]

PEER_NODE_EXT_CODE = 16  # fixed forever: it is stored in snapshots and membership entries


def check_node_id(field_name: str, node_id: object) -> bytes:
    """A node id as the wire sends it (UTF-8); `InvalidArgument` naming the field if unfit."""
    if not isinstance(node_id, str) or not node_id:
        raise InvalidArgument(field_name, "must be a non-empty str")
    raw = node_id.encode("utf-8")
    if len(raw) > _frames.NODE_ID_BYTES_MAX:
        raise InvalidArgument(field_name, f"longer than {_frames.NODE_ID_BYTES_MAX} bytes")
    if not node_id.isprintable() or any(ch.isspace() for ch in node_id):
        raise InvalidArgument(field_name, "must be printable, without whitespace")
    return raw


def parse_address(field_name: str, address: object, *, port_zero_ok: bool) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port): the one parser of `coreplane.core.address`,
    so configuration and the wire accept exactly the same spellings."""
    return _parse_address(address, field_name, port_zero_ok=port_zero_ok)


class PeerNode(Node):
    """A cluster member: `id` is its node id (proven on the wire), `address` where to dial it."""

    def __init__(self, node_id: str, address: str) -> None:
        check_node_id("node_id", node_id)
        parse_address("address", address, port_zero_ok=True)
        super().__init__(node_id)
        self._address = address

    @property
    def address(self) -> str:
        return self._address

    def to_plain(self) -> dict[str, str]:
        """Plain form for the codec (snapshots and membership entries carry nodes)."""
        return {"id": self.id, "address": self._address}

    @classmethod
    def from_plain(cls, plain: Any) -> PeerNode:
        """Rebuild from `to_plain` output; anything else raises `DecodeError`."""
        if not isinstance(plain, dict) or set(plain) != {"id", "address"}:
            raise DecodeError("PeerNode must be a map {id, address}")
        node_id, address = plain["id"], plain["address"]
        if not isinstance(node_id, str) or not isinstance(address, str):
            raise DecodeError("PeerNode id and address must be str")
        try:
            return cls(node_id, address)
        except InvalidArgument as exc:
            raise DecodeError(f"bad PeerNode: {exc}") from exc

    def __repr__(self) -> str:
        return f"PeerNode({self.id!r}, {self._address!r})"
