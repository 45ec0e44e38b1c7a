"""The SQLite job journal: commits before returning, idempotency, recovery after a crash."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actord import InvalidArgument
from actors.journal import SCHEMA_VERSION, Journal, JournalState, JournalUnavailable, UnknownJob


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "jobs.db") as j:
        yield j


def test_wal_and_full_sync(journal: Journal) -> None:
    db = sqlite3.connect(journal.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_submit_get_and_lifecycle(journal: Journal) -> None:
    job, created = journal.submit("log", b"\x81\xa1a\x01")
    assert created
    assert job.id == "log-1"
    assert job.state is JournalState.ACCEPTED
    assert journal.get("log-1").spec == b"\x81\xa1a\x01"
    assert journal.mark_running("log-1").state is JournalState.RUNNING
    done = journal.finish("log-1", JournalState.DONE, result=b"summary")
    assert (done.state, done.result, done.crash_retries) == (JournalState.DONE, b"summary", 0)
    with pytest.raises(InvalidArgument):
        journal.finish("log-1", JournalState.FAILED, error="twice")
    with pytest.raises(InvalidArgument):
        journal.finish("log-1", JournalState.RUNNING)
    with pytest.raises(UnknownJob):
        journal.get("log-99")


def test_the_same_idempotency_key_gives_the_same_job(journal: Journal) -> None:
    first, created = journal.submit("fft", b"a", idempotency_key="k1")
    again, created_again = journal.submit("fft", b"b", idempotency_key="k1")
    assert created and not created_again
    assert again.id == first.id and again.spec == b"a"
    assert len(journal.jobs()) == 1


def test_recover_requeues_unfinished_and_counts_crash_retries(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with Journal(path) as j:
        j.submit("log", b"1")  # accepted, never started
        running, _ = j.submit("log", b"2")
        j.mark_running(running.id)
        done, _ = j.submit("log", b"3")
        j.finish(done.id, JournalState.DONE)
        failed, _ = j.submit("log", b"4")
        j.finish(failed.id, JournalState.FAILED, error="its own failure")
    with Journal(path) as j:
        recovered = j.recover()
        assert [r.spec for r in recovered] == [b"1", b"2"]
        assert all(r.state is JournalState.ACCEPTED for r in recovered)
        assert [r.crash_retries for r in recovered] == [0, 1]
        assert j.get(failed.id).error == "its own failure"  # failures are not crash retries
        assert j.get(failed.id).crash_retries == 0


def test_a_submitted_job_survives_kill_9(tmp_path: Path) -> None:
    # A real process submits, prints the id once submit has returned, and is killed with
    # SIGKILL before it can close anything: the job must be in the journal.
    path = tmp_path / "jobs.db"
    code = textwrap.dedent(
        f"""
        import sys
        from actors.journal import Journal
        j = Journal({str(path)!r})
        job, _ = j.submit("log", b"spec", idempotency_key="once")
        j.mark_running(job.id)
        print(job.id, flush=True)
        sys.stdin.read()  # wait to be killed
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    job_id = child.stdout.readline().strip()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.stdin is not None
    child.stdin.close()
    child.stdout.close()
    with Journal(path) as j:
        (recovered,) = j.recover()
        assert recovered.id == job_id
        assert recovered.crash_retries == 1
        again, created = j.submit("log", b"other", idempotency_key="once")
        assert not created and again.id == job_id


def test_the_connection_belongs_to_its_thread(journal: Journal) -> None:
    import threading

    errors: list[BaseException] = []

    def other() -> None:
        try:
            journal.jobs()
        except sqlite3.ProgrammingError as error:
            errors.append(error)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(10)
    assert errors, "a second thread used the journal's connection"


FILES = ((".out.rejects.0123456789ab.tmp", "out.rejects", 11), (".out.0123456789ab.tmp", "out", 12))


def test_a_publication_is_journaled_once_and_ends_with_the_job(journal: Journal) -> None:
    job, _ = journal.submit("log", b"spec")
    with pytest.raises(InvalidArgument):  # only a running job publishes
        journal.record_publication(job.id, FILES, result=b"r")
    journal.mark_running(job.id)
    publishing = journal.record_publication(job.id, FILES, result=b"summary")
    assert publishing.state is JournalState.RUNNING
    assert (publishing.publication, publishing.result) == (FILES, b"summary")
    with pytest.raises(InvalidArgument):  # once
        journal.record_publication(job.id, FILES, result=b"again")
    done = journal.finish(job.id, JournalState.DONE, result=b"summary")
    assert done.publication == ()


