"""Publication exactly once: a job's output is journaled before it appears, and appears once.

The writers' order (fsync the file, journal the publication, rename, fsync the directory, then
done) is watched by wrapping the os calls; the cleanup paths by making them fail; the recovery
at each instant a kill -9 can land on by leaving the journal and the files as the kill would
(real SQLite, real files) and starting a fresh store over them. The daemon-level kills are in
test_daemon.py.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest

from actord import ActorRef, ActorSystem, RestartPolicy
from actors.beneath import Directory
from actors.demo import write_sample_log
from actors.journal import Journal
from actors.launcher import STORE, JobSystemConfig, start_job_system
from actors.model import (
    Accept,
    Cancel,
    Executor,
    FFTOptions,
    FFTSummary,
    GetJob,
    JobEnded,
    JobError,
    JobInfo,
    JobKind,
    JobSpec,
    JobState,
    LogOptions,
    LogSummary,
    Rejected,
    WaitJob,
    WriterDone,
    WriterStopped,
)
from actors.reader import synthetic_chunk
from actors.store import JobStore, Release, Released
from actors.wire import pack, spec_to_wire, summary_to_wire
from actors.writer import (
    REJECTS_SUFFIX,
    AtomicFile,
    Publishing,
    Recorded,
    create_temp,
)

from .conftest import WAIT, FakeClock, Recorder, RecordingActor

FFT_SHAPE = (4, 16, 16)
LOG_LINES = 300


# -- a store and the job system, in-process ---------------------------------------------------


class Harness:
    def __init__(self, tmp: Path, system: ActorSystem) -> None:
        self.tmp = tmp
        self.system = system
        self.journal = str(tmp / "journal.sqlite3")

    def start(self) -> None:
        config = JobSystemConfig(parser_executor=Executor.THREAD)
        start_job_system(self.system, self.journal, config)

    def ask(self, payload: object) -> Any:
        return self.system.lookup(STORE).ask(payload, timeout=WAIT)

    def run(self, spec: JobSpec) -> JobInfo:
        info = self.ask(Accept(spec))
        assert isinstance(info, JobInfo), info
        return self.wait(info.id)

    def wait(self, job: str) -> JobInfo:
        info = self.system.lookup(STORE).ask(WaitJob(job), timeout=60)
        assert isinstance(info, JobInfo), info
        return info

    def row(self, job: str) -> tuple[str, int, str | None]:
        """(state, crash_retries, publication) as another connection reads them."""
        with sqlite3.connect(self.journal) as db:
            found = db.execute(
                "SELECT state, crash_retries, publication FROM jobs WHERE id = ?", (job,)
            ).fetchone()
        assert found is not None
        return found

    def log_spec(self, name: str = "app") -> JobSpec:
        source = self.tmp / f"{name}.log"
        write_sample_log(str(source), LOG_LINES, seed=3)
        return JobSpec(JobKind.LOG, str(self.tmp / f"{name}.jsonl"), str(source), LogOptions())

    def fft_spec(self, name: str = "f") -> JobSpec:
        options = FFTOptions(synthetic=FFT_SHAPE, seed=3)
        return JobSpec(JobKind.FFT, str(self.tmp / f"{name}.npy"), None, options)

    def spec(self, kind: str) -> JobSpec:
        return self.log_spec() if kind == "log" else self.fft_spec()


def _system() -> ActorSystem:
    return ActorSystem(
        "test", clock=FakeClock(), default_policy=RestartPolicy(max_restarts=100, period=60.0)
    )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    system = _system()
    try:
        yield Harness(tmp_path, system)
    finally:
        system.stop(timeout=WAIT)


def _outputs(spec: JobSpec) -> list[str]:
    """The files a job publishes, in the order they must appear (the output last)."""
    output = os.path.abspath(spec.output)
    return [output + REJECTS_SUFFIX, output] if spec.kind is JobKind.LOG else [output]


def _temps(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


def _assert_real_result(spec: JobSpec) -> None:
    """The output is the job's own result: it ran (not a marker a test left)."""
    if spec.kind is JobKind.FFT:
        got = np.load(spec.output)
        for index in range(FFT_SHAPE[0]):
            expected = np.fft.fft2(synthetic_chunk(3, index, FFT_SHAPE[1:]))
            np.testing.assert_allclose(got[index], expected)
    else:
        records = len(Path(spec.output).read_text().splitlines())
        rejects = len(Path(spec.output + REJECTS_SUFFIX).read_text().splitlines())
        assert records + rejects == LOG_LINES


