"""Pipeline benchmark: actord's log job and FFT job against plain loops and the seed's classes.

    python bench/pipelines.py [--lines 1000000] [--chunks 24] [--size 1000] [--repeat 9]
                              [--dir DIR] [--disk DIR] [--fairness]

One run, two tables of medians: the pipelines (in --dir, a temp dir by default: use
/dev/shm for tmpfs) and the FFT job's write path (in --disk: the disk to measure, by default
a temp dir beside this checkout, on the project's disk).

Log: a seed-format log parsed into JSON Lines plus rejects by (1) a plain single-thread loop
(the limit for one core); (2) two plain two-core loops: a process pool over 1 MiB blocks whose
results the parent writes in order, and the best one, where each process parses its half of
the file into part files that the kernel then joins; (3) actord's log job with thread and with
process parser pools; (4) the seed's LogProcessor (slide 7), loaded from ../shared/seed at run
time.

FFT: fft2 of 1000x1000 float64 chunks into a complex128 .npy by (1) plain numpy.fft loops on
one and two threads, (2) plain scipy.fft loops on one and two threads, (3) actord's FFT job
with its default engine (scipy) and with numpy, (4) the seed's DataPipeline (slide 8).

actord runs as a daemon does: its system and pools are started, and a small job has run,
before the clock starts (the parse worker processes are up), as the plain loops' process pool
is started before theirs.

Write path: the FFT job's output MB/s on --disk against the disk's own limit measured in the
same run: a plain sequential write of the same bytes, 16 MB at a time, with the job's sync
policy (fdatasync every 64 MB, then fsync, rename over the old file, fsync the directory).

Fairness (--fairness, a table of its own): the log job and the FFT job alone, against two
equal jobs submitted at once on the same (fair) pools: the two together against one alone
(units per second), and each job's share of the units written by the time the first ended.

Every row does the same work (the same regex, record and encoder; the same transform, dtype
and file system), except that the seed's DataPipeline never fsyncs its output. The seed's
classes never return as written (their workers put the None sentinel back, so the writer's
queue is never empty): they are timed until their writer has finished the last item.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft

from actord import ActorSystem
from actors.client import JobClient
from actors.demo import write_sample_log
from actors.formats import BUILTIN_FORMATS
from actors.launcher import JobSystemConfig, start_job_system
from actors.model import (
    Engine,
    Executor,
    FFTOptions,
    JobInfo,
    JobKind,
    JobSpec,
    LogOptions,
    LogSummary,
)
from actors.parser import parse_block
from actors.reader import synthetic_chunk
from actors.writer import AtomicFile

SEED = Path(__file__).resolve().parent.parent.parent / "shared" / "seed"
PATTERN = BUILTIN_FORMATS["seed"]
BLOCK = 1 << 20


# -- log: plain loops -------------------------------------------------------------------------


def _blocks(path: str) -> Any:
    """Whole-line blocks of about BLOCK bytes with their first line numbers."""
    line = 1
    carry = b""
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            yield data[:cut], line
            line += data.count(b"\n", 0, cut)
    if carry:
        yield carry, line


def _write_parsed(results: Any, output: str) -> int:
    out, rejects = AtomicFile(output), AtomicFile(output + ".rejects")
    lines = 0
    for parsed in results:
        out.file.write(parsed["records"])
        rejects.file.write(parsed["rejects"])
        lines += parsed["lines"]
    out.commit()
    rejects.commit()
    return lines


def _parse(args: tuple[bytes, int]) -> dict[str, Any]:
    return parse_block(args[0], args[1], PATTERN)


def plain_log_one_core(path: str, output: str) -> float:
    start = time.perf_counter()
    lines = _write_parsed(map(_parse, _blocks(path)), output)
    return lines / (time.perf_counter() - start)


def _parse_range(path: str, start: int, end: int, first_line: int, part: str) -> int:
    """One process's share: parse bytes [start, end) of the input into part files."""
    lines = 0
    with open(path, "rb") as f, open(part, "wb") as out, open(part + ".rejects", "wb") as rej:
        f.seek(start)
        remaining = end - start
        carry = b""
        while remaining > 0 or carry:
            chunk = f.read(min(BLOCK, remaining)) if remaining > 0 else b""
            remaining -= len(chunk)
            data = carry + chunk
            cut = data.rfind(b"\n") + 1 if remaining > 0 else len(data)
            carry = data[cut:]
            parsed = parse_block(data[:cut], first_line + lines, PATTERN)
            out.write(parsed["records"])
            rej.write(parsed["rejects"])
            lines += parsed["lines"]
    return lines


