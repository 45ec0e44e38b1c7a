"""No pattern can freeze the daemon: a user's pattern runs in a worker process whatever the
executor, and a cancel stops a job's in-flight parsing within a second."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import actors.parser as parser_module
from actord import ActorSystem, RestartPolicy
from actors.client import JobClient
from actors.launcher import JobSystemConfig, start_job_system
from actors.model import Executor, JobKind, JobSpec, JobState, LogOptions

from .conftest import WAIT, FakeClock

EVIL = r"(?P<a>(a+)+)b"  # backtracks exponentially on a line of a's with no b
CANCEL_WITHIN = 1.0  # seconds: the promise for a job's in-flight work


@pytest.fixture(params=[Executor.THREAD, Executor.PROCESS], ids=["thread", "process"])
def jobs(journal: str, request: pytest.FixtureRequest) -> Iterator[JobClient]:
    system = ActorSystem("patterns", clock=FakeClock(), default_policy=RestartPolicy())
    try:
        yield start_job_system(
            system, journal, JobSystemConfig(parsers=2, parser_executor=request.param)
        )
    finally:
        system.stop(timeout=WAIT)


class _Entered:
    """Counts parse calls of blocks into worker processes (not a new worker's warm-up, an
    empty block); `wait(n)` returns once n have begun."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.pids: list[int] = []

    def wrap(self, parse: Any) -> Any:
        def entering(worker: Any, data: bytes, *args: Any, **kwargs: Any) -> Any:
            if data:
                with self._cond:
                    self.pids.append(worker.process.pid)
                    self._cond.notify_all()
            return parse(worker, data, *args, **kwargs)

        return entering

    def wait(self, n: int) -> list[int]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.pids) >= n, WAIT), self.pids
            return list(self.pids)


def test_an_evil_pattern_neither_freezes_the_pool_nor_outlives_its_cancel(
    jobs: JobClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = _Entered()
    monkeypatch.setattr(parser_module._Worker, "parse", entered.wrap(parser_module._Worker.parse))
    evil_input = tmp_path / "evil.log"
    evil_input.write_text(("a" * 40 + "\n") * 8)  # years per line, if nothing stopped it
    evil = jobs.submit(
        JobSpec(
            JobKind.LOG,
            str(tmp_path / "evil.jsonl"),
            str(evil_input),
            LogOptions(pattern=EVIL, block_bytes=41),  # a block per line: both members busy
        )
    )
    busy = entered.wait(2)  # both members are inside the pattern, each in a worker process
    # Another job, in a built-in format, still gets the answers the daemon owes it: the
    # process is not frozen (in a thread, the evil pattern would hold the GIL for years).
    good_input = tmp_path / "good.log"
    good_input.write_text("2026-11-25 12:00:00 [INFO] fine\n" * 50)
    good = jobs.submit(
        JobSpec(JobKind.LOG, str(tmp_path / "good.jsonl"), str(good_input), LogOptions())
    )
    assert jobs.get(good.id).state is JobState.RUNNING  # queued behind the evil blocks
    cancelled_at = time.monotonic()
    assert jobs.cancel(evil.id).state is JobState.CANCELLED
    for pid in busy:
        with contextlib.suppress(psutil.NoSuchProcess):  # reaped by its member already
            psutil.Process(pid).wait(WAIT)
    stopped_after = time.monotonic() - cancelled_at
    done = jobs.wait(good.id, WAIT)  # the members are free again
    assert done.state is JobState.DONE, done
    assert stopped_after < CANCEL_WITHIN, f"in-flight parsing ran {stopped_after:.2f}s on"
    assert not (tmp_path / "evil.jsonl").exists()


def test_a_pattern_past_the_block_timeout_fails_its_job_not_the_pool(
    journal: str, tmp_path: Path
) -> None:
    # A tiny block timeout and a policy that escalates at the first failure: if a timed-out
    # block counted as the pool's fault, the pool would escalate.
    system = ActorSystem(
        "timeouts", clock=FakeClock(), default_policy=RestartPolicy(max_restarts=0)
    )
    try:
        jobs = start_job_system(
            system,
            journal,
            JobSystemConfig(parsers=2, parser_executor=Executor.PROCESS, block_timeout=0.3),
        )
        evil_input = tmp_path / "evil.log"
        evil_input.write_text("a" * 40 + "\n")
        spec = JobSpec(
            JobKind.LOG, str(tmp_path / "evil.jsonl"), str(evil_input), LogOptions(pattern=EVIL)
        )
        final = jobs.wait(jobs.submit(spec).id, WAIT)
        assert final.state is JobState.FAILED
        assert (
            final.error is not None and "block 0" in final.error and "took too long" in final.error
        )
        assert not system.escalations
        parsers = [s for s in system.stats() if s.pool == "parser"]
        assert [(s.errors, s.restarts) for s in parsers] == [(0, 0), (0, 0)]
        good_input = tmp_path / "good.log"  # and the pool still serves the next job
        good_input.write_text("2026-11-25 12:00:00 [INFO] fine\n" * 10)
        good = jobs.submit(
            JobSpec(JobKind.LOG, str(tmp_path / "good.jsonl"), str(good_input), LogOptions())
        )
        assert jobs.wait(good.id, WAIT).state is JobState.DONE
    finally:
        system.stop(timeout=WAIT)


def test_a_block_timeout_shorter_than_a_worker_start_still_starts_the_pool(
    journal: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker process takes far more than 1 ms to start (an interpreter and its imports):
    # the block timeout bounds a block's parsing, not the start of the member's worker. The
    # member looks at the time every millisecond here (every 250 ms by default: a quiet
    # machine starts a worker within one look, a busy one does not).
    monkeypatch.setattr(parser_module, "_POLL", 0.001)
    system = ActorSystem("starts", clock=FakeClock(), default_policy=RestartPolicy(max_restarts=0))
    try:
        start_job_system(
            system,
            journal,
            JobSystemConfig(parsers=2, parser_executor=Executor.PROCESS, block_timeout=0.001),
        )
        system.lookup("parser").ping(timeout=WAIT)
        assert not system.escalations
        parsers = [s for s in system.stats() if s.pool == "parser"]
        assert len(parsers) == 2 and all(s.errors == 0 for s in parsers)
    finally:
        system.stop(timeout=WAIT)