# -- (i) the order: fsync(file) -> journal -> rename -> fsync(directory) -> done ------------


@dataclass
class _Call:
    op: str  # "fsync" (a file), "fsync-dir", "rename"
    inode: int  # of the file synced or renamed
    target: str = ""  # a rename's destination
    journal: tuple[tuple[str, str, str | None], ...] = ()  # (id, state, publication) then


class _WatchedOs:
    """Wraps os.fsync, os.replace and os.rename, and notes each call in order with what the
    journal (read through its own connection) said at that instant."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, journal: str) -> None:
        self.calls: list[_Call] = []
        self.journal = journal
        self.fail: Callable[[str, str], OSError | None] = lambda op, target: None
        real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

        def fsync(fd: Any) -> None:
            status = os.fstat(fd)
            op = "fsync-dir" if stat.S_ISDIR(status.st_mode) else "fsync"
            self._note(_Call(op, status.st_ino))
            error = self.fail(op, "")
            if error is not None:
                raise error
            real_fsync(fd)

        def renamer(real: Callable[..., None]) -> Callable[..., None]:
            # The writers rename in their directory's descriptor (`beneath.Directory`).
            def rename(
                src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None
            ) -> None:
                inode = os.stat(src, dir_fd=src_dir_fd, follow_symlinks=False).st_ino
                where = "." if dst_dir_fd is None else os.readlink(f"/proc/self/fd/{dst_dir_fd}")
                target = os.path.abspath(os.path.join(where, dst))
                self._note(_Call("rename", inode, target))
                error = self.fail("rename", target)
                if error is not None:
                    raise error
                real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

            return rename

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", renamer(real_replace))
        monkeypatch.setattr(os, "rename", renamer(real_rename))

    def _note(self, call: _Call) -> None:
        if os.path.exists(self.journal):
            with sqlite3.connect(self.journal) as db:
                rows = db.execute("SELECT id, state, publication FROM jobs").fetchall()
            call.journal = tuple(rows)
        self.calls.append(call)

    def check_publication(self, job: str, spec: JobSpec) -> None:
        """Each file synced, then the publication journaled, renamed, the directory synced,
        and the job still running in the journal until then."""
        calls = self.calls
        renames = [i for i, c in enumerate(calls) if c.op == "rename" and c.target]
        finals = _outputs(spec)
        mine = [i for i in renames if calls[i].target in finals]
        assert [calls[i].target for i in mine] == finals, "renamed once each, the output last"
        for i in mine:
            rename = calls[i]
            synced = [
                j for j, c in enumerate(calls[:i]) if c.op == "fsync" and c.inode == rename.inode
            ]
            assert synced, f"{rename.target} was renamed before its data was synced"
            row = {r[0]: r for r in rename.journal}[job]
            assert row[1] == "running" and row[2] is not None and rename.target in row[2], (
                f"{rename.target} appeared before the journal knew of it: {row}"
            )
        directory = os.stat(os.path.dirname(finals[-1])).st_ino
        dir_syncs = [j for j, c in enumerate(calls) if c.op == "fsync-dir" and c.inode == directory]
        after = [j for j in dir_syncs if j > mine[-1]]
        assert after, "the directory was not synced after the renames"
        row = {r[0]: r for r in calls[after[0]].journal}[job]
        assert row[1] == "running", "the journal said done before the renames were synced"


@pytest.mark.parametrize("kind", ["log", "fft"])
def test_each_writer_syncs_journals_renames_then_syncs_the_directory(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    harness.start()
    watched = _WatchedOs(monkeypatch, harness.journal)
    spec = harness.spec(kind)
    done = harness.run(spec)
    assert done.state is JobState.DONE, done.error
    watched.check_publication(done.id, spec)
    assert harness.row(done.id) == ("done", 0, None)
    assert _temps(harness.tmp) == []
    _assert_real_result(spec)


def test_atomic_file_commit_syncs_renames_then_syncs_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The benches publish through AtomicFile.commit: the same order, without a journal.
    watched = _WatchedOs(monkeypatch, str(tmp_path / "no-journal"))
    target = tmp_path / "out.bin"
    atomic = AtomicFile(str(target))
    atomic.file.write(b"data")
    atomic.commit()
    ops = [(c.op, c.inode) for c in watched.calls]
    inode = target.stat().st_ino
    assert ops == [("fsync", inode), ("rename", inode), ("fsync-dir", tmp_path.stat().st_ino)]


# -- (ii) a write or a rename that fails: the job fails and leaves nothing --------------------


class _FullDisk:
    """A writer's temporary file on a disk that fills after the first write."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


