"""The CLI's one door to the cluster: an SDK `Client` plus the few plain GETs outside /v1.

`call(path, body)` goes through the SDK's public `Client.request` (retries, leader discovery,
breakers, typed errors).
The health levels (``/health``, ``/health/where``, ``/health/why/...``) live outside /v1 and
``/health`` answers 503 when unhealthy, which the SDK would retry as a failure; `get_plain`
asks each endpoint once with httpx and returns the status with the body.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from coreplane.errors import PermissionDenied, Unavailable
from coreplane.sdk import Client, ClientConfig

__all__ = ["Remote"]

CLI_CONFIG = ClientConfig(
    health_check_interval_ms=0,
    request_timeout_ms=15_000,
    connect_timeout_ms=2_000,
    max_attempts=6,
    backoff_base_ms=50,
    backoff_cap_ms=1_000,
)


class Remote:
    def __init__(self, endpoints: tuple[str, ...], token: str) -> None:
        self.client = Client(list(endpoints), token, CLI_CONFIG)
        self._endpoints = endpoints
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def call(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        method: str = "POST",
    ) -> Any:
        """One API call through the SDK's public `Client.request`. Every call the CLI makes is
        idempotent: reads, and fleet changes that set a state (cordon, set_rf, ...), which the
        CLI asks again on resume anyway."""
        if method == "GET":
            return self.client.request("GET", path, idempotent=True)
        return self.client.request("POST", path, dict(body or {}), idempotent=True)

    def get_plain(self, path: str) -> tuple[int, Any]:
        """(status, JSON body) of a GET outside /v1 from the first endpoint that answers."""
        last: Exception | None = None
        for ep in [*self.client.endpoints.order(), *self._endpoints]:
            url = (ep if "://" in ep else f"http://{ep}").rstrip("/") + path
            try:
                r = httpx.get(url, headers=self._headers, timeout=10.0)
            except httpx.HTTPError as exc:
                last = exc
                continue
            if r.status_code in (401, 403):
                raise PermissionDenied(f"{path}: HTTP {r.status_code}", r.status_code)
            try:
                return r.status_code, json.loads(r.content or b"null")
            except ValueError:
                return r.status_code, r.text
        raise Unavailable(f"no endpoint answered {path}: {last}")

    def close(self) -> None:
        self.client.close()
