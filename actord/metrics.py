"""Prometheus metrics: a custom collector that builds every sample at scrape time.

Per actor (labels `actor` — the member — and `pool` — the mailbox it serves): messages handled
by type, errors, restarts, up, mailbox depth and capacity, handle-time and queue-wait
histograms, and CPU seconds by mode from psutil's per-thread times matched by native thread id
(each actor's own CPU, not the process's). Daemon-wide: dead letters by reason. Served over
HTTP on loopback by a named, non-daemon thread that `MetricsServer.stop` joins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psutil
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .channel import ThreadChannel
from .message import MessageType
from .stats import ActorState, ActorStats

__all__ = ["HISTOGRAM_BOUNDS", "MetricsServer", "RuntimeCollector"]

# Every other power of two nanoseconds from ~1 us to ~17 s: exact on the runtime's log2 buckets.
HISTOGRAM_BOUNDS: Final = tuple(2.0**k / 1e9 for k in range(10, 35, 2))


def _thread_cpu() -> dict[int, tuple[float, float]]:
    return {t.id: (t.user_time, t.system_time) for t in psutil.Process().threads()}


class RuntimeCollector(Collector):
    """Reads `stats()` (and the channel's dead letters) each time Prometheus scrapes."""

    def __init__(
        self,
        stats: Callable[[], Iterable[ActorStats]],
        channel: ThreadChannel | None = None,
        cpu: Callable[[], dict[int, tuple[float, float]]] = _thread_cpu,
    ) -> None:
        self._stats = stats
        self._channel = channel
        self._cpu = cpu

    def collect(self) -> Iterator[Metric]:
        labels = ["actor", "pool"]
        messages = CounterMetricFamily(
            "actord_actor_messages", "Messages handled, by message type", labels=[*labels, "type"]
        )
        errors = CounterMetricFamily("actord_actor_errors", "Handler failures", labels=labels)
        restarts = CounterMetricFamily("actord_actor_restarts", "Restarts", labels=labels)
        up = GaugeMetricFamily("actord_actor_up", "1 while the actor runs", labels=labels)
        depth = GaugeMetricFamily(
            "actord_actor_mailbox_depth", "Messages queued for the actor", labels=labels
        )
        capacity = GaugeMetricFamily(
            "actord_actor_mailbox_capacity", "Mailbox bound", labels=labels
        )
        cpu = CounterMetricFamily(
            "actord_actor_cpu_seconds", "CPU time of the actor's thread", labels=[*labels, "mode"]
        )
        handle = HistogramMetricFamily(
            "actord_actor_handle_seconds", "Time spent in handle() per message", labels=labels
        )
        wait = HistogramMetricFamily(
            "actord_actor_queue_wait_seconds", "Time a message waited in the mailbox", labels=labels
        )
        times = self._cpu()
        for s in self._stats():
            key = [s.name, s.pool]
            for mtype in MessageType:
                messages.add_metric([*key, mtype.name.lower()], s.processed.get(mtype, 0))
            errors.add_metric(key, s.errors)
            restarts.add_metric(key, s.restarts)
            up.add_metric(key, 1.0 if s.state is ActorState.RUNNING else 0.0)
            depth.add_metric(key, s.mailbox_depth)
            capacity.add_metric(key, s.mailbox_capacity)
            user, system = times.get(s.native_thread_id, (0.0, 0.0))
            cpu.add_metric([*key, "user"], user)
            cpu.add_metric([*key, "system"], system)
            for family, histogram in ((handle, s.handle_time), (wait, s.queue_wait)):
                cumulative = histogram.cumulative(HISTOGRAM_BOUNDS)
                buckets = [(repr(b), c) for b, c in zip(HISTOGRAM_BOUNDS, cumulative, strict=True)]
                buckets.append(("+Inf", histogram.count))
                family.add_metric(key, buckets, histogram.sum)
        yield from (messages, errors, restarts, up, depth, capacity, cpu, handle, wait)
        if self._channel is not None:
            dead = CounterMetricFamily(
                "actord_dead_letters", "Messages not handled, by reason", labels=["reason"]
            )
            for reason, count in sorted(
                self._channel.dead_letter_counts().items(), key=lambda kv: kv[0].value
            ):
                dead.add_metric([reason.value], count)
            yield dead


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged line by line."""


class MetricsServer:
    """Serves `registry` at http://host:port/metrics (loopback by default)."""

    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9464):
        self._server: WSGIServer = make_server(
            host, port, make_wsgi_app(registry), handler_class=_QuietHandler
        )
        address = self._server.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="actord-metrics", daemon=False
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._server.shutdown()  # waits for serve_forever to return
        self._server.server_close()
        self._thread.join(timeout)