class _FullOnClose(_FullDisk):
    """... whose close fails too: closing flushes what is buffered, on a full disk."""

    def __init__(self, file: IO[bytes], *, writes_fail: bool) -> None:
        super().__init__(file)
        self.writes = 0 if writes_fail else -(10**9)

    def close(self) -> None:
        self._file.close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_on_close(monkeypatch: pytest.MonkeyPatch, *, writes_fail: bool) -> None:
    real_init = AtomicFile.__init__

    def init(self: AtomicFile, path: str, directory: Directory | None = None) -> None:
        real_init(self, path, directory)
        self.file = _FullOnClose(self.file, writes_fail=writes_fail)  # type: ignore[assignment]

    monkeypatch.setattr(AtomicFile, "__init__", init)


def test_a_full_disk_that_also_fails_the_cleanup_still_ends_the_job_and_frees_its_slot(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once, the failing close raised out of the writer's cleanup: no WriterStopped, so the
    # job never settled, its waiters were never answered and its slot stayed taken.
    _full_on_close(monkeypatch, writes_fail=True)
    harness.start()
    spec = JobSpec(
        JobKind.LOG,
        str(harness.tmp / "app.jsonl"),
        harness.log_spec().input,
        LogOptions(block_bytes=1024),
    )
    info = harness.run(spec)
    assert "No space left" in (info.error or "")
    _assert_failed_and_nothing_left(harness, info, spec)
    assert harness.run(harness.fft_spec()).state is JobState.DONE  # the slot is free


def test_a_cancel_whose_cleanup_meets_a_full_disk_still_settles_the_job(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    _full_on_close(monkeypatch, writes_fail=False)
    harness.start()
    held = _HeldSync(monkeypatch)  # the writer waits at its first fsync: the job is running
    spec = harness.log_spec()
    info = harness.ask(Accept(spec))
    assert held.entered.wait(WAIT)
    assert harness.ask(Cancel(info.id)).state is JobState.CANCELLED
    held.go.set()
    assert harness.wait(info.id).state is JobState.CANCELLED
    assert _temps(harness.tmp) == []
    for path in _outputs(spec):
        assert not Path(path).exists()


def _assert_failed_and_nothing_left(harness: Harness, info: JobInfo, spec: JobSpec) -> None:
    assert info.state is JobState.FAILED
    assert harness.row(info.id) == ("failed", 0, None)  # no publication left to finish
    assert _temps(harness.tmp) == []
    for path in _outputs(spec):
        assert not Path(path).exists(), f"{path} left by a failed job"


def test_a_write_that_fails_mid_log_fails_the_job_and_leaves_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_init = AtomicFile.__init__

    def init(self: AtomicFile, path: str, directory: Directory | None = None) -> None:
        real_init(self, path, directory)
        self.file = _FullDisk(self.file)  # type: ignore[assignment]

    monkeypatch.setattr(AtomicFile, "__init__", init)
    harness.start()
    spec = JobSpec(
        JobKind.LOG,
        str(harness.tmp / "app.jsonl"),
        harness.log_spec().input,
        LogOptions(block_bytes=1024),  # several blocks: the second write fails
    )
    info = harness.run(spec)
    assert "No space left" in (info.error or "")
    _assert_failed_and_nothing_left(harness, info, spec)


@pytest.mark.parametrize("kind", ["log", "fft"])
def test_a_sync_that_fails_fails_the_job_and_leaves_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # Delayed allocation: a full disk may show only at the fsync before the publication.
    harness.start()
    watched = _WatchedOs(monkeypatch, harness.journal)
    watched.fail = lambda op, target: OSError(errno.ENOSPC, "disk full") if op == "fsync" else None
    spec = harness.spec(kind)
    info = harness.run(spec)
    assert "disk full" in (info.error or "")
    _assert_failed_and_nothing_left(harness, info, spec)
    assert not [c for c in watched.calls if c.op == "rename"]


@pytest.mark.parametrize(("kind", "failing"), [("log", 0), ("log", 1), ("fft", 0)])
def test_a_rename_that_fails_fails_the_job_and_leaves_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, kind: str, failing: int
) -> None:
    # The publication was journaled: the failure must end it too, and what was already
    # renamed (a log job's rejects file, when the output's rename fails) must go.
    harness.start()
    spec = harness.spec(kind)
    target = _outputs(spec)[failing]
    watched = _WatchedOs(monkeypatch, harness.journal)
    watched.fail = lambda op, dst: OSError(errno.EIO, "I/O error") if dst == target else None
    info = harness.run(spec)
    assert "I/O error" in (info.error or "")
    _assert_failed_and_nothing_left(harness, info, spec)


# -- the store's side: the publication is the point of no return -----------------------------


class _StandIns:
    """A launcher whose job actors only record: the test plays the writer (Publishing, then
    WriterDone). Keeps each job's end flag, set when the store stops the job's actors."""

    def __init__(self, system: ActorSystem) -> None:
        self.system = system
        self.ended: dict[str, JobEnded] = {}

    def __call__(
        self, job: str, spec: JobSpec, ended: JobEnded, roots: object = None
    ) -> tuple[ActorRef, ActorRef]:
        self.ended[job] = ended
        reader = self.system.spawn(lambda: RecordingActor(Recorder()), f"{job}.reader")
        return reader, self.system.spawn(lambda: RecordingActor(Recorder()), f"{job}.writer")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[ActorSystem, _StandIns, str]]:
    """A store whose jobs' actors are stand-ins (`_StandIns`)."""
    system = _system()
    launched = _StandIns(system)
    path = str(tmp_path / "journal.sqlite3")
    try:
        system.spawn(lambda: JobStore(path, launched, 4), STORE)
        yield system, launched, path
    finally:
        system.stop(timeout=WAIT)


