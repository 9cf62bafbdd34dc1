"""`ApiServer`: the versioned HTTP API of one ControlPlane node, on aiohttp, on its own thread.

Why the shapes:
- **aiohttp's server** (asyncio, well kept, no extra process): it runs on a thread and event loop
  of its own, started and stopped by the host, so it shares nothing with the Raft tick thread.
  A call that blocks (a ReadIndex round, a read of state) runs in a bounded thread pool, never
  on the event loop; a write only checks its fields and proposes (`propose_async`), so it runs
  on the loop and its future is awaited there: no thread hop, no pool thread held while the
  entry commits.
- **Any node answers anything**: a follower's linearizable read confirms a read index with the
  leader (ReadIndex) and a follower's write is forwarded to the leader by Raft itself (pysyncobj
  sends a follower's proposal to its leader), so no request is refused or redirected for want
  of leadership. Forwarding rather than redirecting keeps clients simple and never strands one
  behind a stale leader hint; the SDK still prefers the leader (one hop less), found through
  ``GET /v1/members`` (its id and the API URL of every node the host configured).
- **Routes** are ``POST /v1/<area>/<verb>`` with a body (as etcd's JSON gateway), plus
  ``GET /v1/status``, ``/v1/members`` and ``/v1/health``. ``POST /v1/kv/watch`` is a long
  poll by revision: it answers the events from ``start_revision`` on (a prefix filters keys)
  as soon as there are some, or an empty list after ``wait_ms``, with the revision to resume
  from; a revision older than the bounded history answers 409 ``compacted`` naming the oldest
  available, so a resuming client never silently misses an event. Bodies are JSON (bytes as base64
  strings) or, with ``Content-Type: application/msgpack``, canonical msgpack through
  `coreplane.core.codec` (bytes as bytes); answers use the request's type unless ``Accept``
  asks for the other. Nothing is unpickled; no route takes command bytes, so the runtime's
  internal commands (Tick, Leader) cannot be sent; every field is type- and size-checked
  before anything is proposed.
- **Errors** are JSON ``{"error", "field"?, "code"?, "message"}``: 400 bad input (naming the
  field), 401 no or unknown token, 403 wrong role, 404/405 unknown route, 409 a deterministic
  refusal by the state machine (its `code`), 413 body over the cap, 415 content type, 503
  unavailable (no quorum, deadline: retry). Never a traceback; a 500 is a bug (logged).
- **Writes are retry-safe**: a write names its ``client_id`` and ``seq``; the state machine
  applies a duplicate once. Client ids get an ``api:`` prefix so no API client can collide with
  a node's own session.
- **Tokens**: ``tokens={"secret": "admin" | "client" | "agent:<node_id>"}``; compared in
  constant time. An agent token only sees its own node's routes (the fleet contract, to come)
  and the read-only ones.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import functools
import hmac
import importlib
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from coreplane.api.dashboard import register as register_dashboard
from coreplane.api.fleet_routes import fleet_routes
from coreplane.api.quotas import quota_routes
from coreplane.api.routes import (
    ROLES,
    F,
    Handler,
    Handlers,
    Route,
    check_fields,
    default_routes,
)
from coreplane.core import codec
from coreplane.errors import (
    CommandRejected,
    CoreplaneError,
    DecodeError,
    InvalidArgument,
    NotLeader,
    Unavailable,
)
from coreplane.obs.http import ObsEndpoints, observing_middleware
from coreplane.obs.http import register as register_obs

__all__ = ["ROLES", "ApiServer", "F", "RequestObserver", "Route"]

logger = logging.getLogger(__name__)

# observe(route, method, code, seconds, request): see `ApiServer.add_request_observer`
RequestObserver = Callable[[str, str, int, float, web.Request], None]

MSGPACK = "application/msgpack"
_KNOWN_HEADERS_MAX = 256
JSON = "application/json"


# ------------------------------------------------------------------------------ encoding


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


_SCALARS = frozenset({int, str, bytes, bool, type(None)})


def _to_plain(value: Any) -> Any:
    """For msgpack: the codec admits no floats (status counters may hold some)."""
    if type(value) is dict and all(  # most answers ({"revision": n}): nothing to convert
        type(k) is str and type(v) in _SCALARS for k, v in value.items()
    ):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _decode_body(raw: bytes, content_type: str, bytes_fields: frozenset[str]) -> Any:
    if content_type == MSGPACK:
        return codec.decode_value(raw)
    if content_type not in (JSON, "", "application/octet-stream", "text/plain"):
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps(
                {"error": "unsupported_media_type", "message": f"send {JSON} or {MSGPACK}"}
            ),
            content_type=JSON,
        )
    if not raw:
        return {}
    try:
        body = json.loads(raw, parse_float=_no_float, parse_constant=_no_float)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument("body", f"not valid JSON: {str(exc)[:120]}") from None
    if isinstance(body, dict):
        for name in bytes_fields & body.keys():
            value = body[name]
            if not isinstance(value, str):
                raise InvalidArgument(name, "must be a base64 string")
            try:
                body[name] = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError, ValueError):
                raise InvalidArgument(name, "must be valid base64") from None
    return body


def _no_float(text: str) -> Any:
    raise InvalidArgument("body", f"numbers must be integers, got {text[:32]}")


def _content_type(request: web.Request) -> str:
    """The request's media type. The SDK sends exactly ``application/msgpack``: that one is
    taken as it is, without aiohttp's parse of the header (parameters, case)."""
    raw = request.headers.get("Content-Type")
    return MSGPACK if raw == MSGPACK else request.content_type


