"""What the store counts about jobs for Prometheus: a `JobMetrics` snapshot at each scrape.

Kept by the store (one owner, its own thread) and read through a `GetJobMetrics` request;
`jobs_metrics.JobsCollector` turns the snapshot into metric families.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Final

from .model import JobKind, JobState, LogSummary

__all__ = ["DURATION_BOUNDS", "GetJobMetrics", "JobMetrics", "JobStats"]

DURATION_BOUNDS: Final = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0)


@dataclass(frozen=True, slots=True)
class GetJobMetrics:
    """Replied with `JobMetrics` (for the Prometheus collector, at scrape time)."""


@dataclass(frozen=True, slots=True)
class JobMetrics:
    jobs: tuple[tuple[str, str, int], ...]  # (kind, state, count), every job in the journal
    durations: tuple[tuple[str, tuple[int, ...], float], ...]  # (kind, cumulative, sum)
    units: tuple[tuple[str, int], ...]  # blocks or chunks written, by kind (since start)
    bytes: tuple[tuple[str, int], ...]  # input bytes processed, by kind (since start)
    lines: int  # log lines in log jobs that ended (since start)
    pruned: int = 0  # ended jobs the retention removed from the journal (since start)


class JobStats:
    """Counters of ended jobs, units and bytes, and run-time buckets (the store's thread)."""

    def __init__(self, ended: Counter[tuple[str, JobState]]) -> None:
        self.ended = ended  # (kind, state): every ended job in the journal
        # kind: (duration buckets, [sum of seconds]), every kind from the start
        self.durations: dict[str, tuple[list[int], list[float]]] = {
            kind.value: ([0] * (len(DURATION_BOUNDS) + 1), [0.0]) for kind in JobKind
        }
        self.units: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.lines = 0
        self.pruned = 0  # ended jobs the retention removed from the journal (since start)

    def advanced(self, kind: JobKind, units: int, nbytes: int) -> None:
        self.units[kind.value] += max(0, units)
        self.bytes[kind.value] += max(0, nbytes)

    def ran(self, kind: JobKind, seconds: float, summary: object) -> None:
        buckets, total = self.durations[kind.value]
        buckets[bisect.bisect_left(DURATION_BOUNDS, seconds)] += 1
        total[0] += seconds
        if isinstance(summary, LogSummary):
            self.lines += summary.lines

    def snapshot(self, unfinished: Counter[tuple[str, str]]) -> JobMetrics:
        """With `unfinished` (kind, state) counts of the jobs not ended yet."""
        # Every kind (and state) from the start, zeros included: a series that appears only
        # with its first job would hide that job from rate() and increase().
        kinds = [kind.value for kind in JobKind]
        jobs = Counter({(kind, state.value): 0 for kind in kinds for state in JobState})
        jobs.update({(kind, state.value): n for (kind, state), n in self.ended.items()})
        jobs.update(unfinished)
        durations = tuple(
            (kind, tuple(itertools.accumulate(buckets)), total[0])
            for kind, (buckets, total) in self.durations.items()
        )
        return JobMetrics(
            jobs=tuple((kind, state, n) for (kind, state), n in sorted(jobs.items())),
            durations=durations,
            units=tuple((kind, self.units[kind]) for kind in kinds),
            bytes=tuple((kind, self.bytes[kind]) for kind in kinds),
            lines=self.lines,
            pruned=self.pruned,
        )
