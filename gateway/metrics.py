"""Prometheus metrics at /_gateway/metrics (prometheus-client).

Hot paths pay almost nothing: realtime counters are plain integers the node keeps anyway, read
when Prometheus scrapes (a custom collector); only per-HTTP-request counters and the latency
histograms are updated as things happen. With ``--workers N`` every worker has its own
registry: scrape each (the ready endpoint says which worker answered) or sum in Prometheus.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.httpbase import GatewayHandler
from gateway.netpolicy import TrustedProxies, in_networks, parse_networks

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    """Everything the gateway exports; the parts of the gateway report through its methods."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered, by route kind and status class.",
            ["kind", "code"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_response_seconds",
            "Time from a request sent to Next.js to its response head.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "gateway_publish_seconds",
            "Time to publish (history write and fan-out hand-off), per publication.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._request_counters: dict[tuple[str, int], Any] = {}

    # -- reporting ----------------------------------------------------------------------------

    def response(self, kind: str, status: int, upstream_seconds: float | None = None) -> None:
        key = (kind, status // 100)
        counter = self._request_counters.get(key)
        if counter is None:  # labels() costs a lock and a tuple per call: once per pair
            counter = self._request_counters[key] = self.http_requests.labels(
                kind, f"{status // 100}xx"
            )
        counter.inc()
        if upstream_seconds is not None:
            self.upstream_seconds.observe(upstream_seconds)

    def published(self, seconds: float) -> None:
        self.publish_seconds.observe(seconds)

    def watch(self, child: Any, node: Any, pool: Any) -> None:
        """Read the child, the realtime node and the upstream pool at each scrape."""
        self.registry.register(_StateCollector(child, node, pool))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, child: Any, node: Any, pool: Any) -> None:
        self.child, self.node, self.pool = child, node, pool

    def collect(self) -> Iterator[Metric]:
        snapshot = self.child.snapshot()
        yield _counter(
            "gateway_child_restarts", "Restarts of the Next.js child.", snapshot.get("restarts", 0)
        )
        up = GaugeMetricFamily("gateway_child_up", "1 when the Next.js child answers HTTP.")
        up.add_metric([], 1 if snapshot.get("state") == "running" else 0)
        yield up
        state = GaugeMetricFamily(
            "gateway_child_state", "The Next.js child's state.", labels=["state"]
        )
        for name in ("starting", "running", "backoff", "failed", "stopping", "stopped"):
            state.add_metric([name], 1 if snapshot.get("state") == name else 0)
        yield state
        reload = snapshot.get("reload") or {}
        reloads = CounterMetricFamily(
            "gateway_reloads", "Reloads of the Next.js app, by outcome.", labels=["outcome"]
        )
        reloads.add_metric(["ok"], reload.get("ok", 0))
        reloads.add_metric(["failed"], reload.get("failed", 0))
        yield reloads
        release = GaugeMetricFamily(
            "gateway_release_info", "The build the active child serves.", labels=["build_id"]
        )
        release.add_metric([str(snapshot.get("build_id") or "")], 1)
        yield release
        last = reload.get("last") or {}
        yield _gauge(
            "gateway_reload_drain_seconds",
            "How long the previous child took to drain at the last reload.",
            last.get("drain_seconds", 0),
        )
        node = self.node
        stats = node.stats
        yield _gauge(
            "gateway_websocket_connections", "Connected realtime clients.", len(node.clients)
        )
        by_transport = GaugeMetricFamily(
            "gateway_realtime_connections",
            "Connected realtime clients by transport.",
            labels=["transport"],
        )
        counts = collections.Counter(c.transport.name for c in node.clients.values())
        for name in TRANSPORTS:
            counts.setdefault(name, 0)
        for name, count in sorted(counts.items()):
            by_transport.add_metric([name], count)
        yield by_transport
        yield _counter(
            "gateway_emulation_forwarded",
            "Emulation POSTs forwarded to the process holding their session.",
            stats["emulation_forwarded"],
        )
        yield _counter(
            "gateway_emulation_received",
            "Emulation POSTs another process forwarded to a session of this one.",
            stats["emulation_received"],
        )
        yield _gauge(
            "gateway_subscriptions",
            "Subscriptions of connected clients.",
            sum(len(c.subs) for c in node.clients.values()),
        )
        yield _gauge(
            "gateway_channels", "Channels with local subscribers.", len(node.hub.channels())
        )
        yield _counter(
            "gateway_websocket_connects", "Realtime connections accepted.", stats["connections"]
        )
        yield _counter(
            "gateway_messages_in", "Commands received from realtime clients.", stats["commands_in"]
        )
        yield _counter(
            "gateway_messages_out",
            "Messages queued to realtime clients (fan-out).",
            stats["messages_out"],
        )
        yield _counter(
            "gateway_publications", "Publications made through this process.", stats["publications"]
        )
        yield _counter(
            "gateway_slow_disconnects",
            "Clients disconnected for not reading (3008).",
            stats["slow_disconnects"],
        )
        yield _counter(
            "gateway_insufficient_state",
            "Offset gaps that made subscribers recover.",
            stats["insufficient_state"],
        )
        snap = node.broker.snapshot()
        yield _counter(
            "gateway_broker_errors",
            "Engine errors (Redis unreachable, commands failed).",
            stats["broker_errors"] + snap.get("errors", 0),
        )
        broker_up = GaugeMetricFamily(
            "gateway_broker_up", "1 when the realtime engine is reachable."
        )
        broker_up.add_metric([], 1 if snap.get("state") == "up" else 0)
        yield broker_up
        pool = self.pool.snapshot()
        yield _gauge(
            "gateway_upstream_connections_idle",
            "Idle keep-alive connections to Next.js.",
            pool["idle"],
        )
        yield _gauge(
            "gateway_upstream_connections_in_use", "Connections to Next.js in use.", pool["in_use"]
        )
        yield _counter(
            "gateway_upstream_connections_opened", "Connections opened to Next.js.", pool["opened"]
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    metric = GaugeMetricFamily(name, doc)
    metric.add_metric([], value)
    return metric


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    metric = CounterMetricFamily(name, doc)
    metric.add_metric([], value)
    return metric


class MetricsHandler(GatewayHandler):
    """GET /_gateway/metrics in the Prometheus text format, for allowed networks only."""

    def initialize(
        self, metrics: GatewayMetrics, allowed_networks: list[str], forwarding: TrustedProxies
    ) -> None:
        self.metrics = metrics
        self.networks = parse_networks(allowed_networks)
        self.forwarding = forwarding

    def _allowed(self) -> bool:
        client = self.forwarding.client_ip(self.request.remote_ip or "", self.request.headers)
        return in_networks(client, self.networks)

    def get(self) -> None:
        if not self._allowed():
            self.set_status(403)
            self.finish({"error": "forbidden", "detail": "metrics are for allowed networks only"})
            return
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(self.metrics.render())


RouteKind = Callable[[str], str]

TRANSPORTS = ("websocket", "http_stream", "sse", "uni_sse", "uni_http_stream", "uni_websocket")


def route_kind(path: str) -> str:
    """The ``kind`` label of a request the gateway answered through Tornado handlers."""
    if path.startswith("/_gateway/api/"):
        return "api"
    if path.startswith("/connection/websocket"):
        return "websocket"
    if path.startswith("/connection/"):
        return "realtime"
    if path.startswith("/_gateway/"):
        return "gateway"
    return "websocket-proxy"
