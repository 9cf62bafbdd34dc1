"""coreplane.obs on the HTTP API: `/health`, `/health/where`, `/health/why/{kind}/{id}`,
`/metrics`, `/v1/diagnose`, `/v1/obs/sample`, and the request metrics (a request observer).

`register(server, cp)` is what `coreplane.api.ApiServer` calls (or a host, for a server built
with ``obs=False``); it returns the `ObsEndpoints` bound to that server. Shapes:

- ``GET /health`` answers without a token (load balancers and probes): the one-line `what`,
  status 200 when healthy, 503 when not;
- ``GET /health/where``, ``/health/why/{kind}/{id}``, ``/metrics`` need a bearer token of any
  role (they show internal state; Prometheus sends one with ``authorization:``), unless
  ``metrics_public=True`` opens `/metrics`;
- ``GET /v1/diagnose`` (admin, client) runs every check, sampling twice 1 s apart when there is
  no recent earlier look; ``GET /v1/obs/sample`` (admin) is one node's own sample, which the
  node answering a diagnose fetches from every peer's API with its peer token, timing the
  exchange to bound the clock offset (docs/metrics.md).

Blocking work (sampling, asking peers) runs off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from coreplane.errors import InvalidArgument
from coreplane.obs.diagnose import Finding, Thresholds, diagnose
from coreplane.obs.health import what, where, why
from coreplane.obs.metrics import CONTENT_TYPE, Metrics
from coreplane.obs.sample import ClockSample, ClusterInputs, LocalSample, Observer

__all__ = ["ObsEndpoints", "register"]

_PEER_TIMEOUT_S = 1.0
JSON = "application/json"


def _plain(value: Any) -> Any:
    """JSON-safe: infinities become strings (json.dumps would write the non-standard
    Infinity)."""
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(_plain(payload)), content_type=JSON)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class ObsEndpoints:
    """Health, diagnose and metrics of one ControlPlane behind one API server.

    `api_peers()` gives the other voters' API URLs (id -> URL); `authenticate(request)` the
    caller's role or None; `peer_token` is sent to peers for their samples (None: peers are
    not asked, and each is judged by this node's Raft connection to it)."""

    def __init__(
        self,
        cp: Any,
        *,
        api_peers: Callable[[], Mapping[str, str]],
        authenticate: Callable[[web.Request], str | None],
        peer_token: str | None = None,
        peer_ssl: ssl.SSLContext | None = None,
        metrics_public: bool = False,
        thresholds: Thresholds | None = None,
        wall_clock_s: Callable[[], float] = time.time,
    ) -> None:
        self.cp = cp
        self.metrics = Metrics(cp)
        self.observer = Observer(cp, wall_clock_s=wall_clock_s, api_stats=self.metrics.api.stats)
        self.thresholds = thresholds or Thresholds()
        self._api_peers = api_peers
        self._authenticate = authenticate
        self._peer_token = peer_token
        self._peer_ssl = peer_ssl
        self._metrics_public = metrics_public
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="coreplane-obs")

    # ------------------------------------------------------------------ looking

    def _fetch(self, url: str) -> tuple[LocalSample | None, ClockSample | None]:
        """One peer's sample and its clock offset (Cristian: the midpoint of the exchange)."""
        request = urllib.request.Request(
            f"{url.rstrip('/')}/v1/obs/sample",
            headers={"Authorization": f"Bearer {self._peer_token}", "Accept": JSON},
        )
        wall = self.observer.wall_clock_s
        try:
            t0 = wall()
            with urllib.request.urlopen(
                request, timeout=_PEER_TIMEOUT_S, context=self._peer_ssl
            ) as answer:
                body = answer.read()
            t1 = wall()
            sample = LocalSample.from_dict(json.loads(body))
        except Exception:  # noqa: BLE001 - an unreachable or broken peer is a finding
            return None, None
        if sample.status.get("role") == "stopped":
            return None, None
        mid_ms = (t0 + t1) * 500
        return sample, ClockSample(
            offset_ms=int(sample.wall_ms - mid_ms), error_ms=int((t1 - t0) * 500) + 1
        )

    def inputs(self, *, window_s: float = 0.0) -> ClusterInputs:
        """This node's sample and every peer's it can get."""
        peers: dict[str, LocalSample | None] = {}
        clocks: dict[str, ClockSample] = {}
        urls = {
            nid: url for nid, url in sorted(self._api_peers().items()) if nid != self.cp.node_id
        }
        if self._peer_token and urls:
            futures = {nid: self._pool.submit(self._fetch, url) for nid, url in urls.items()}
            for nid, future in futures.items():
                sample, clock = future.result()
                peers[nid] = sample
                if clock is not None:
                    clocks[nid] = clock
        return self.observer.inputs(peers, clocks=clocks, window_s=window_s)

    def diagnose(self, *, window_s: float = 1.0) -> tuple[ClusterInputs, list[Finding]]:
        inputs = self.inputs(window_s=window_s)
        return inputs, diagnose(inputs, self.thresholds)

    # ------------------------------------------------------------------ HTTP

    def observe_request(
        self, route: str, method: str, code: int, seconds: float, request: web.Request
    ) -> None:
        """Counts one answered request by route pattern, method and status, with its latency
        (an `ApiServer` request observer). Every label is from a bounded set: the route is a
        registered pattern or "unmatched" (never the raw path), the method one of `_METHODS`
        or "other" (a client may send any token), the status one the server answers."""
        denied = code == 401  # only then are the remote and the token looked at
        self.metrics.api.observe(
            route,
            method if method in _METHODS else "other",
            code,
            seconds,
            request.remote if denied else None,
            token_sent=denied and bool(request.headers.get("Authorization")),
        )

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """`observe_request` as an aiohttp middleware, for a host's own Application (an
        `ApiServer` calls the observer itself, on its fast path too)."""
        return observing_middleware(self.observe_request)

    def add_routes(self, app: web.Application) -> None:
        """The routes outside /v1 (raw aiohttp: text answers, a public /health)."""
        app.router.add_get("/health", self._health)
        app.router.add_get("/health/where", self._where)
        app.router.add_get("/health/why/{kind}/{ident}", self._why)
        app.router.add_get("/metrics", self._metrics)

    def v1_handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """Handlers for the server's own /v1 routes (its auth, roles and error answers)."""

        def run_diagnose(_body: dict[str, Any]) -> Any:
            inputs, findings = self.diagnose()
            return _plain(
                {
                    "healthy": not findings,
                    "observer": inputs.observer,
                    "findings": [f.to_dict() for f in findings],
                    "summary": what(inputs, findings).summary,
                }
            )

        def sample(_body: dict[str, Any]) -> Any:
            return _plain(self.observer.sample(remember=False, fleet=False).to_dict())

        return {"/v1/diagnose": run_diagnose, "/v1/obs/sample": sample}

    async def _off_loop(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _denied(self, request: web.Request) -> web.Response | None:
        if self._authenticate(request) is not None:
            return None
        response = _json(
            401, {"error": "unauthorized", "message": "a valid bearer token is required"}
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="coreplane"'
        return response

    async def _health(self, request: web.Request) -> web.Response:
        def look() -> Any:
            inputs = self.inputs()
            return what(inputs, diagnose(inputs, self.thresholds))

        answer = await self._off_loop(look)
        return _json(200 if answer.healthy else 503, answer.to_dict())

    async def _where(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            return denied

        def look() -> Any:
            inputs = self.inputs()
            return where(inputs, diagnose(inputs, self.thresholds))

        return _json(200, (await self._off_loop(look)).to_dict())

    async def _why(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        thing = f"{request.match_info['kind']}/{request.match_info['ident']}"

        def look() -> Any:
            inputs = self.inputs()
            return why(inputs, diagnose(inputs, self.thresholds), thing)

        try:
            answer = await self._off_loop(look)
        except InvalidArgument as exc:
            return _json(
                404,
                {
                    "error": "not_found",
                    "field": exc.field,
                    "message": exc.reason,
                    "links": ["/health/where"],
                },
            )
        return _json(200, answer.to_dict())

    async def _metrics(self, request: web.Request) -> web.Response:
        if not self._metrics_public:
            denied = self._denied(request)
            if denied is not None:
                return denied
        body = await self._off_loop(self.metrics.generate)
        response = web.Response(status=200, body=body)
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def register(
    server: Any,
    cp: Any,
    *,
    peer_token: str | None = None,
    metrics_public: bool = False,
    thresholds: Thresholds | None = None,
    peer_ssl: ssl.SSLContext | None = None,
    wall_clock_s: Callable[[], float] = time.time,
) -> ObsEndpoints:
    """Mount obs on an `ApiServer` before its start(); the endpoints object (its `metrics`,
    `observer`). Uses the server's extension points: `add_request_observer`, `add_app_hook`,
    `add_route`, `authenticate_role` and `api_peers`."""
    endpoints = ObsEndpoints(
        cp,
        api_peers=lambda: server.api_peers,
        authenticate=server.authenticate_role,
        peer_token=peer_token,
        peer_ssl=peer_ssl,
        metrics_public=metrics_public,
        thresholds=thresholds,
        wall_clock_s=wall_clock_s,
    )
    server.add_request_observer(endpoints.observe_request)
    server.add_app_hook(endpoints.add_routes)
    handlers = endpoints.v1_handlers()
    server.add_route(
        "GET",
        "/v1/diagnose",
        roles={"admin", "client"},
        fields={},
        handler=handlers["/v1/diagnose"],
    )
    server.add_route(
        "GET", "/v1/obs/sample", roles={"admin"}, fields={}, handler=handlers["/v1/obs/sample"]
    )
    return endpoints


def observing_middleware(
    observe: Callable[[str, str, int, float, web.Request], None],
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware that calls ``observe(route, method, code, seconds, request)``
    once per answered request: the route is the registered pattern or "unmatched" (never the
    raw path), the code the answer's status (500 if the handler raised something else)."""

    @web.middleware
    async def observe_mw(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.monotonic()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            observe(route, request.method, code, time.monotonic() - started, request)

    return observe_mw