def test_recover_counts_a_death_but_leaves_a_publishing_job_to_be_finished(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    with Journal(path) as j:
        running, _ = j.submit("log", b"1")
        j.mark_running(running.id)
        publishing, _ = j.submit("log", b"2")
        j.mark_running(publishing.id)
        j.record_publication(publishing.id, FILES, result=b"summary")
    with Journal(path) as j:
        first, second = j.recover()
    assert (first.id, first.state, first.crash_retries) == (running.id, JournalState.ACCEPTED, 1)
    # Not run again, so no retry: the store completes its publication and marks it done.
    assert (second.id, second.state, second.crash_retries) == (
        publishing.id,
        JournalState.RUNNING,
        0,
    )
    assert (second.publication, second.result) == (FILES, b"summary")


def test_release_voids_a_publication_and_counts_a_death_only_if_the_daemon_crashed(
    journal: Journal,
) -> None:
    clean, _ = journal.submit("log", b"1")
    crashed, _ = journal.submit("log", b"2")
    for job in (clean, crashed):
        journal.mark_running(job.id)
        journal.record_publication(job.id, FILES, result=b"summary")
    released = journal.release(clean.id)
    assert (released.state, released.crash_retries, released.publication) == (
        JournalState.ACCEPTED,
        0,
        (),
    )
    # An escalation takes the daemon down: the first death counts, as a kill -9's would.
    released = journal.release(crashed.id, crashed=True)
    assert (released.state, released.crash_retries) == (JournalState.ACCEPTED, 1)


class _Clock:
    """`time` for the journal: each reading one second after the last (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr("actors.journal.time", clock)
    return clock


def test_started_and_ended_come_from_mark_running_and_finish(
    journal: Journal, clock: _Clock
) -> None:
    job, _ = journal.submit("fft", b"spec")
    assert (job.created, job.started, job.ended) == (1001.0, None, None)
    running = journal.mark_running(job.id)
    assert (running.started, running.ended, running.updated) == (1002.0, None, 1002.0)
    done = journal.finish(job.id, JournalState.DONE, result=b"r")
    assert (done.created, done.started, done.ended, done.updated) == (
        1001.0,
        1002.0,
        1003.0,
        1003.0,
    )
    assert journal.get(job.id) == done  # as committed, not only as returned

    # Ended without ever starting (cancelled while queued): no start time.
    queued, _ = journal.submit("fft", b"spec")
    cancelled = journal.finish(queued.id, JournalState.CANCELLED, error="cancelled")
    assert (cancelled.started, cancelled.ended) == (None, 1005.0)


def test_a_job_started_again_gets_the_new_start_and_no_end_until_it_ends(
    tmp_path: Path, clock: _Clock
) -> None:
    path = tmp_path / "jobs.db"
    with Journal(path) as j:
        job, _ = j.submit("fft", b"spec")  # 1001
        j.mark_running(job.id)  # 1002
        released = j.release(job.id)  # 1003: a clean stop re-queues it
        assert (released.state, released.started, released.ended) == (
            JournalState.ACCEPTED,
            1002.0,  # when it last started: kept until it starts again
            None,
        )
        assert j.mark_running(job.id).started == 1004.0
    with Journal(path) as j:  # the daemon died under it: recover re-queues it
        (recovered,) = j.recover()  # 1005
        assert (recovered.crash_retries, recovered.started, recovered.ended) == (1, 1004.0, None)
        again = j.mark_running(job.id)  # 1006
        assert (again.started, again.ended) == (1006.0, None)
        failed = j.finish(job.id, JournalState.FAILED, error="its own")  # 1007
        assert (failed.started, failed.ended) == (1006.0, 1007.0)


def test_a_new_journal_is_created_at_the_latest_schema_version(tmp_path: Path) -> None:
    with Journal(tmp_path / "jobs.db") as j:
        assert j.version == SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "jobs.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_write_the_disk_cannot_take_is_rolled_back_and_the_journal_goes_on(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        with Journal(state / "journal.sqlite3") as journal:
            first, _ = journal.submit("log", b"spec")
            filler = state / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
            with pytest.raises(OSError):  # ENOSPC: the disk is full
                while True:
                    os.write(fd, b"\0" * 4096)
            os.close(fd)
            for _ in range(3):
                with pytest.raises(JournalUnavailable) as refused:
                    journal.submit("log", b"x" * 8192)
                assert str(state) in str(refused.value) and "full" in str(refused.value)
                assert refused.value.code.value == "unavailable"
            assert [job.id for job in journal.jobs()] == [first.id]  # nothing half-written
            assert journal.get(first.id).state is JournalState.ACCEPTED
            filler.unlink()
            second, created = journal.submit("log", b"x" * 8192)  # the same connection
            assert created and [job.id for job in journal.jobs()] == [first.id, second.id]
            assert journal.finish(first.id, JournalState.DONE).state is JournalState.DONE
    finally:
        subprocess.run(["umount", str(state)], capture_output=True, check=False, timeout=30)


def _ended(journal: Journal, n: int, state: JournalState = JournalState.DONE) -> list[str]:
    ids = []
    for _ in range(n):
        job, _ = journal.submit("log", b"\x80")
        journal.mark_running(job.id)
        journal.finish(job.id, state)
        ids.append(job.id)
    return ids


def test_prune_removes_only_ended_jobs_beyond_the_newest_n(journal: Journal) -> None:
    old = _ended(journal, 3)
    waiting, _ = journal.submit("log", b"\x80")  # unfinished: always kept
    newest = _ended(journal, 2, JournalState.FAILED)
    removed = journal.prune(keep=3)
    assert [job_id for job_id, _, _ in removed] == [old[1], old[0]]
    assert removed[0][1:] == ("log", JournalState.DONE)
    assert [j.id for j in journal.jobs()] == [old[2], waiting.id, *newest]
    assert journal.prune(keep=3) == []


def test_prune_by_age_and_jobs_by_state(journal: Journal) -> None:
    first = _ended(journal, 2)
    journal._db.execute("UPDATE jobs SET ended = ended - 86400 * 10 WHERE id = ?", (first[0],))
    later = _ended(journal, 1, JournalState.CANCELLED)
    running, _ = journal.submit("fft", b"\x80")
    journal.mark_running(running.id)
    journal._db.execute("UPDATE jobs SET updated = 0, created = 0")  # age is the end's
    removed = journal.prune(ended_before=time.time() - 86400 * 5)
    assert [job_id for job_id, _, _ in removed] == [first[0]]
    assert [j.id for j in journal.jobs(state=JournalState.DONE)] == [first[1]]
    assert [j.id for j in journal.jobs(state=JournalState.CANCELLED, limit=5)] == later
    assert [j.id for j in journal.jobs(state=JournalState.RUNNING)] == [running.id]
