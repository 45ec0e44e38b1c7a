"""`actord demo`: the runtime in-process, a log job and an FFT job on sample inputs.

It writes a sample log (malformed lines included) and a sample FFT stack into a directory,
runs both jobs through the actors with a live progress line (on a terminal; one line per
change of a job's state otherwise), then prints a summary: the jobs' throughput and rejects,
every actor that ran (each job's reader and writer too) with its messages and CPU time, and
the output paths. A directory it made itself is removed at the end, unless `keep` is set.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

import numpy as np
import psutil
from prometheus_client import CollectorRegistry

from actord import Actor, ActorStats, ActorSystem, Message, UnknownActor
from actord.daemon.health import Monitor, thread_cpu_times
from actord.daemon.metrics import MetricsServer, RuntimeCollector

from .fft import default_engine
from .launcher import STORE, JobSystemConfig, start_job_system
from .model import (
    Engine,
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
    directory: str | None = None  # None: a new temporary directory, removed at the end
    lines: int = 300_000
    chunks: int = 16
    size: int = 512
    parsers: int = 2
    fft_workers: int = 2
    executor: Executor = Executor.PROCESS
    keep: bool = False  # keep the temporary directory (a `directory` given is always kept)
    live: bool | None = None  # redraw one status line with `\r`; None: when stdout is a tty


@dataclass(frozen=True, slots=True)
class _ActorRow:
    """One line of the actor table: a live actor, or the totals of one that has stopped."""

    name: str
    thread: int | None  # None once the thread has ended
    processed: int
    errors: int
    restarts: int
    cpu_user: float
    cpu_system: float


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
    """Demo only: renders the jobs' Progress events on stdout. On a terminal, one status line
    redrawn in place; otherwise (a pipe, a file) one line per change of a job's state, so that
    a log never gets `\r`s or hundreds of progress lines."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.jobs: dict[str, Progress] = {}
        self.drawn = 0.0

    def handle(self, message: Message) -> None:
        progress = message.payload
        if not isinstance(progress, Progress):
            return
        previous = self.jobs.get(progress.job)
        self.jobs[progress.job] = progress
        changed = previous is None or previous.state is not progress.state
        if not self.live:
            if changed:
                print(_progress_text(progress), flush=True)
            return
        now = time.monotonic()
        if not changed and now - self.drawn < 0.2:
            return  # redraw at most five times a second, and on every change of state
        self.drawn = now
        line = " | ".join(_progress_text(p) for p in self.jobs.values())
        print("\r" + line + " " * 8, end="", flush=True)


def _progress_text(progress: Progress) -> str:
    unit = "blocks" if progress.kind is JobKind.LOG else "chunks"
    total = progress.total or "?"
    return f"{progress.job} {progress.state.value} {progress.done}/{total} {unit}"


def main(options: DemoOptions) -> int:
    """Run the demo and print its report (this is the CLI's output). A temporary directory
    (no `options.directory`) is removed at the end, even after an error or a Ctrl-C, unless
    `options.keep`: every run would otherwise leave its inputs and outputs behind."""
    made = options.directory is None
    directory = options.directory or tempfile.mkdtemp(prefix="actord-demo-")
    try:
        code = _demo(options, directory)
    finally:
        if made and not options.keep:
            shutil.rmtree(directory, ignore_errors=True)
    if made and not options.keep:
        print(f"\nremoved {directory} (--keep or --dir DIR keeps the inputs and outputs)")
    else:
        print(f"\ninputs and outputs are in {directory}")
    return code


