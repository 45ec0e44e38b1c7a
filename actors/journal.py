"""The job journal: SQLite (stdlib), so that an accepted job survives a crash.

A job is in the journal, committed, before `submit` returns. On start the daemon asks for the
unfinished jobs and runs them again; a job that was running when the daemon died counts a
crash retry, never a failure of its own, so a healthy job is not failed because the daemon was
killed. The journal knows nothing about job kinds: a spec is opaque bytes (msgpack of the
job's options), and the runtime never imports the job actors.

A job's output is journaled before it appears: its writer's temporary files, synced, and
where each one goes (`record_publication`) are committed before the first rename. A job that
was publishing when the daemon died is therefore finished at the next start (the renames
completed, or found done), never run again: its output is created once.

One thread owns the connection (SQLite's default check): in the daemon that is the job store.
WAL mode with ``synchronous=FULL``: a commit is on disk when it returns.

The schema is versioned (``PRAGMA user_version``) so that an upgrade keeps the journal:

1. the first release (0.1.0): no version set (user_version 0), recognised by its columns;
2. ``publication``: a job's output files, journaled before they are renamed into place;
3. ``started`` and ``ended``: when the job last started running and when it ended.

An older journal is migrated in place, one step after another in a single transaction (all
of it or none of it: a failed upgrade leaves the journal as it was, every row kept). A journal
newer than this code is refused untouched: running on it would drop what it does not know.

Damage is named, never taken for something else. Opening runs ``PRAGMA quick_check``: a
damaged file is refused (`JournalDamaged`, naming the file and `actord journal recover`). A
row whose values cannot be a job's (a state that is none of ours, a spec that is not bytes)
is skipped and reported once in the log; the other rows serve. A marker file beside the
journal (``journal.sqlite3.marker``) says one existed: a journal found missing or empty
then is refused (`JournalMissing`) unless `new_journal` says to begin a new one, so that a
lost journal never silently becomes an empty history.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from actord.runtime.errors import ActordError, ErrorCode, InvalidArgument

__all__ = [
    "ROW_QUERY",
    "SCHEMA_VERSION",
    "Journal",
    "JournalDamaged",
    "JournalMissing",
    "JournalState",
    "JournalUnavailable",
    "JournaledJob",
    "Publication",
    "UnknownJob",
]

_log: Final = logging.getLogger("actors.journal")


class UnknownJob(ActordError, LookupError):
    """No job with this id in the journal."""

    code = ErrorCode.NOT_FOUND


class JournalDamaged(InvalidArgument):
    """The journal file fails SQLite's own check: it is refused, and left as it is."""


class JournalMissing(InvalidArgument):
    """The journal is missing or empty where one existed (its marker is there)."""


class JournalUnavailable(ActordError):
    """A write failed for lack of space, an I/O error or a read-only state directory: the
    transaction is rolled back (the journal is as it was), and the same write may succeed
    once the directory can take it again. The message names the state directory."""

    code = ErrorCode.UNAVAILABLE


SCHEMA_VERSION = 3  # the latest version: what a new journal is created at

# The v1 (0.1.0) columns: a table at user_version 0 without them is not a journal of ours.
_V1_COLUMNS = frozenset(
    {
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
    }
)

# The latest schema. A migrated journal ends with the same table: each step appends its
# columns in the order they are listed here.
_SCHEMA = f"""
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
    publication TEXT,
    started REAL,
    ended REAL
);
CREATE INDEX jobs_state ON jobs (state);
PRAGMA user_version = {SCHEMA_VERSION};
"""

_COLUMNS = (
    "id, kind, spec, state, idempotency_key, crash_retries, error, result, created, updated, "
    "publication, started, ended"
)

# Every column of a row, its seq first: what `recover` copies out of a damaged journal.
ROW_QUERY = f"SELECT seq, {_COLUMNS} FROM jobs"  # noqa: S608 - constants only

# (temporary file, final path, the file's inode: 0 if not known), in rename order
Publication = tuple[tuple[str, str, int], ...]


class JournalState(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JournalState.DONE, JournalState.FAILED, JournalState.CANCELLED)


@dataclass(frozen=True, slots=True)
class JournaledJob:
    id: str
    kind: str
    spec: bytes
    state: JournalState
    idempotency_key: str | None
    crash_retries: int  # times the daemon died while the job ran (not the job's own failures)
    error: str | None
    result: bytes | None
    created: float
    updated: float
    # A running job's output files, committed before the first of them was renamed into
    # place; empty until then, and again once the job has ended.
    publication: Publication = ()
    # Epoch seconds, as `created`: when the job last started running (a job re-queued keeps
    # the time of its last start until it starts again) and when it ended. None until then,
    # and for a job migrated from a journal that did not record it.
    started: float | None = None
    ended: float | None = None


