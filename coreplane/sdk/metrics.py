"""`ClientMetrics`: Prometheus metrics of SDK clients, on the client side (docs/metrics.md).

The server counts what it answers; only the client knows what it asked, retried, gave up on
for want of retry budget, and which endpoints its breakers keep it away from. ::

    from prometheus_client import REGISTRY          # or a CollectorRegistry of your own
    metrics = ClientMetrics(REGISTRY)               # default: a new, private registry
    client = metrics.instrument(Client(endpoints, token), name="orders")

`instrument` works on a `Client` or an `AsyncClient` (also after construction) and returns it;
one `ClientMetrics` serves any number of clients, told apart by the `client` label:

- per attempt on the wire (each retry and redirect is one): the HTTP status code, or
  ``error`` for a transport failure, and the latency, timed around the exchange;
- per call: calls made, retries the retry budget granted, retries it refused;
- read at scrape time: each endpoint's breaker state and how often it opened, and the retry
  budget's balance.

prometheus_client is imported here only, when metrics are asked for: ``import coreplane.sdk``
does not load it. Instrumenting wraps the client's HTTP transports (the sync client's plain-HTTP
wire and httpx's) and its retry budget, all the SDK's own objects; a client that is not
instrumented pays nothing.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coreplane.errors import InvalidArgument

__all__ = ["SDK_BUCKETS_S", "ClientMetrics"]

SDK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STATES = ("closed", "open", "half_open")
_NAME_MAX = 64


class _Timed(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, record: Any) -> None:
        self.inner, self.record = inner, record

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        try:
            response = self.inner.handle_request(request)
        except Exception:
            self.record(request.method, "error", time.perf_counter() - start)
            raise
        self.record(request.method, str(response.status_code), time.perf_counter() - start)
        return response

    def close(self) -> None:
        self.inner.close()


class _AsyncTimed(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, record: Any) -> None:
        self.inner, self.record = inner, record

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
        except Exception:
            self.record(request.method, "error", time.perf_counter() - start)
            raise
        self.record(request.method, str(response.status_code), time.perf_counter() - start)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _timed_exchange(inner: Any, record: Any) -> Any:
    """The sync client's `StdlibTransport.exchange` (plain HTTP, also under httpx), timed."""

    def exchange(method: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            response = inner(method, *args, **kwargs)
        except Exception:
            record(method, "error", time.perf_counter() - start)
            raise
        record(method, str(response.status_code), time.perf_counter() - start)
        return response

    return exchange


class _CountedBudget:
    """The client's `RetryBudget`, counting what it is asked (same interface, same answers)."""

    def __init__(self, inner: Any, calls: Any, retries: Any, refused: Any) -> None:
        self.inner, self._calls, self._retries, self._refused = inner, calls, retries, refused

    def record_request(self) -> None:
        self._calls.inc()
        self.inner.record_request()

    def try_retry(self) -> bool:
        granted = bool(self.inner.try_retry())
        (self._retries if granted else self._refused).inc()
        return granted

    def balance(self) -> float:
        return float(self.inner.balance())


class _StateCollector(Collector):
    """Breaker states and the budget's balance, read from the clients at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clients: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "coreplane_sdk_breaker_state",
            "1 for each endpoint's circuit breaker state, as this client sees it",
            labels=["client", "endpoint", "state"],
        )
        opened = CounterMetricFamily(
            "coreplane_sdk_breaker_opened",
            "Times each endpoint's circuit breaker opened",
            labels=["client", "endpoint"],
        )
        balance = GaugeMetricFamily(
            "coreplane_sdk_retry_budget_balance",
            "Retries the retry budget would grant now",
            labels=["client"],
        )
        with self._lock:
            clients = sorted(self.clients.items())
        for name, client in clients:
            for url, breaker in sorted(client.endpoints.breakers.items()):
                now = breaker.state
                for s in _STATES:
                    state.add_metric([name, url, s], 1.0 if now == s else 0.0)
                opened.add_metric([name, url], float(breaker.opened))
            balance.add_metric([name], float(client._budget.balance()))
        yield state
        yield opened
        yield balance


class ClientMetrics:
    """The SDK's client-side metrics in `registry` (default: a new `CollectorRegistry`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "coreplane_sdk_requests",
            "Attempts sent by SDK clients, by HTTP status code (error: no answer)",
            ["client", "method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "coreplane_sdk_request_duration_seconds",
            "Latency of each attempt, as the SDK client saw it",
            ["client", "method"],
            buckets=SDK_BUCKETS_S,
            registry=r,
        )
        self.calls = Counter(
            "coreplane_sdk_calls", "Calls made (an attempt and its retries)", ["client"], registry=r
        )
        self.retries = Counter(
            "coreplane_sdk_retries", "Retries the retry budget granted", ["client"], registry=r
        )
        self.refused = Counter(
            "coreplane_sdk_retry_budget_refusals",
            "Retries the retry budget refused (the call failed instead)",
            ["client"],
            registry=r,
        )
        self._state = _StateCollector()
        r.register(self._state)

    def instrument(self, client: Any, *, name: str = "default") -> Any:
        """Count `client`'s requests, retries and refusals from now on; its breakers and
        budget are read at each scrape. Returns `client`."""
        if not isinstance(name, str) or not name or len(name) > _NAME_MAX:
            raise InvalidArgument("name", f"must be a non-empty str of at most {_NAME_MAX}")
        budget = getattr(client, "_budget", None)
        http = getattr(client, "_http", None)
        if budget is None or http is None or not hasattr(client, "endpoints"):
            raise InvalidArgument("client", "must be a coreplane.sdk Client or AsyncClient")
        with self._state._lock:
            if name in self._state.clients:
                raise InvalidArgument("name", f"a client named {name!r} is instrumented here")
            self._state.clients[name] = client
        requests, latency = self.requests, self.latency

        def record(method: str, code: str, seconds: float) -> None:
            requests.labels(name, method, code).inc()
            latency.labels(name, method).observe(seconds)

        if isinstance(http, httpx.AsyncClient):
            http._transport = _AsyncTimed(http._transport, record)
        else:
            http._transport = _Timed(http._transport, record)  # https://
        wire = getattr(client, "_wire", None)  # the sync client's plain-HTTP hot path
        if wire is not None:
            wire.exchange = _timed_exchange(wire.exchange, record)
        client._budget = _CountedBudget(
            budget,
            self.calls.labels(name),
            self.retries.labels(name),
            self.refused.labels(name),
        )
        return client
