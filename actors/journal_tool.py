"""`actord journal check` and `actord journal recover`: the job journal, offline.

`check` reads the journal without writing to it: SQLite's quick check, then every row as a
job. It prints what it found and exits 0 when the journal is sound, 1 when it is damaged (or
missing where its marker says one was kept).

`recover` copies every row that can be read into a new journal, then puts the new one in
place and keeps the damaged one beside it (``journal.sqlite3.damaged-<time>``, with its WAL
and shared-memory files); it prints how many jobs it kept and which rows it could not. Rows
are read in bulk, and one by one past a page that cannot be read. Both refuse to run while a
daemon holds the state directory.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from .journal import (
    ROW_QUERY,
    Journal,
    JournalMissing,
    job_of_row,
    marker_of,
    quick_check,
)

__all__ = ["JOURNAL_NAME", "main"]

JOURNAL_NAME: Final = "journal.sqlite3"  # in the daemon's state directory
_SIDE_FILES: Final = ("-wal", "-shm")
_MISSES: Final = 1_000  # rowids tried past the last one read, when the table's end is unknown


def main(action: str, state_dir: str) -> int:
    """Run `action` (check or recover) on the journal of `state_dir`; the exit code."""
    state = Path(state_dir)
    path = state / JOURNAL_NAME
    try:
        with _state_lock(state):
            if action == "check":
                return _check(path)
            return _recover(path)
    except (OSError, sqlite3.Error, JournalMissing) as error:
        print(f"actord journal {action}: {error}", file=sys.stderr)
        return 1


class _InUse(OSError):
    pass


def _state_lock(state: Path) -> Any:
    # The daemon holds this lock for its life (actord.daemon.main): no offline work under it.
    lock = open(state / "actord.lock", "a")  # noqa: SIM115 - closed by the with block
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise _InUse(f"{state} is in use by a running actord: stop it first") from None
    return lock


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.exists() or path.stat().st_size == 0:
        what = "missing" if not path.exists() else "empty (0 bytes)"
        kept = marker_of(path).exists()
        raise JournalMissing(
            f"journal {path} is {what}"
            + (f" though {marker_of(path).name} says one was kept here" if kept else "")
        )
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _check(path: Path) -> int:
    db = _open_read_only(path)
    try:
        try:
            problems = quick_check(db)
        except sqlite3.DatabaseError as error:
            problems = [str(error)]
        good, bad = _rows(db)
    finally:
        db.close()
    for seq, why in bad:
        print(f"row {seq}: damaged: {why}")
    for problem in problems:
        print(f"quick_check: {problem}")
    if problems or bad:
        print(
            f"journal {path}: damaged ({len(problems)} problems found by SQLite, {len(bad)} "
            f"damaged rows, {len(good)} jobs readable): run `actord journal recover "
            f"--state-dir {path.parent}`"
        )
        return 1
    print(f"journal {path}: ok, {len(good)} jobs")
    return 0


def _recover(path: Path) -> int:
    db = _open_read_only(path)
    try:
        good, bad = _rows(db)
    finally:
        db.close()
    fresh = path.with_name(f"{path.name}.recovering")
    for suffix in ("", *_SIDE_FILES):
        Path(f"{fresh}{suffix}").unlink(missing_ok=True)
    with Journal(fresh, new_journal=True) as journal:
        refused = journal.insert_rows(good)
    bad += refused
    kept = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", *_SIDE_FILES):
        if os.path.exists(f"{path}{suffix}"):
            os.replace(f"{path}{suffix}", f"{kept}{suffix}")
    for suffix in _SIDE_FILES:
        Path(f"{fresh}{suffix}").unlink(missing_ok=True)
    os.replace(fresh, path)
    marker_of(fresh).unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for seq, why in bad:
        print(f"row {seq}: not recovered: {why}")
    print(
        f"journal {path}: recovered {len(good) - len(refused)} jobs, {len(bad)} damaged rows "
        "left out; "
        f"the damaged journal is kept as {kept}"
    )
    return 0


def _rows(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[object, str]]]:
    """(every row that is a job, in seq order; (seq, why) of every row that is not)."""
    good: list[tuple[Any, ...]] = []
    bad: list[tuple[object, str]] = []
    for seq, row, unreadable in _raw_rows(db):
        if row is None:
            bad.append((seq, unreadable or "unreadable"))
            continue
        try:
            job_of_row(row[1:])
        except (ValueError, TypeError, KeyError, IndexError) as error:
            bad.append((seq, f"{type(error).__name__}: {error}"))
            continue
        good.append(row)
    return good, bad


def _raw_rows(
    db: sqlite3.Connection,
) -> Iterator[tuple[object, tuple[Any, ...] | None, str | None]]:
    """(seq, row or None, why not) for each row: in bulk, else one by one by rowid."""
    try:
        rows = db.execute(f"{ROW_QUERY} ORDER BY seq").fetchall()
    except sqlite3.DatabaseError:
        pass  # a page cannot be read: row by row, to keep every one that can
    else:
        for row in rows:
            yield row[0], tuple(row), None
        return
    upper = _last_rowid(db)
    rowid, misses = 0, 0
    while (rowid < upper) if upper is not None else (misses < _MISSES):
        rowid += 1
        try:
            row = db.execute(f"{ROW_QUERY} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError as error:
            misses += 1
            yield rowid, None, str(error)
            continue
        if row is None:
            misses += 1
            continue
        misses = 0
        yield row[0], tuple(row), None


def _last_rowid(db: sqlite3.Connection) -> int | None:
    # The table's b-tree or AUTOINCREMENT's record of it, whichever can still be read.
    for query in (
        "SELECT max(rowid) FROM jobs",
        "SELECT seq FROM sqlite_sequence WHERE name = 'jobs'",
    ):
        try:
            found = db.execute(query).fetchone()
        except sqlite3.DatabaseError:
            continue
        if found is not None and isinstance(found[0], int):
            return found[0]
    return None