def plain_log_split(path: str, output: str, pool: ProcessPoolExecutor) -> float:
    """The best plain two-core loop: each process parses its half of the file (split at a
    newline) into part files; the parts are then joined by the kernel (copy_file_range)."""
    start = time.perf_counter()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(size // 2)
        middle = size // 2 + len(f.readline())
        f.seek(0)
        first_half_lines = _count_lines(f, middle)
    parts = [output + ".part0", output + ".part1"]
    futures = [
        pool.submit(_parse_range, path, 0, middle, 1, parts[0]),
        pool.submit(_parse_range, path, middle, size, 1 + first_half_lines, parts[1]),
    ]
    lines = sum(f.result() for f in futures)
    for suffix in ("", ".rejects"):
        final = AtomicFile(output + suffix)
        final.file.flush()
        for part in parts:
            with open(part + suffix, "rb") as src:
                remaining = os.fstat(src.fileno()).st_size
                while remaining:
                    remaining -= os.copy_file_range(src.fileno(), final.file.fileno(), remaining)
            os.unlink(part + suffix)
        final.commit()
    return lines / (time.perf_counter() - start)


def _count_lines(f: Any, end: int) -> int:
    count = 0
    remaining = end
    while remaining > 0:
        chunk = f.read(min(BLOCK, remaining))
        remaining -= len(chunk)
        count += chunk.count(b"\n")
    return count


def plain_log_two_cores(path: str, output: str, pool: ProcessPoolExecutor) -> float:
    start = time.perf_counter()
    lines = _write_parsed(pool.map(_parse, _blocks(path)), output)
    return lines / (time.perf_counter() - start)


# -- the seed's classes, loaded from the slides at run time -----------------------------------


def _slide_code(number: int) -> str:
    text = "".join(p.read_text() for p in sorted(SEED.glob("*.txt")))
    start = text.index(f"Slide {number}:")
    end = text.index(f"Slide {number + 1}:")
    body = text[start:end]
    body = body[body.index("import ") :]
    return body[: body.index("# Usage Example")]


def _load_seed_class(number: int, name: str) -> Any:
    """Run a slide's code (up to its usage example) as a module and take one class from it."""
    module = types.ModuleType(f"seed_slide_{number}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    code = compile(_slide_code(number), f"<seed slide {number}>", "exec")
    exec(code, module.__dict__)
    return getattr(module, name)


def _time_until_done(target: Callable[[], Any], done_queue: Any, items: int, stop: Any) -> float:
    """Run a seed pipeline until its writer has called task_done() `items` times."""
    finished = threading.Event()
    counted = 0
    original = done_queue.task_done

    def task_done() -> None:
        nonlocal counted
        original()
        counted += 1
        if counted >= items:
            finished.set()

    done_queue.task_done = task_done
    runner = threading.Thread(target=target, daemon=True)  # it never returns by itself
    start = time.perf_counter()
    runner.start()
    if not finished.wait(600):
        raise RuntimeError("the seed pipeline did not finish")
    elapsed = time.perf_counter() - start
    stop.set()  # its threads check the stop event within a second; we do not wait for them
    return elapsed


def seed_log(path: str, output: str) -> float:
    processor = _load_seed_class(7, "LogProcessor")(num_processors=3)
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    expected = sum(1 for line in lines if re.match(PATTERN, line.strip()))
    elapsed = _time_until_done(
        lambda: processor.process_logs(path, output),
        processor.processed_logs,
        expected,
        processor.stop_event,
    )
    return len(lines) / elapsed


# -- FFT: plain loops -------------------------------------------------------------------------


def _fft_out(output: str, chunks: int, size: int) -> Any:
    return np.lib.format.open_memmap(
        output, mode="w+", dtype=np.complex128, shape=(chunks, size, size)
    )


def _finish(out: Any, output: str) -> None:
    out.flush()
    fd = os.open(output, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def plain_fft(output: str, chunks: int, size: int, workers: int, library: Any = np.fft) -> float:
    start = time.perf_counter()
    out = _fft_out(output, chunks, size)

    def one(i: int) -> None:
        out[i] = library.fft2(synthetic_chunk(0, i, (size, size)))

    if workers == 1:
        for i in range(chunks):
            one(i)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(chunks)))
    _finish(out, output)
    return chunks / (time.perf_counter() - start)


def seed_fft(output: str, chunks: int, size: int) -> float:
    if size != 1000:
        return float("nan")  # the seed's generator is fixed at 1000x1000
    pipeline = _load_seed_class(8, "DataPipeline")(num_workers=4)
    elapsed = _time_until_done(
        lambda: pipeline.run_pipeline(chunks, output),
        pipeline.processed_queue,
        chunks,
        pipeline.stop_event,
    )
    return chunks / elapsed


# -- actord -----------------------------------------------------------------------------------


def _run_job(client: JobClient, spec: JobSpec) -> tuple[float, JobInfo]:
    """(seconds from submit to done, the job's final info)."""
    start = time.perf_counter()
    job = client.submit(spec)
    info = client.wait(job.id, 600)
    elapsed = time.perf_counter() - start
    assert info.error is None, info
    return elapsed, info


def _warm_system(system: ActorSystem, state: str, config: JobSystemConfig) -> JobClient:
    """A job system as a daemon has it: started, its pools warm (one small job of each kind
    has run: the parse worker processes are up)."""
    client = start_job_system(system, os.path.join(state, "journal.sqlite3"), config)
    sample = os.path.join(state, "warm.log")
    write_sample_log(sample, 1000)
    log = LogOptions(block_bytes=BLOCK)
    _run_job(client, JobSpec(JobKind.LOG, sample + ".jsonl", sample, log, overwrite=True))
    fft = FFTOptions(synthetic=(2, 16, 16))
    _run_job(client, JobSpec(JobKind.FFT, sample + ".npy", None, fft, overwrite=True))
    return client


def actord_log(path: str, output: str, executor: Executor) -> float:
    with ActorSystem("bench") as system, tempfile.TemporaryDirectory() as state:
        client = _warm_system(system, state, JobSystemConfig(parser_executor=executor))
        options = LogOptions(block_bytes=BLOCK)
        elapsed, info = _run_job(
            client, JobSpec(JobKind.LOG, output, path, options, overwrite=True)
        )
    assert isinstance(info.summary, LogSummary), info
    return info.summary.lines / elapsed


def actord_fft(
    output: str, chunks: int, size: int, engine: Engine = Engine.SCIPY, state_dir: str | None = None
) -> float:
    """chunks/s of the FFT job (its journal in `state_dir`, a temp dir on the default one)."""
    config = JobSystemConfig(fft_workers=2, fft_engine=engine)
    with ActorSystem("bench") as system, tempfile.TemporaryDirectory(dir=state_dir) as state:
        client = _warm_system(system, state, config)
        options = FFTOptions(synthetic=(chunks, size, size), seed=0)
        elapsed, _ = _run_job(client, JobSpec(JobKind.FFT, output, None, options, overwrite=True))
    return chunks / elapsed


# -- fairness: two equal jobs at once ------------------------------------------------------------


def _fair_spec(kind: JobKind, scratch: str, job: int, log: str, chunks: int, size: int) -> JobSpec:
    # Job `job` of a pair: the same work as job 0, on its own input copy and output.
    if kind is JobKind.LOG:
        source = f"{log}.{job}"
        if not os.path.exists(source):
            os.link(log, source)
        options = LogOptions(block_bytes=BLOCK)
        return JobSpec(kind, os.path.join(scratch, f"fair{job}.jsonl"), source, options, True)
    fft = FFTOptions(synthetic=(chunks, size, size), seed=job)
    return JobSpec(kind, os.path.join(scratch, f"fair{job}.npy"), None, fft, True)


def _units(info: JobInfo) -> int:
    return info.done


def fair_alone(client: JobClient, spec: JobSpec) -> float:
    """Units (blocks or chunks) per second of one job alone on the pools."""
    elapsed, info = _run_job(client, spec)
    return _units(info) / elapsed


def fair_pair(client: JobClient, specs: tuple[JobSpec, JobSpec]) -> tuple[float, float, float]:
    """Two equal jobs submitted at once: (units per second of both together, then each job's
    share of the units written by the time the first of them ended)."""
    start = time.perf_counter()
    ids = [client.submit(spec).id for spec in specs]
    with ThreadPoolExecutor(2, thread_name_prefix="fair-wait") as waiters:
        waits = [waiters.submit(client.wait, job, 600) for job in ids]
        first = next(as_completed(waits))
        ended = first.result()
        others = [client.get(job) for job in ids]  # the other job's units, written so far
        infos = [w.result() for w in waits]
    elapsed = time.perf_counter() - start
    assert all(info.error is None for info in infos), infos
    written = [ended.done if info.id == ended.id else info.done for info in others]
    share_a, share_b = (w / sum(written) for w in written)
    return sum(_units(info) for info in infos) / elapsed, share_a, share_b


def fairness(args: argparse.Namespace) -> int:
    """The fair pools' table: each of two equal jobs at once gets half of the throughput, and
    the two together lose nothing against one job alone."""
    rep, n, size = args.repeat, args.chunks, args.size
    cases = [
        (JobKind.LOG, "log: process parsers", "blocks/s", JobSystemConfig()),
        (JobKind.FFT, "fft: numpy engine", "chunks/s", JobSystemConfig(fft_engine=Engine.NUMPY)),
    ]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="actord-bench-") as scratch:
        log = os.path.join(scratch, "input.log")
        write_sample_log(log, args.lines)
        results = []
        for kind, name, measure, config in cases:
            with ActorSystem("bench") as system, tempfile.TemporaryDirectory() as state:
                client = _warm_system(system, state, config)
                one = _fair_spec(kind, scratch, 0, log, n, size)
                pair = (one, _fair_spec(kind, scratch, 1, log, n, size))
                fair_alone(client, one)  # warm-up round
                fair_pair(client, pair)
                alone: list[float] = []
                together: list[tuple[float, float, float]] = []
                for _ in range(rep):  # interleaved
                    alone.append(fair_alone(client, one))
                    together.append(fair_pair(client, pair))
            total = statistics.median(t[0] for t in together)
            shares = [statistics.median(t[i] for t in together) for i in (1, 2)]
            worst = max(abs(t[i] - 0.5) for t in together for i in (1, 2))
            results.append((name, measure, statistics.median(alone), total, shares, worst))
    print(
        f"\nTwo equal jobs at once on the fair pools ({args.lines:,}-line seed-format log in "
        f"1 MiB blocks; {n} synthetic {size}x{size} chunks); medians of {rep} interleaved "
        f"runs after a warm-up; Python {sys.version.split()[0]}, {os.cpu_count()} cores"
    )
    print(
        f"| {'pool':<22} | {'measure':<8} | {'one alone':>9} | {'two at once':>11} "
        f"| {'ratio':>6} | {'share A':>7} | {'share B':>7} | {'worst':>6} |"
    )
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 11}|{'-' * 13}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    for name, measure, one_alone, total, shares, worst in results:
        print(
            f"| {name:<22} | {measure:<8} | {one_alone:>9,.1f} | {total:>11,.1f} "
            f"| {total / one_alone:>5.2f}x | {shares[0]:>7.1%} | {shares[1]:>7.1%} "
            f"| {worst:>+6.1%} |"
        )
    print(
        "goals: ratio (two at once / one alone) >= 0.95x; each job's share of the units "
        "written when the first ended 50% +-15% (worst: the largest gap from 50% in any run)"
    )
    return 0


