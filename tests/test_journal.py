"""The SQLite job journal: commits before returning, idempotency, recovery after a crash."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actord import InvalidArgument, UnknownActor
from actors.journal import Journal, JournalState


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    with Journal(tmp_path / "jobs.db") as j:
        yield j  # type: ignore[misc]


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
    with pytest.raises(UnknownActor):
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
