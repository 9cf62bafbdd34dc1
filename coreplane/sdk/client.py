"""`Client` and `AsyncClient`: one API shape over coreplane's HTTP API, on httpx.

httpx because one library gives the sync and the async client the same request model, pool
limits, timeouts and TLS settings (requests has no async side; aiohttp no sync one).

What a call does, in both clients (the decision code is `coreplane.sdk.retry.CallPlan`):
- picks an endpoint from the **connection provider** (`Endpoints`): the leader first when
  known (one hop less: followers forward writes to it), then the others; a ``stale_ok`` read
  asks the followers first, in turn (any replica answers it from its own state, so reads
  spread off the leader), the leader last; endpoints whose
  circuit breaker is open are skipped, endpoints being **drained** get no new request (their
  in-flight ones finish), and the list refreshes from ``GET /v1/members`` (leader id and every
  node's API URL) on failures and on each health check;
- sends canonical msgpack (through `coreplane.core.codec`); every write carries this client's
  ``(client_id, seq)``, fixed before the first attempt, so a retry can never apply twice and
  **every request is safe to retry**;
- retries failures (transport errors, timeouts, 503) with backoff and full jitter, within the
  retry budget, on another endpoint when there is one; a follower's ``not_leader`` naming the
  leader is a redirect: the call goes there at once (no backoff, not a failure), and one
  that knows no leader yet (an election) is retried after backoff without counting against
  that live node's breaker; answers
  (including refusals: 400, 409) are never retried. Errors come out as the `coreplane.errors`
  tree, never an httpx exception.

Health checks (``health_check_interval_ms`` > 0; none in the serverless profile) run on a
daemon thread (sync) or a task (async): each probes ``GET /v1/health`` on endpoints whose
breaker lets a probe through, so a dead endpoint's breaker opens without user traffic paying
for it and a recovered one closes, and the leader hint stays fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from random import Random
from typing import Any, Generic, NamedTuple, TypeVar

import httpx

from coreplane.core.codec import decode_value, encode_value
from coreplane.errors import (
    CommandRejected,
    CoreplaneError,
    DecodeError,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from coreplane.sdk._wire import StdlibTransport
from coreplane.sdk.config import ClientConfig, detect_config
from coreplane.sdk.lock import AsyncLock, AsyncLockSession, Lock, LockSession
from coreplane.sdk.retry import (
    Backoff,
    CallPlan,
    CircuitBreaker,
    Decision,
    Outcome,
    RetryBudget,
)

__all__ = ["AsyncClient", "Client", "Endpoints", "WatchEvent"]

WatchEvent = tuple[int, str, str, bytes]  # (revision, "put" | "delete", key, value)
T = TypeVar("T")

MSGPACK = "application/msgpack"
# After these a call refreshes the membership once: who leads now, which nodes exist.
_REFRESH_AFTER = frozenset({Outcome.FAILED, Outcome.NO_LEADER})


def _normalize(endpoint: str) -> str:
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidArgument("endpoints", "each endpoint must be a non-empty str")
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    return url.rstrip("/")


class Endpoints:
    """The connection provider's view of the cluster: endpoints, leader, breakers, draining.

    Thread-safe. `order()` is the preference order for a new call; `drain(url)` stops new
    calls to an endpoint and forgets it once its in-flight calls are done.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        config: ClientConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Random | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        urls = [_normalize(e) for e in endpoints]
        if not urls:
            raise InvalidArgument("endpoints", "need at least one endpoint")
        self._config, self._clock, self._rng = config, clock, rng or Random()
        self._lock = threading.Lock()
        self._urls: list[str] = []
        self.breakers: dict[str, CircuitBreaker] = {}
        self._inflight: dict[str, int] = {}
        self._draining: set[str] = set()
        self._by_id: dict[str, str] = {}  # node id -> API URL, from /v1/members
        self.leader_url: str | None = None
        self._turn = 0  # the follower a stale read goes to first, in turn
        # order() for a call to the leader, computed once per (leader, endpoint set): every
        # call asks for it; `_version` moves whenever the endpoint set or draining does.
        self._version = 0
        self._leader_first: tuple[str | None, int, list[str]] | None = None
        for url in urls:
            self._add(url)

    def _add(self, url: str) -> None:
        if url in self.breakers:
            return
        c = self._config
        self.breakers[url] = CircuitBreaker(
            failure_threshold=c.breaker_failures,
            reset_ms=c.breaker_reset_ms,
            reset_max_ms=max(c.breaker_reset_ms, c.breaker_reset_max_ms),
            clock=self._clock,
            rng=self._rng,
        )
        self._urls.append(url)
        self._inflight.setdefault(url, 0)
        self._version += 1

    def order(self, *, followers_first: bool = False) -> list[str]:
        """The leader first (writes and linearizable reads: one hop less); with
        `followers_first` (``stale_ok`` reads, which any node answers from its own replica)
        the followers first, taken in turn so that reads spread over them, the leader last."""
        if not followers_first:
            cached = self._leader_first  # one read: a tuple replaced whole, never changed
            if cached is not None and cached[0] == self.leader_url and cached[1] == self._version:
                return cached[2][:]
        with self._lock:
            urls = [u for u in self._urls if u not in self._draining]
            if self.leader_url in urls:
                urls.remove(self.leader_url)
                if followers_first:
                    if urls:
                        self._turn = (self._turn + 1) % len(urls)
                        urls = urls[self._turn :] + urls[: self._turn]
                    urls.append(self.leader_url)
                else:
                    urls.insert(0, self.leader_url)
            if not followers_first:
                self._leader_first = (self.leader_url, self._version, urls[:])
            return urls

    def all(self) -> list[str]:
        with self._lock:
            return list(self._urls)

    def learn(self, members: dict[str, Any]) -> None:
        """Take in a ``/v1/members`` answer: every node's API URL, and who leads."""
        api = members.get("api")
        leader = members.get("leader")
        with self._lock:
            if isinstance(api, dict):
                for node_id, url in api.items():
                    if isinstance(url, str) and url:
                        self._add(_normalize(url))
                        self._by_id[str(node_id)] = _normalize(url)
                leader_url = api.get(leader) if isinstance(leader, str) else None
                self.leader_url = (
                    _normalize(leader_url) if isinstance(leader_url, str) and leader_url else None
                )

    def leader_hint(self, node_id: object) -> str | None:
        """A follower named the leader: its URL (now the preferred endpoint), if known."""
        with self._lock:
            url = self._by_id.get(node_id) if isinstance(node_id, str) else None
            if url is None or url not in self._urls or url in self._draining:
                return None
            self.leader_url = url
            return url

    def drain(self, url: str) -> None:
        """New calls avoid `url`; it is forgotten once its in-flight calls finish."""
        url = _normalize(url)
        with self._lock:
            if url in self.breakers:
                self._draining.add(url)
                self._version += 1
                self._forget_if_idle(url)

    def _forget_if_idle(self, url: str) -> None:
        if url in self._draining and self._inflight.get(url, 0) == 0 and url in self._urls:
            self._urls.remove(url)
            self._version += 1
            if self.leader_url == url:
                self.leader_url = None

    def started(self, url: str) -> None:
        with self._lock:
            self._inflight[url] = self._inflight.get(url, 0) + 1

    def finished(self, url: str) -> None:
        with self._lock:
            self._inflight[url] -= 1
            self._forget_if_idle(url)

    def inflight(self, url: str) -> int:
        with self._lock:
            return self._inflight.get(_normalize(url), 0)