def _demo(options: DemoOptions, directory: str) -> int:
    os.makedirs(directory, exist_ok=True)
    live = sys.stdout.isatty() if options.live is None else options.live
    log_in = os.path.join(directory, "sample.log")
    stack_in = os.path.join(directory, "sample.npy")
    print(f"writing sample inputs to {directory}", flush=True)
    malformed = write_sample_log(log_in, options.lines)
    write_sample_stack(stack_in, options.chunks, options.size)
    engine = default_engine()  # scipy when installed (the `[scipy]` extra), else numpy
    config = JobSystemConfig(
        parsers=options.parsers,
        parser_executor=options.executor,
        fft_workers=options.fft_workers,
        fft_engine=engine,
    )
    with ActorSystem("demo") as system:
        registry = CollectorRegistry()  # the demo's own: served while it runs
        registry.register(RuntimeCollector(system.stats, system.channel))
        metrics = MetricsServer(registry, "127.0.0.1", 0)
        metrics.start()
        try:  # stopped whatever happens: its thread would keep the process alive
            client = start_job_system(system, os.path.join(directory, "journal.sqlite3"), config)
            system.spawn(lambda: Monitor(system, interval=0.5), "monitor")
            system.spawn(lambda: _ProgressView(live), "progress")
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
            _join_job_actors(system, results)
            # One census: each job's reader and writer is either still live or already counted
            # in its role's retired totals, never both and never neither (they stop on their own
            # as their job ends, so a sample of the live actors alone misses some of them).
            live_stats, retired = system.census()
            rows = _actor_rows(live_stats, retired, results, thread_cpu_times())
            workers = [c.cpu_times() for c in psutil.Process().children()]
            scrape = _scrape(metrics.url)
        finally:
            metrics.stop()
    if live:
        print()  # end the status line
    _report(results, rows, elapsed, malformed, engine)
    if workers:
        user, system_cpu = sum(t.user for t in workers), sum(t.system for t in workers)
        print(
            f"parse worker processes ({len(workers)}): cpu user {user:.2f}s, sys {system_cpu:.2f}s"
            " (the parser# threads above only hand them blocks)"
        )
    _footer(metrics.url, scrape)
    failed = [r for r in results if r.error]
    return 1 if failed else 0


def _join_job_actors(system: ActorSystem, results: list[JobInfo]) -> None:
    # A job is done once its output is journaled; its reader and writer are then stopped
    # without being waited for. Waited for here, so the table shows each as it ended.
    for info in results:
        for role in ("reader", "writer"):
            with contextlib.suppress(UnknownActor):  # gone already: nothing to wait for
                system.lookup(f"{info.id}.{role}").stop(graceful=False, timeout=10.0)


def _actor_rows(
    live: tuple[ActorStats, ...],
    retired: tuple[ActorStats, ...],
    jobs: list[JobInfo],
    cpu: dict[int, tuple[float, float]],
) -> list[_ActorRow]:
    """Every actor that ran: the live ones, and each job's reader and writer that has stopped.

    The runtime keeps a stopped job actor's counters only summed by role (`log.reader`), so
    that metrics labels stay bounded. A role's totals are named after the job's actor when one
    job of that kind has stopped (always so in the demo), else after the role."""
    rows = []
    for stats in live:
        # A thread that has just ended is no longer listed by psutil: its CPU at exit stands.
        user, system = cpu.get(stats.native_thread_id, stats.cpu_at_exit)
        thread = stats.native_thread_id if stats.native_thread_id in cpu else None
        rows.append(_row(stats.name, thread, stats, user, system))
    names = {stats.name for stats in live}
    for stats in retired:
        kind, _, part = stats.name.partition(".")
        ended = [f"{j.id}.{part}" for j in jobs if j.kind.value == kind]
        ended = [name for name in ended if name not in names]
        if not ended:
            continue  # a role of no job here, or whose actors are all still live
        name = ended[0] if len(ended) == 1 else f"{stats.name} ({len(ended)} jobs)"
        rows.append(_row(name, None, stats, *stats.cpu_at_exit))
    return sorted(rows, key=lambda row: row.name)


def _row(name: str, thread: int | None, stats: ActorStats, user: float, system: float) -> _ActorRow:
    return _ActorRow(
        name, thread, stats.processed_total, stats.errors, stats.restarts, user, system
    )


def _report(
    results: list[JobInfo], rows: list[_ActorRow], elapsed: float, malformed: int, engine: Engine
) -> None:
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
                f"({rate:,.1f} chunks/s, {mb:,.0f} MB/s written; {engine.value} engine)"
            )
            print(f"  output:  {summary.output}")
    print(
        f"\n{'actor':<16} {'thread':>8} {'messages':>9} {'errors':>6} {'restarts':>8} "
        f"{'cpu user':>9} {'cpu sys':>8}"
    )
    for a in rows:
        thread = "ended" if a.thread is None else str(a.thread)
        print(
            f"{a.name:<16} {thread:>8} {a.processed:>9,} {a.errors:>6} "
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
    keep: bool = False,
) -> int:
    """Entry used by `actord demo` (loaded by name: actord/ never imports actors/)."""
    return main(
        DemoOptions(directory, lines, chunks, size, parsers, fft_workers, Executor(executor), keep)
    )