# -- the write path ---------------------------------------------------------------------------


def plain_write(output: str, chunks: int, chunk_bytes: int, sync_bytes: int) -> float:
    """MB/s of a plain sequential write of `chunks` x `chunk_bytes` with the FFT job's sync
    policy: fdatasync every `sync_bytes`, fsync, rename over the old file, fsync the dir."""
    block = np.ones(chunk_bytes // 16, dtype=np.complex128).data.cast("B")
    start = time.perf_counter()
    out = AtomicFile(output)
    fd = out.file.fileno()
    unsynced = 0
    for _ in range(chunks):
        view = block
        while view:
            view = view[os.write(fd, view) :]
        unsynced += len(block)
        if unsynced >= sync_bytes:
            os.fdatasync(fd)
            unsynced = 0
    out.commit()
    return chunks * chunk_bytes / (time.perf_counter() - start) / 1e6


# -- the table --------------------------------------------------------------------------------


def _medians(
    cases: list[tuple[str, str, Callable[[], float]]], repeat: int
) -> dict[str, tuple[str, float]]:
    """Median of `repeat` interleaved runs of each case, after one untimed round."""
    for _, _, run in cases:
        run()  # warm-up: caches, page cache, the allocator, the first import of scipy
    # Round robin: every repetition runs each case once, so drift in the machine's disk
    # and clock speed spreads over all rows instead of favouring one.
    samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(repeat):
        for name, _, run in cases:
            samples[name].append(run())
    return {name: (unit, statistics.median(samples[name])) for name, unit, _ in cases}


def _table(rows: dict[str, tuple[str, float]], ratios: list[tuple[str, str, str, str]]) -> None:
    print(f"| {'pipeline':<34} | {'measure':<8} | {'median':>11} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 13}|")
    for name, (measure, value) in rows.items():
        print(f"| {name:<34} | {measure:<8} | {value:>11,.1f} |")
    print()
    print(f"| {'ratio':<56} | {'value':>7} | {'goal':>7} |")
    print(f"|{'-' * 58}|{'-' * 9}|{'-' * 9}|")
    for label, a, b, goal in ratios:
        print(f"| {label:<56} | {rows[a][1] / rows[b][1]:>6.2f}x | {goal:>7} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--chunks", type=int, default=24)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument(
        "--repeat", type=int, default=9, help="interleaved runs (medians; the FFT rows are noisy)"
    )
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument(
        "--disk",
        default=str(Path(__file__).resolve().parent.parent.parent),
        help="where the write path is measured (default: beside this checkout)",
    )
    parser.add_argument(
        "--fairness",
        action="store_true",
        help="only the fair pools' table: two equal jobs at once against one alone",
    )
    args = parser.parse_args(argv)
    if args.fairness:
        return fairness(args)
    rep, n, size = args.repeat, args.chunks, args.size
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="actord-bench-") as scratch:
        log = os.path.join(scratch, "input.log")
        write_sample_log(log, args.lines)
        out = os.path.join(scratch, "out.jsonl")
        npy = os.path.join(scratch, "out.npy")
        seed_npy = os.path.join(scratch, "seed.npy")
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_parse, [(b"", 1)] * 2))  # start both workers before timing
            rows = _medians(
                [
                    ("log: plain loop, 1 core", "lines/s", lambda: plain_log_one_core(log, out)),
                    (
                        "log: plain loop, 2 processes",
                        "lines/s",
                        lambda: plain_log_two_cores(log, out, pool),
                    ),
                    (
                        "log: plain split, 2 processes",
                        "lines/s",
                        lambda: plain_log_split(log, out, pool),
                    ),
                    (
                        "log: actord, thread parsers",
                        "lines/s",
                        lambda: actord_log(log, out, Executor.THREAD),
                    ),
                    (
                        "log: actord, process parsers",
                        "lines/s",
                        lambda: actord_log(log, out, Executor.PROCESS),
                    ),
                    ("fft: plain numpy, 1 thread", "chunks/s", lambda: plain_fft(npy, n, size, 1)),
                    ("fft: plain numpy, 2 threads", "chunks/s", lambda: plain_fft(npy, n, size, 2)),
                    (
                        "fft: plain scipy, 1 thread",
                        "chunks/s",
                        lambda: plain_fft(npy, n, size, 1, scipy.fft),
                    ),
                    (
                        "fft: plain scipy, 2 threads",
                        "chunks/s",
                        lambda: plain_fft(npy, n, size, 2, scipy.fft),
                    ),
                    ("fft: actord (scipy engine)", "chunks/s", lambda: actord_fft(npy, n, size)),
                    (
                        "fft: actord (numpy engine)",
                        "chunks/s",
                        lambda: actord_fft(npy, n, size, Engine.NUMPY),
                    ),
                ],
                rep,
            )
        rows["log: seed LogProcessor"] = ("lines/s", seed_log(log, out))
        rows["fft: seed DataPipeline"] = ("chunks/s", seed_fft(seed_npy, n, size))
    with tempfile.TemporaryDirectory(dir=args.disk, prefix="actord-bench-") as disk:
        output = os.path.join(disk, "out.npy")
        written = n * size * size * 16
        writes = _medians(
            [
                (
                    "plain sequential write",
                    "MB/s",
                    lambda: plain_write(output, n, size * size * 16, 64 << 20),
                ),
                (
                    "fft: actord (scipy engine)",
                    "MB/s",
                    lambda: actord_fft(output, n, size, state_dir=disk) * written / n / 1e6,
                ),
            ],
            rep,
        )
    best_log = max(
        ("log: actord, thread parsers", "log: actord, process parsers"), key=lambda k: rows[k][1]
    )
    print(
        f"\n{args.lines:,}-line seed-format log; {n} chunks of {size}x{size} float64 -> fft2 "
        f"complex128; medians of {rep} interleaved runs after one warm-up round (seed rows: "
        f"1 run); in {args.dir or tempfile.gettempdir()}; Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores"
    )
    _table(
        rows,
        [
            (f"{best_log} / plain split", best_log, "log: plain split, 2 processes", ">= 0.9"),
            (f"{best_log} / seed LogProcessor", best_log, "log: seed LogProcessor", ">= 10"),
            (
                "fft: actord / plain numpy, 2 threads",
                "fft: actord (scipy engine)",
                "fft: plain numpy, 2 threads",
                ">= 1.6",
            ),
            (
                "fft: actord / plain scipy, 2 threads",
                "fft: actord (scipy engine)",
                "fft: plain scipy, 2 threads",
                ">= 0.9",
            ),
            (
                "fft: actord / seed DataPipeline",
                "fft: actord (scipy engine)",
                "fft: seed DataPipeline",
                "",
            ),
        ],
    )
    print(
        f"\nWrite path on {args.disk}: {written / 1e6:,.0f} MB per run, fdatasync every 64 MB; "
        f"medians of {rep} interleaved runs"
    )
    _table(
        writes,
        [
            (
                "fft job / the disk's sequential write",
                "fft: actord (scipy engine)",
                "plain sequential write",
                ">= 0.8",
            )
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