class _Core:
    """What the two clients share: config, sessions, encoding, classifying answers."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        token: str,
        config: ClientConfig | None,
        client_id: str | None,
    ) -> None:
        if not isinstance(token, str) or not token:
            raise InvalidArgument("token", "must be a non-empty str")
        self.config = config if config is not None else detect_config()
        if not isinstance(self.config, ClientConfig):
            raise InvalidArgument("config", "must be a ClientConfig (see coreplane.sdk.config)")
        self._rng = Random()
        self.endpoints = Endpoints(
            endpoints if not isinstance(endpoints, str) else [endpoints], self.config, rng=self._rng
        )
        c = self.config
        self._budget = RetryBudget(
            ratio=c.budget_ratio,
            min_retries_per_s=c.budget_min_retries_per_s,
            window_s=c.budget_window_s,
            clock=time.monotonic,
        )
        self._backoff = Backoff(c.backoff_base_ms, c.backoff_cap_ms, self._rng)
        self.client_id = client_id or os.urandom(12).hex()
        if len(self.client_id.encode()) > 120:
            raise InvalidArgument("client_id", "at most 120 bytes")
        # next() on an itertools.count is one C call that never releases the GIL: atomic,
        # so concurrent writes never share a seq without a lock of our own.
        self._seq = itertools.count(1)
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": MSGPACK,
            "Accept": MSGPACK,
        }
        self._closed = False
        self._urls: dict[tuple[str, str], httpx.URL] = {}
        # (endpoint, path) -> the wire's (host, port) and path, None for https: see _send
        self._targets: dict[tuple[str, str], tuple[tuple[str, int], str] | None] = {}

    def _url(self, endpoint: str, path: str) -> httpx.URL:
        """Parsed once per (endpoint, path): httpx's URL parsing is a visible share of a call."""
        key = (endpoint, path)
        url = self._urls.get(key)
        if url is None:
            url = self._urls.setdefault(key, httpx.URL(endpoint + path))
        return url

    def _limits(self) -> httpx.Limits:
        c = self.config
        return httpx.Limits(
            max_connections=c.pool_max * max(3, len(self.endpoints.all())),
            max_keepalive_connections=c.keepalive_max,
            keepalive_expiry=c.keepalive_expiry_ms / 1000,
        )

    def _timeout(self) -> httpx.Timeout:
        c = self.config
        return httpx.Timeout(c.request_timeout_ms / 1000, connect=c.connect_timeout_ms / 1000)

    def _write(self, body: dict[str, Any]) -> dict[str, Any]:
        """A write's body with this client's session: the seq is fixed before any attempt."""
        return {**body, "client_id": self.client_id, "seq": next(self._seq)}

    def _plan(
        self, safe: bool = True, followers_first: bool = False, attempts_max: int = 0
    ) -> CallPlan:
        """`attempts_max` (> 0) caps the config's `max_attempts` for this call: a caller that
        paces its own retries (a Router's reports) sends once, redirects still followed."""
        max_attempts = self.config.max_attempts
        return CallPlan(
            self.endpoints.order(followers_first=followers_first),
            self.endpoints.breakers,
            self._budget,
            self._backoff,
            max_attempts=min(max_attempts, attempts_max) if attempts_max > 0 else max_attempts,
            safe=safe,
        )

    @staticmethod
    def _classify(response: Any) -> tuple[Outcome, Any, CoreplaneError | None]:
        """An httpx.Response or a `RawResponse`: status_code, headers.get, content."""
        status = response.status_code
        try:
            if response.headers.get("content-type", "").startswith(MSGPACK):
                payload = decode_value(response.content)
            else:
                payload = json.loads(response.content or b"null")
        except (DecodeError, ValueError):
            payload = None
        if status == 200:
            return Outcome.OK, payload, None
        info = payload if isinstance(payload, dict) else {}
        message = str(info.get("message") or f"HTTP {status}")
        if status == 503 and info.get("error") == "not_leader":
            if info.get("leader"):
                return Outcome.REDIRECT, info["leader"], Unavailable(message)
            return Outcome.NO_LEADER, None, Unavailable(message)
        if status == 503 or status >= 500 or status == 429:
            return Outcome.FAILED, None, Unavailable(message)
        if status == 400:
            return Outcome.OK, None, InvalidArgument(str(info.get("field") or "request"), message)
        if status in (401, 403):
            return Outcome.OK, None, PermissionDenied(message, status)
        if status == 409:
            return Outcome.OK, None, CommandRejected(str(info.get("code") or "rejected"), message)
        return Outcome.OK, None, CoreplaneError(f"HTTP {status}: {message}")

    def _decide(self, plan: CallPlan, outcome: Outcome, answer: Any) -> tuple[Outcome, Decision]:
        """The plan's next step after one attempt. A follower's "not the leader, it is X"
        goes straight to X (no backoff, no breaker count) while X's URL is known and the
        call has redirects left; otherwise it is retried after backoff like "no leader yet",
        which does not count against that healthy follower either."""
        target = None
        if outcome is Outcome.REDIRECT:
            if plan.redirects < plan.REDIRECTS_MAX:
                target = self.endpoints.leader_hint(answer)
            if target is None:
                outcome = Outcome.NO_LEADER
        return outcome, plan.after(outcome, redirect_to=target)

    @staticmethod
    def _transport_error(url: str, exc: httpx.HTTPError) -> tuple[Outcome, None, CoreplaneError]:
        """A failed exchange: retryable (Unavailable), except a certificate the client does
        not trust, which no retry fixes (and which must not count against the endpoint)."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return (
                    Outcome.OK,
                    None,
                    PermissionDenied(f"{url}: TLS certificate not trusted: {cause}", 0),
                )
            cause = cause.__cause__ or cause.__context__
        return Outcome.FAILED, None, Unavailable(f"{url}: {type(exc).__name__}: {exc}")

    @staticmethod
    def _give_up(error: CoreplaneError | None, reason: str) -> CoreplaneError:
        if error is None:
            return Unavailable(reason)
        if isinstance(error, Unavailable):
            return Unavailable(f"{error} ({reason})")
        return error

    # -- one call's retry loop, without I/O (each client drives it with its own) ---------

    def _steps(
        self,
        path: str,
        body: dict[str, Any] | None,
        method: str,
        safe: bool,
        refresh: bool,
        followers_first: bool = False,
        attempts_max: int = 0,
    ) -> Generator[tuple[str, Any], Any, Any]:
        """Yields what to do: ``("send", (url, data))`` (send back the classified answer:
        outcome, payload, error), ``("refresh", None)`` or ``("sleep", seconds)``; returns
        the call's answer or raises its error."""
        if self._closed:
            raise InvalidArgument("client", "the client is closed")
        data = encode_value(body) if body is not None else None
        plan = self._plan(safe, followers_first, attempts_max)
        url = plan.first()
        if url is None:
            raise Unavailable("every endpoint's circuit breaker is open")
        while True:
            self.endpoints.started(url)
            try:
                outcome, answer, error = yield "send", (url, data)
            finally:
                self.endpoints.finished(url)
            outcome, decision = self._decide(plan, outcome, answer)
            if decision.done:
                if error is not None:
                    raise error
                return answer
            if refresh and outcome in _REFRESH_AFTER and plan.retries <= 1:
                refresh = False  # once per call: who leads now, which nodes exist
                yield "refresh", None
            if decision.endpoint is None:
                raise self._give_up(error, decision.reason)
            yield "sleep", decision.delay_s
            url = decision.endpoint

    # -- each public call's request and answer, shared by both clients -------------------

    @staticmethod
    def _get(key: str, stale_ok: bool) -> _Req[tuple[bytes, int] | None]:
        got = lambda a: (a["value"], a["mod_revision"]) if a["found"] else None  # noqa: E731
        return _Req("/v1/kv/get", {"key": key, "stale_ok": stale_ok}, got, stale=stale_ok)

    @staticmethod
    def _range(prefix: str, limit: int, stale_ok: bool) -> _Req[list[tuple[str, bytes, int]]]:
        body = {"prefix": prefix, "limit": limit, "stale_ok": stale_ok}
        return _Req(
            "/v1/kv/range",
            body,
            lambda a: [(i["key"], i["value"], i["mod_revision"]) for i in a["items"]],
            stale=stale_ok,
        )

    def _put(self, key: str, value: bytes, lease_id: int, guard: Any) -> _Req[int]:
        if guard is not None:
            guard.check()
        body = self._write({"key": key, "value": _check_bytes(value), "lease_id": lease_id})
        return _Req("/v1/kv/put", body, _REVISION)

    def _cas(
        self, key: str, expected_mod_revision: int, value: bytes, lease_id: int, guard: Any
    ) -> _Req[int]:
        if guard is not None:
            guard.check()
        body = {
            "key": key,
            "expected_mod_revision": expected_mod_revision,
            "value": _check_bytes(value),
            "lease_id": lease_id,
        }
        return _Req("/v1/kv/cas", self._write(body), _REVISION)

    def _delete(self, key: str, guard: Any) -> _Req[int]:
        if guard is not None:
            guard.check()
        return _Req("/v1/kv/delete", self._write({"key": key}), _field("deleted"))

    def _watch(
        self, prefix: str, start_revision: int, wait_ms: int, limit: int
    ) -> _Req[tuple[list[WatchEvent], int]]:
        # The long poll must end before the request times out, or it would count as a failure.
        wait = max(0, min(wait_ms, self.config.request_timeout_ms - 1_000))
        body = {"prefix": prefix, "start_revision": start_revision, "wait_ms": wait, "limit": limit}
        events = lambda a: (  # noqa: E731
            [(e["revision"], e["type"], e["key"], e["value"]) for e in a["events"]],
            int(a["next_revision"]),
        )
        return _Req("/v1/kv/watch", body, events)

    def _lease(self, verb: str, body: dict[str, Any], answer: str) -> _Req[int]:
        return _Req(f"/v1/leases/{verb}", self._write(body), _field(answer))

    def _members(self) -> _Req[dict[str, Any]]:
        def learn(answer: dict[str, Any]) -> dict[str, Any]:
            self.endpoints.learn(answer)
            return answer

        return _Req("/v1/members", None, learn, "GET")


