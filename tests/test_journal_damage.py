"""A journal that knows when it is damaged, and says where and what to do.

- Bytes of the jobs table's pages flipped: SQLite's quick check finds it at open; the daemon's
  start stops with one line that names the journal and `actord journal recover`.
- A row whose values cannot be a job's: skipped and logged once; the other jobs serve.
- A journal missing or empty where its marker says one was kept: refused (the history would be
  gone without a word) unless `--new-journal`.
- `actord journal check` and `actord journal recover` (a new journal of every readable row,
  the damaged one kept beside it), then a daemon that serves what was recovered.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from actors.journal import Journal, JournalDamaged, JournalMissing, JournalState
from actors.model import JobKind, JobSpec
from actors.wire import pack, spec_to_wire

from ._daemon import ROOT, DaemonProcess

JOBS = 60


def _journal(path: Path, jobs: int = JOBS) -> list[str]:
    """A journal of `jobs` finished jobs (their specs real), checkpointed into its file."""
    ids = []
    with Journal(path) as journal:
        for n in range(jobs):
            spec = JobSpec(JobKind.LOG, f"/out/{n}.jsonl", f"/in/{n}.log")
            job, _ = journal.submit("log", pack(spec_to_wire(spec)), idempotency_key=f"k{n}")
            journal.mark_running(job.id)
            journal.finish(job.id, JournalState.DONE, result=b"")
            ids.append(job.id)
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return ids


def _flip_a_leaf_page(path: Path) -> None:
    """Flip the bytes of the cell area of the jobs table's first leaf page (as a bad disk
    sector or a stray write would)."""
    db = sqlite3.connect(path)
    try:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        leaves = db.execute(
            "SELECT pageno FROM dbstat WHERE name = 'jobs' AND pagetype = 'leaf' ORDER BY pageno"
        ).fetchall()
    finally:
        db.close()
    assert len(leaves) >= 2  # the damage leaves other pages readable
    start = (leaves[0][0] - 1) * page_size
    data = bytearray(path.read_bytes())
    for at in range(start + page_size - 600, start + page_size - 400):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _actord(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actord", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_flipped_bytes_are_found_at_open_and_named(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    _journal(path)
    _flip_a_leaf_page(path)
    before = path.read_bytes()
    with pytest.raises(JournalDamaged) as damaged:
        Journal(path)
    message = str(damaged.value)
    assert str(path) in message and "is damaged" in message
    assert f"actord journal recover --state-dir {tmp_path}" in message
    assert "\n" not in message
    assert path.read_bytes() == before  # left as it was


def test_a_damaged_row_is_skipped_and_reported_and_the_rest_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.sqlite3"
    ids = _journal(path, 5)
    db = sqlite3.connect(path)
    try:  # values no release of ours writes
        db.execute("UPDATE jobs SET state = 'lost' WHERE id = ?", (ids[2],))
        db.execute("UPDATE jobs SET spec = 'text' WHERE id = ?", (ids[3],))
        db.commit()
    finally:
        db.close()
    with caplog.at_level(logging.ERROR, "actors.journal"), Journal(path) as journal:
        assert [job.id for job in journal.jobs()] == [ids[0], ids[1], ids[4]]
        assert [job.id for job in journal.jobs()] == [ids[0], ids[1], ids[4]]
        assert journal.counts_by_kind() == {("log", JournalState.DONE): 4}
        assert sorted(journal.damaged) == [3, 4]
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 2  # once each, not at every read
    assert f"row 3 (job '{ids[2]}') is damaged and skipped" in reports[0]
    assert "'lost' is not a valid JournalState" in reports[0]


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_a_lost_journal_is_refused_unless_a_new_one_is_asked_for(tmp_path: Path, how: str) -> None:
    path = tmp_path / "journal.sqlite3"
    _journal(path, 2)
    if how == "missing":
        path.unlink()
    else:
        path.write_bytes(b"")
    with pytest.raises(JournalMissing, match=f"{how}.*--new-journal"):
        Journal(path)
    with Journal(path, new_journal=True) as journal:
        assert journal.jobs() == []
    with Journal(path) as journal:  # a new journal now, and kept
        assert journal.jobs() == []


def test_a_first_journal_needs_no_flag(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite3") as journal:
        assert journal.jobs() == []
    assert (tmp_path / "journal.sqlite3.marker").exists()


@pytest.mark.timeout(120)
def test_the_daemon_names_a_damaged_journal_and_recover_brings_it_back(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    daemon.state.mkdir(parents=True)
    path = daemon.state / "journal.sqlite3"
    ids = _journal(path)
    _flip_a_leaf_page(path)
    damaged = path.read_bytes()
    daemon.start(wait_ready=False)
    assert daemon.wait(60) == 1
    lines = [line for line in daemon.tail().splitlines() if line.startswith("actord:")]
    assert len(lines) == 1, daemon.tail()
    assert f"journal {path} is damaged" in lines[0]
    assert f"actord journal recover --state-dir {daemon.state}" in lines[0]
    check = _actord("journal", "check", "--state-dir", str(daemon.state))
    assert check.returncode == 1 and "damaged" in check.stdout, check
    recovered = _actord("journal", "recover", "--state-dir", str(daemon.state))
    assert recovered.returncode == 0, recovered.stderr
    kept = [
        p
        for p in daemon.state.glob("journal.sqlite3.damaged-*")
        if not p.name.endswith(("-wal", "-shm"))
    ]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged  # beside it, as it was
    assert _actord("journal", "check", "--state-dir", str(daemon.state)).returncode == 0
    daemon.start()
    try:
        served = {job["id"] for job in daemon.call("jobs")}
    finally:
        daemon.stop()
    assert served <= set(ids)
    assert 0 < len(served) < len(ids)  # what the damaged page held is gone, the rest serves
    assert f"recovered {len(served)} jobs" in recovered.stdout


@pytest.mark.timeout(120)
def test_the_daemon_refuses_an_emptied_journal_unless_new_journal(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    daemon.start()
    daemon.stop()
    (daemon.state / "journal.sqlite3").write_bytes(b"")
    daemon.start(wait_ready=False)
    assert daemon.wait(60) == 1
    assert "is empty (0 bytes)" in daemon.tail() and "--new-journal" in daemon.tail()
    daemon.extra.append("--new-journal")
    daemon.start()
    try:
        assert list(daemon.call("jobs")) == []
    finally:
        daemon.stop()


def test_journal_commands_refuse_a_running_daemons_state_dir(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path).start()
    try:
        result = _actord("journal", "recover", "--state-dir", str(daemon.state))
    finally:
        daemon.stop()
    assert result.returncode == 1 and "in use by a running actord" in result.stderr
