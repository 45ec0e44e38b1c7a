"""Prometheus figures of the Ray pools, read from the link at scrape time (never waiting).

Per member (labels ``actor``, ``pool``, as the runtime's own actor metrics: bounded by the
pool sizes): ``actord_remote_cpu_seconds_total`` (measured in the Ray worker, returned with
each result), ``actord_remote_units_total``, ``actord_remote_moved_bytes_total`` (through
Ray's object store), ``actord_remote_units_in_flight``, ``actord_remote_failures_total``
(units whose Ray worker or node was lost, or timed out) and
``actord_remote_retries_total``. For the cluster: ``actord_ray_up`` (1 while connected),
``actord_ray_nodes`` (alive nodes) and ``actord_ray_workers`` (members whose Ray worker
answered their last call).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .ray_link import RayLink, RayState

__all__ = ["RayCollector"]


class RayCollector(Collector):
    def __init__(self, link: RayLink) -> None:
        self._link = link

    def collect(self) -> Iterator[Metric]:
        labels = ["actor", "pool"]
        cpu = CounterMetricFamily(
            "actord_remote_cpu_seconds",
            "CPU time of a member's units on its Ray worker",
            labels=labels,
        )
        units = CounterMetricFamily("actord_remote_units", "Units done on Ray", labels=labels)
        moved = CounterMetricFamily(
            "actord_remote_moved_bytes",
            "Unit data and results carried through Ray (none on the shared path)",
            labels=labels,
        )
        in_flight = GaugeMetricFamily(
            "actord_remote_units_in_flight", "Units sent to Ray and not answered", labels=labels
        )
        failures = CounterMetricFamily(
            "actord_remote_failures",
            "Units whose Ray worker or node was lost, or that timed out",
            labels=labels,
        )
        retries = CounterMetricFamily(
            "actord_remote_retries",
            "Units sent again after their Ray worker was lost",
            labels=labels,
        )
        for member, counters in sorted(self._link.counters.items()):
            key = [member, member.partition("#")[0]]
            cpu.add_metric(key, counters.cpu_seconds)
            units.add_metric(key, counters.units)
            moved.add_metric(key, counters.moved_bytes)
            in_flight.add_metric(key, counters.in_flight)
            failures.add_metric(key, counters.failures)
            retries.add_metric(key, counters.retries)
        state, nodes, workers = self._link.status()
        up = GaugeMetricFamily("actord_ray_up", "1 while the daemon is connected to Ray")
        up.add_metric([], 1.0 if state is RayState.UP else 0.0)
        node_gauge = GaugeMetricFamily("actord_ray_nodes", "Alive nodes in the Ray cluster")
        node_gauge.add_metric([], nodes)
        worker_gauge = GaugeMetricFamily(
            "actord_ray_workers", "Pool members whose Ray worker answered their last call"
        )
        worker_gauge.add_metric([], workers)
        yield from (cpu, units, moved, in_flight, failures, retries, up, node_gauge, worker_gauge)
