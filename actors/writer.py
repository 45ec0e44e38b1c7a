"""Writers: one per job. They write units as they come, finish the job when every unit is in
(the seed's barrier, done with messages), and publish the output atomically.

Outputs go to a temporary file in the destination directory, are fsynced and renamed: no
reader ever sees a partial output, and a failed or cancelled job leaves none behind.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import IO

import numpy as np

from actord import Actor, Message

from .model import (
    ArrayPlan,
    ChunkWritten,
    FFTSummary,
    JobError,
    LogSummary,
    OutputLayout,
    ParsedBlock,
    ReadDone,
    Rejected,
    UnitsWritten,
    WriterDone,
    WriterStopped,
    WrittenProgress,
)

__all__ = ["ArrayWriter", "AtomicFile", "LogWriter", "create_temp", "remove_temps"]

REJECTS_SUFFIX = ".rejects"


def create_temp(path: str) -> tuple[int, str]:
    """A new, empty temporary file beside `path`: ``.<name>.<random>.tmp``.

    Created with O_EXCL and mode 0666 less the umask, so the final output gets the ordinary
    permissions a new file would (mkstemp would make it 0600).
    """
    directory, name = os.path.split(os.path.abspath(path))
    while True:
        temp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp
        except FileExistsError:
            continue


def remove_temps(path: str) -> list[str]:
    """Remove the temporary files a writer of `path` left behind (a crash, a kill -9): the
    output's and its rejects file's. Returns what was removed."""
    directory, name = os.path.split(os.path.abspath(path))
    pattern = re.compile(
        rf"\.{re.escape(name)}(?:{re.escape(REJECTS_SUFFIX)})?\.[0-9a-f]{{12}}\.tmp"
    )
    removed: list[str] = []
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for entry in entries:
        if pattern.fullmatch(entry):
            Path(directory, entry).unlink(missing_ok=True)
            removed.append(os.path.join(directory, entry))
    return removed


class AtomicFile:
    """A temporary file beside `path` that becomes `path` only on `commit()`."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        fd, self.temp = create_temp(self.path)
        self.file: IO[bytes] = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.sync()
        self.publish()
        _fsync_dir(os.path.dirname(self.path))

    def sync(self) -> None:
        """Flush the data to disk and close (the first half of commit)."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def publish(self) -> None:
        """Rename into place (the second half of commit)."""
        os.replace(self.temp, self.path)

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        Path(self.temp).unlink(missing_ok=True)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _UnitWriter(Actor):
    """Counting units in, and the end of the job once the reader's total is known."""

    def __init__(self, job: str, output: str, jobs: str, reader: str) -> None:
        self.job = job
        self.output = output
        self.jobs = jobs
        self.reader = reader
        self.total: int | None = None
        self.done = 0
        self.bytes = 0
        self.committed = False
        self.started = time.monotonic()

    def _progress(self) -> None:
        self.send(self.reader, UnitsWritten(self.job, self.done))
        self.send(self.jobs, WrittenProgress(self.job, self.done, self.total or 0, self.bytes))

    def _fail(self, error: str) -> None:
        self.send(self.jobs, JobError(self.job, error))

    def _abort(self) -> None:
        """Remove whatever this writer created, unless it was committed."""
        raise NotImplementedError

    def on_stop(self) -> None:
        """Actor thread: a job stopped before its end leaves no output and no temp file."""
        self._abort()
        self.send(self.jobs, WriterStopped(self.job))

    def on_failure(self, error: Exception, message: Message | None) -> None:
        """Actor thread: a write failed (disk full, ...): the job fails, nothing is left, and
        the writer stops (a restarted one would have lost what was written)."""
        self._abort()
        self._fail(f"writing {self.output} failed: {error}")
        self.send(self.jobs, WriterStopped(self.job))
        self.ref.stop(graceful=False, wait=False)