def _encode(request: web.Request, status: int, payload: Any) -> web.Response:
    accept = request.headers.get("Accept", "")
    if MSGPACK in accept or (JSON not in accept and _content_type(request) == MSGPACK):
        try:
            data = codec.encode_value(_to_plain(payload))
        except InvalidArgument:  # pragma: no cover - payloads are built here, plain
            data = codec.encode_value({"error": "internal", "message": "unencodable answer"})
            status = 500
        return web.Response(status=status, body=data, headers=_MSGPACK_HEADERS)
    return web.Response(
        status=status, body=json.dumps(_to_json(payload)).encode(), headers=_JSON_HEADERS
    )


# Built once: an answer's headers are copied from these (a C copy) instead of set through
# `content_type=`, which parses and rebuilds the header per answer. The same bytes on the wire.
_MSGPACK_HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": MSGPACK}))
_JSON_HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": f"{JSON}; charset=utf-8"}))


def _error(status: int, error: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "message": message[:500], **extra}


# ------------------------------------------------------------------------------ server


@dataclass(frozen=True, slots=True)
class _Principal:
    role: str
    node_id: str = ""


class ApiServer:
    """``ApiServer(cp, "127.0.0.1:8470", tokens={...}, ssl_context=None)``; `start()`/`stop()`.

    `cp` is a ControlPlane (only its public methods are used). `api_peers` maps node ids to
    the API URLs of the other nodes, for leader discovery by clients; `advertise_url` is how
    clients reach this one (default: the bound address, wrong behind NAT or on 0.0.0.0).
    ``address`` with port 0 binds a free port; `url` says which.
    """

    def __init__(
        self,
        cp: Any,
        address: str,
        *,
        tokens: Mapping[str, str],
        ssl_context: ssl.SSLContext | None = None,
        api_peers: Mapping[str, str] | None = None,
        body_bytes_max: int = 2 * 1024 * 1024,
        workers: int = 32,
        keepalive_timeout_s: float = 75.0,
        watch_wait_ms_max: int = 30_000,
        advertise_url: str | None = None,
        obs: bool = True,
    ) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise InvalidArgument("address", "must be host:port")
        self._host, self._port = host.strip("[]"), int(port)
        self._principals = self._parse_tokens(tokens)
        # Authorization headers already found valid -> their principal: a client sends the
        # same header on every request, so the constant-time walk over every token runs once
        # per header, not per request. Only valid headers go in (a wrong one is a dict miss,
        # whose time depends on no secret's bytes, then the walk); bounded.
        self._known_headers: dict[str, _Principal] = {}
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise InvalidArgument("ssl_context", "must be an ssl.SSLContext")
        self._ssl = ssl_context
        self._cp = cp
        self._api_peers = dict(api_peers or {})
        self._body_bytes_max = int(body_bytes_max)
        self._keepalive_timeout_s = float(keepalive_timeout_s)
        self._watch_wait_ms_max = int(watch_wait_ms_max)  # a longer wait_ms is shortened
        if advertise_url is not None and (
            not isinstance(advertise_url, str) or "://" not in advertise_url
        ):
            raise InvalidArgument("advertise_url", "must be a URL such as https://host:8470")
        self._advertise_url = advertise_url
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coreplane-api")
        # Write handlers run on the loop only if writes are pipelined (they never block then).
        self._inline_ok = callable(getattr(cp, "propose_async", None))
        handlers = Handlers(cp, self._api_urls)
        self._routes = [*default_routes(handlers), *quota_routes(handlers)]
        if getattr(cp, "fleet", None) is not None:  # the fleet's routes (api/fleet_routes.py)
            self._routes += fleet_routes(cp)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._completions: _Completions | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.url = ""
        # coreplane.obs: /health, /health/where, /health/why/..., /metrics, /v1/diagnose and
        # request metrics, mounted through the extension points below (add_request_observer,
        # add_app_hook, add_route, authenticate_role, api_peers); obs=False leaves it out.
        # Peers are asked for their samples with this server's first admin token.
        self._middlewares: list[Any] = []
        self._observers: list[RequestObserver] = []
        self._app_hooks: list[Callable[[web.Application], None]] = []
        self.obs: ObsEndpoints | None = None
        if obs:
            admin = next((t for t, r in sorted(tokens.items()) if r == "admin"), None)
            self.obs = register_obs(self, cp, peer_token=admin)
        register_dashboard(self)  # GET /dashboard: the page (api/dashboard.py)

    @staticmethod
    def _parse_tokens(tokens: Mapping[str, str]) -> list[tuple[bytes, _Principal]]:
        if not isinstance(tokens, Mapping) or not tokens:
            raise InvalidArgument("tokens", "must map at least one bearer token to a role")
        out = []
        for token, role in tokens.items():
            if not isinstance(token, str) or len(token) < 16 or not token.isprintable():
                raise InvalidArgument(
                    "tokens", "each token must be a printable str of >= 16 characters"
                )
            if not isinstance(role, str):
                raise InvalidArgument("tokens", f"role of a token must be a str, got {role!r}")
            kind, _, node = role.partition(":")
            if kind not in ROLES or (kind == "agent") != bool(node):
                raise InvalidArgument("tokens", f"role {role!r}: admin, client or agent:<node>")
            out.append((token.encode(), _Principal(kind, node)))
        return out

    # -------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Bind and serve on a thread of its own; returns once listening (or raises)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="coreplane-api", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            self._thread.join(5)
            err = self._error
            raise Unavailable(
                f"API server cannot listen on {self._host}:{self._port}: {err}"
            ) from err

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to 2 s), close; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.obs is not None:
            self.obs.close()

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = _new_event_loop()
        self._loop = loop
        self._completions = _Completions(loop)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _serve(self) -> None:
        observe = [observing_middleware(self._notify_observers)] if self._observers else []
        app = web.Application(
            client_max_size=self._body_bytes_max,
            middlewares=[*observe, *self._middlewares, self._errors_middleware],
        )
        fast: dict[tuple[str, str], Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}
        for route in self._routes:
            answer = functools.partial(self._answer, route)
            added = app.router.add_route(route.method, route.path, self._endpoint(route))
            fast[(route.method, route.path)] = self._fast_endpoint(route, added, app, answer)
        for hook in self._app_hooks:
            hook(app)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=2.0,
            keepalive_timeout=self._keepalive_timeout_s,
            max_field_size=8190,
            max_line_size=8190,
            max_headers=64,
        )
        await runner.setup()
        self._runner = runner
        server = runner.server
        assert server is not None
        # the Application's factory makes every request: a web.Request (its body cap) here
        server.request_handler = self._front(fast, server.request_handler)  # type: ignore[assignment]
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl)
        await site.start()
        host, port = runner.addresses[0][:2]
        scheme = "https" if self._ssl is not None else "http"
        self.url = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"

    # -------------------------------------------------------------------------- dispatch
    #
    # Two ways in, one answer. The /v1 routes of the table (`self._routes`) are found by an
    # exact (method, path) lookup in `_front` and answered by `_fast_endpoint`: the hosts'
    # middlewares and the request observers, then `_answer`. Everything else (another path,
    # a query string, an `Expect` header, the raw routes of obs and the dashboard, a 404 or
    # 405) goes to the aiohttp Application, whose router and middleware chain answer it,
    # the /v1 routes again through `_answer`. Measured (py-spy --gil on the loop thread under
    # a put load, main's code): the Application's resolve and per-request wrappers with the
    # metrics middleware were ~16% of the loop's samples; this lookup and the observer, ~4%.

    @staticmethod
    def _front(
        fast: Mapping[tuple[str, str], Callable[[web.Request], Awaitable[web.StreamResponse]]],
        app_handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The server's request handler (aiohttp's low-level `Server.request_handler`, which
        the AppRunner set to the Application's): the awaitable of a fast route's endpoint, or
        the Application's. Requests are still made by the Application's factory (its body
        cap, `web.Request`)."""
        get = fast.get

        def front(request: web.Request) -> Awaitable[web.StreamResponse]:
            endpoint = get((request.method, request.raw_path))
            if endpoint is None or "Expect" in request.headers:  # 100-continue: the app's
                return app_handler(request)
            return endpoint(request)

        return front

    def _fast_endpoint(
        self,
        route: Route,
        added: web.AbstractRoute,
        app: web.Application,
        answer: Callable[[web.Request], Awaitable[web.Response]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """`answer` behind the hosts' middlewares and the observers, as the Application would
        run it, minus its router: the request gets the route's match info (frozen, shared by
        every request of the route: no sub-apps here, nothing in it changes), so a middleware
        reading ``request.match_info`` sees what it would on the Application's path."""
        info = web.UrlMappingMatchInfo({}, added)
        info.add_app(app)
        info.freeze()
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = answer
        for middleware in reversed(self._middlewares):
            handler = functools.partial(middleware, handler=handler)
        observers = tuple(self._observers)
        path, method = route.path, route.method
        if not observers:

            def plain(request: web.Request) -> Awaitable[web.StreamResponse]:
                request._match_info = info  # what Application._handle sets
                return handler(request)

            return plain

        # `obs.http.observing_middleware` inlined: no middleware layer and no route lookup
        # per request on this path (the route is known here).
        async def observed(request: web.Request) -> web.StreamResponse:
            request._match_info = info
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
                seconds = time.monotonic() - started
                for observe in observers:
                    observe(path, method, code, seconds, request)

        return observed

    def _notify_observers(
        self, route: str, method: str, code: int, seconds: float, request: web.Request
    ) -> None:
        """The observers on the Application's path (outermost middleware, see `_serve`)."""
        for observe in self._observers:
            observe(route, method, code, seconds, request)

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The Application's routes outside the table (404, 405, raw routes): JSON errors."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.content_type == JSON:
                raise
            status, payload = _error(exc.status, _http_error_name(exc.status), exc.reason)
        except Exception:  # a bug: logged, answered without a traceback
            logger.exception("API handler failed on %s %s", request.method, request.path)
            status, payload = _error(500, "internal", "internal error (logged on the server)")
        return _encode(request, status, payload)

    def _authenticate(self, request: web.Request) -> _Principal | None:
        header = request.headers.get("Authorization", "")
        known = self._known_headers.get(header)
        if known is not None:
            return known
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        given = token.strip().encode("utf-8", "surrogateescape")
        found = None
        for secret, principal in self._principals:  # every comparison runs: constant time
            if hmac.compare_digest(secret, given):
                found = principal
        if found is not None and len(self._known_headers) < _KNOWN_HEADERS_MAX:
            self._known_headers[header] = found
        return found

    def _endpoint(self, route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return await self._answer(route, request)

        return handle

    async def _answer(self, route: Route, request: web.Request) -> web.Response:
        """One request of a table route, on either path: authenticated, decoded, checked,
        handled, encoded; every error answered here (never raised)."""
        principal = self._authenticate(request)
        if principal is None:
            status, payload = _error(401, "unauthorized", "a valid bearer token is required")
            response = _encode(request, status, payload)
            response.headers["WWW-Authenticate"] = 'Bearer realm="coreplane"'
            return response
        if principal.role not in route.roles:
            return _encode(
                request,
                *_error(403, "forbidden", f"role {principal.role!r} may not call {route.path}"),
            )
        try:
            if route.method == "GET":
                body: Any = {}
            else:
                raw = await request.read()
                body = _decode_body(raw, _content_type(request), route.bytes_fields)
            args = check_fields(body, route.spec)
            if (
                principal.role == "agent"
                and route.node_field
                and args.get(route.node_field) != principal.node_id
            ):
                return _encode(
                    request,
                    *_error(
                        403,
                        "forbidden",
                        f"an agent token of {principal.node_id!r} may only act for its own node",
                        field=route.node_field,
                    ),
                )
            if route.inline and self._inline_ok:
                result = route.handler(args)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._pool, route.handler, args)
            if isinstance(result, concurrent.futures.Future):  # a pipelined write
                assert self._completions is not None
                result = await self._completions.wait(result)
            if route.long_poll:
                result = await self._long_poll(route, args, result)
            return _encode(request, 200, result)
        except web.HTTPException as exc:  # 413 (the body cap), 415 (`_decode_body`)
            if exc.content_type == JSON:  # already our JSON error: answered as it is
                return web.Response(status=exc.status, text=exc.text, content_type=JSON)
            return _encode(request, *_error(exc.status, _http_error_name(exc.status), exc.reason))
        except InvalidArgument as exc:
            return _encode(request, *_error(400, "invalid_argument", exc.reason, field=exc.field))
        except DecodeError as exc:
            return _encode(request, *_error(400, "invalid_argument", str(exc), field="body"))
        except CommandRejected as exc:
            return _encode(request, *_error(409, "rejected", exc.message, code=exc.code))
        except NotLeader as exc:
            return _encode(
                request, *_error(503, "not_leader", str(exc), leader=exc.leader_hint or "")
            )
        except (Unavailable, CoreplaneError) as exc:
            return _encode(request, *_error(503, "unavailable", str(exc)))
        except Exception:  # a bug: logged, answered without a traceback
            logger.exception("API handler failed on %s %s", request.method, request.path)
            status, payload = _error(500, "internal", "internal error (logged on the server)")
            return _encode(request, status, payload)

    async def _long_poll(self, route: Route, args: dict[str, Any], result: Any) -> Any:
        """Hold a watch until it has events or its wait is over, polling the local replica
        (10 ms, doubling to 100 ms) on the event loop: a waiting watch holds no pool thread."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(args["wait_ms"], self._watch_wait_ms_max) / 1000
        delay_s = 0.01
        while not result["events"] and loop.time() < deadline:
            await asyncio.sleep(min(delay_s, max(0.0, deadline - loop.time())))
            delay_s = min(delay_s * 2, 0.1)
            args = {**args, "start_revision": result["next_revision"]}
            result = await loop.run_in_executor(self._pool, route.handler, args)
        return result

    # -------------------------------------------------------------------------- routes

    def _api_urls(self) -> dict[str, str]:
        return {self._cp.node_id: self._advertise_url or self.url, **self._api_peers}

    def add_route(
        self,
        method: str,
        path: str,
        *,
        roles: set[str] | frozenset[str],
        fields: Mapping[str, F],
        handler: Handler,
        node_field: str = "",
        bytes_fields: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """Add a route before `start()` (how the fleet contract and hosts extend the API):
        `handler(args)` runs in the thread pool with the validated body and returns plain
        data; `node_field` names the body field an agent token must match to its own node."""
        if self._thread is not None:
            raise InvalidArgument("path", "add routes before start()")
        if method not in ("GET", "POST") or not path.startswith("/v1/"):
            raise InvalidArgument("path", "a GET or POST route under /v1/")
        if not set(roles) <= set(ROLES) or (node_field and node_field not in fields):
            raise InvalidArgument("roles", f"roles among {ROLES}; node_field one of the fields")
        self._routes.append(
            Route(
                method,
                path,
                frozenset(roles),
                dict(fields),
                handler,
                frozenset(bytes_fields),
                node_field=node_field,
            )
        )

    # -------------------------------------------------------------------------- extensions

    def add_middleware(self, middleware: Any) -> None:
        """An aiohttp middleware outside the error handler (sees every final status)."""
        if self._thread is not None:
            raise InvalidArgument("middleware", "add middlewares before start()")
        self._middlewares.append(middleware)

    def add_request_observer(self, observe: RequestObserver) -> None:
        """``observe(route, method, code, seconds, request)`` once per answered request, on the
        event loop, outside every middleware: `route` is the registered pattern or
        "unmatched" (never the raw path), `method` the request's (any token a client sent),
        `code` the status answered (500 for an exception), `seconds` the server's time."""
        if self._thread is not None:
            raise InvalidArgument("observe", "add observers before start()")
        self._observers.append(observe)

    def add_app_hook(self, hook: Callable[[web.Application], None]) -> None:
        """`hook(app)` runs when the app is built: raw aiohttp routes outside /v1."""
        if self._thread is not None:
            raise InvalidArgument("hook", "add app hooks before start()")
        self._app_hooks.append(hook)

    def authenticate_role(self, request: web.Request) -> str | None:
        """The role of the request's bearer token, or None (no or unknown token)."""
        principal = self._authenticate(request)
        return None if principal is None else principal.role

    @property
    def api_peers(self) -> dict[str, str]:
        """The other nodes' API URLs, id -> URL, as configured."""
        return dict(self._api_peers)

    @property
    def routes(self) -> list[tuple[str, str, frozenset[str]]]:
        """(method, path, roles) of every route: for tests and docs."""
        return [(r.method, r.path, r.roles) for r in self._routes]


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """The server's event loop: uvloop's when it is installed, else asyncio's own.

    Measured (aiohttp alone, a 90-byte POST answered with a constant, 8 keep-alive clients):
    the loop thread's CPU per request went from ~80 us on asyncio's selector loop to ~52 us
    on uvloop's (its transports write without Python frames; half the system time), the
    same aiohttp code on top. ``COREPLANE_API_LOOP=asyncio`` forces asyncio's loop (to
    compare, or to step around a uvloop bug); uvloop is optional, nothing else needs it."""
    if os.environ.get("COREPLANE_API_LOOP", "") != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")  # optional: typed or not, installed or not
        except ImportError:
            pass
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