class _Req(NamedTuple, Generic[T]):
    """A public call's request (path, body, method) and how its answer becomes the result."""

    path: str
    body: dict[str, Any] | None
    shape: Callable[[Any], T]
    method: str = "POST"
    stale: bool = False  # a stale_ok read: any replica answers, followers are asked first


def _field(name: str) -> Callable[[Any], int]:
    return lambda answer: int(answer[name])


_REVISION = _field("revision")


def _request_args(
    method: str, path: str, body: dict[str, Any] | None
) -> tuple[str, dict[str, Any] | None]:
    """`request`'s arguments, checked."""
    if method not in ("GET", "POST"):
        raise InvalidArgument("method", "must be 'GET' or 'POST'")
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 1024:
        raise InvalidArgument("path", "must be a str starting with '/' (at most 1024 chars)")
    if body is not None and not isinstance(body, dict):
        raise InvalidArgument("body", "must be a dict or None")
    if method == "GET" and body is not None:
        raise InvalidArgument("body", "a GET has no body")
    return path, body


def _flag(idempotent: object) -> bool:
    if not isinstance(idempotent, bool):
        raise InvalidArgument("idempotent", "must be a bool")
    return idempotent


def _check_bytes(value: Any) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidArgument("value", "must be bytes")
    return bytes(value)


