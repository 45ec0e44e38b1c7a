"""Pipeline benchmark: actord's log job and FFT job against plain loops and the seed's classes.

    python bench/pipelines.py [--lines 1000000] [--chunks 24] [--size 1000] [--repeat 5]

One run, one table of medians.

Log: a seed-format log parsed into JSON Lines plus rejects by (1) a plain single-thread loop
(the limit for one core); (2) two plain two-core loops: a process pool over 1 MiB blocks whose
results the parent writes in order, and the best one, where each process parses its half of
the file into part files that the kernel then joins; (3) actord's log job with thread and with
process parser pools; (4) the seed's LogProcessor (slide 7), loaded from ../shared/seed at run
time.

FFT: fft2 of 1000x1000 float64 chunks into a complex128 .npy by (1) a plain loop, (2) a plain
two-thread loop, (3) actord's FFT job, (4) the seed's DataPipeline (slide 8).

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
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from actord import ActorSystem
from actors.demo import write_sample_log
from actors.formats import BUILTIN_FORMATS
from actors.launcher import JobSystemConfig, start_job_system
from actors.model import Executor, FFTOptions, JobKind, JobSpec, LogOptions
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


def plain_fft(output: str, chunks: int, size: int, workers: int) -> float:
    start = time.perf_counter()
    out = _fft_out(output, chunks, size)

    def one(i: int) -> None:
        out[i] = np.fft.fft2(synthetic_chunk(0, i, (size, size)))

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


def actord_log(path: str, output: str, executor: Executor) -> float:
    with ActorSystem("bench") as system, tempfile.TemporaryDirectory() as state:
        journal = os.path.join(state, "journal.sqlite3")
        client = start_job_system(system, journal, JobSystemConfig(parser_executor=executor))
        start = time.perf_counter()
        options = LogOptions(block_bytes=BLOCK)
        job = client.submit(JobSpec(JobKind.LOG, output, path, options, overwrite=True))
        info = client.wait(job.id, 600)
        elapsed = time.perf_counter() - start
    assert info.summary is not None and info.error is None, info
    return info.summary.lines / elapsed  # type: ignore[union-attr]


def actord_fft(output: str, chunks: int, size: int) -> float:
    with ActorSystem("bench") as system, tempfile.TemporaryDirectory() as state:
        journal = os.path.join(state, "journal.sqlite3")
        client = start_job_system(system, journal, JobSystemConfig(fft_workers=2))
        options = FFTOptions(synthetic=(chunks, size, size), seed=0)
        start = time.perf_counter()
        job = client.submit(JobSpec(JobKind.FFT, output, None, options, overwrite=True))
        info = client.wait(job.id, 600)
        elapsed = time.perf_counter() - start
    assert info.error is None, info
    return chunks / elapsed


# -- the table --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--chunks", type=int, default=24)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args(argv)
    rep, n, size = args.repeat, args.chunks, args.size
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="actord-bench-") as scratch:
        log = os.path.join(scratch, "input.log")
        write_sample_log(log, args.lines)
        out = os.path.join(scratch, "out.jsonl")
        npy = os.path.join(scratch, "out.npy")
        seed_npy = os.path.join(scratch, "seed.npy")
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_parse, [(b"", 1)] * 2))  # start both workers before timing
            cases: list[tuple[str, str, Callable[[], float]]] = [
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
                ("fft: plain loop, 1 thread", "chunks/s", lambda: plain_fft(npy, n, size, 1)),
                ("fft: plain loop, 2 threads", "chunks/s", lambda: plain_fft(npy, n, size, 2)),
                ("fft: actord", "chunks/s", lambda: actord_fft(npy, n, size)),
            ]
            # Round robin: every repetition runs each case once, so drift in the machine's disk
            # and clock speed spreads over all rows instead of favouring one.
            samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
            for _ in range(rep):
                for name, _, run in cases:
                    samples[name].append(run())
        rows = {name: (unit, statistics.median(samples[name])) for name, unit, _ in cases}
        rows["log: seed LogProcessor"] = ("lines/s", seed_log(log, out))
        rows["fft: seed DataPipeline"] = ("chunks/s", seed_fft(seed_npy, n, size))

    def ratio(a: str, b: str) -> str:
        return f"{rows[a][1] / rows[b][1]:.2f}x"

    best_log = max(
        ("log: actord, thread parsers", "log: actord, process parsers"), key=lambda k: rows[k][1]
    )
    print(
        f"\n{args.lines:,}-line seed-format log; {n} chunks of {size}x{size} float64 -> fft2 "
        f"complex128; medians of {rep} interleaved runs (seed rows: 1 run); "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores"
    )
    print(f"| {'pipeline':<32} | {'measure':<8} | {'median':>11} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 13}|")
    for name, (measure, value) in rows.items():
        print(f"| {name:<32} | {measure:<8} | {value:>11,.1f} |")
    print()
    print(f"| {'ratio':<52} | {'value':>7} | {'goal':>7} |")
    print(f"|{'-' * 54}|{'-' * 9}|{'-' * 9}|")
    for label, value, goal in (
        (
            f"{best_log} / plain split",
            ratio(best_log, "log: plain split, 2 processes"),
            ">= 0.75",
        ),
        (f"{best_log} / seed LogProcessor", ratio(best_log, "log: seed LogProcessor"), ">= 10"),
        (
            "log: actord, thread / process parsers",
            ratio("log: actord, thread parsers", "log: actord, process parsers"),
            "",
        ),
        (
            "fft: actord / plain 2 threads",
            ratio("fft: actord", "fft: plain loop, 2 threads"),
            ">= 0.9",
        ),
        ("fft: actord / seed DataPipeline", ratio("fft: actord", "fft: seed DataPipeline"), ""),
    ):
        print(f"| {label:<52} | {value:>7} | {goal:>7} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