class _Completions:
    """Writes' futures, completed on the Raft thread, handed to the event loop in batches.

    `asyncio.wrap_future` costs one ``call_soon_threadsafe`` per completed future: a
    self-pipe write on the completing (tick) thread and a wake-up and pipe read on the loop,
    per request. The tick thread completes a whole batch of entries at once, so here the
    first completion of a batch schedules one `_drain` and the others only join its list:
    one cross-thread wake-up per batch. The loop sets every waiting future's outcome in
    `_drain`; a waiter that went away (its client disconnected) is skipped.
    """

    __slots__ = ("_loop", "_mu", "_ready")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._mu = threading.Lock()
        self._ready: list[tuple[asyncio.Future[Any], concurrent.futures.Future[Any]]] = []

    def wait(self, future: concurrent.futures.Future[Any]) -> asyncio.Future[Any]:
        """An asyncio future of the loop, with `future`'s outcome once it has one."""
        waiter: asyncio.Future[Any] = self._loop.create_future()
        if future.done():
            _settle(waiter, future)
        else:
            future.add_done_callback(lambda done: self._done(waiter, done))
        return waiter

    def _done(self, waiter: asyncio.Future[Any], future: concurrent.futures.Future[Any]) -> None:
        with self._mu:
            first = not self._ready
            self._ready.append((waiter, future))
        if first:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._mu:
            ready, self._ready = self._ready, []
        for waiter, future in ready:
            _settle(waiter, future)


def _settle(waiter: asyncio.Future[Any], future: concurrent.futures.Future[Any]) -> None:
    if waiter.done():  # cancelled: the request went away
        return
    if future.cancelled():
        waiter.cancel()
        return
    exc = future.exception()
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(future.result())


def _http_error_name(status: int) -> str:
    return {
        400: "invalid_argument",
        404: "not_found",
        405: "method_not_allowed",
        413: "body_too_large",
        415: "unsupported_media_type",
    }.get(status, "http_error")