class Client(_Core):
    """``Client(endpoints, token, config=None)``: a thread-safe client of the coreplane API.

    `endpoints` are ``host:port`` or URLs of any nodes (the others are discovered); `config`
    defaults to the profile detected from the environment (`coreplane.sdk.config`).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        token: str,
        config: ClientConfig | None = None,
        *,
        client_id: str | None = None,
        verify: Any = True,
    ) -> None:
        super().__init__(endpoints, token, config, client_id)
        limits = self._limits()
        c = self.config
        # Plain HTTP goes over http.client (coreplane/sdk/_wire.py: a third of httpcore's CPU);
        # a call's hot path uses it directly, anything else through httpx, which it is mounted
        # under. https:// stays on httpx's own transport.
        self._wire = StdlibTransport(
            keepalive_max=c.keepalive_max,
            keepalive_expiry_s=c.keepalive_expiry_ms / 1000,
            connections_max=limits.max_connections or 1,
        )
        self._wire_timeouts = {
            "connect_s": c.connect_timeout_ms / 1000,
            "read_s": c.request_timeout_ms / 1000,
            "pool_s": c.request_timeout_ms / 1000,
        }
        self._http = httpx.Client(
            limits=limits,
            timeout=self._timeout(),
            verify=verify,
            headers=self._headers,
            mounts={"http://": self._wire},
        )
        self._sessions: dict[int, LockSession] = {}  # lock sessions by TTL
        self._sessions_lock = threading.Lock()
        self._stop = threading.Event()
        self._health: threading.Thread | None = None
        if self.config.health_check_interval_ms > 0:
            self._health = threading.Thread(
                target=self._health_loop, daemon=True, name="coreplane-sdk-health"
            )
            self._health.start()

    # -------------------------------------------------------------------------- plumbing

    def _call(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        method: str = "POST",
        safe: bool = True,
        refresh: bool = True,
        followers_first: bool = False,
        attempts_max: int = 0,
    ) -> Any:
        steps = self._steps(path, body, method, safe, refresh, followers_first, attempts_max)
        reply: Any = None
        try:
            while True:
                step, arg = steps.send(reply)
                reply = None
                if step == "send":
                    reply = self._send(method, path, *arg)
                elif step == "refresh":
                    with contextlib.suppress(CoreplaneError):
                        self.refresh()
                else:
                    time.sleep(arg)
        except StopIteration as done:
            return done.value

    def _send(
        self, method: str, path: str, url: str, data: bytes | None
    ) -> tuple[Outcome, Any, CoreplaneError | None]:
        try:
            key = (url, path)
            if key in self._targets:
                wire = self._targets[key]
            else:  # once per (endpoint, path): httpx.URL's properties cost ~1 us a call
                target = self._url(url, path)
                wire = (
                    ((target.host, target.port or 80), target.raw_path.decode("ascii"))
                    if target.scheme == "http"
                    else None
                )
                self._targets[key] = wire
            if wire is not None:
                response: Any = self._wire.exchange(
                    method, wire[0], wire[1], data, self._headers, **self._wire_timeouts
                )
            else:
                response = self._http.request(method, self._url(url, path), content=data)
            return self._classify(response)
        except httpx.HTTPError as exc:
            return self._transport_error(url, exc)

    def _run(self, req: _Req[T]) -> T:
        return req.shape(
            self._call(req.path, req.body, method=req.method, followers_first=req.stale)
        )

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        idempotent: bool,
    ) -> Any:
        """One call to any route of the API, for routes this client has no method for (the
        fleet's, diagnose): ``client.request("GET", "/v1/fleet/nodes", idempotent=True)``.

        The same path as every method: leader first, breakers, backoff within the retry
        budget, answers decoded, errors from `coreplane.errors`. `idempotent` says whether the
        request may run twice harmlessly: ``True`` (reads, and writes that set a state, such
        as a cordon) is retried after a failure like any call; ``False`` is sent once: a
        failure after it may have reached a node raises `Unavailable` (outcome unknown).
        Writes with a method here (``put``, ``cas``, ...) carry this client's
        ``(client_id, seq)`` and are retry-safe; prefer them for the KV."""
        path, body = _request_args(method, path, body)
        return self._call(path, body, method=method, safe=_flag(idempotent))

    def refresh(self) -> None:
        """Ask a node who leads and where every node's API is (one attempt, no retry)."""
        for url in self.endpoints.order():
            try:
                response = self._http.get(
                    url + "/v1/members",
                    headers=self._headers,
                    timeout=self.config.connect_timeout_ms / 1000,
                )
            except httpx.HTTPError:
                continue
            outcome, answer, _ = self._classify(response)
            if outcome is Outcome.OK and isinstance(answer, dict):
                self.endpoints.learn(answer)
                return

    def _health_loop(self) -> None:
        interval_s = self.config.health_check_interval_ms / 1000
        while not self._stop.wait(interval_s):
            try:
                self._health_check()
            except RuntimeError:  # httpx: the client was closed under us
                if self._stop.is_set():
                    return
                raise

    def _health_check(self) -> None:
        """Probe each endpoint whose breaker admits it; a failure counts against it."""
        for url in self.endpoints.all():
            breaker = self.endpoints.breakers[url]
            if breaker.state == CircuitBreaker.CLOSED or breaker.allow():
                try:
                    response = self._http.get(url + "/v1/health", headers=self._headers)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                breaker.record(Outcome.OK if ok else Outcome.FAILED)
        with contextlib.suppress(CoreplaneError):
            self.refresh()

    def _lock_session(self, ttl_ms: int) -> LockSession:
        """This client's open lock session of `ttl_ms`, opened (again) if need be."""
        with self._sessions_lock:
            session = self._sessions.get(ttl_ms)
            if session is None or session.lost:
                session = LockSession(self, ttl_ms).open()
                self._sessions[ttl_ms] = session
            return session

    def close(self) -> None:
        """Close lock sessions (their locks are released), stop health checks, close the pool."""
        with self._sessions_lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()
        self._closed = True
        self._stop.set()
        if self._health is not None:
            self._health.join(timeout=self.config.connect_timeout_ms / 1000 + 1)
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drain(self, endpoint: str) -> None:
        """Send no new request to `endpoint`; those in flight finish."""
        self.endpoints.drain(endpoint)

    # -------------------------------------------------------------------------- KV

    def get(self, key: str, *, stale_ok: bool = False) -> tuple[bytes, int] | None:
        """(value, mod_revision) or None; linearizable unless `stale_ok`."""
        return self._run(self._get(key, stale_ok))

    def range(
        self, prefix: str, *, limit: int = 0, stale_ok: bool = False
    ) -> list[tuple[str, bytes, int]]:
        """(key, value, mod_revision) of the keys with `prefix`, in key order."""
        return self._run(self._range(prefix, limit, stale_ok))

    def put(self, key: str, value: bytes, *, lease_id: int = 0, guard: Any = None) -> int:
        """Write; the new revision. With ``guard=lock``, raises LockLost if the lock lapsed."""
        return self._run(self._put(key, value, lease_id, guard))

    def cas(
        self,
        key: str,
        expected_mod_revision: int,
        value: bytes,
        *,
        lease_id: int = 0,
        guard: Any = None,
    ) -> int:
        """Compare-and-set on mod revision (0: absent); CommandRejected("compare_failed")."""
        req = self._cas(key, expected_mod_revision, value, lease_id, guard)
        return self._run(req)

    def delete(self, key: str, *, guard: Any = None) -> int:
        """Delete `key`; 1 if it existed, else 0."""
        return self._run(self._delete(key, guard))

    def watch(
        self, prefix: str = "", *, start_revision: int, wait_ms: int = 10_000, limit: int = 1000
    ) -> tuple[list[WatchEvent], int]:
        """One long poll: the events from `start_revision` on (keys with `prefix`) as soon as
        there are any, or none after `wait_ms`; and the revision to resume from. A revision
        older than the server's history raises CommandRejected("compacted"): re-read the
        state (`range`) and watch from its revision + 1."""
        req = self._watch(prefix, start_revision, wait_ms, limit)
        return self._run(req)

    def watch_events(
        self, prefix: str = "", *, start_revision: int, wait_ms: int = 10_000
    ) -> Iterator[WatchEvent]:
        """Every event from `start_revision` on, forever, resuming by revision (none missed)."""
        while True:
            events, start_revision = self.watch(
                prefix, start_revision=start_revision, wait_ms=wait_ms
            )
            yield from events

    # -------------------------------------------------------------------------- leases

    def lease_grant(self, ttl_ms: int, *, lease_id: int = 0) -> int:
        req = self._lease("grant", {"ttl_ms": ttl_ms, "lease_id": lease_id}, "lease_id")
        return self._run(req)

    def lease_keep_alive(self, lease_id: int) -> int:
        req = self._lease("keepalive", {"lease_id": lease_id}, "expires_ms")
        return self._run(req)

    def lease_revoke(self, lease_id: int) -> int:
        req = self._lease("revoke", {"lease_id": lease_id}, "deleted_keys")
        return self._run(req)

    # -------------------------------------------------------------------------- cluster

    def status(self) -> dict[str, Any]:
        return self._run(_Req[dict[str, Any]]("/v1/status", None, dict, "GET"))

    def members(self) -> dict[str, Any]:
        return self._run(self._members())

    # -------------------------------------------------------------------------- locks

    def lock(
        self,
        name: str,
        *,
        ttl_ms: int = 10_000,
        on_lost: Callable[[Any], None] | None = None,
        acquire_timeout_s: float | None = None,
    ) -> Lock:
        """A `Lock` on `name`: ``with client.lock("name", ttl_ms=...) as lock: ...``."""
        return Lock(self, name, ttl_ms=ttl_ms, on_lost=on_lost, acquire_timeout_s=acquire_timeout_s)


class AsyncClient(_Core):
    """The same API as `Client`, with coroutines: ``await client.put(...)``."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        token: str,
        config: ClientConfig | None = None,
        *,
        client_id: str | None = None,
        verify: Any = True,
    ) -> None:
        super().__init__(endpoints, token, config, client_id)
        self._http = httpx.AsyncClient(
            limits=self._limits(), timeout=self._timeout(), verify=verify, headers=self._headers
        )
        self._health: asyncio.Task[None] | None = None
        self._sessions: dict[int, AsyncLockSession] = {}
        self._sessions_lock: asyncio.Lock | None = None

    def _ensure_health(self) -> None:
        if self._health is None and self.config.health_check_interval_ms > 0:
            self._health = asyncio.get_running_loop().create_task(self._health_loop())

    async def _call(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        method: str = "POST",
        safe: bool = True,
        refresh: bool = True,
        followers_first: bool = False,
    ) -> Any:
        self._ensure_health()
        steps = self._steps(path, body, method, safe, refresh, followers_first)
        reply: Any = None
        try:
            while True:
                step, arg = steps.send(reply)
                reply = None
                if step == "send":
                    url, data = arg
                    try:
                        target = self._url(url, path)
                        response = await self._http.request(method, target, content=data)
                        reply = self._classify(response)
                    except httpx.HTTPError as exc:
                        reply = self._transport_error(url, exc)
                elif step == "refresh":
                    with contextlib.suppress(CoreplaneError):
                        await self.refresh()
                else:
                    await asyncio.sleep(arg)
        except StopIteration as done:
            return done.value

    async def _run(self, req: _Req[T]) -> T:
        return req.shape(
            await self._call(req.path, req.body, method=req.method, followers_first=req.stale)
        )

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        idempotent: bool,
    ) -> Any:
        """`Client.request` as a coroutine."""
        path, body = _request_args(method, path, body)
        return await self._call(path, body, method=method, safe=_flag(idempotent))

    async def refresh(self) -> None:
        for url in self.endpoints.order():
            try:
                response = await self._http.get(
                    url + "/v1/members",
                    headers=self._headers,
                    timeout=self.config.connect_timeout_ms / 1000,
                )
            except httpx.HTTPError:
                continue
            outcome, answer, _ = self._classify(response)
            if outcome is Outcome.OK and isinstance(answer, dict):
                self.endpoints.learn(answer)
                return

    async def _health_loop(self) -> None:
        interval_s = self.config.health_check_interval_ms / 1000
        while not self._closed:
            await asyncio.sleep(interval_s)
            for url in self.endpoints.all():
                breaker = self.endpoints.breakers[url]
                if breaker.state == CircuitBreaker.CLOSED or breaker.allow():
                    try:
                        response = await self._http.get(url + "/v1/health", headers=self._headers)
                        ok = response.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    breaker.record(Outcome.OK if ok else Outcome.FAILED)
            with contextlib.suppress(CoreplaneError):
                await self.refresh()

    async def _lock_session(self, ttl_ms: int) -> AsyncLockSession:
        if self._sessions_lock is None:
            self._sessions_lock = asyncio.Lock()
        async with self._sessions_lock:
            session = self._sessions.get(ttl_ms)
            if session is None or session.lost:
                session = await AsyncLockSession(self, ttl_ms).open()
                self._sessions[ttl_ms] = session
            return session

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
        self._closed = True
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def drain(self, endpoint: str) -> None:
        self.endpoints.drain(endpoint)

    # The same calls as `Client`'s (their docstrings say what each does).

    async def get(self, key: str, *, stale_ok: bool = False) -> tuple[bytes, int] | None:
        return await self._run(self._get(key, stale_ok))

    async def range(
        self, prefix: str, *, limit: int = 0, stale_ok: bool = False
    ) -> list[tuple[str, bytes, int]]:
        return await self._run(self._range(prefix, limit, stale_ok))

    async def put(self, key: str, value: bytes, *, lease_id: int = 0, guard: Any = None) -> int:
        req = self._put(key, value, lease_id, guard)
        return await self._run(req)

    async def cas(
        self,
        key: str,
        expected_mod_revision: int,
        value: bytes,
        *,
        lease_id: int = 0,
        guard: Any = None,
    ) -> int:
        req = self._cas(key, expected_mod_revision, value, lease_id, guard)
        return await self._run(req)

    async def delete(self, key: str, *, guard: Any = None) -> int:
        return await self._run(self._delete(key, guard))

    async def watch(
        self, prefix: str = "", *, start_revision: int, wait_ms: int = 10_000, limit: int = 1000
    ) -> tuple[list[WatchEvent], int]:
        req = self._watch(prefix, start_revision, wait_ms, limit)
        return await self._run(req)

    async def watch_events(
        self, prefix: str = "", *, start_revision: int, wait_ms: int = 10_000
    ) -> AsyncIterator[WatchEvent]:
        while True:
            events, start_revision = await self.watch(
                prefix, start_revision=start_revision, wait_ms=wait_ms
            )
            for event in events:
                yield event

    async def lease_grant(self, ttl_ms: int, *, lease_id: int = 0) -> int:
        req = self._lease("grant", {"ttl_ms": ttl_ms, "lease_id": lease_id}, "lease_id")
        return await self._run(req)

    async def lease_keep_alive(self, lease_id: int) -> int:
        req = self._lease("keepalive", {"lease_id": lease_id}, "expires_ms")
        return await self._run(req)

    async def lease_revoke(self, lease_id: int) -> int:
        req = self._lease("revoke", {"lease_id": lease_id}, "deleted_keys")
        return await self._run(req)

    async def status(self) -> dict[str, Any]:
        return await self._run(_Req[dict[str, Any]]("/v1/status", None, dict, "GET"))

    async def members(self) -> dict[str, Any]:
        return await self._run(self._members())

    def lock(
        self,
        name: str,
        *,
        ttl_ms: int = 10_000,
        on_lost: Callable[[Any], None] | None = None,
        acquire_timeout_s: float | None = None,
    ) -> AsyncLock:
        """An `AsyncLock`: ``async with client.lock("name") as lock: ...``."""
        return AsyncLock(
            self, name, ttl_ms=ttl_ms, on_lost=on_lost, acquire_timeout_s=acquire_timeout_s
        )