class Journal:
    """The jobs table on one SQLite connection, used from the thread that opened it."""

    def __init__(self, path: str | Path, *, new_journal: bool = False) -> None:
        self.path = Path(path)
        # Rows found damaged (by seq) and why: each is skipped, and logged once.
        self.damaged: dict[int, str] = {}
        _check_present(self.path, new_journal)
        self._db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions
        try:
            # Read before anything writes: a journal that is refused must be left as it was
            # (even switching it to WAL would rewrite its header).
            try:
                version = self._version()
                problems = quick_check(self._db)
            except sqlite3.DatabaseError as error:  # not SQLite at all, or damaged
                raise JournalDamaged(_damaged(self.path, str(error))) from None
            if problems:
                more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
                raise JournalDamaged(_damaged(self.path, problems[0] + more))
            self._check_version(version)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._upgrade()
        except BaseException:
            self._db.close()
            raise
        _mark(self.path)

    @property
    def version(self) -> int:
        """The schema version of the open journal (SCHEMA_VERSION once opened)."""
        return self._version()

    def _version(self) -> int:
        """The journal's schema version; 0 for a new file. The first release set none, so a
        table at user_version 0 is recognised by its columns."""
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version != 0:
            return version
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if not columns:
            return 0
        missing = ", ".join(sorted(_V1_COLUMNS - columns))
        if missing:
            raise InvalidArgument(
                f"journal {self.path}: its jobs table lacks {missing}: not an actord journal"
            )
        # A development build between the releases added `publication` without a version:
        # its journal is a v2 one.
        return 2 if "publication" in columns else 1

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise InvalidArgument(
                f"journal {self.path} has schema version {version}, newer than the version "
                f"this actord knows ({SCHEMA_VERSION}): it was written by a newer actord, and "
                "is left untouched; run that version, or move the journal aside"
            )
        if version < 0:
            raise InvalidArgument(
                f"journal {self.path} has schema version {version}, not one of an actord "
                f"journal (1 to {SCHEMA_VERSION}): it is left untouched"
            )

    def _upgrade(self) -> None:
        if self._version() == SCHEMA_VERSION:
            return  # the common case: no write, no lock
        with self._transaction():
            # Read again under the write lock: another process may have upgraded it meanwhile.
            version = self._version()
            self._check_version(version)
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                return
            for step in _STEPS[version - 1 :]:
                step(self._db)
            # In the same transaction as the steps: the version and the table never disagree.
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self, kind: str, spec: bytes, *, idempotency_key: str | None = None
    ) -> tuple[JournaledJob, bool]:
        """Record a new job (committed when this returns). With an idempotency key already
        used, the existing job is returned instead and nothing is added: (job, created)."""
        if not kind:
            raise InvalidArgument("a job needs a kind")
        now = time.time()
        with self._transaction():
            if idempotency_key is not None:
                found = self._select("WHERE idempotency_key = ?", (idempotency_key,))
                if found:
                    return found[0], False
            cursor = self._db.execute(
                "INSERT INTO jobs (id, kind, spec, state, idempotency_key, created, updated) "
                "VALUES ('', ?, ?, ?, ?, ?, ?)",
                (kind, spec, JournalState.ACCEPTED.value, idempotency_key, now, now),
            )
            job_id = f"{kind}-{cursor.lastrowid}"
            self._db.execute("UPDATE jobs SET id = ? WHERE seq = ?", (job_id, cursor.lastrowid))
        return self.get(job_id), True

    def _unfinished(self, job_id: str) -> None:
        # Inside a transaction: refuse a job that has ended (an end is final).
        current = self.get(job_id)
        if current.state.finished:
            raise InvalidArgument(f"job {job_id} already ended ({current.state.value})")

    def mark_running(self, job_id: str) -> JournaledJob:
        """The job starts running (again, after a re-queue): `started` is now."""
        with self._transaction():
            self._unfinished(job_id)
            now = time.time()
            self._db.execute(
                "UPDATE jobs SET state = ?, started = ?, updated = ? WHERE id = ?",
                (JournalState.RUNNING.value, now, now, job_id),
            )
        return self.get(job_id)

    def record_publication(
        self, job_id: str, files: Sequence[tuple[str, str, int]], *, result: bytes
    ) -> JournaledJob:
        """Commit, before the first rename, the output files of a running job: each synced
        temporary file, its final path and its inode, in rename order (the output last), with
        the result the job will end with. From then on a restart finishes the job instead of
        running it again (see `recover`). Only a running job may publish, and only once."""
        if not files:
            raise InvalidArgument("a publication needs at least one file")
        with self._transaction():
            current = self.get(job_id)
            if current.state is not JournalState.RUNNING:
                raise InvalidArgument(f"job {job_id} is {current.state.value}, not running")
            if current.publication:
                raise InvalidArgument(f"job {job_id} is already publishing its output")
            self._db.execute(
                "UPDATE jobs SET publication = ?, result = ?, updated = ? WHERE id = ?",
                (json.dumps([list(pair) for pair in files]), result, time.time(), job_id),
            )
        return self.get(job_id)

    def finish(
        self,
        job_id: str,
        state: JournalState,
        *,
        error: str | None = None,
        result: bytes | None = None,
    ) -> JournaledJob:
        """Record a job's end (done, failed or cancelled), which also ends its publication if
        it had begun one. Finishing twice is refused."""
        if not state.finished:
            raise InvalidArgument(f"{state.value} is not a final state")
        with self._transaction():
            self._unfinished(job_id)
            now = time.time()
            self._db.execute(
                "UPDATE jobs SET state = ?, error = ?, result = ?, publication = NULL, "
                "ended = ?, updated = ? WHERE id = ?",
                (state.value, error, result, now, now, job_id),
            )
        return self.get(job_id)

    def recover(self) -> list[JournaledJob]:
        """On start: every unfinished job, oldest first. A job that was RUNNING goes back to
        ACCEPTED and counts one crash retry: the daemon died under it, and this death is
        counted now, the first as every later one, so `crash_retries` caps the deaths.

        A job that was publishing stays RUNNING with its publication, and counts no retry:
        it is not run again, the caller finishes its publication (or, if its files are gone,
        `release`s it as a crash)."""
        with self._transaction():
            self._db.execute(
                "UPDATE jobs SET crash_retries = crash_retries + 1, state = ?, updated = ? "
                "WHERE state = ? AND publication IS NULL",
                (JournalState.ACCEPTED.value, time.time(), JournalState.RUNNING.value),
            )
        return self.jobs(unfinished=True)

    def release(self, job_id: str, *, crashed: bool = False) -> JournaledJob:
        """A running job back to ACCEPTED: it will run again on the next start, and its
        publication, if it had begun one, is void. Without `crashed` no crash retry is
        counted (the daemon is stopping cleanly); with it, one is: the daemon is going down
        because of a fault (an escalation), which may well be this job's doing."""
        with self._transaction():
            self._unfinished(job_id)
            self._db.execute(
                "UPDATE jobs SET state = ?, crash_retries = crash_retries + ?, "
                "publication = NULL, updated = ? WHERE id = ?",
                (JournalState.ACCEPTED.value, int(crashed), time.time(), job_id),
            )
        return self.get(job_id)

    def insert_rows(self, rows: Sequence[Sequence[Any]]) -> list[tuple[object, str]]:
        """Recovery: rows of `ROW_QUERY` into this (new) journal as they were, seq and id
        kept, in one transaction; returns (seq, why) of each row refused (a duplicate id or
        idempotency key)."""
        marks = ", ".join("?" * (_COLUMNS.count(",") + 2))
        insert = f"INSERT INTO jobs (seq, {_COLUMNS}) VALUES ({marks})"  # noqa: S608
        refused = []
        with self._transaction():
            for row in rows:
                try:
                    self._db.execute(insert, tuple(row))
                except sqlite3.IntegrityError as error:
                    refused.append((row[0], str(error)))
        return refused

    def specs(self, states: Sequence[JournalState]) -> list[tuple[str, bytes]]:
        """(id, spec) of every job in one of `states`, oldest first; damaged rows left out."""
        marks = ", ".join("?" * len(states))
        query = f"SELECT id, spec FROM jobs WHERE state IN ({marks}) ORDER BY seq"  # noqa: S608
        rows = self._db.execute(query, tuple(state.value for state in states)).fetchall()
        return [(r[0], r[1]) for r in rows if isinstance(r[0], str) and isinstance(r[1], bytes)]

    def counts_by_kind(self) -> dict[tuple[str, JournalState], int]:
        """How many jobs of each kind are in each state (a damaged row counts in none)."""
        query = "SELECT kind, state, count(*) FROM jobs GROUP BY kind, state"
        rows = self._db.execute(query).fetchall()
        states = {state.value: state for state in JournalState}
        return {
            (kind, states[state]): count
            for kind, state, count in rows
            if state in states and isinstance(kind, str)
        }

    def find_key(self, idempotency_key: str) -> JournaledJob | None:
        found = self._select("WHERE idempotency_key = ?", (idempotency_key,))
        return found[0] if found else None

    def get(self, job_id: str) -> JournaledJob:
        found = self._select("WHERE id = ?", (job_id,))
        if not found:
            raise UnknownJob(f"no job {job_id!r} in the journal")
        return found[0]

    def jobs(
        self,
        *,
        unfinished: bool = False,
        limit: int | None = None,
        state: JournalState | None = None,
    ) -> list[JournaledJob]:
        """Jobs oldest first; with `limit`, only the newest `limit` of them; with `state`,
        only those in it."""
        if unfinished:
            states = (JournalState.ACCEPTED.value, JournalState.RUNNING.value)
            return self._select("WHERE state IN (?, ?) ORDER BY seq", states)
        where, args = ("WHERE state = ? ", (state.value,)) if state is not None else ("", ())
        if limit is not None:
            newest = self._select(f"{where}ORDER BY seq DESC LIMIT ?", (*args, limit))
            return newest[::-1]
        return self._select(f"{where}ORDER BY seq", args)

    def prune(
        self, *, ended_before: float | None = None, keep: int | None = None
    ) -> list[tuple[str, str, JournalState]]:
        """Retention: remove the ended jobs that ended before `ended_before` (epoch seconds)
        and those beyond the newest `keep` ended ones, in one transaction; unfinished jobs
        always stay. Returns (id, kind, state) of each job removed."""
        ended = tuple(state.value for state in JournalState if state.finished)
        marks = ", ".join("?" * len(ended))
        with self._transaction():
            rows: list[tuple[str, str, str]] = []
            if ended_before is not None:
                rows += self._db.execute(
                    f"SELECT id, kind, state FROM jobs WHERE state IN ({marks}) "  # noqa: S608
                    "AND coalesce(ended, updated) < ?",
                    (*ended, ended_before),
                ).fetchall()
            if keep is not None:
                rows += self._db.execute(
                    f"SELECT id, kind, state FROM jobs WHERE state IN ({marks}) "  # noqa: S608
                    "ORDER BY seq DESC LIMIT -1 OFFSET ?",
                    (*ended, keep),
                ).fetchall()
            removed = list(dict.fromkeys(rows))  # a job both old and beyond `keep`: once
            self._db.executemany("DELETE FROM jobs WHERE id = ?", [(r[0],) for r in removed])
        return [(job_id, kind, JournalState(state)) for job_id, kind, state in removed]

    def _select(self, where: str, args: tuple[object, ...]) -> list[JournaledJob]:
        query = f"SELECT {_COLUMNS}, seq FROM jobs {where}"  # noqa: S608 - `where` is ours
        jobs = []
        for row in self._db.execute(query, args).fetchall():
            try:
                jobs.append(job_of_row(row))
            except (ValueError, TypeError, KeyError, IndexError) as error:
                self._skip(row[-1], row[0], error)
        return jobs

    def _skip(self, seq: int, job_id: object, error: Exception) -> None:
        if seq not in self.damaged:
            self.damaged[seq] = f"{type(error).__name__}: {error}"
            _log.error(
                "journal %s: row %s (job %r) is damaged and skipped: %s; the other jobs "
                "serve (actord journal check lists every damaged row)",
                self.path,
                seq,
                job_id,
                self.damaged[seq],
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path)


