"""Log and FFT jobs end to end: start_job_system on a real ActorSystem (fake clock, so that
supervised restarts do not wait), submitting through the JobClient."""

from __future__ import annotations

import gzip
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
import pytest

import actors.fft as fft_module
import actors.parser as parser_module
from actord import (
    ActordError,
    ActorSystem,
    AskTimeout,
    DeadLetterReason,
    InvalidArgument,
    RestartPolicy,
)
from actord.runtime.errors import ErrorCode, Refused
from actors.client import JobClient
from actors.launcher import JobSystemConfig, start_job_system
from actors.model import (
    Engine,
    Executor,
    FFTOptions,
    JobInfo,
    JobKind,
    JobRejected,
    JobSpec,
    JobState,
    LogBlock,
    LogOptions,
    LogSummary,
    Transform,
)
from actors.reader import synthetic_chunk

from .conftest import WAIT, FakeClock, join_job_actors

LEVELS = ("INFO", "DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class GeneratedLog:
    """A seed-format log and what parsing it must give."""

    data: bytes
    records: list[dict[str, Any]]
    rejects: bytes
    lines: int
    blank: int
    invalid_utf8: int
    levels: tuple[tuple[str, int], ...]

    def line(self, number: int) -> bytes:
        return self.data.split(b"\n")[number - 1]


def generate_log(n: int, *, tag: str = "request") -> GeneratedLog:
    """n lines: mostly records (some with CRLF), with blanks, garbage and invalid UTF-8."""
    out: list[bytes] = []
    records: list[dict[str, Any]] = []
    rejects: list[bytes] = []
    levels: Counter[str] = Counter()
    blank = invalid = 0
    for i in range(1, n + 1):
        kind = i % 50
        ending = b"\r\n" if kind == 41 else b"\n"
        if kind in (7, 13):
            raw = b"" if kind == 7 else b"  \t "
            blank += 1
        elif kind == 21:
            raw = b"garbage without a timestamp %d" % i
            rejects.append(b"%d\t%s\n" % (i, raw))
        elif kind == 33:
            raw = b"2026-11-25 12:00:00 [INFO] caf\xe9 %d" % i
            rejects.append(b"%d\t%s\n" % (i, raw))
            invalid += 1
        else:
            ts = f"2026-11-25 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
            level = LEVELS[i % len(LEVELS)]
            message = f"{tag} {i} from 10.0.{i % 256}.{i % 7} took {i % 997}ms"
            raw = f"{ts} [{level}] {message}".encode()
            records.append({"line": i, "timestamp": ts, "level": level, "message": message})
            levels[level] += 1
        out.append(raw + ending)
    return GeneratedLog(
        data=b"".join(out),
        records=records,
        rejects=b"".join(rejects),
        lines=n,
        blank=blank,
        invalid_utf8=invalid,
        levels=tuple(sorted(levels.items())),
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(row) for row in path.read_bytes().splitlines()]


def temp_files(directory: Path) -> list[str]:
    return [
        p.name for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")
    ]


def log_summary(info: JobInfo) -> LogSummary:
    assert info.state is JobState.DONE, info.error
    assert isinstance(info.summary, LogSummary)
    return info.summary


def run_log(client: JobClient, source: Path, output: Path, options: LogOptions) -> JobInfo:
    info = client.submit(JobSpec(JobKind.LOG, str(output), str(source), options))
    return client.wait(info.id, WAIT)


def run_fft(
    client: JobClient, output: Path, source: Path | None, options: FFTOptions
) -> np.ndarray[Any, Any]:
    info = client.submit(
        JobSpec(JobKind.FFT, str(output), None if source is None else str(source), options)
    )
    final = client.wait(info.id, WAIT)
    assert final.state is JobState.DONE, final.error
    result: np.ndarray[Any, Any] = np.load(output)
    return result


def relative_error(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def failed_blocks(system: ActorSystem) -> list[Any]:
    """The payloads of the FAILED dead letters (units a pool member raised on)."""
    return [
        letter.message.payload
        for letter in system.channel.dead_letters()
        if letter.reason is DeadLetterReason.FAILED
    ]


def make_config(executor: Executor = Executor.THREAD) -> JobSystemConfig:
    return JobSystemConfig(parsers=3, parser_executor=executor, fft_workers=2)


@pytest.fixture
def client(journal: str, system: ActorSystem) -> JobClient:
    return start_job_system(system, journal, make_config())


@pytest.fixture
def process_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobClient]:
    """A second system whose parsers run in worker processes (with its own journal)."""
    other = ActorSystem(
        "process", clock=FakeClock(), default_policy=RestartPolicy(max_restarts=100)
    )
    journal = str(tmp_path_factory.mktemp("process") / "journal.sqlite3")
    try:
        yield start_job_system(other, journal, make_config(Executor.PROCESS))
    finally:
        other.stop(timeout=WAIT)


SMALL = LogOptions(block_bytes=4096)


# -- log jobs --------------------------------------------------------------------------------


def test_log_job_output_rejects_and_summary(client: JobClient, tmp_path: Path) -> None:
    log = generate_log(3000)
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(log.data)
    final = run_log(client, source, output, SMALL)
    summary = log_summary(final)
    assert read_records(output) == log.records
    rejects = tmp_path / "out.jsonl.rejects"
    assert rejects.read_bytes() == log.rejects
    assert (summary.lines, summary.matched, summary.rejected) == (
        3000,
        len(log.records),
        log.rejects.count(b"\n"),
    )
    assert (summary.blank, summary.invalid_utf8, summary.too_long) == (
        log.blank,
        log.invalid_utf8,
        0,
    )
    assert summary.levels == log.levels
    assert summary.bytes == len(log.data) == final.bytes
    assert (summary.output, summary.rejects) == (str(output), str(rejects))
    assert temp_files(tmp_path) == []


def test_many_small_blocks_keep_input_order(
    client: JobClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Block 0 is held until five later blocks are parsed, so the writer surely gets blocks
    # out of order, and must still write them in input order.
    original = parser_module.parse_block
    cond = threading.Condition()
    finished: list[int] = []

    def block_0_last(data: bytes, first_line: int, pattern: str) -> dict[str, Any]:
        if first_line == 1:
            with cond:
                assert cond.wait_for(lambda: len(finished) >= 5, timeout=WAIT)
        result = original(data, first_line, pattern)
        with cond:
            finished.append(first_line)
            cond.notify_all()
        return result

    monkeypatch.setattr(parser_module, "parse_block", block_0_last)
    log = generate_log(3000)
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(log.data)
    final = run_log(client, source, output, LogOptions(block_bytes=1024))
    log_summary(final)
    assert final.total >= 100 and final.done == final.total  # dozens of blocks, all written
    assert finished.index(1) >= 5  # block 0 was parsed after later ones
    assert read_records(output) == log.records
    assert (tmp_path / "out.jsonl.rejects").read_bytes() == log.rejects


def test_thread_and_process_parsers_write_identical_outputs(
    client: JobClient, process_client: JobClient, tmp_path: Path
) -> None:
    log = generate_log(2500)
    source = tmp_path / "in.log"
    source.write_bytes(log.data)
    by_thread, by_process = tmp_path / "thread.jsonl", tmp_path / "process.jsonl"
    thread_summary = log_summary(run_log(client, source, by_thread, SMALL))
    process_summary = log_summary(run_log(process_client, source, by_process, SMALL))
    assert by_process.read_bytes() == by_thread.read_bytes()
    assert read_records(by_process) == log.records
    assert (tmp_path / "process.jsonl.rejects").read_bytes() == (
        tmp_path / "thread.jsonl.rejects"
    ).read_bytes()
    ignore = {"seconds": 0.0, "output": "", "rejects": ""}
    assert process_summary.__class__(**{**_fields(process_summary), **ignore}) == (
        thread_summary.__class__(**{**_fields(thread_summary), **ignore})
    )


def _fields(summary: LogSummary) -> dict[str, Any]:
    return {name: getattr(summary, name) for name in LogSummary.__slots__}


def test_gzip_input_is_detected_by_its_magic_bytes(client: JobClient, tmp_path: Path) -> None:
    log = generate_log(2000)
    plain, packed = tmp_path / "plain.log", tmp_path / "packed.log"  # not named .gz
    plain.write_bytes(log.data)
    packed.write_bytes(gzip.compress(log.data))
    plain_summary = log_summary(run_log(client, plain, tmp_path / "a.jsonl", SMALL))
    packed_summary = log_summary(run_log(client, packed, tmp_path / "b.jsonl", SMALL))
    assert (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    assert read_records(tmp_path / "b.jsonl") == log.records
    assert (tmp_path / "b.jsonl.rejects").read_bytes() == log.rejects
    assert (packed_summary.lines, packed_summary.matched, packed_summary.levels) == (
        plain_summary.lines,
        plain_summary.matched,
        plain_summary.levels,
    )


def test_empty_input_gives_empty_outputs(client: JobClient, tmp_path: Path) -> None:
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(b"")
    final = run_log(client, source, output, SMALL)
    summary = log_summary(final)
    assert output.read_bytes() == b"" and (tmp_path / "out.jsonl.rejects").read_bytes() == b""
    assert (summary.lines, summary.matched, summary.rejected, summary.blank) == (0, 0, 0, 0)
    assert (summary.levels, summary.bytes, final.total) == ((), 0, 0)
    assert temp_files(tmp_path) == []


def test_last_line_without_newline_is_a_line(client: JobClient, tmp_path: Path) -> None:
    log = generate_log(500)
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(log.data.rstrip(b"\n"))
    summary = log_summary(run_log(client, source, output, SMALL))
    assert read_records(output) == log.records
    assert summary.lines == 500


def test_a_very_long_line_is_cut_and_counted(client: JobClient, tmp_path: Path) -> None:
    head = b"2026-11-25 12:00:00 [INFO] "
    long_line = head + b"x" * 200_000
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(head + b"before\n" + long_line + b"\n" + head + b"after\n")
    options = LogOptions(block_bytes=4096, max_line_bytes=1000)
    summary = log_summary(run_log(client, source, output, options))
    assert summary.too_long == 1
    assert (summary.lines, summary.matched) == (3, 3)
    cut = long_line[:1000].decode()
    assert [(r["line"], r["message"]) for r in read_records(output)] == [
        (1, "before"),
        (2, cut[len(head) :]),
        (3, "after"),
    ]


def test_a_line_over_the_limit_is_cut_even_inside_one_block(
    client: JobClient, tmp_path: Path
) -> None:
    # max_line_bytes promises that longer lines are cut (and counted as too_long), whatever
    # the block size: here the 2 KB line fits inside one 4 KiB read.
    head = b"2026-11-25 12:00:00 [INFO] "
    long_line = head + b"y" * 2000
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(head + b"before\n" + long_line + b"\n" + head + b"after\n")
    options = LogOptions(block_bytes=4096, max_line_bytes=1000)
    summary = log_summary(run_log(client, source, output, options))
    assert summary.too_long == 1
    assert read_records(output)[1]["message"] == long_line[:1000].decode()[len(head) :]


def test_user_pattern_job(client: JobClient, tmp_path: Path) -> None:
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(b"user=alice\nnot a pair\n")
    options = LogOptions(format="custom", pattern=r"(?P<key>\w+)=(?P<value>\w+)")
    log_summary(run_log(client, source, output, options))
    assert read_records(output) == [{"line": 1, "key": "user", "value": "alice"}]
    assert (tmp_path / "out.jsonl.rejects").read_bytes() == b"2\tnot a pair\n"


def test_a_pattern_alone_selects_a_user_format(client: JobClient, tmp_path: Path) -> None:
    # LogOptions documents `pattern` as the alternative to `format`, but `format` defaults to
    # "seed", so giving only a pattern is refused as "a format name and a pattern".
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(b"user=alice\n")
    options = LogOptions(pattern=r"(?P<key>\w+)=(?P<value>\w+)")
    log_summary(run_log(client, source, output, options))
    assert read_records(output) == [{"line": 1, "key": "user", "value": "alice"}]


def test_two_concurrent_jobs_are_both_right(client: JobClient, tmp_path: Path) -> None:
    first, second = generate_log(2000, tag="first"), generate_log(1500, tag="second")
    (tmp_path / "1.log").write_bytes(first.data)
    (tmp_path / "2.log").write_bytes(second.data)
    jobs = [
        client.submit(
            JobSpec(JobKind.LOG, str(tmp_path / f"{n}.jsonl"), str(tmp_path / f"{n}.log"), SMALL)
        )
        for n in (1, 2)
    ]
    assert jobs[0].id != jobs[1].id
    for job in jobs:
        log_summary(client.wait(job.id, WAIT))
    assert read_records(tmp_path / "1.jsonl") == first.records
    assert read_records(tmp_path / "2.jsonl") == second.records
    assert {j.id for j in client.list()} == {j.id for j in jobs}


# -- failures, cancellation ------------------------------------------------------------------


def test_a_block_that_fails_once_is_retried(
    system: ActorSystem, client: JobClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = parser_module.parse_block
    lock = threading.Lock()
    failed: list[int] = []

    def flaky(data: bytes, first_line: int, pattern: str) -> dict[str, Any]:
        with lock:
            fail = first_line > 1000 and not failed
            if fail:
                failed.append(first_line)
        if fail:
            raise RuntimeError("injected parser crash")
        return original(data, first_line, pattern)

    monkeypatch.setattr(parser_module, "parse_block", flaky)
    log = generate_log(3000)
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(log.data)
    summary = log_summary(run_log(client, source, output, SMALL))
    assert read_records(output) == log.records
    assert (summary.lines, summary.matched) == (3000, len(log.records))
    crashed = failed_blocks(system)
    assert len(crashed) == 1
    assert isinstance(crashed[0], LogBlock)
    assert (crashed[0].first_line, crashed[0].attempt) == (failed[0], 0)
    assert not system.escalated.is_set()


def test_many_retries_with_a_small_writer_capacity_do_not_hang(
    journal: str, system: ActorSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every block fails on its first attempt, so BlockFailed notes pour into the reader while
    # it also sends itself "read the next block": it must never block on its own mailbox,
    # however small the writer's is.
    client = start_job_system(
        system,
        journal,
        JobSystemConfig(parsers=3, parser_executor=Executor.THREAD, writer_capacity=2),
    )
    original = parser_module.parse_block
    lock = threading.Lock()
    seen: set[int] = set()

    def fails_first(data: bytes, first_line: int, pattern: str) -> dict[str, Any]:
        with lock:
            first = first_line not in seen
            seen.add(first_line)
        if first:
            raise RuntimeError("first attempt fails")
        return original(data, first_line, pattern)

    monkeypatch.setattr(parser_module, "parse_block", fails_first)
    log = generate_log(3000)
    (tmp_path / "in.log").write_bytes(log.data)
    spec = JobSpec(JobKind.LOG, str(tmp_path / "out.jsonl"), str(tmp_path / "in.log"), SMALL)
    info = client.submit(spec)
    try:
        final = client.wait(info.id, 5.0)
    except AskTimeout:
        pytest.fail(f"the job hangs: {client.get(info.id)}")
    log_summary(final)
    assert read_records(tmp_path / "out.jsonl") == log.records
    assert len(failed_blocks(system)) == final.total


def test_a_block_that_always_fails_fails_the_job(
    system: ActorSystem, client: JobClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = parser_module.parse_block
    log = generate_log(3000)
    poison = log.line(1234)  # a record line: "... request 1234 from ..."

    def poisoned(data: bytes, first_line: int, pattern: str) -> dict[str, Any]:
        if poison in data:
            raise RuntimeError("poisoned block")
        return original(data, first_line, pattern)

    monkeypatch.setattr(parser_module, "parse_block", poisoned)
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(log.data)
    final = run_log(client, source, output, SMALL)
    # Blocks are the whole lines of each 4 KiB read: find the poisoned one.
    block_bytes = SMALL.block_bytes
    index = (log.data.index(poison) + len(poison)) // block_bytes
    first_line = log.data[: log.data.rfind(b"\n", 0, index * block_bytes) + 1].count(b"\n") + 1
    assert final.state is JobState.FAILED
    assert final.error is not None
    assert f"block {index} (from line {first_line}) failed twice" in final.error
    assert "poisoned block" in final.error
    assert [(b.index, b.attempt) for b in failed_blocks(system)] == [(index, 0), (index, 1)]
    join_job_actors(final.id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.log"]
    # The daemon goes on serving.
    other = generate_log(300)
    (tmp_path / "other.log").write_bytes(other.data)
    log_summary(run_log(client, tmp_path / "other.log", tmp_path / "other.jsonl", SMALL))
    assert read_records(tmp_path / "other.jsonl") == other.records
    assert not system.escalated.is_set()


def test_cancel_stops_a_running_job_and_leaves_nothing(
    client: JobClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = parser_module.parse_block
    entered, release = threading.Event(), threading.Event()

    def slow(data: bytes, first_line: int, pattern: str) -> dict[str, Any]:
        entered.set()
        release.wait(WAIT)
        return original(data, first_line, pattern)

    monkeypatch.setattr(parser_module, "parse_block", slow)
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(generate_log(5000).data)
    info = client.submit(JobSpec(JobKind.LOG, str(output), str(source), SMALL))
    try:
        assert entered.wait(WAIT)
        cancelled = client.cancel(info.id)
    finally:
        release.set()
    assert cancelled.state is JobState.CANCELLED
    final = client.wait(info.id, WAIT)
    assert (final.state, final.summary) == (JobState.CANCELLED, None)
    assert client.cancel(info.id).state is JobState.CANCELLED  # cancelling again is harmless
    join_job_actors(info.id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.log"]
    # The pools still serve the next job.
    other = generate_log(200)
    (tmp_path / "other.log").write_bytes(other.data)
    log_summary(run_log(client, tmp_path / "other.log", tmp_path / "other.jsonl", SMALL))
    assert read_records(tmp_path / "other.jsonl") == other.records


def test_a_killed_parse_worker_is_replaced(process_client: JobClient, tmp_path: Path) -> None:
    first = generate_log(100)
    (tmp_path / "first.log").write_bytes(first.data)
    log_summary(run_log(process_client, tmp_path / "first.log", tmp_path / "first.jsonl", SMALL))
    workers = [
        child
        for child in psutil.Process().children()
        if "actors._parse_worker" in " ".join(child.cmdline())
    ]
    assert workers  # at least the member that parsed the first job has its worker
    workers[0].kill()
    log = generate_log(3000)
    (tmp_path / "in.log").write_bytes(log.data)
    log_summary(run_log(process_client, tmp_path / "in.log", tmp_path / "out.jsonl", SMALL))
    assert read_records(tmp_path / "out.jsonl") == log.records


def test_a_rejects_path_that_is_a_directory_is_refused_at_submit(
    client: JobClient, tmp_path: Path
) -> None:
    # Publishing would fail after the output was renamed into place (that cleanup is tested
    # in test_publish): the submit refuses it instead, and nothing is written.
    (tmp_path / "in.log").write_bytes(generate_log(100).data)
    (tmp_path / "out.jsonl.rejects").mkdir()
    spec = JobSpec(JobKind.LOG, str(tmp_path / "out.jsonl"), str(tmp_path / "in.log"), SMALL)
    with pytest.raises(Refused, match=r"out\.jsonl\.rejects is a directory") as refused:
        client.submit(spec)
    assert refused.value.code is ErrorCode.INVALID_PATH
    assert client.list() == ()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.log", "out.jsonl.rejects"]


def test_a_slow_block_does_not_let_parsed_blocks_pile_up(
    journal: str, system: ActorSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While block 0 is stuck in a parser, the writer must hold every later block that the
    # other parsers finish. A reader that keeps a window of 8 units in flight gets at most 7
    # blocks ahead; without a window, the whole rest of the file is parsed into the writer's
    # memory.
    window = 8
    client = start_job_system(
        system,
        journal,
        JobSystemConfig(
            parsers=3,
            parser_executor=Executor.THREAD,
            pool_capacity=4,
            writer_capacity=4,
            window=window,
        ),
    )
    ahead_limit = window - 1  # block 0 and 7 others in flight; it waits 1 s for an 8th
    original = parser_module.parse_block
    cond = threading.Condition()
    parsed_while_held: list[int] = []
    ahead = [0]

    def holding_block_0(data: bytes, first_line: int, pattern: str) -> dict[str, Any]:
        if first_line == 1:
            with cond:
                cond.wait_for(lambda: ahead[0] > ahead_limit, timeout=1.0)
                parsed_while_held.append(ahead[0])
        result = original(data, first_line, pattern)
        with cond:
            ahead[0] += 1
            cond.notify_all()
        return result

    monkeypatch.setattr(parser_module, "parse_block", holding_block_0)
    log = generate_log(3000)  # about 180 blocks of 1 KiB
    (tmp_path / "in.log").write_bytes(log.data)
    options = LogOptions(block_bytes=1024)
    log_summary(run_log(client, tmp_path / "in.log", tmp_path / "out.jsonl", options))
    assert read_records(tmp_path / "out.jsonl") == log.records
    assert parsed_while_held[0] <= ahead_limit, (
        f"{parsed_while_held[0]} later blocks were parsed (and held by the writer) while "
        "block 0 was stuck"
    )


# -- refusals --------------------------------------------------------------------------------


def _refusals() -> dict[str, Callable[[Path], JobSpec]]:
    log, fft = JobKind.LOG, JobKind.FFT

    def linked(tmp: Path) -> JobSpec:
        (tmp / "link.log").symlink_to(tmp / "in.log")
        return JobSpec(log, str(tmp / "link.log"), str(tmp / "in.log"))

    return {
        "missing-input": lambda t: JobSpec(log, str(t / "o.jsonl"), str(t / "missing.log")),
        "input-is-a-directory": lambda t: JobSpec(log, str(t / "o.jsonl"), str(t)),
        "output-dir-missing": lambda t: JobSpec(log, str(t / "no" / "o.jsonl"), str(t / "in.log")),
        "output-is-a-directory": lambda t: JobSpec(log, str(t), str(t / "in.log")),
        "output-is-input": lambda t: JobSpec(log, str(t / "in.log"), str(t / "in.log")),
        "output-links-to-input": linked,
        "log-without-input": lambda t: JobSpec(log, str(t / "o.jsonl")),
        "unknown-format": lambda t: JobSpec(
            log, str(t / "o.jsonl"), str(t / "in.log"), LogOptions(format="nginx")
        ),
        "bad-pattern": lambda t: JobSpec(
            log, str(t / "o.jsonl"), str(t / "in.log"), LogOptions(format="custom", pattern="(")
        ),
        "zero-block-bytes": lambda t: JobSpec(
            log, str(t / "o.jsonl"), str(t / "in.log"), LogOptions(block_bytes=0)
        ),
        # Upper limits: what a job may hold in flight, and the size of a user's pattern.
        "huge-block-bytes": lambda t: JobSpec(
            log, str(t / "o.jsonl"), str(t / "in.log"), LogOptions(block_bytes=(16 << 20) + 1)
        ),
        "huge-max-line-bytes": lambda t: JobSpec(
            log, str(t / "o.jsonl"), str(t / "in.log"), LogOptions(max_line_bytes=(16 << 20) + 1)
        ),
        "huge-pattern": lambda t: JobSpec(
            log, str(t / "o.jsonl"), str(t / "in.log"), LogOptions(pattern="(?P<a>a)" + "b" * 4096)
        ),
        "log-with-fft-options": lambda t: JobSpec(
            log, str(t / "o.jsonl"), str(t / "in.log"), FFTOptions()
        ),
        "fft-with-log-options": lambda t: JobSpec(fft, str(t / "o.npy"), str(t / "in.npy")),
        "fft-input-and-synthetic": lambda t: JobSpec(
            fft, str(t / "o.npy"), str(t / "in.npy"), FFTOptions(synthetic=(1, 2, 2))
        ),
        "fft-neither": lambda t: JobSpec(fft, str(t / "o.npy"), None, FFTOptions()),
        "fft-bad-dtype": lambda t: JobSpec(
            fft, str(t / "o.npy"), str(t / "in.npy"), FFTOptions(dtype="float64")
        ),
        "fft-zero-synthetic": lambda t: JobSpec(
            fft, str(t / "o.npy"), None, FFTOptions(synthetic=(0, 4, 4))
        ),
        # The rejects file (<output>.rejects) would replace the input.
        "rejects-is-input": lambda t: JobSpec(log, str(t / "in"), str(t / "in.rejects")),
    }


_PATH_REFUSALS = {
    "missing-input",
    "input-is-a-directory",
    "output-dir-missing",
    "output-is-a-directory",
    "output-is-input",
    "output-links-to-input",
    "rejects-is-input",
}


@pytest.mark.parametrize("case", sorted(_refusals()))
def test_submit_refuses(client: JobClient, tmp_path: Path, case: str) -> None:
    (tmp_path / "in.log").write_bytes(b"2026-11-25 12:00:00 [INFO] m\n")
    (tmp_path / "in.rejects").write_bytes(b"2026-11-25 12:00:00 [INFO] precious\n")
    np.save(tmp_path / "in.npy", np.zeros((1, 2, 2)))
    spec = _refusals()[case](tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    try:
        with pytest.raises(ActordError) as refused:
            client.submit(spec)
    finally:
        for job in client.list():  # if it was accepted, let it end before looking at files
            client.wait(job.id, WAIT)
    expected = ErrorCode.INVALID_PATH if case in _PATH_REFUSALS else ErrorCode.INVALID_ARGUMENT
    assert refused.value.code is expected
    assert client.list() == ()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("request_", ["get", "cancel", "wait"])
def test_unknown_job_id_is_refused(client: JobClient, request_: str) -> None:
    with pytest.raises(JobRejected, match="no job 'log-99'") as refused:
        getattr(client, request_)("log-99")
    assert refused.value.code is ErrorCode.NOT_FOUND


# -- FFT jobs --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
@pytest.mark.parametrize("transform", [Transform.FFT2, Transform.RFFT2])
def test_fft_job_on_an_input_stack(
    client: JobClient, tmp_path: Path, transform: Transform, dtype: str
) -> None:
    stack = np.random.default_rng(5).standard_normal((4, 16, 12))
    np.save(tmp_path / "in.npy", stack)
    result = run_fft(
        client, tmp_path / "out.npy", tmp_path / "in.npy", FFTOptions(transform, dtype)
    )
    expected = np.fft.rfft2(stack) if transform is Transform.RFFT2 else np.fft.fft2(stack)
    assert result.dtype == np.dtype(dtype)
    assert result.shape == ((4, 16, 7) if transform is Transform.RFFT2 else (4, 16, 12))
    assert relative_error(result, expected) < (1e-9 if dtype == "complex128" else 1e-4)
    assert temp_files(tmp_path) == []


def test_fft_job_summary(client: JobClient, tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", np.ones((3, 8, 8), dtype=np.float32))
    info = client.submit(
        JobSpec(JobKind.FFT, str(tmp_path / "out.npy"), str(tmp_path / "in.npy"), FFTOptions())
    )
    final = client.wait(info.id, WAIT)
    assert final.state is JobState.DONE
    assert final.summary is not None and not isinstance(final.summary, LogSummary)
    summary = final.summary
    assert (summary.chunks, summary.shape, summary.dtype, summary.transform) == (
        3,
        (3, 8, 8),
        "complex128",
        "fft2",
    )
    assert summary.bytes == 3 * 8 * 8 * 16
    assert (final.done, final.total) == (3, 3)


@pytest.mark.parametrize("transform", [Transform.FFT2, Transform.RFFT2])
def test_synthetic_fft_job(client: JobClient, tmp_path: Path, transform: Transform) -> None:
    options = FFTOptions(transform=transform, synthetic=(5, 8, 10), seed=11)
    result = run_fft(client, tmp_path / "out.npy", None, options)
    fn = np.fft.rfft2 if transform is Transform.RFFT2 else np.fft.fft2
    expected = np.stack([fn(synthetic_chunk(11, i, (8, 10))) for i in range(5)])
    # The documented recipe: chunk i is uniform [0, 1) floats from seed + i.
    assert np.array_equal(
        synthetic_chunk(11, 2, (8, 10)), np.random.default_rng(13).random((8, 10))
    )
    assert result.dtype == np.complex128 and result.shape == expected.shape
    assert relative_error(result, expected) < 1e-9


def test_fft_job_on_an_empty_stack_finishes(client: JobClient, tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", np.zeros((0, 4, 4)))
    info = client.submit(
        JobSpec(JobKind.FFT, str(tmp_path / "out.npy"), str(tmp_path / "in.npy"), FFTOptions())
    )
    try:
        final = client.wait(info.id, 3.0)
    except AskTimeout:
        pytest.fail(f"an FFT job on a (0, 4, 4) stack never ends: {client.get(info.id)}")
    assert final.state is JobState.DONE
    assert np.load(tmp_path / "out.npy").shape == (0, 4, 4)


def test_fft_job_on_a_2d_array_is_refused_at_submit(client: JobClient, tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", np.zeros((4, 4)))
    with pytest.raises(InvalidArgument, match=r"\(N, H, W\)"):
        client.submit(
            JobSpec(JobKind.FFT, str(tmp_path / "out.npy"), str(tmp_path / "in.npy"), FFTOptions())
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


SENTINEL = -1234.5  # chunk 3's first pixel: the injected transform failure recognises it


def _stack_with_sentinel(path: Path) -> np.ndarray[Any, Any]:
    stack = np.random.default_rng(2).random((6, 8, 8))
    stack[3, 0, 0] = SENTINEL
    np.save(path, stack)
    return stack


def test_an_fft_chunk_that_fails_once_is_retried(
    system: ActorSystem, client: JobClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = fft_module.transform
    lock = threading.Lock()
    failed: list[bool] = []

    def flaky(data: Any, kind: Transform, dtype: str, engine: Engine) -> Any:
        with lock:
            fail = data[0, 0] == SENTINEL and not failed
            if fail:
                failed.append(True)
        if fail:
            raise RuntimeError("injected FFT crash")
        return original(data, kind, dtype, engine)

    monkeypatch.setattr(fft_module, "transform", flaky)
    stack = _stack_with_sentinel(tmp_path / "in.npy")
    result = run_fft(client, tmp_path / "out.npy", tmp_path / "in.npy", FFTOptions())
    assert relative_error(result, np.fft.fft2(stack)) < 1e-9
    assert [(c.index, c.attempt) for c in failed_blocks(system)] == [(3, 0)]


def test_an_fft_chunk_that_always_fails_fails_the_job(
    system: ActorSystem, client: JobClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = fft_module.transform

    def poisoned(data: Any, kind: Transform, dtype: str, engine: Engine) -> Any:
        if data[0, 0] == SENTINEL:
            raise RuntimeError("poisoned chunk")
        return original(data, kind, dtype, engine)

    monkeypatch.setattr(fft_module, "transform", poisoned)
    _stack_with_sentinel(tmp_path / "in.npy")
    info = client.submit(
        JobSpec(JobKind.FFT, str(tmp_path / "out.npy"), str(tmp_path / "in.npy"), FFTOptions())
    )
    final = client.wait(info.id, WAIT)
    assert final.state is JobState.FAILED
    assert final.error is not None
    assert re.search(r"chunk 3 failed twice: .*poisoned chunk", final.error)
    join_job_actors(info.id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]
    # The daemon goes on serving.
    result = run_fft(client, tmp_path / "ok.npy", None, FFTOptions(synthetic=(2, 4, 4)))
    assert result.shape == (2, 4, 4)
    assert not system.escalated.is_set()


def test_cancel_an_fft_job_leaves_nothing(
    client: JobClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = fft_module.transform
    entered, release = threading.Event(), threading.Event()

    def slow(data: Any, kind: Transform, dtype: str, engine: Engine) -> Any:
        entered.set()
        release.wait(WAIT)
        return original(data, kind, dtype, engine)

    monkeypatch.setattr(fft_module, "transform", slow)
    output = tmp_path / "out.npy"
    info = client.submit(JobSpec(JobKind.FFT, str(output), None, FFTOptions(synthetic=(40, 8, 8))))
    try:
        assert entered.wait(WAIT)
        cancelled = client.cancel(info.id)
    finally:
        release.set()
    assert cancelled.state is JobState.CANCELLED
    assert client.wait(info.id, WAIT).state is JobState.CANCELLED
    join_job_actors(info.id)
    assert list(tmp_path.iterdir()) == []
    result = run_fft(client, tmp_path / "ok.npy", None, FFTOptions(synthetic=(2, 4, 4)))
    assert result.shape == (2, 4, 4)


def test_concurrent_log_and_fft_jobs(client: JobClient, tmp_path: Path) -> None:
    log = generate_log(2000)
    (tmp_path / "in.log").write_bytes(log.data)
    log_job = client.submit(
        JobSpec(JobKind.LOG, str(tmp_path / "out.jsonl"), str(tmp_path / "in.log"), SMALL)
    )
    fft_job = client.submit(
        JobSpec(JobKind.FFT, str(tmp_path / "out.npy"), None, FFTOptions(synthetic=(8, 32, 32)))
    )
    log_summary(client.wait(log_job.id, WAIT))
    assert client.wait(fft_job.id, WAIT).state is JobState.DONE
    assert read_records(tmp_path / "out.jsonl") == log.records
    expected = np.stack([np.fft.fft2(synthetic_chunk(0, i, (32, 32))) for i in range(8)])
    assert relative_error(np.load(tmp_path / "out.npy"), expected) < 1e-9


# -- memory ----------------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int:
    found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert found is not None
    return int(found.group(1)) * 1024


@pytest.mark.timeout(120)
def test_a_big_log_is_streamed_in_bounded_memory(
    journal: str, system: ActorSystem, tmp_path: Path
) -> None:
    # The kernel's peak RSS is reset before the job and read after it, so the peak during the
    # job counts, not only what is left after it. Measured: streaming 256 KiB blocks should
    # stay well under 60 MB, reading the 60 MB file as one block adds ~400 MB.
    client = start_job_system(
        system,
        journal,
        JobSystemConfig(parsers=4, parser_executor=Executor.THREAD, writer_capacity=8),
    )
    piece = generate_log(16_000)  # about 1 MB
    repeats = 60
    source, output = tmp_path / "big.log", tmp_path / "big.jsonl"
    with source.open("wb") as out:
        for _ in range(repeats):
            out.write(piece.data)
    process = psutil.Process()
    before = process.memory_info().rss
    if not _reset_peak_rss():
        pytest.skip("cannot reset the peak RSS mark (/proc/self/clear_refs)")
    options = LogOptions(block_bytes=256 * 1024)
    info = client.submit(JobSpec(JobKind.LOG, str(output), str(source), options))
    summary = log_summary(client.wait(info.id, 100))
    growth = max(_peak_rss(), process.memory_info().rss) - before
    assert summary.bytes == source.stat().st_size > 60_000_000
    assert summary.lines == 16_000 * repeats
    assert summary.matched == len(piece.records) * repeats
    assert growth < 60_000_000, f"peak RSS grew by {growth / 1e6:.1f} MB"


def test_summary_bytes_count_what_was_read_even_when_a_line_is_cut(
    journal: str, system: ActorSystem, tmp_path: Path
) -> None:
    client = start_job_system(system, journal, JobSystemConfig(parser_executor=Executor.THREAD))
    head = b"2026-11-25 12:00:00 [INFO] "
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(head + b"short\n" + head + b"z" * 5000 + b"\n" + head + b"end\n")
    options = LogOptions(block_bytes=1024, max_line_bytes=100)
    summary = log_summary(run_log(client, source, output, options))
    assert summary.too_long == 1
    assert summary.bytes == source.stat().st_size


# -- from the code review: failures that must fail one job, never the daemon ------------------


def test_a_corrupt_gzip_fails_its_job_not_the_daemon(
    journal: str, system: ActorSystem, tmp_path: Path
) -> None:
    client = start_job_system(system, journal, JobSystemConfig(parser_executor=Executor.THREAD))
    log = generate_log(20_000)
    packed = bytearray(gzip.compress(log.data))
    packed[len(packed) // 2 : len(packed) // 2 + 64] = b"\xff" * 64  # damage the deflate stream
    source, output = tmp_path / "broken.log", tmp_path / "out.jsonl"
    source.write_bytes(bytes(packed))
    info = client.submit(JobSpec(JobKind.LOG, str(output), str(source), LogOptions()))
    ended = client.wait(info.id, WAIT)
    assert ended.state is JobState.FAILED
    assert ended.error is not None and "read" in ended.error
    assert not system.escalated.is_set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.log"]  # no output, no temp
    good = tmp_path / "good.log"
    good.write_bytes(log.data)
    again = client.wait(client.submit(JobSpec(JobKind.LOG, str(output), str(good))).id, WAIT)
    assert again.state is JobState.DONE


def test_a_runaway_regex_times_out_and_its_worker_is_killed(
    journal: str, system: ActorSystem, tmp_path: Path
) -> None:
    config = JobSystemConfig(parsers=1, parser_executor=Executor.PROCESS, block_timeout=0.5)
    client = start_job_system(system, journal, config)
    source, output = tmp_path / "in.log", tmp_path / "out.jsonl"
    source.write_bytes(b"a" * 40 + b"\n")  # (a+)+b backtracks exponentially on this line
    workers_before = {p.pid for p in psutil.Process().children()}
    options = LogOptions(pattern=r"(?P<m>(a+)+)b")
    ended = client.wait(client.submit(JobSpec(JobKind.LOG, str(output), str(source), options)).id)
    assert ended.state is JobState.FAILED
    assert ended.error is not None and "block 0" in ended.error
    assert "took too long" in ended.error
    assert not output.exists()
    # The hung workers were killed; only the fresh replacement (if any) is left.
    alive = {p.pid for p in psutil.Process().children() if p.status() != psutil.STATUS_ZOMBIE}
    assert len(alive - workers_before) <= 1