def _running_job(
    system: ActorSystem, launched: _StandIns, tmp: Path, name: str = "f.npy"
) -> tuple[str, Publishing]:
    spec = JobSpec(JobKind.FFT, str(tmp / name), None, FFTOptions(synthetic=FFT_SHAPE))
    info = system.lookup(STORE).ask(Accept(spec), timeout=WAIT)
    assert info.state is JobState.RUNNING and info.id in launched.ended  # launched at once
    summary = FFTSummary(4, FFT_SHAPE, "complex128", "fft2", 8192, 0.1, spec.output)
    files = ((str(tmp / f".{name}.0123456789ab.tmp"), spec.output, 1234),)
    return info.id, Publishing(info.id, files, summary, 4, 4, 8192)


def _publication(path: str, job: str) -> tuple[str, str | None]:
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT state, publication FROM jobs WHERE id = ?", (job,)).fetchone()
    assert found is not None
    return found


def test_after_the_publication_only_its_writer_can_fail_the_job(
    store: tuple[ActorSystem, _StandIns, str], tmp_path: Path
) -> None:
    system, launched, path = store
    ref = system.lookup(STORE)
    job, publishing = _running_job(system, launched, tmp_path)
    assert ref.ask(publishing, timeout=WAIT) == Recorded(job)
    ref.tell(JobError(job, "a late note"), sender=f"{job}.reader")
    assert ref.ask(GetJob(job), timeout=WAIT).state is JobState.RUNNING  # after the note
    ref.tell(WriterDone(job, publishing.summary), sender=f"{job}.writer")
    assert ref.ask(WaitJob(job), timeout=WAIT).state is JobState.DONE
    # The writer itself: its renames failed, and it removed what it had renamed.
    other, publishing = _running_job(system, launched, tmp_path, "g.npy")
    assert ref.ask(publishing, timeout=WAIT) == Recorded(other)
    ref.tell(JobError(other, "rename failed"), sender=f"{other}.writer")
    ref.tell(WriterStopped(other), sender=f"{other}.writer")
    failed = ref.ask(WaitJob(other), timeout=WAIT)
    assert failed.state is JobState.FAILED and failed.error == "rename failed"
    assert _publication(path, other) == ("failed", None)