def job_of_row(r: Sequence[Any]) -> JournaledJob:
    """A job from a row of `_COLUMNS`; ValueError or TypeError for one that cannot be."""
    if not isinstance(r[0], str) or not r[0] or not isinstance(r[1], str) or not r[1]:
        raise ValueError(f"id {r[0]!r} and kind {r[1]!r} must be non-empty text")
    if not isinstance(r[2], bytes):
        raise TypeError(f"spec is {type(r[2]).__name__}, not bytes")
    for name, value in (("created", r[8]), ("updated", r[9])):
        if not isinstance(value, int | float):
            raise TypeError(f"{name} is {value!r}, not a time")
    if not isinstance(r[5], int):
        raise TypeError(f"crash_retries is {r[5]!r}, not a count")
    return JournaledJob(
        id=r[0],
        kind=r[1],
        spec=r[2],
        state=JournalState(r[3]),
        idempotency_key=_text_or_none(r[4]),
        crash_retries=r[5],
        error=_text_or_none(r[6]),
        result=None if r[7] is None else bytes(r[7]),
        created=float(r[8]),
        updated=float(r[9]),
        publication=_publication(_text_or_none(r[10])),
        started=None if r[11] is None else float(r[11]),
        ended=None if r[12] is None else float(r[12]),
    )


