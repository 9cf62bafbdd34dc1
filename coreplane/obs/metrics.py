"""Prometheus metrics of one ControlPlane (prometheus_client), read at scrape time.

`Metrics(cp)` owns a `CollectorRegistry` of its own, never the process-global default one:
several nodes run in one process (tests, simulations, a host embedding two clusters), and each
must export only itself. A custom collector reads the ControlPlane when scraped (status, the
engine's observations, the fleet's counts); no background thread, no sampling loop. The API
counters (`ApiMetrics`) live in the same registry and are fed by the API server's request observer
(`coreplane.obs.http`). docs/metrics.md lists every metric.

Every series carries a ``node`` label (the node id), so scrapes of several nodes merge cleanly
even without Prometheus' own ``instance`` label.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from coreplane.runtime.controlplane import ControlPlane

__all__ = ["CONTENT_TYPE", "ApiMetrics", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_REMOTES_MAX = 64  # remotes remembered for unauthorized requests; the rest count as "other"
_CHILDREN_MAX = 1024  # (route, method, code) series kept apart; the rest: (other, other, code)
API_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROLES = ("follower", "candidate", "leader", "stopped", "unknown")


def _histogram(
    name: str, doc: str, hist: dict[str, Any], labels: dict[str, str]
) -> HistogramMetricFamily:
    """Our per-bucket counts as a cumulative Prometheus histogram."""
    family = HistogramMetricFamily(name, doc, labels=sorted(labels))
    cumulative, buckets = 0, []
    for bound, count in zip([*hist["bounds_s"], float("inf")], hist["counts"], strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
    family.add_metric([labels[k] for k in sorted(labels)], buckets, sum_value=float(hist["sum_s"]))
    return family


def _gauge(name: str, doc: str, node: str, value: float | None) -> Iterator[Metric]:
    """One gauge series labelled with the node, or nothing when the value is unknown."""
    if value is None:
        return
    g = GaugeMetricFamily(name, doc, labels=["node"])
    g.add_metric([node], float(value))
    yield g


def _counter(name: str, doc: str, node: str, value: float) -> Metric:
    c = CounterMetricFamily(name, doc, labels=["node"])
    c.add_metric([node], float(value))
    return c


class _ControlPlaneCollector(Collector):
    def __init__(self, cp: ControlPlane) -> None:
        self._cp = cp

    def collect(self) -> Iterator[Metric]:
        cp = self._cp
        st = cp.status()
        observe = getattr(cp, "observations", None)  # a host's stand-in may have none
        got = observe(rows_max=0) if observe is not None else None
        obs: dict[str, Any] = got.raft if got is not None else {}
        yield from self._raft(cp, st, obs)
        yield from self._peers(cp.node_id, st, obs)
        yield from self._storage(cp.node_id, obs)
        yield from self._fleet(cp.node_id, got.fleet if got is not None else None)

    def _raft(self, cp: ControlPlane, st: Any, obs: dict[str, Any]) -> Iterator[Metric]:
        node = cp.node_id
        role = GaugeMetricFamily(
            "coreplane_raft_role", "1 for this node's current role", labels=["node", "role"]
        )
        for r in ROLES:
            role.add_metric([node, r], 1.0 if st.role == r else 0.0)
        yield role
        yield from _gauge("coreplane_raft_term", "Current Raft term", node, st.term)
        yield from _gauge(
            "coreplane_raft_commit_index",
            "Highest log index known committed",
            node,
            st.commit_index,
        )
        yield from _gauge(
            "coreplane_raft_applied_index", "Highest log index applied here", node, st.applied_index
        )
        if st.commit_index is not None and st.applied_index is not None:
            yield from _gauge(
                "coreplane_raft_apply_lag_entries",
                "Committed entries not yet applied here",
                node,
                max(0, st.commit_index - st.applied_index),
            )
        yield from _gauge(
            "coreplane_raft_log_entries",
            "Entries in the local log (since the last snapshot)",
            node,
            st.log_len,
        )
        yield from _gauge(
            "coreplane_raft_is_leader",
            "1 while this node leads and holds its lease",
            node,
            1 if cp.is_leader() else 0,
        )
        yield from _gauge(
            "coreplane_raft_has_quorum",
            "1 when this node sees a quorum",
            node,
            None if st.has_quorum is None else int(bool(st.has_quorum)),
        )
        yield from _gauge(
            "coreplane_storage_full",
            "1 while the journal refuses writes",
            node,
            int(st.storage_full),
        )
        yield from _gauge(
            "coreplane_kv_bytes",
            "Stored KV keys and values (Limits.kv_bytes_max)",
            node,
            st.kv_bytes,
        )
        yield from _gauge(
            "coreplane_kv_bytes_max",
            "The KV's byte quota: growing writes past it are refused",
            node,
            st.kv_bytes_max,
        )
        yield from _gauge("coreplane_tick_n", "Committed ticks", node, st.tick_n)
        yield from _gauge(
            "coreplane_cluster_time_ms", "Cluster time: committed tick time", node, st.tick_ms
        )
        if st.error is not None:
            yield from _gauge(
                "coreplane_node_stopped_on_error", "1: stopped on a fatal error", node, 1
            )
        yield _counter(
            "coreplane_raft_leader_changes",
            "Leader changes this node saw",
            node,
            obs.get("leader_changes", 0),
        )
        events = CounterMetricFamily(
            "coreplane_raft_events",
            "Engine events by kind (votes ignored, prevote rounds, stepdowns, ...)",
            labels=["node", "event"],
        )
        for name, value in sorted(st.raft.items()):
            events.add_metric([node, name], float(value))
        yield events
        if obs.get("commit_latency"):
            yield _histogram(
                "coreplane_raft_commit_seconds",
                "Proposal to commit-and-apply latency of writes proposed on this node",
                obs["commit_latency"],
                {"node": node},
            )

    def _peers(self, node: str, st: Any, obs: dict[str, Any]) -> Iterator[Metric]:
        peers = GaugeMetricFamily(
            "coreplane_raft_peer_connected",
            "1 while the authenticated connection to a voter is up",
            labels=["node", "peer"],
        )
        for pid, peer in sorted(st.peers.items()):
            peers.add_metric([node, pid], 1.0 if peer.connected else 0.0)
        yield peers
        ack = GaugeMetricFamily(
            "coreplane_raft_peer_ack_age_seconds",
            "Leader only: seconds since a follower last acknowledged a heartbeat",
            labels=["node", "peer"],
        )
        match = GaugeMetricFamily(
            "coreplane_raft_peer_match_index",
            "Leader only: a follower's match index",
            labels=["node", "peer"],
        )
        for pid, age in sorted((obs.get("ack_age_s") or {}).items()):
            if age is not None:
                ack.add_metric([node, pid], float(age))
        for pid, idx in sorted((obs.get("match_index") or {}).items()):
            match.add_metric([node, pid], float(idx))
        yield ack
        yield match
        auth = CounterMetricFamily(
            "coreplane_wire_auth_failures",
            "Peer connections that failed the wire's HMAC handshake, by peer (node id or host)",
            labels=["node", "peer"],
        )
        for who, count in sorted((obs.get("auth_failures") or {}).items()):
            auth.add_metric([node, who], float(count))
        yield auth
        if "wire" in obs:  # counters start at 0 (a one-voter node never sends anything)
            wire = obs["wire"] or {}
            for key, name in (
                ("bytes_in", "coreplane_wire_received_bytes"),
                ("bytes_out", "coreplane_wire_sent_bytes"),
                ("handshakes", "coreplane_wire_handshakes"),
            ):
                yield _counter(name, f"Wire {key.replace('_', ' ')}", node, wire.get(key, 0))

    def _storage(self, node: str, obs: dict[str, Any]) -> Iterator[Metric]:
        journal = obs.get("journal")
        if journal:
            yield from _gauge(
                "coreplane_journal_map_used_bytes",
                "LMDB pages in use x page size",
                node,
                (journal["last_page"] + 1) * journal.get("page_bytes", 4096),
            )
            yield from _gauge(
                "coreplane_journal_map_size_bytes",
                "LMDB map size now",
                node,
                journal["map_size_bytes"],
            )
            yield from _gauge(
                "coreplane_journal_map_max_bytes",
                "LMDB map cap (map_size_max_bytes)",
                node,
                journal.get("map_size_max_bytes"),
            )
            free = journal.get("disk_free_bytes", -1)
            yield from _gauge(
                "coreplane_disk_free_bytes",
                "Free bytes on the data dir's filesystem",
                node,
                None if free < 0 else free,
            )
        if obs.get("flush_latency"):
            yield _histogram(
                "coreplane_raft_fsync_seconds",
                "Journal flush latency (LMDB write transaction + fsync), flushes that wrote",
                obs["flush_latency"],
                {"node": node},
            )

    def _fleet(self, node: str, f: Any) -> Iterator[Metric]:
        if f is None:  # a stopped node: no fleet metrics
            return
        c = {
            "nodes": f.nodes_by_state,
            "ops": f.operations_by_step,
            "under": f.under_total,
            "parts": f.partitions_total,
            "splits": f.splits_total,
            "queue": f.queue,
        }
        nodes = GaugeMetricFamily(
            "coreplane_fleet_nodes", "Fleet nodes by state", labels=["node", "state"]
        )
        for state in ("alive", "cordoned", "draining", "suspect", "dead", "decommissioned"):
            nodes.add_metric([node, state], float(c["nodes"].get(state, 0)))
        yield nodes
        ops = GaugeMetricFamily(
            "coreplane_fleet_operations", "Operations in flight by step", labels=["node", "step"]
        )
        for step in ("copy", "cleanup", "abort"):
            ops.add_metric([node, step], float(c["ops"].get(step, 0)))
        yield ops
        for key, name, doc in (
            ("parts", "coreplane_fleet_partitions", "Partitions"),
            (
                "under",
                "coreplane_fleet_partitions_under_replicated",
                "Partitions with fewer live replicas than their RF",
            ),
            ("splits", "coreplane_fleet_split_candidates", "Partitions flagged too hot"),
            ("queue", "coreplane_fleet_queued_moves", "Planned moves waiting for admission"),
        ):
            g = GaugeMetricFamily(name, doc, labels=["node"])
            g.add_metric([node], float(c[key]))
            yield g


class ApiMetrics:
    """Request counters and latency of one API server, in a ControlPlane's registry; and the
    unauthorized requests by remote host that `diagnose` reports as token mismatches.

    Counted in plain Python numbers and turned into Prometheus families when scraped (the
    `requests` and `latency` collectors): one series list per (route, method, code) holds the
    latency bucket counts and their sum, so a request costs a dict get, a bisect and two list
    stores. `prometheus_client`'s Counter and Histogram children took a lock per update
    (three per request) and walked the buckets in Python: ~3.5% of the API event loop's CPU
    per put, measured. The exposition is the same: ``coreplane_api_requests_total`` (route,
    method, code) and ``coreplane_api_request_duration_seconds`` (route, method), each with
    its ``_created``.

    `observe` has one writer, the API server's event loop (an `ApiServer` calls it there):
    its updates are not atomic across threads. A scrape, on any thread, copies each series
    at once (a list slice, atomic under the GIL), so a series' count and buckets agree."""

    def __init__(
        self,
        registry: CollectorRegistry,
        node_id: str,
        *,
        wall_clock_s: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self._wall_clock_s = wall_clock_s
        self._lock = threading.Lock()
        self._unauthorized: dict[str, int] = {}
        # (route, method, code) -> [bucket counts..., +Inf count, sum_s]; bounded: past
        # _CHILDREN_MAX series, a new one is counted as ("other", "other", code)
        self._series: dict[tuple[str, str, int], list[float]] = {}
        self._created: dict[tuple[str, str, int], float] = {}
        self.requests = _ApiRequests(self)
        self.latency = _ApiLatency(self)
        registry.register(self.requests)
        registry.register(self.latency)

    def observe(
        self,
        route: str,
        method: str,
        code: int,
        seconds: float,
        remote: str | None = None,
        *,
        token_sent: bool = False,
    ) -> None:
        """One answered request; a 401 to a request that sent a token is a wrong token
        (one without a token is only someone who did not log in)."""
        series = self._series.get((route, method, code))
        if series is None:
            series = self._new_series(route, method, code)
        series[bisect.bisect_left(API_BUCKETS_S, seconds)] += 1  # le: the first bound >= it
        series[-1] += seconds
        if code == 401 and token_sent:
            who = remote or "unknown"
            with self._lock:
                if who not in self._unauthorized and len(self._unauthorized) >= _REMOTES_MAX:
                    who = "other"
                self._unauthorized[who] = self._unauthorized.get(who, 0) + 1

    def _new_series(self, route: str, method: str, code: int) -> list[float]:
        key = (route, method, code)
        if len(self._series) >= _CHILDREN_MAX:
            key = ("other", "other", code)
            found = self._series.get(key)
            if found is not None:
                return found
        series = [0] * (len(API_BUCKETS_S) + 1) + [0.0]
        self._created[key] = self._wall_clock_s()
        self._series[key] = series  # after _created: a scrape finds both
        return series

    def count(self, route: str, method: str, code: int) -> int:
        """Requests answered so far on (route, method) with status `code`."""
        series = self._series.get((route, method, code))
        return 0 if series is None else int(sum(series[:-1]))

    def snapshot(self) -> list[tuple[tuple[str, str, int], list[float], float]]:
        """Every series as (key, [bucket counts..., sum_s], created), in key order."""
        items = sorted(self._series.items())  # one C call: no update interleaves
        return [(key, series[:], self._created.get(key, 0.0)) for key, series in items]

    def stats(self) -> dict[str, Any]:
        """For `Observer(api_stats=...)`: what `diagnose` reads."""
        with self._lock:
            return {"unauthorized_by_remote": dict(self._unauthorized)}


class _ApiRequests(Collector):
    """``coreplane_api_requests_total``: requests answered, by route, method and code."""

    def __init__(self, api: ApiMetrics) -> None:
        self._api = api

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "coreplane_api_requests",
            "API requests by route, method and status code",
            labels=["node", "route", "method", "code"],
        )
        node = self._api.node_id
        for (route, method, code), series, created in self._api.snapshot():
            family.add_metric(
                [node, route, method, str(code)], float(sum(series[:-1])), created=created
            )
        yield family


