"""coreplane.api: the HTTP API of a node (aiohttp, on its own thread); see server.py."""

from coreplane.api.server import ROLES, ApiServer

__all__ = ["ROLES", "ApiServer"]
