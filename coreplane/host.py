"""The host's `ControlPlane`: one voter of the replicated brain plus the HTTP API it serves.

`coreplane.runtime.controlplane.ControlPlane` is the node itself (Raft, the state machine, the
leader's work) and must not know about the layers above it; this subclass, which the package
root exports, adds what a host daemon wants from one object: ``api_address=`` starts the HTTP
API (`coreplane.api.ApiServer`) with the node and stops it first, so clients, agents, routers
and the CLI reach this voter over HTTP. Without ``api_address`` it is the plain node.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from coreplane.api.server import ApiServer
from coreplane.errors import InvalidArgument
from coreplane.runtime.controlplane import ControlPlane as _Node

__all__ = ["ControlPlane"]


class ControlPlane(_Node):
    """A voter (see `coreplane.runtime.controlplane.ControlPlane` for every node option) that
    also serves the HTTP API when given ``api_address``.

    API options (keyword-only): `api_address` (``host:port``; port 0 picks a free one, see
    `api_url`), `api_tokens` (bearer token -> role: ``admin``, ``client`` or
    ``agent:<node_id>``; required with an address), `api_ssl_context` (serve HTTPS),
    `api_peers` (node id -> API URL of the other voters, so clients find the leader),
    `api_advertise_url` (how clients reach this API, when the bound address is not it).
    Tokens are secrets: never logged, never in repr.
    """

    def __init__(
        self,
        *args: Any,
        api_address: str | None = None,
        api_tokens: Mapping[str, str] | None = None,
        api_ssl_context: ssl.SSLContext | None = None,
        api_peers: Mapping[str, str] | None = None,
        api_advertise_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._api: ApiServer | None = None
        if api_address is None:
            if api_tokens is not None or api_ssl_context is not None or api_peers is not None:
                raise InvalidArgument("api_address", "the API options need an api_address")
        elif api_tokens is None:
            raise InvalidArgument("api_tokens", "an API needs at least one bearer token")
        super().__init__(*args, **kwargs)
        if api_address is not None:
            try:
                self._api = ApiServer(
                    self,
                    api_address,
                    tokens=api_tokens or {},
                    ssl_context=api_ssl_context,
                    api_peers=api_peers,
                    advertise_url=api_advertise_url,
                )
            except BaseException:
                super().stop()  # release the data dir this constructor took
                raise

    @property
    def api_url(self) -> str | None:
        """The API's URL once started (``http://127.0.0.1:8470``), else None."""
        return self._api.url or None if self._api is not None else None

    def start(self) -> None:
        """Start the node, then its API; if the API cannot listen, the node stops again."""
        super().start()
        if self._api is not None:
            try:
                self._api.start()
            except BaseException:
                super().stop()
                raise

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop the API first (in-flight requests finish), then the node."""
        if self._api is not None:
            self._api.stop(timeout_s)
        super().stop(timeout_s=timeout_s)
