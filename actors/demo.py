"""`actord demo`: the runtime in-process, a log job and an FFT job on sample inputs.

It writes a sample log (malformed lines included) and a sample FFT stack into a directory,
runs both jobs through the actors with a live progress line, then prints a summary: the jobs'
throughput and rejects, every actor's messages and CPU time, and the output paths.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import urllib.request
from dataclasses import dataclass

import numpy as np
import psutil
from prometheus_client import CollectorRegistry

from actord import Actor, ActorSystem, Message
from actord.daemon.health import GetSample, Monitor, MonitorSample
from actord.daemon.metrics import MetricsServer, RuntimeCollector

from .launcher import STORE, JobSystemConfig, start_job_system
from .model import (
    Executor,
    FFTOptions,
    FFTSummary,
    JobInfo,
    JobKind,
    JobSpec,
    LogOptions,
    LogSummary,
    Progress,
)

__all__ = ["DemoOptions", "main", "write_sample_log", "write_sample_stack"]

_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARNING", "ERROR")


@dataclass(frozen=True, slots=True)
class DemoOptions:
    directory: str | None = None
    lines: int = 300_000
    chunks: int = 16
    size: int = 512
    parsers: int = 2
    fft_workers: int = 2
    executor: Executor = Executor.PROCESS


def write_sample_log(path: str, lines: int, seed: int = 7) -> int:
    """A seed-format log; about 2% of lines are malformed. Returns how many are malformed."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    bad = 0
    with open(path, "w", encoding="utf-8") as out:
        for i in range(lines):
            if rng.random() < 0.02:
                bad += 1
                out.write(f"malformed entry {i} without a timestamp\n")
            else:
                level = rng.choice(_LEVELS)
                stamp = f"2026-11-25 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
                out.write(f"{stamp} [{level}] request {i} served in {rng.randint(1, 900)} ms\n")
    return bad


def write_sample_stack(path: str, chunks: int, size: int, seed: int = 11) -> None:
    """An (chunks, size, size) float64 stack, written chunk by chunk (never whole in memory)."""
    stack = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(chunks, size, size))
    rng = np.random.default_rng(seed)
    for i in range(chunks):
        stack[i] = rng.random((size, size))
    stack.flush()
    del stack


class _ProgressView(Actor):
    """Demo only: renders the jobs' Progress events as one status line on stdout."""

    def __init__(self) -> None:
        self.jobs: dict[str, Progress] = {}
        self.drawn = 0.0

    def handle(self, message: Message) -> None:
        progress = message.payload
        if not isinstance(progress, Progress):
            return
        previous = self.jobs.get(progress.job)
        self.jobs[progress.job] = progress
        now = time.monotonic()
        changed = previous is None or previous.state is not progress.state
        if not changed and now - self.drawn < 0.2:
            return  # redraw at most five times a second, and on every change of state
        self.drawn = now
        parts = []
        for p in self.jobs.values():
            unit = "blocks" if p.kind is JobKind.LOG else "chunks"
            total = p.total or "?"
            parts.append(f"{p.job} {p.state.value} {p.done}/{total} {unit}")
        print("\r" + " | ".join(parts) + " " * 8, end="", flush=True)


