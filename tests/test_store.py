"""The job store: the one job table and the journal's owner (in-process, real SQLite)."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actord import ActorRef, ActorStopping, ActorSystem, RestartPolicy
from actord.runtime.errors import ErrorCode
from actors.job_stats import GetJobMetrics
from actors.journal import Journal
from actors.launcher import STORE, JobSystemConfig, start_job_system
from actors.model import (
    Accept,
    Cancel,
    Executor,
    FFTOptions,
    GetJob,
    JobEnded,
    JobError,
    JobInfo,
    JobKind,
    JobSpec,
    JobState,
    ListJobs,
    LogOptions,
    Progress,
    Rejected,
    WaitJob,
)
from actors.store import (
    Drain,
    Drained,
    JobStore,
    Launch,
    Prune,
    Release,
    Released,
    Retention,
    SetMaxJobs,
    StoreStatus,
)
from actors.validate import Roots, output_taken
from actors.wire import pack, spec_to_wire
from actors.writer import create_temp

from .conftest import WAIT, FakeClock, Recorder, RecordingActor

SLOW = r"(?P<a>(x+x+)+y)"  # ~0.1 s per line of 22 x's: a job that is surely still running


class Harness:
    def __init__(self, tmp: Path, system: ActorSystem) -> None:
        self.tmp = tmp
        self.system = system
        self.journal = str(tmp / "journal.sqlite3")
        self.events = Recorder()

    def start(
        self, max_jobs: int = 4, roots: Roots | None = None, retention: Retention | None = None
    ) -> None:
        # Worker processes: the slow regex would hold the GIL for 0.1 s at a time in threads.
        config = JobSystemConfig(
            parser_executor=Executor.PROCESS,
            max_jobs=max_jobs,
            roots=roots,
            retention=retention or Retention(),
        )
        start_job_system(self.system, self.journal, config)
        self.system.spawn(lambda: RecordingActor(self.events), "events")
        self.system.channel.subscribe(STORE, "events")

    def ask(self, payload: object, timeout: float = WAIT) -> Any:
        return self.system.lookup("store").ask(payload, timeout=timeout)

    def slow(self, name: str, lines: int = 10) -> JobSpec:
        source = self.tmp / f"{name}.log"
        source.write_text(("x" * 22 + "\n") * lines)
        options = LogOptions(pattern=SLOW, block_bytes=64)
        return JobSpec(JobKind.LOG, str(self.tmp / f"{name}.jsonl"), str(source), options)

    def fft(self, name: str) -> JobSpec:
        options = FFTOptions(synthetic=(4, 16, 16))
        return JobSpec(JobKind.FFT, str(self.tmp / f"{name}.npy"), None, options)

    def wait(self, job: str) -> JobInfo:
        info = self.ask(WaitJob(job), timeout=60)
        assert isinstance(info, JobInfo)
        return info

    def states(self) -> dict[str, str]:
        with sqlite3.connect(self.journal) as db:
            return dict(db.execute("SELECT id, state FROM jobs").fetchall())


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    system = ActorSystem(
        "test", clock=FakeClock(), default_policy=RestartPolicy(max_restarts=100, period=60.0)
    )
    try:
        yield Harness(tmp_path, system)
    finally:
        system.stop(timeout=WAIT)


def test_a_job_is_committed_before_accept_returns(harness: Harness) -> None:
    harness.start()
    info = harness.ask(Accept(harness.fft("a")))
    assert isinstance(info, JobInfo)
    assert info.id in harness.states()  # read through another connection: committed
    assert harness.wait(info.id).state is JobState.DONE
    assert harness.states()[info.id] == "done"


def test_an_idempotency_key_gives_the_same_job_and_one_run(harness: Harness) -> None:
    harness.start()
    first = harness.ask(Accept(harness.fft("a"), "key-1"))
    second = harness.ask(Accept(harness.fft("a"), "key-1"))
    assert first.id == second.id
    harness.wait(first.id)
    assert list(harness.states()) == [first.id]

    def ends() -> list[Progress]:
        events = harness.events.payloads()
        return [p for p in events if isinstance(p, Progress) and p.state.finished]

    harness.events.wait_for(lambda: len(ends()) >= 1)
    harness.system.stop(timeout=WAIT)  # nothing more can arrive
    assert [p.job for p in ends()] == [first.id]


def test_at_most_max_jobs_run_and_a_queued_job_can_be_cancelled(harness: Harness) -> None:
    harness.start(max_jobs=1)
    running = harness.ask(Accept(harness.slow("s")))
    queued = harness.ask(Accept(harness.fft("q")))
    assert harness.states() == {running.id: "running", queued.id: "accepted"}
    cancelled = harness.ask(Cancel(queued.id))
    assert cancelled.state is JobState.CANCELLED
    assert harness.states()[queued.id] == "cancelled"
    assert harness.wait(running.id).state is JobState.DONE
    assert not Path(queued.output).exists()  # it never ran


def test_cancelling_a_running_job_is_journaled_at_once(harness: Harness) -> None:
    harness.start()
    info = harness.ask(Accept(harness.slow("s", lines=12)))
    assert harness.ask(Cancel(info.id)).state is JobState.CANCELLED
    assert harness.states()[info.id] == "cancelled"
    assert harness.wait(info.id).state is JobState.CANCELLED
    assert not Path(info.output).exists()


def test_drain_answers_when_running_jobs_end_and_refuses_new_ones(harness: Harness) -> None:
    harness.start(max_jobs=1)
    running = harness.ask(Accept(harness.slow("s")))
    queued = harness.ask(Accept(harness.fft("q")))
    future = harness.system.lookup("store").ask_future(Drain(), timeout=60)
    refused = harness.ask(Accept(harness.fft("late")))
    assert isinstance(refused, Rejected) and refused.code == "busy"
    drained = future.result(60)
    assert drained == Drained(queued=1)
    assert harness.states() == {running.id: "done", queued.id: "accepted"}


def test_release_puts_running_jobs_back_without_a_crash_retry(harness: Harness) -> None:
    harness.start()
    info = harness.ask(Accept(harness.slow("s", lines=12)))
    released = harness.ask(Release())
    assert released == Released((info.id,))
    harness.system.stop(graceful=False, timeout=WAIT)  # as the daemon stops after a drain
    with Journal(harness.journal) as journal:
        job = journal.get(info.id)
    assert (job.state, job.crash_retries) == (JobState.ACCEPTED, 0)


def test_recovery_removes_temp_files_and_runs_unfinished_jobs_once(harness: Harness) -> None:
    spec = harness.fft("crashed")
    with Journal(harness.journal) as journal:
        job, _ = journal.submit("fft", pack(spec_to_wire(spec)))
        journal.mark_running(job.id)  # the daemon died while it ran
    fd, temp = create_temp(spec.output)  # ... leaving its temp output behind
    os.close(fd)
    harness.start()
    done = harness.wait(job.id)
    assert done.state is JobState.DONE and done.crash_retries == 1
    assert not Path(temp).exists()
    assert Path(spec.output).exists()
    assert harness.states() == {job.id: "done"}


def test_unknown_jobs_are_not_found(harness: Harness) -> None:
    harness.start()
    for request in (GetJob("log-99"), Cancel("log-99"), WaitJob("log-99")):
        answer = harness.ask(request)
        assert isinstance(answer, Rejected) and answer.code == "not_found"


def test_a_key_reused_for_another_job_is_a_conflict(harness: Harness) -> None:
    harness.start()
    first = harness.ask(Accept(harness.fft("a"), "key-1"))
    other = harness.ask(Accept(harness.fft("b"), "key-1"))
    assert isinstance(other, Rejected) and other.code == "conflict" and first.id in other.message


def test_a_known_key_during_a_drain_gets_its_job_not_busy(harness: Harness) -> None:
    harness.start()
    first = harness.ask(Accept(harness.fft("a"), "key-1"))
    harness.wait(first.id)
    assert harness.ask(Drain()) == Drained(queued=0)
    again = harness.ask(Accept(harness.fft("a"), "key-1"))
    assert isinstance(again, JobInfo) and again.id == first.id


def test_paths_are_confined_again_when_a_queued_job_starts(tmp_path: Path) -> None:
    system = ActorSystem("test", clock=FakeClock())
    inputs, outputs, outside = tmp_path / "in", tmp_path / "out", tmp_path / "outside"
    for d in (inputs / "sub", outputs, outside):
        d.mkdir(parents=True)
    (outside / "secret.log").write_text("root:x:0:0:SECRET\n")
    (inputs / "sub" / "secret.log").write_text("harmless\n")
    harness = Harness(tmp_path, system)
    try:
        harness.start(max_jobs=1, roots=((str(inputs),), (str(outputs),)))
        slow = harness.slow("s", lines=12)
        (inputs / "s.log").write_bytes(Path(slow.input or "").read_bytes())
        slow = JobSpec(JobKind.LOG, str(outputs / "s.jsonl"), str(inputs / "s.log"), slow.options)
        blocker = harness.ask(Accept(slow))  # holds the only slot
        swapped = JobSpec(
            JobKind.LOG, str(outputs / "o.jsonl"), str(inputs / "sub" / "secret.log"), LogOptions()
        )
        queued = harness.ask(Accept(swapped))
        # While it waits, the input's directory becomes a symlink out of the root.
        (inputs / "sub" / "secret.log").unlink()
        (inputs / "sub").rmdir()
        (inputs / "sub").symlink_to(outside)
        failed = harness.wait(queued.id)
        assert failed.state is JobState.FAILED and "invalid_path" in (failed.error or "")
        assert not (outputs / "o.jsonl").exists()
        assert harness.wait(blocker.id).state is JobState.DONE
    finally:
        system.stop(timeout=WAIT)


def test_a_job_that_keeps_killing_the_daemon_fails_instead_of_looping(harness: Harness) -> None:
    spec = harness.fft("poison")
    with Journal(harness.journal) as journal:
        job, _ = journal.submit("fft", pack(spec_to_wire(spec)))
        for _ in range(6):  # the daemon died under it six times
            journal.mark_running(job.id)
            journal.recover()
        journal.mark_running(job.id)
    harness.start()
    failed = harness.wait(job.id)
    assert failed.state is JobState.FAILED and "died 7 times" in (failed.error or "")
    assert not Path(spec.output).exists()


def _idle_actors(system: ActorSystem) -> Launch:
    """A launcher whose jobs never end: a reader and a writer that only record."""

    def launch(
        job: str, spec: JobSpec, ended: JobEnded, roots: Roots | None
    ) -> tuple[ActorRef, ActorRef]:
        reader = system.spawn(lambda: RecordingActor(Recorder()), f"{job}.reader")
        return reader, system.spawn(lambda: RecordingActor(Recorder()), f"{job}.writer")

    return launch


def test_a_job_that_brings_the_daemon_down_counts_from_its_first_death(tmp_path: Path) -> None:
    # An escalation stops the daemon through a release: each running job counts a crash
    # retry then, from the first death, so the cap holds (without it the count stayed 0 and
    # systemd restarted the daemon into the same job forever). The launcher is a stand-in
    # that never ends a job: each one is running when the daemon goes down.
    journal = str(tmp_path / "journal.sqlite3")
    spec = JobSpec(JobKind.FFT, str(tmp_path / "poison.npy"), None, FFTOptions(synthetic=(1, 1, 1)))
    job_id = None
    for death in range(1, 8):
        system = ActorSystem("test", clock=FakeClock())
        try:
            system.spawn(functools.partial(JobStore, journal, _idle_actors(system), 1), STORE)
            store = system.lookup("store")
            if job_id is None:
                job_id = store.ask(Accept(spec), timeout=WAIT).id
            if death == 7:  # six deaths: over the cap of five retries
                failed = store.ask(WaitJob(job_id), timeout=WAIT)
                assert failed.state is JobState.FAILED and "died 6 times" in (failed.error or "")
                break
            assert store.ask(Release(crashed=True), timeout=WAIT) == Released((job_id,))
        finally:
            system.stop(timeout=WAIT)
        with Journal(journal) as j:
            assert j.get(job_id).crash_retries == death
    assert not Path(spec.output).exists()


def test_each_job_event_is_one_log_line_and_the_job_carries_its_times(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import time

    from actors.wire import info_to_wire

    harness.start()
    before = time.time()
    with caplog.at_level(logging.INFO, logger="actors.store"):
        done = harness.wait(harness.ask(Accept(harness.fft("good"))).id)
        cancelled = harness.ask(Accept(harness.slow("slow", lines=40)))
        harness.ask(Cancel(cancelled.id))
        cancelled = harness.wait(cancelled.id)
    after = time.time()
    assert done.created is not None and done.started is not None and done.ended is not None
    assert before <= done.created <= done.started <= done.ended <= after
    assert cancelled.ended is not None and cancelled.state is JobState.CANCELLED
    wire = info_to_wire(done)  # RFC 3339, UTC, to the millisecond
    assert wire["ended"] is not None and wire["ended"].endswith("Z") and "T" in wire["ended"]
    lines = [r.getMessage() for r in caplog.records]

    def one(prefix: str) -> str:
        (line,) = [text for text in lines if text.startswith(prefix)]
        return line

    assert "synthetic 4x16x16" in one(f"job {done.id} submitted: fft")
    assert one(f"job {done.id} started: fft").endswith("good.npy")
    assert one(f"job {done.id} done after ").endswith("fft, 4 of 4 units")
    assert one(f"job {cancelled.id} submitted: log")
    assert one(f"job {cancelled.id} cancelled after ")


# -- outputs: never replaced without a word ----------------------------------------------------


def test_an_existing_output_is_refused_unless_the_job_says_overwrite(harness: Harness) -> None:
    harness.start()
    spec = harness.fft("taken")
    Path(spec.output).write_bytes(b"precious")
    # What the submitting thread finds (`submit_job`): the store never looks at the file.
    refused = harness.ask(Accept(spec, taken=output_taken(spec)))
    assert isinstance(refused, Rejected) and refused.code is ErrorCode.CONFLICT
    assert "already exists" in refused.message and "--overwrite" in refused.message
    assert harness.states() == {}  # nothing journaled
    assert Path(spec.output).read_bytes() == b"precious"
    replaced = harness.ask(Accept(dataclasses.replace(spec, overwrite=True)))
    assert harness.wait(replaced.id).state is JobState.DONE
    assert Path(spec.output).read_bytes() != b"precious"


def test_a_log_jobs_existing_rejects_file_is_refused_too(harness: Harness) -> None:
    harness.start()
    spec = harness.slow("r", lines=1)
    Path(spec.output + ".rejects").write_bytes(b"kept")
    refused = harness.ask(Accept(spec, taken=output_taken(spec)))
    assert isinstance(refused, Rejected) and refused.code is ErrorCode.CONFLICT
    assert ".rejects already exists" in refused.message


def test_a_retried_submit_of_a_finished_job_gets_the_job_not_a_conflict(
    harness: Harness,
) -> None:
    harness.start()
    spec = harness.fft("once")
    first = harness.ask(Accept(spec, "key-once"))
    assert harness.wait(first.id).state is JobState.DONE
    inode = os.stat(spec.output).st_ino
    again = harness.ask(Accept(spec, "key-once", output_taken(spec)))  # the key wins
    assert isinstance(again, JobInfo) and again.id == first.id and again.state is JobState.DONE
    assert os.stat(spec.output).st_ino == inode
    # A new job for the same output: refused (as the submitting thread finds it taken).
    fresh = harness.ask(Accept(spec, "key-other", output_taken(spec)))
    assert isinstance(fresh, Rejected) and fresh.code is ErrorCode.CONFLICT


def test_two_unfinished_jobs_never_write_the_same_output(harness: Harness) -> None:
    harness.start(max_jobs=1)
    running = harness.ask(Accept(harness.slow("s", lines=12)))
    queued = harness.ask(Accept(harness.fft("q")))
    for other in (running, queued):  # running, then queued: both hold their output
        spec = JobSpec(JobKind.FFT, other.output, None, FFTOptions(synthetic=(1, 2, 2)))
        clash = harness.ask(Accept(dataclasses.replace(spec, overwrite=True)))
        assert isinstance(clash, Rejected) and clash.code is ErrorCode.CONFLICT
        assert other.id in clash.message
    harness.ask(Cancel(running.id))
    assert harness.wait(queued.id).state is JobState.DONE


def test_an_output_that_appears_while_its_job_is_queued_fails_it_at_start(
    harness: Harness,
) -> None:
    harness.start(max_jobs=1)
    running = harness.ask(Accept(harness.slow("s", lines=12)))
    spec = harness.fft("late")
    queued = harness.ask(Accept(spec))
    Path(spec.output).write_bytes(b"someone else's")
    harness.ask(Cancel(running.id))
    failed = harness.wait(queued.id)
    assert failed.state is JobState.FAILED
    assert (failed.error or "").startswith("conflict: ") and "already exists" in (
        failed.error or ""
    )
    assert Path(spec.output).read_bytes() == b"someone else's"
    assert harness.states()[queued.id] == "failed"


# -- nothing a job, a row or a caller does takes the store down --------------------------------


def _store_alive(harness: Harness) -> None:
    assert harness.system.lookup(STORE).alive
    assert harness.system.escalations == []


def test_hundreds_of_queued_jobs_failing_at_start_fail_in_a_loop_not_a_recursion(
    harness: Harness, tmp_path: Path
) -> None:
    # Each failed start settles its job, and settling starts the next: once a recursion
    # (one stack frame set per job), which took the store down past ~330 jobs.
    harness.start(max_jobs=0)  # nothing starts yet
    # Every one of them fails to start: its pattern does not compile (as in a journal from an
    # older release; the store takes what it is given, `check_spec` is the submit's).
    options = LogOptions(pattern="(")
    specs = [
        JobSpec(JobKind.LOG, str(tmp_path / f"{i}.jsonl"), str(tmp_path / "in.log"), options)
        for i in range(450)
    ]
    for spec in specs:
        assert isinstance(harness.ask(Accept(spec)), JobInfo)
    counts = harness.ask(SetMaxJobs(1))
    assert (counts.queued, counts.failed) == (0, 450)
    _store_alive(harness)


def test_requests_told_instead_of_asked_are_carried_out_without_an_answer(
    harness: Harness,
) -> None:
    harness.start()
    store = harness.system.lookup(STORE)
    info = harness.ask(Accept(harness.slow("s", lines=30)))
    for request in (GetJob(info.id), WaitJob(info.id), ListJobs(), StoreStatus()):
        store.tell(request)
    store.tell(Cancel(info.id))
    assert harness.wait(info.id).state is JobState.CANCELLED
    _store_alive(harness)


def test_a_note_about_a_job_that_is_not_running_is_ignored(harness: Harness) -> None:
    harness.start(max_jobs=0)
    queued = harness.ask(Accept(harness.fft("q")))
    harness.system.lookup(STORE).tell(JobError(queued.id, "from nowhere"))
    counts = harness.ask(SetMaxJobs(1))  # once, the queued job's record was gone by now
    assert counts.failed == 0
    assert harness.wait(queued.id).state is JobState.DONE
    _store_alive(harness)


def test_a_journal_row_this_release_cannot_read_is_shown_not_raised(harness: Harness) -> None:
    with Journal(harness.journal) as journal:
        job, _ = journal.submit("log", pack({"kind": "log", "output": "/o", "priority": 9}))
    harness.start()
    (listed,) = harness.ask(ListJobs())
    assert listed.id == job.id and listed.state is JobState.FAILED
    assert "unreadable spec" in (listed.error or "")
    assert harness.ask(GetJob(job.id)) == listed
    _store_alive(harness)


def test_a_queued_jobs_output_directory_that_became_a_file_fails_the_job_at_start(
    harness: Harness, tmp_path: Path
) -> None:
    spec = JobSpec(
        JobKind.FFT, str(tmp_path / "dir" / "a.npy"), None, FFTOptions(synthetic=(1, 2, 2))
    )
    with Journal(harness.journal) as journal:
        job, _ = journal.submit("fft", pack(spec_to_wire(spec)))
    (tmp_path / "dir").write_text("a file now")  # temp-file cleanup cannot list it
    harness.start()
    failed = harness.wait(job.id)
    assert failed.state is JobState.FAILED and "invalid_path" in (failed.error or "")
    _store_alive(harness)


def test_a_system_stopping_under_a_start_leaves_the_job_queued(tmp_path: Path) -> None:
    # An in-process user that stops its system without a drain: the launcher meets a system
    # that refuses spawns. Not the job's fault: it stays queued for the next start.
    journal = str(tmp_path / "journal.sqlite3")
    system = ActorSystem("test", clock=FakeClock())

    def stopping(
        job: str, spec: JobSpec, ended: JobEnded, roots: Roots | None
    ) -> tuple[ActorRef, ActorRef]:
        raise ActorStopping("the actor system is stopping")

    try:
        system.spawn(functools.partial(JobStore, journal, stopping, 1), STORE)
        spec = JobSpec(JobKind.FFT, str(tmp_path / "a.npy"), None, FFTOptions(synthetic=(1, 2, 2)))
        info = system.lookup(STORE).ask(Accept(spec), timeout=WAIT)
        assert info.state is JobState.ACCEPTED
    finally:
        system.stop(timeout=WAIT)
    with Journal(journal) as j:
        assert j.get(info.id).state is JobState.ACCEPTED


def test_a_cancel_after_a_release_is_journaled(harness: Harness) -> None:
    # The daemon is stopping (the job went back to the queue), and a client cancels it: that
    # is the client's word, kept, not dropped for the next start to run the job again.
    harness.start()
    info = harness.ask(Accept(harness.slow("s", lines=30)))
    assert harness.ask(Release()) == Released((info.id,))
    assert harness.ask(Cancel(info.id)).state is JobState.CANCELLED
    assert harness.states()[info.id] == "cancelled"
    assert harness.wait(info.id).state is JobState.CANCELLED


def test_a_started_job_says_how_far_it_has_to_go(harness: Harness, tmp_path: Path) -> None:
    # For the clients' progress: a plain log's size in bytes, an FFT stack's chunks, known
    # from the start (a gzip log's decompressed size is not: 0). The reader tells the store
    # as it opens the input, before it sends a unit: so by a job's first progress.
    harness.start()
    log = harness.ask(Accept(harness.slow("s", lines=30)))
    fft = harness.ask(Accept(harness.fft("f")))
    assert log.state is JobState.RUNNING and fft.state is JobState.RUNNING

    def first_progress(job: str) -> JobInfo:
        harness.events.wait_for(
            lambda: any(
                isinstance(p, Progress) and p.job == job and p.done >= 1
                for p in harness.events.payloads()
            )
        )
        info = harness.ask(GetJob(job))
        assert isinstance(info, JobInfo)
        return info

    log = first_progress(log.id)
    fft = first_progress(fft.id)
    assert log.input_bytes == Path(log.input or "").stat().st_size == 30 * 23
    assert (fft.input_bytes, fft.total) == (0, 4)
    packed = tmp_path / "in.log.gz"
    packed.write_bytes(gzip.compress(b"x\n" * 10))
    zipped = harness.ask(Accept(JobSpec(JobKind.LOG, str(tmp_path / "z.jsonl"), str(packed))))
    assert harness.wait(zipped.id).input_bytes == 0
    harness.ask(Cancel(log.id))


def test_retention_removes_ended_jobs_from_the_journal_and_leaves_their_outputs(
    harness: Harness,
) -> None:
    harness.start(retention=Retention(jobs=1))
    infos = [harness.ask(Accept(harness.fft(f"r{i}"))) for i in range(3)]
    for info in infos:
        assert harness.wait(info.id).state is JobState.DONE
    assert harness.ask(Prune()) == 2  # as the hourly timer does
    assert list(harness.states()) == [infos[2].id]
    assert all(Path(info.output).exists() for info in infos)  # outputs untouched
    assert isinstance(harness.ask(GetJob(infos[0].id)), Rejected)  # gone from `job` too
    metrics = harness.ask(GetJobMetrics())
    assert metrics.pruned == 2
    assert ("fft", "done", 1) in metrics.jobs
    assert harness.ask(StoreStatus()).done == 1
    # Applied at start too: a journal with more ended jobs than kept is pruned as it opens.
    harness.system.stop(timeout=WAIT)
    with sqlite3.connect(harness.journal) as db:
        db.execute("UPDATE jobs SET ended = ended - 86400 * 3")
    harness.system = ActorSystem("again", clock=FakeClock())
    try:
        harness.start(retention=Retention(days=2))
        assert harness.ask(StoreStatus()).done == 0  # answered once on_start has run
        assert harness.states() == {}
    finally:
        harness.system.stop(timeout=WAIT)


def test_jobs_by_state_and_input_bytes_as_job_shows_them(harness: Harness) -> None:
    harness.start()
    source = harness.tmp / "plain.log"
    source.write_text("2026-11-25 10:00:00 [INFO] one\n" * 100)
    spec = JobSpec(JobKind.LOG, str(harness.tmp / "plain.jsonl"), str(source), LogOptions())
    log = harness.ask(Accept(spec))
    fft = harness.ask(Accept(harness.fft("f")))
    harness.wait(log.id)
    harness.wait(fft.id)
    cancelled = harness.ask(Accept(harness.slow("c")))  # a second of parsing: still running
    harness.ask(Cancel(cancelled.id))
    harness.wait(cancelled.id)
    done = harness.ask(ListJobs(10, JobState.DONE))
    assert [info.id for info in done] == [log.id, fft.id]
    assert [i.id for i in harness.ask(ListJobs(10, JobState.CANCELLED))] == [cancelled.id]
    listed = done[0]
    assert listed.input_bytes == source.stat().st_size
    assert listed == harness.ask(GetJob(log.id))