def test_a_cancel_after_the_publication_is_too_late_and_the_job_ends_done(
    store: tuple[ActorSystem, _StandIns, str], tmp_path: Path
) -> None:
    system, launched, path = store
    job, publishing = _running_job(system, launched, tmp_path)
    ref = system.lookup(STORE)
    assert ref.ask(publishing, timeout=WAIT) == Recorded(job)
    state, publication = _publication(path, job)
    assert state == "running" and publication is not None and publishing.files[0][0] in publication
    answer = ref.ask(Cancel(job), timeout=WAIT)
    assert isinstance(answer, JobInfo) and answer.state is JobState.RUNNING
    assert _publication(path, job)[0] == "running"
    assert not launched.ended[job]  # the writer is left alone to finish
    ref.tell(WriterDone(job, publishing.summary))
    done = ref.ask(WaitJob(job), timeout=WAIT)
    assert done.state is JobState.DONE and done.summary == publishing.summary
    assert _publication(path, job) == ("done", None)


def test_a_stop_leaves_a_publishing_job_to_be_finished_not_run_again(
    store: tuple[ActorSystem, _StandIns, str], tmp_path: Path
) -> None:
    system, launched, path = store
    job, publishing = _running_job(system, launched, tmp_path)
    ref = system.lookup(STORE)
    assert ref.ask(publishing, timeout=WAIT) == Recorded(job)
    assert ref.ask(Release(), timeout=WAIT) == Released(())
    state, publication = _publication(path, job)
    assert state == "running" and publication is not None


def test_a_cancelled_job_is_refused_its_publication(
    store: tuple[ActorSystem, _StandIns, str], tmp_path: Path
) -> None:
    system, launched, path = store
    job, publishing = _running_job(system, launched, tmp_path)
    ref = system.lookup(STORE)
    assert ref.ask(Cancel(job), timeout=WAIT).state is JobState.CANCELLED
    assert isinstance(ref.ask(publishing, timeout=WAIT), Rejected)
    assert _publication(path, job) == ("cancelled", None)


def test_a_released_job_is_refused_its_publication(
    store: tuple[ActorSystem, _StandIns, str], tmp_path: Path
) -> None:
    system, launched, path = store
    job, publishing = _running_job(system, launched, tmp_path)
    ref = system.lookup(STORE)
    assert ref.ask(Release(), timeout=WAIT) == Released((job,))
    assert isinstance(ref.ask(publishing, timeout=WAIT), Rejected)
    assert _publication(path, job) == ("accepted", None)


