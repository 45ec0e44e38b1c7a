"""Upgrades keep the journal: a journal of an older schema opens migrated, every job intact;
one from a newer actord is refused untouched.

`fixtures/journal-0.1.0.sql` is a journal written by the 0.1.0 release itself (its header says
how it was made): queued, running and ended jobs, a crash retry and an idempotency key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from actord import InvalidArgument
from actors import journal as journal_module
from actors.journal import SCHEMA_VERSION, Journal, JournalState, JournalUnavailable
from actors.reader import synthetic_chunk
from actors.wire import spec_from_wire, summary_from_wire, unpack

from ._daemon import DaemonProcess

Daemons = Callable[..., DaemonProcess]

FIXTURE = Path(__file__).parent / "fixtures" / "journal-0.1.0.sql"
TOKEN = "@OUT@"  # the fixture's output directory
SHAPE = (3, 16, 16)  # every fixture job's synthetic stack
KEY = "nightly-2026-11-26"

# What the 0.1.0 script journaled: (id, state, idempotency key, crash retries, output, seed).
EXPECTED = [
    ("fft-1", JournalState.ACCEPTED, None, 1, "retried", 10),
    ("fft-2", JournalState.DONE, None, 0, "done", 20),
    ("fft-3", JournalState.FAILED, None, 0, "failed", 30),
    ("fft-4", JournalState.CANCELLED, None, 0, "cancelled", 40),
    ("fft-5", JournalState.ACCEPTED, None, 0, "queued-a", 50),
    ("fft-6", JournalState.ACCEPTED, None, 0, "queued-b", 60),
    ("fft-7", JournalState.ACCEPTED, KEY, 0, "keyed", 70),
    ("fft-8", JournalState.RUNNING, None, 0, "running", 80),
]
QUEUED = [row for row in EXPECTED if not row[1].finished]  # what a daemon must run

V1_COLUMNS = [
    "seq",
    "id",
    "kind",
    "spec",
    "state",
    "idempotency_key",
    "crash_retries",
    "error",
    "result",
    "created",
    "updated",
]


def materialise(path: Path, out: Path | str) -> None:
    """The fixture as a journal file at `path`, its output directory being `out`."""
    db = sqlite3.connect(path)
    try:
        db.executescript(FIXTURE.read_text().replace(TOKEN, str(out)))
        rows = db.execute("SELECT seq, spec, result FROM jobs").fetchall()
        for seq, spec, result in rows:
            relocated = None if result is None else _relocate(result, str(out))
            db.execute(
                "UPDATE jobs SET spec = ?, result = ? WHERE seq = ?",
                (_relocate(spec, str(out)), relocated, seq),
            )
        db.commit()
    finally:
        db.close()


def _relocate(blob: bytes, out: str) -> bytes:
    # A msgpack string carries its length: the paths are replaced in the decoded value and
    # packed again the way 0.1.0 packed them (`actors.wire.pack` of that release).
    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(TOKEN, out)
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    decoded = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    packed: bytes = msgpack.packb(walk(decoded), use_bin_type=True)
    return packed


def raw(path: Path) -> tuple[int, list[str], list[tuple[Any, ...]]]:
    """(user_version, columns, rows oldest first) read with plain sqlite3, not the Journal."""
    db = sqlite3.connect(path)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
        rows = db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
    finally:
        db.close()
    return version, columns, rows


def latest_columns(tmp_path: Path) -> list[str]:
    fresh = tmp_path / "fresh.sqlite3"
    Journal(fresh).close()
    return raw(fresh)[1]


def test_the_fixture_relocates_nothing_but_its_paths(tmp_path: Path) -> None:
    # Re-packing with the token left as is gives back 0.1.0's own bytes: the relocation the
    # other tests rely on changes the paths and nothing else.
    db = sqlite3.connect(":memory:")
    db.executescript(FIXTURE.read_text())
    for spec, result in db.execute("SELECT spec, result FROM jobs"):
        assert _relocate(spec, TOKEN) == spec
        assert result is None or _relocate(result, TOKEN) == result
    db.close()


def test_the_0_1_0_journal_opens_with_every_job_intact(tmp_path: Path) -> None:
    path, out = tmp_path / "journal.sqlite3", tmp_path / "out"
    materialise(path, out)
    version, columns, before = raw(path)
    assert (version, columns) == (0, V1_COLUMNS)  # what 0.1.0 wrote: no version, v1 columns

    with Journal(path) as journal:
        assert journal.version == SCHEMA_VERSION == 3
        jobs = journal.jobs()
    assert len(jobs) == len(before) == len(EXPECTED)
    for job, row, expected in zip(jobs, before, EXPECTED, strict=True):
        _seq, job_id, kind, spec, state, key, retries, error, result, created, updated = row
        assert (job.id, job.state, job.idempotency_key, job.crash_retries) == expected[:4]
        assert (job.id, job.kind, job.state.value, job.idempotency_key) == (
            job_id,
            kind,
            state,
            key,
        )
        assert (job.crash_retries, job.error, job.created, job.updated) == (
            retries,
            error,
            created,
            updated,
        )
        assert job.spec == spec  # byte for byte
        assert job.result == result
        assert job.publication == ()
        assert job.started is None  # 0.1.0 did not record it
        # An ended row is never written again, so its last update is when it ended.
        assert job.ended == (updated if job.state.finished else None)
        # Today's code reads 0.1.0's specs and results.
        decoded = spec_from_wire(unpack(job.spec))
        assert decoded.output == f"{out}/{expected[4]}.npy"
        assert decoded.options.synthetic == SHAPE  # type: ignore[union-attr]
        assert decoded.options.seed == expected[5]  # type: ignore[union-attr]

    done, failed = jobs[1], jobs[2]
    assert done.result is not None and failed.result is not None
    summary = summary_from_wire(unpack(done.result)["summary"])
    assert summary is not None and summary.output == f"{out}/done.npy"
    assert unpack(failed.result)["done"] == 1
    assert failed.error == f"chunk 1: [Errno 28] No space left on device: '{out}/failed.npy'"

    version, columns, after = raw(path)
    assert version == SCHEMA_VERSION
    assert columns == latest_columns(tmp_path)  # migrated: the table a new journal has
    assert [row[: len(V1_COLUMNS)] for row in after] == before

    # Opening an up-to-date journal again changes nothing, not even a byte of the file.
    image = path.read_bytes()
    with Journal(path) as journal:
        assert journal.jobs() == jobs
    assert path.read_bytes() == image

    # The AUTOINCREMENT sequence came along: a new job never reuses an old id.
    with Journal(path) as journal:
        assert journal.submit("fft", b"new")[0].id == "fft-9"
        again, created = journal.submit("fft", b"other", idempotency_key=KEY)
        assert (again.id, created) == ("fft-7", False)


def test_a_failed_upgrade_leaves_the_old_journal_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The steps run in one transaction: when the last one fails, the first one is undone too.
    path = tmp_path / "journal.sqlite3"
    materialise(path, tmp_path / "out")
    before = raw(path)

    def broken(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(journal_module, "_STEPS", (journal_module._v1_to_v2, broken))
    with pytest.raises(JournalUnavailable, match="disk I/O error"):  # rolled back, said so
        Journal(path)
    assert raw(path) == before
    monkeypatch.undo()
    with Journal(path) as journal:
        assert [job.id for job in journal.jobs()] == [row[0] for row in EXPECTED]


_V2 = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    spec BLOB NOT NULL,
    state TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    crash_retries INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result BLOB,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    publication TEXT
);
CREATE INDEX jobs_state ON jobs (state);
INSERT INTO jobs VALUES
    (1, 'log-1', 'log', x'01', 'done', 'k1', 0, NULL, x'aa', 1.0, 2.0, NULL),
    (2, 'log-2', 'log', x'02', 'running', NULL, 2, NULL, x'bb', 3.0, 4.0,
        '[[".out.0123456789ab.tmp", "out"]]'),
    (3, 'fft-3', 'fft', x'03', 'accepted', NULL, 0, NULL, NULL, 5.0, 6.0, NULL),
    (4, 'fft-4', 'fft', x'04', 'cancelled', NULL, 0, 'cancelled', NULL, 7.0, 8.0, NULL);
"""