def _text_or_none(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{value!r} is not text")
    return value


def quick_check(db: sqlite3.Connection) -> list[str]:
    """SQLite's ``PRAGMA quick_check`` (pages, records, NOT NULL): each problem it finds on
    one line, [] if none."""
    rows = [str(row[0]) for row in db.execute("PRAGMA quick_check").fetchall()]
    if rows == ["ok"]:
        return []
    lines = (line.strip() for row in rows for line in row.splitlines())
    return [line for line in lines if line and not line.startswith("*** in database")]


def _damaged(path: Path, what: str) -> str:
    return (
        f"journal {path} is damaged ({what}): it is left as it is; stop here and run "
        f"`actord journal recover --state-dir {path.parent}` (it copies what can be read into "
        "a new journal and keeps the damaged one beside it)"
    )


def marker_of(path: Path) -> Path:
    """The file beside a journal that says the journal existed."""
    return path.with_name(path.name + ".marker")


def _check_present(path: Path, new_journal: bool) -> None:
    marker = marker_of(path)
    try:
        size: int | None = path.stat().st_size
    except FileNotFoundError:
        size = None
    if size or not marker.exists():
        return
    if new_journal:
        # What is left of the lost journal's WAL would be applied to the new one: kept aside.
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                side.replace(f"{side}.lost-{int(time.time())}")
        return
    what = "missing" if size is None else "empty (0 bytes)"
    raise JournalMissing(
        f"journal {path} is {what}, but {marker.name} beside it says one was kept here: its "
        "history is gone. Restore it from a backup, or start with --new-journal to begin "
        "an empty one"
    )


def _mark(path: Path) -> None:
    marker = marker_of(path)
    if not marker.exists():  # not synced: one lost in a crash is written again next time
        marker.write_text(f"actord keeps its journal {path.name} beside this file\n")


def _v1_to_v2(db: sqlite3.Connection) -> None:
    # NULL in every row: no job of a v1 journal was publishing (v1 did not journal it).
    db.execute("ALTER TABLE jobs ADD COLUMN publication TEXT")


def _v2_to_v3(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE jobs ADD COLUMN started REAL")
    db.execute("ALTER TABLE jobs ADD COLUMN ended REAL")
    # An ended job's row is never written again (every write refuses a finished job), so its
    # `updated` is exactly when it ended. When a job started was not recorded: left NULL.
    db.execute(
        "UPDATE jobs SET ended = updated WHERE state IN (?, ?, ?)",
        tuple(state.value for state in JournalState if state.finished),
    )


# _STEPS[v - 1] takes a journal from version v to v + 1.
_STEPS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1_to_v2, _v2_to_v3)
assert len(_STEPS) == SCHEMA_VERSION - 1


def _publication(column: str | None) -> Publication:
    if column is None:
        return ()
    # A journal written before inodes were kept has pairs: their inode is not known (0).
    return tuple(
        (entry[0], entry[1], entry[2] if len(entry) > 2 else 0) for entry in json.loads(column)
    )


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception): a write lock for the whole
    read-then-write, so two daemons on one file cannot both insert the same idempotency key.

    A write the state directory cannot take (SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY: any
    `OperationalError`), at any step, commit included, is rolled back and raised as
    `JournalUnavailable`: the connection stays usable for the next try."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise self._unavailable(error) from None

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as error:
                self._rollback()
                raise self._unavailable(error) from None
            return
        self._rollback()
        if isinstance(exc, sqlite3.OperationalError):
            raise self._unavailable(exc) from None

    def _rollback(self) -> None:
        # SQLite may have rolled the transaction back itself (after SQLITE_FULL, say).
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.OperationalError as error:
                _log.warning("journal %s: rollback failed: %s", self._path, error)

    def _unavailable(self, error: sqlite3.OperationalError) -> JournalUnavailable:
        return JournalUnavailable(
            f"the state directory {self._path.parent} cannot take a journal write ({error}): "
            "free space there, or make it writable again"
        )