def test_a_job_the_store_does_not_run_is_refused_its_publication(
    store: tuple[ActorSystem, _StandIns, str], tmp_path: Path
) -> None:
    system, launched, _ = store
    job, publishing = _running_job(system, launched, tmp_path)
    ref = system.lookup(STORE)
    assert ref.ask(publishing, timeout=WAIT) == Recorded(job)
    again = ref.ask(publishing, timeout=WAIT)  # once only
    assert isinstance(again, Rejected)
    stranger = Publishing("fft-99", publishing.files, publishing.summary, 4, 4, 8192)
    assert isinstance(ref.ask(stranger, timeout=WAIT), Rejected)


class _HeldSync:
    """Holds the first fsync of a regular file (a writer's, before it asks for the record)
    until the test lets go: something can then happen to the job at that exact instant."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        real_fsync = os.fsync

        def fsync(fd: Any) -> None:
            if not self.entered.is_set() and stat.S_ISREG(os.fstat(fd).st_mode):
                self.entered.set()
                assert self.go.wait(WAIT)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("kind", ["log", "fft"])
def test_a_job_cancelled_as_its_writer_publishes_leaves_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    harness.start()
    held = _HeldSync(monkeypatch)
    spec = harness.spec(kind)
    info = harness.ask(Accept(spec))
    assert held.entered.wait(WAIT)
    assert harness.ask(Cancel(info.id)).state is JobState.CANCELLED
    held.go.set()
    assert harness.wait(info.id).state is JobState.CANCELLED
    assert harness.row(info.id) == ("cancelled", 0, None)
    assert _temps(harness.tmp) == []
    for path in _outputs(spec):
        assert not Path(path).exists()


@pytest.mark.parametrize("kind", ["log", "fft"])
def test_a_job_released_as_its_writer_publishes_is_refused_and_leaves_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # The daemon stops: the job goes back to the queue, so its writer must not publish (the
    # next start runs it again, and would replace what it had published).
    harness.start()
    held = _HeldSync(monkeypatch)
    spec = harness.spec(kind)
    info = harness.ask(Accept(spec))
    assert held.entered.wait(WAIT)
    assert harness.ask(Release()) == Released((info.id,))
    (writer,) = [t for t in threading.enumerate() if t.name == f"actord:{info.id}.writer"]
    held.go.set()
    writer.join(WAIT)  # refused, it removes its files and stops
    assert not writer.is_alive()
    assert harness.row(info.id) == ("accepted", 0, None)
    assert _temps(harness.tmp) == []
    for path in _outputs(spec):
        assert not Path(path).exists()


# -- (iii) recovery at each instant a kill -9 can land on -------------------------------------

# Each instant, as the kill leaves it (all before the journal says done):
#   synced: the files written and synced, the publication not yet journaled;
#   journaled: the publication committed, nothing renamed;
#   between: a log job's rejects file renamed, its output not yet;
#   renamed: every file in place (the directory synced or not);
#   overwrite: journaled, nothing renamed, an older file already at the output's path;
#   lost: journaled, but the files are gone (a failed rename cleaned up, a power cut);
#   between-lost: a log job's rejects file renamed, its output's temporary file gone;
#   overwrite-lost: journaled, an older file at the output's path, the temporary file gone
#   (the older file must not pass for the job's output).
PUBLISHED = {"journaled", "between", "renamed", "overwrite"}
_LOG_INSTANTS = ("synced", "journaled", "between", "renamed", "lost", "between-lost")
_FFT_INSTANTS = ("synced", "journaled", "renamed", "overwrite", "lost", "overwrite-lost")
INSTANTS = [
    *(("log", instant) for instant in _LOG_INSTANTS),
    *(("fft", instant) for instant in _FFT_INSTANTS),
]


def _marker(kind: str, final: str) -> bytes:
    """What the killed run wrote: not what a new run would write, so a re-run shows."""
    if kind == "fft":
        import io

        buffer = io.BytesIO()
        np.save(buffer, np.zeros(FFT_SHAPE, np.complex128))
        return buffer.getvalue()
    return f"written by the killed run for {os.path.basename(final)}\n".encode()


def _leave_as_a_kill_would(
    harness: Harness, kind: str, instant: str
) -> tuple[str, JobSpec, dict[str, int], LogSummary | FFTSummary]:
    """The journal and the files as a kill -9 at `instant` leaves them; the inode each final
    path must have once the job is done (for the instants after the publication)."""
    spec = harness.spec(kind)
    finals = _outputs(spec)
    if instant.startswith("overwrite"):
        spec = dataclasses.replace(spec, overwrite=True)
        Path(finals[-1]).write_bytes(b"an older output, to be replaced by this job's")
    files = []
    inodes = {}
    for final in finals:
        fd, temp = create_temp(final)
        with os.fdopen(fd, "wb") as out:
            out.write(_marker(kind, final))
            out.flush()
            os.fsync(out.fileno())
        inodes[final] = os.stat(temp).st_ino
        files.append((temp, final, inodes[final]))
    if kind == "fft":
        summary: LogSummary | FFTSummary = FFTSummary(
            4, FFT_SHAPE, "complex128", "fft2", 8192, 0.5, finals[-1]
        )
    else:
        summary = LogSummary(
            LOG_LINES, 290, 10, 0, 0, 0, (("INFO", 290),), 9999, 0.5, *finals[::-1]
        )
    result = {"done": 4, "total": 4, "bytes": 8192, "summary": summary_to_wire(summary)}
    with Journal(harness.journal) as journal:
        job, _ = journal.submit(kind, pack(spec_to_wire(spec)))
        journal.mark_running(job.id)
        if instant != "synced":
            journal.record_publication(job.id, files, result=pack(result))
    renamed = {"between": 1, "between-lost": 1, "renamed": len(files)}.get(instant, 0)
    for temp, final, _ in files[:renamed]:
        os.replace(temp, final)
    if instant.endswith("lost"):
        for temp, _, _ in files[renamed:]:
            os.unlink(temp)
    return job.id, spec, inodes, summary


@pytest.mark.parametrize(("kind", "instant"), INSTANTS)
def test_a_restart_after_a_kill_ends_the_job_done_exactly_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, kind: str, instant: str
) -> None:
    job, spec, inodes, summary = _leave_as_a_kill_would(harness, kind, instant)
    watched = _WatchedOs(monkeypatch, harness.journal)
    harness.start()
    done = harness.wait(job)
    assert done.state is JobState.DONE, done.error
    state, crash_retries, publication = harness.row(job)
    assert (state, publication) == ("done", None)
    assert _temps(harness.tmp) == []
    if instant in PUBLISHED:
        # Finished, not run again: the killed run's files, each with the inode it had.
        assert crash_retries == 0
        assert done.summary == summary
        for final, inode in inodes.items():
            assert os.stat(final).st_ino == inode, f"{final} was replaced"
            assert Path(final).read_bytes() == _marker(kind, final)
        renames = [c for c in watched.calls if c.op == "rename"]
        if renames:  # the renames a restart completes are synced before it says done
            later = watched.calls[watched.calls.index(renames[-1]) :]
            syncs = [c for c in later if c.op == "fsync-dir"]
            assert syncs and {r[1] for r in syncs[0].journal} == {"running"}
    else:
        # Nothing was published: the job ran again, a crash retry counted for the death.
        assert crash_retries == 1
        _assert_real_result(spec)


def test_a_rename_that_fails_at_the_restart_fails_the_job_and_leaves_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Never run again (its output may be half in place): the job fails, saying why.
    job, spec, _, _ = _leave_as_a_kill_would(harness, "log", "journaled")
    watched = _WatchedOs(monkeypatch, harness.journal)
    watched.fail = lambda op, dst: OSError(errno.EROFS, "read-only") if op == "rename" else None
    harness.start()
    failed = harness.wait(job)
    assert failed.state is JobState.FAILED and "read-only" in (failed.error or "")
    assert harness.row(job) == ("failed", 0, None)
    assert _temps(harness.tmp) == []
    for path in _outputs(spec):
        assert not Path(path).exists()