@pytest.mark.parametrize(
    "user_version",
    [2, 0],  # 0: a development build added the publication column without a version
    ids=["v2", "v2-unversioned"],
)
def test_a_v2_journal_migrates_with_its_publications(tmp_path: Path, user_version: int) -> None:
    path = tmp_path / "journal.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_V2 + f"PRAGMA user_version = {user_version};")
    db.close()
    _, _, before = raw(path)

    with Journal(path) as journal:
        assert journal.version == SCHEMA_VERSION
        jobs = journal.jobs()
    summary = [
        (j.id, j.state, j.idempotency_key, j.crash_retries, j.spec, j.result, j.publication)
        for j in jobs
    ]
    assert summary == [
        ("log-1", JournalState.DONE, "k1", 0, b"\x01", b"\xaa", ()),
        (
            "log-2",
            JournalState.RUNNING,
            None,
            2,
            b"\x02",
            b"\xbb",
            ((".out.0123456789ab.tmp", "out", 0),),  # a pair of then: its inode is not known
        ),
        ("fft-3", JournalState.ACCEPTED, None, 0, b"\x03", None, ()),
        ("fft-4", JournalState.CANCELLED, None, 0, b"\x04", None, ()),
    ]
    assert [(j.started, j.ended) for j in jobs] == [
        (None, 2.0),
        (None, None),
        (None, None),
        (None, 8.0),
    ]
    version, columns, after = raw(path)
    assert (version, columns) == (SCHEMA_VERSION, latest_columns(tmp_path))
    assert [row[:12] for row in after] == before