class LogWriter(_UnitWriter):
    """Writes parsed blocks in input order: JSON Lines output and a rejects file beside it."""

    def __init__(self, job: str, output: str, jobs: str, reader: str) -> None:
        super().__init__(job, output, jobs, reader)
        self.rejects_path = output + REJECTS_SUFFIX
        self._pending: dict[int, ParsedBlock] = {}  # blocks that arrived ahead of their turn
        self._counts: Counter[str] = Counter()
        self._levels: Counter[str] = Counter()
        self._too_long = 0
        self._read_bytes = 0  # bytes read from the input (decompressed), from the reader
        self._out: AtomicFile | None = None
        self._rejects: AtomicFile | None = None

    def on_start(self) -> None:
        """Actor thread: create the temporary output and rejects files."""
        self._out = AtomicFile(self.output)
        self._rejects = AtomicFile(self.rejects_path)

    def handle(self, message: Message) -> None:
        """Actor thread: a parsed block, or the reader's end-of-input note."""
        payload = message.payload
        if isinstance(payload, ParsedBlock):
            self._pending[payload.index] = payload
            while self.done in self._pending:
                self._write(self._pending.pop(self.done))
            self._progress()
        elif isinstance(payload, ReadDone):
            self.total = payload.units
            self._too_long = payload.too_long
            self._read_bytes = payload.bytes
        if self.total is not None and self.done == self.total and not self.committed:
            self._commit()

    def _write(self, block: ParsedBlock) -> None:
        assert self._out is not None and self._rejects is not None
        self._out.file.write(block.records)
        self._rejects.file.write(block.rejects)
        counts = self._counts
        counts["lines"] += block.lines
        counts["matched"] += block.matched
        counts["rejected"] += block.rejected
        counts["blank"] += block.blank
        counts["invalid_utf8"] += block.invalid_utf8
        self._levels.update(dict(block.levels))
        self.done += 1
        self.bytes += block.nbytes

    def _commit(self) -> None:
        assert self._out is not None and self._rejects is not None
        self._out.sync()
        self._rejects.sync()
        # The output appears last: a failure before it leaves neither file behind.
        self._rejects.publish()
        try:
            self._out.publish()
        except OSError:
            Path(self._rejects.path).unlink(missing_ok=True)
            raise
        _fsync_dir(os.path.dirname(self._out.path))
        self.committed = True
        counts = self._counts
        summary = LogSummary(
            lines=counts["lines"],
            matched=counts["matched"],
            rejected=counts["rejected"],
            blank=counts["blank"],
            invalid_utf8=counts["invalid_utf8"],
            too_long=self._too_long,
            levels=tuple(sorted(self._levels.items())),
            bytes=self._read_bytes,
            seconds=time.monotonic() - self.started,
            output=self._out.path,
            rejects=self._rejects.path,
        )
        self.send(self.jobs, WriterDone(self.job, summary))

    def _abort(self) -> None:
        if not self.committed:
            for part in (self._out, self._rejects):
                if part is not None:
                    part.abort()


class ArrayWriter(_UnitWriter):
    """Owns the output `.npy` of an FFT job: creates it, counts the chunks the FFT workers
    write into it (in any order), syncs it as it fills and publishes it when all are in.

    The data is flushed to disk every `sync_bytes` as chunks arrive, so the disk works while
    the pool computes instead of all at once at the end.
    """

    def __init__(
        self, job: str, output: str, jobs: str, reader: str, sync_bytes: int = 64 << 20
    ) -> None:
        super().__init__(job, output, jobs, reader)
        self.sync_bytes = sync_bytes
        self._plan: ArrayPlan | None = None
        self._temp: str | None = None
        self._fd: int | None = None
        self._unsynced = 0
        self._seen: set[int] = set()

    def handle(self, message: Message) -> None:
        """Actor thread: the reader's plan (a request), a written chunk, or the end note."""
        payload = message.payload
        if isinstance(payload, ArrayPlan):
            self.reply(message, self._open(payload))
        elif isinstance(payload, ChunkWritten):
            if payload.index not in self._seen:  # a retried chunk may be reported twice
                self._seen.add(payload.index)
                self.done += 1
                self.bytes += payload.nbytes
                self._unsynced += payload.nbytes
                if self._unsynced >= self.sync_bytes and self._fd is not None:
                    os.fdatasync(self._fd)
                    self._unsynced = 0
            self._progress()
        elif isinstance(payload, ReadDone):
            self.total = payload.units
        if self.total is not None and self.done == self.total and not self.committed:
            self._commit()

    def _open(self, plan: ArrayPlan) -> OutputLayout | Rejected:
        self._plan = plan
        try:
            fd, self._temp = create_temp(self.output)
            os.close(fd)
            # open_memmap writes the header and sizes the (sparse) file; workers fill it.
            layout = np.lib.format.open_memmap(
                self._temp, mode="w+", dtype=np.dtype(plan.dtype), shape=plan.shape
            )
            offset = int(layout.offset)
            del layout
            self._fd = os.open(self._temp, os.O_WRONLY)
        except OSError as error:
            return Rejected("io_error", f"cannot create the output beside {self.output}: {error}")
        item = np.dtype(plan.dtype).itemsize
        return OutputLayout(self._temp, offset, item * plan.shape[1] * plan.shape[2])

    def _commit(self) -> None:
        assert self._plan is not None and self._temp is not None and self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        final = os.path.abspath(self.output)
        os.replace(self._temp, final)
        _fsync_dir(os.path.dirname(final))
        self.committed = True
        plan = self._plan
        summary = FFTSummary(
            chunks=self.done,
            shape=plan.shape,
            dtype=plan.dtype,
            transform=plan.transform,
            bytes=self.bytes,
            seconds=time.monotonic() - self.started,
            output=final,
        )
        self.send(self.jobs, WriterDone(self.job, summary))

    def _abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self.committed and self._temp is not None:
            Path(self._temp).unlink(missing_ok=True)