class _ApiLatency(Collector):
    """``coreplane_api_request_duration_seconds``: latency by route and method (every code)."""

    def __init__(self, api: ApiMetrics) -> None:
        self._api = api

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "coreplane_api_request_duration_seconds",
            "API request latency by route and method",
            labels=["node", "route", "method"],
        )
        merged: dict[tuple[str, str], tuple[list[float], float]] = {}
        for (route, method, _code), series, created in self._api.snapshot():
            got = merged.get((route, method))
            if got is None:
                merged[(route, method)] = (series, created)
            else:
                total = [a + b for a, b in zip(got[0], series, strict=True)]
                merged[(route, method)] = (total, min(got[1], created))
        bounds = [repr(float(b)) for b in API_BUCKETS_S] + ["+Inf"]
        for (route, method), (series, created) in sorted(merged.items()):
            buckets, cumulative = [], 0.0
            for bound, count in zip(bounds, series[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            labels = [self._api.node_id, route, method]
            family.add_metric(labels, buckets, sum_value=float(series[-1]))
            family.samples.append(  # as a Histogram's: add_metric takes no `created`
                Sample(
                    "coreplane_api_request_duration_seconds_created",
                    dict(zip(("node", "route", "method"), labels, strict=True)),
                    created,
                )
            )
        yield family


class Metrics:
    """The metrics of one ControlPlane: ``generate()`` gives the text exposition format."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ControlPlaneCollector(cp))
        self.api = ApiMetrics(self.registry, cp.node_id)

    def generate(self) -> bytes:
        return generate_latest(self.registry)