def main(options: DemoOptions) -> int:
    """Run the demo and print its report (this is the CLI's output)."""
    directory = options.directory or tempfile.mkdtemp(prefix="actord-demo-")
    os.makedirs(directory, exist_ok=True)
    log_in = os.path.join(directory, "sample.log")
    stack_in = os.path.join(directory, "sample.npy")
    print(f"writing sample inputs to {directory}")
    malformed = write_sample_log(log_in, options.lines)
    write_sample_stack(stack_in, options.chunks, options.size)
    config = JobSystemConfig(
        parsers=options.parsers, parser_executor=options.executor, fft_workers=options.fft_workers
    )
    with ActorSystem("demo") as system:
        registry = CollectorRegistry()  # the demo's own: served while it runs
        registry.register(RuntimeCollector(system.stats, system.channel))
        metrics = MetricsServer(registry, "127.0.0.1", 0)
        metrics.start()
        client = start_job_system(system, os.path.join(directory, "journal.sqlite3"), config)
        monitor = system.spawn(lambda: Monitor(system, interval=0.5), "monitor")
        system.spawn(_ProgressView, "progress")
        system.channel.subscribe(STORE, "progress")
        start = time.perf_counter()
        log_job = client.submit(
            JobSpec(
                JobKind.LOG,
                os.path.join(directory, "sample.jsonl"),
                log_in,
                LogOptions(),
                overwrite=True,  # the demo's own files, from an earlier run in the same --dir
            )
        )
        fft_job = client.submit(
            JobSpec(
                JobKind.FFT,
                os.path.join(directory, "sample-fft.npy"),
                stack_in,
                FFTOptions(),
                overwrite=True,
            )
        )
        results = [client.wait(log_job.id), client.wait(fft_job.id)]
        elapsed = time.perf_counter() - start
        sample: MonitorSample = monitor.ask(GetSample(), timeout=10)
        workers = [c.cpu_times() for c in psutil.Process().children()]
        scrape = _scrape(metrics.url)
        metrics.stop()
    print()
    _report(results, sample, elapsed, malformed)
    if workers:
        user, system_cpu = sum(t.user for t in workers), sum(t.system for t in workers)
        print(
            f"parse worker processes ({len(workers)}): cpu user {user:.2f}s, sys {system_cpu:.2f}s"
            " (the parser# threads above only hand them blocks)"
        )
    _footer(metrics.url, scrape)
    failed = [r for r in results if r.error]
    return 1 if failed else 0


def _report(results: list[JobInfo], sample: MonitorSample, elapsed: float, malformed: int) -> None:
    print(f"\nboth jobs finished in {elapsed:.2f} s\n")
    for info in results:
        print(f"{info.id}: {info.state.value}" + (f" ({info.error})" if info.error else ""))
        summary = info.summary
        if isinstance(summary, LogSummary):
            rate = summary.lines / summary.seconds if summary.seconds else 0.0
            print(
                f"  {summary.lines:,} lines in {summary.seconds:.2f} s ({rate:,.0f} lines/s); "
                f"matched {summary.matched:,}, rejected {summary.rejected:,} "
                f"(the sample has {malformed:,} malformed), blank {summary.blank:,}"
            )
            print("  levels: " + ", ".join(f"{k}={v:,}" for k, v in summary.levels))
            print(f"  output:  {summary.output}\n  rejects: {summary.rejects}")
        elif isinstance(summary, FFTSummary):
            rate = summary.chunks / summary.seconds if summary.seconds else 0.0
            mb = summary.bytes / summary.seconds / 1e6 if summary.seconds else 0.0
            print(
                f"  {summary.chunks} chunks {summary.shape[1]}x{summary.shape[2]} "
                f"{summary.transform} -> {summary.dtype} in {summary.seconds:.2f} s "
                f"({rate:,.1f} chunks/s, {mb:,.0f} MB/s written)"
            )
            print(f"  output:  {summary.output}")
    print(
        f"\n{'actor':<16} {'thread':>8} {'messages':>9} {'errors':>6} {'restarts':>8} "
        f"{'cpu user':>9} {'cpu sys':>8}"
    )
    for a in sorted(sample.actors, key=lambda a: a.name):
        print(
            f"{a.name:<16} {a.native_thread_id:>8} {a.processed:>9,} {a.errors:>6} "
            f"{a.restarts:>8} {a.cpu_user:>8.2f}s {a.cpu_system:>7.2f}s"
        )


def _scrape(url: str) -> list[str]:
    """One scrape of the demo's own endpoint, as Prometheus would take it."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our loopback URL
        text: str = response.read().decode()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _footer(url: str, scrape: list[str]) -> None:
    shown = [
        line
        for line in scrape
        if line.startswith("actord_actor_messages_total{") and 'type="data"' in line
    ]
    print(f"\nmetrics: served at {url} while the demo ran ({len(scrape)} samples), e.g.")
    for line in shown[:2]:
        print(f"  {line}")
    print(
        "a daemon serves them for good: `actord run` (http://127.0.0.1:9464/metrics); "
        "`actorctl metrics` prints the key figures"
    )


def run(
    *,
    directory: str | None,
    lines: int,
    chunks: int,
    size: int,
    parsers: int,
    fft_workers: int,
    executor: str,
) -> int:
    """Entry used by `actord demo` (loaded by name: actord/ never imports actors/)."""
    return main(
        DemoOptions(directory, lines, chunks, size, parsers, fft_workers, Executor(executor))
    )