def test_a_journal_from_a_newer_actord_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with Journal(path) as journal:
        journal.submit("fft", b"spec")
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE jobs ADD COLUMN priority INTEGER")  # what v99 might have added
    db.execute("PRAGMA user_version = 99")
    # Out of WAL mode, as a newer actord might leave it: switching it back to WAL, as opening
    # a journal does, would rewrite its header, so that must not happen before the check.
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    image = path.read_bytes()

    with pytest.raises(InvalidArgument) as refused:
        Journal(path)
    message = str(refused.value)
    assert str(path) in message
    assert "schema version 99" in message and f"({SCHEMA_VERSION})" in message
    assert path.read_bytes() == image
    assert raw(path)[0] == 99


def test_a_file_that_is_no_journal_is_refused_untouched(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database, but something a user cares about\n" * 100)
    other = tmp_path / "other.sqlite3"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE jobs (id TEXT, colour TEXT)")  # another program's `jobs`
    db.close()
    for path in (garbage, other):
        image = path.read_bytes()
        with pytest.raises(InvalidArgument, match=str(path)):
            Journal(path)
        assert path.read_bytes() == image


def test_a_daemon_upgraded_on_the_0_1_0_journal_runs_its_queued_jobs(daemons: Daemons) -> None:
    daemon = daemons()
    daemon.state.mkdir(parents=True)
    journal_file = daemon.state / "journal.sqlite3"
    materialise(journal_file, daemon.outputs)  # the fixture's outputs under the output root
    daemon.start()

    with daemon.client(timeout=120) as client:
        finals = {
            job_id: client.stream("watch", job_id, on_notification=lambda m, p: None, timeout=120)
            for job_id, *_ in EXPECTED
        }
    for job_id, state, _key, retries, name, seed in EXPECTED:
        final = finals[job_id]
        output = daemon.outputs / f"{name}.npy"
        assert final["output"] == str(output)
        if state.finished:  # ended under 0.1.0: kept as it was, and not run again
            assert final["state"] == state.value
            assert not output.exists()
            continue
        # Queued, and running when 0.1.0 stopped (a crash retry now): run to the end.
        assert final["state"] == "done", (job_id, final, daemon.tail())
        expected_retries = retries + (state is JournalState.RUNNING)
        assert (final["crash_retries"], final["done"]) == (expected_retries, SHAPE[0])
        result = np.load(output)
        assert result.shape == SHAPE
        for index in range(SHAPE[0]):
            expected = np.fft.fft2(synthetic_chunk(seed, index, SHAPE[1:]))
            np.testing.assert_allclose(result[index], expected)
    assert finals["fft-3"]["error"].startswith("chunk 1: [Errno 28]")
    daemon.stop()

    with Journal(journal_file) as journal:
        assert journal.version == SCHEMA_VERSION
        jobs = {job.id: job for job in journal.jobs()}
        assert journal.find_key(KEY) == jobs["fft-7"]
    for job_id, *_ in QUEUED:
        job = jobs[job_id]
        assert job.started is not None and job.ended is not None
        assert job.created <= job.started <= job.ended
