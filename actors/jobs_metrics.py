"""Prometheus figures for jobs, read from the job store at scrape time.

`actord_jobs{kind,state}` (every job the journal holds), `actord_job_duration_seconds{kind}`
(jobs that ended since the daemon started), `actord_job_units_total{kind}` (blocks or chunks
written), `actord_job_bytes_total{kind}` (input bytes processed), `actord_job_lines_total`
(lines of the log jobs that ended) and `actord_jobs_pruned_total` (ended jobs the retention
removed from the journal).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from actord import ActordError

from .job_stats import DURATION_BOUNDS, GetJobMetrics, JobMetrics

__all__ = ["JobsCollector"]

_log: Final = logging.getLogger("actors.metrics")


class JobsCollector(Collector):
    """Asks the store (through `ask`) for a `JobMetrics` snapshot on each scrape."""

    def __init__(self, ask: Callable[[object, float], object]) -> None:
        self._ask = ask

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = self._ask(GetJobMetrics(), 2.0)
        except ActordError as error:  # the store is busy or restarting: skip this scrape
            _log.warning("no job figures for this scrape: %s", error)
            return
        assert isinstance(snapshot, JobMetrics)
        jobs = GaugeMetricFamily("actord_jobs", "Jobs by kind and state", labels=["kind", "state"])
        for kind, state, count in snapshot.jobs:
            jobs.add_metric([kind, state], count)
        duration = HistogramMetricFamily(
            "actord_job_duration_seconds",
            "Run time of jobs that ended since the daemon started",
            labels=["kind"],
        )
        for kind, cumulative, total in snapshot.durations:
            buckets = [(repr(b), c) for b, c in zip(DURATION_BOUNDS, cumulative, strict=False)]
            buckets.append(("+Inf", cumulative[-1]))
            duration.add_metric([kind], buckets, total)
        units = CounterMetricFamily(
            "actord_job_units", "Blocks (log) or chunks (fft) written", labels=["kind"]
        )
        for kind, count in snapshot.units:
            units.add_metric([kind], count)
        processed = CounterMetricFamily(
            "actord_job_bytes", "Input bytes processed", labels=["kind"]
        )
        for kind, count in snapshot.bytes:
            processed.add_metric([kind], count)
        lines = CounterMetricFamily("actord_job_lines", "Log lines in log jobs that ended")
        lines.add_metric([], snapshot.lines)
        pruned = CounterMetricFamily(
            "actord_jobs_pruned", "Ended jobs the retention removed from the journal"
        )
        pruned.add_metric([], snapshot.pruned)
        yield from (jobs, duration, units, processed, lines, pruned)
