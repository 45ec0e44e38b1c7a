"""Writers: one per job. They write units as they come, finish the job when every unit is in
(the seed's barrier, done with messages), and publish the output atomically.

Outputs go to a temporary file in the destination directory, are fsynced and renamed: no
reader ever sees a partial output, and a failed or cancelled job leaves none behind. The
directory is opened once, beneath its allowed output root (`beneath`), and every file of the
job is created, renamed and removed in that directory's descriptor, never by its path again:
a directory swapped for a symlink meanwhile changes nothing.

Publication happens once, whatever instant the daemon is killed at. The order, for the one
file of an FFT job and the two of a log job (the rejects file, then the output):

1. fsync each temporary file: its data is on disk;
2. ask the job store to journal the publication (`Publishing`: each temporary file, where it
   goes, and the job's result) and wait for the commit;
3. rename each file into place, the output last, then fsync the directory: the renames are
   on disk;
4. tell the store (`WriterDone`), which journals the job as done.

A kill before 2 leaves temporary files and no record: the next start removes them and runs
the job again (no output ever existed). A kill after 2 leaves a record: the next start
completes the renames from the synced temporary files, or finds them done, and marks the job
done (`complete_publication`): it is never run again, and its output is never replaced.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, Final

import numpy as np

from actord import Actor, ActorDead, AskTimeout, Message
from actord.runtime.errors import ErrorCode

from .beneath import Directory, open_directory
from .model import (
    REJECTS_SUFFIX,
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
from .validate import output_refused

__all__ = [
    "PAUSE_ENV",
    "ArrayWriter",
    "AtomicFile",
    "LogWriter",
    "Publishing",
    "Recorded",
    "complete_publication",
    "create_temp",
    "discard",
    "remove_temps",
    "temp_target",
    "temps_in",
    "temps_of",
]

_log: Final = logging.getLogger("actors.writer")
_RECORD_TIMEOUT: Final = 30.0  # a journal commit takes milliseconds; the store never waits

# Test-only: off unless set (see `_pause_for_test`).
PAUSE_ENV: Final = "ACTORD_TEST_PAUSE_PUBLISH"


@dataclass(frozen=True, slots=True)
class Publishing:
    """Writer to job store (a request): journal this job's output before it appears.
    Answered `Recorded` once committed, or `Rejected` (the job was cancelled, the daemon is
    stopping, or the store does not run it): then nothing may be published."""

    job: str
    # (synced temporary file, final path, the file's inode), in rename order
    files: tuple[tuple[str, str, int], ...]
    summary: LogSummary | FFTSummary
    done: int
    total: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Recorded:
    job: str


def create_temp(path: str, directory: Directory | None = None) -> tuple[int, str]:
    """A new, empty temporary file beside `path`: ``.<name>.<random>.tmp``, in `directory`
    (the output's, opened beneath its root; None: `path`'s directory, opened as given).

    Created with O_EXCL and mode 0666 less the umask, so the final output gets the ordinary
    permissions a new file would (mkstemp would make it 0600).
    """
    name = os.path.basename(path)
    if directory is None:
        with open_directory(os.path.dirname(os.path.abspath(path)), None) as opened:
            return create_temp(path, opened)
    while True:
        temp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return directory.create(temp), directory.join(temp)
        except FileExistsError:
            continue


# A writer's temporary file (`create_temp`): ``.<name>.<random>.tmp`` beside the file it
# becomes (a job's output, or a log job's rejects file: the output's name + ".rejects").
_ANY_TEMP: Final = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.tmp")


def temp_target(temp: str) -> str:
    """The file a temporary file of `create_temp` becomes (its path without the dot and the
    random part)."""
    directory, entry = os.path.split(temp)
    match = _ANY_TEMP.fullmatch(entry)
    return os.path.join(directory, match["name"] if match is not None else entry)


def temps_in(
    directory: str, names: dict[str, str], roots: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """(temp file, output) of each temporary file in `directory` (opened beneath `roots`, the
    output roots; None: as given) of an output named in `names` ({file name: output path}),
    or of its rejects file: one listing for a directory of many outputs. Raises OSError when
    the directory cannot be opened or listed."""
    with open_directory(directory, roots) as opened:
        entries = opened.names()
    found = []
    for entry in entries:
        match = _ANY_TEMP.fullmatch(entry)
        if match is None:
            continue
        name = match["name"]
        output = names.get(name) or names.get(name.removesuffix(REJECTS_SUFFIX))
        if output is not None:
            found.append((os.path.join(directory, entry), output))
    return found


def temps_of(path: str, roots: Sequence[str] | None = None) -> list[str]:
    """The temporary files of a writer of `path` (the output's and its rejects file's) that
    are there now, in its directory opened beneath `roots`. Raises OSError when the
    directory cannot be opened or listed."""
    directory, name = os.path.split(os.path.abspath(path))
    return [temp for temp, _ in temps_in(directory, {name: path}, roots)]


def remove_temps(path: str, roots: Sequence[str] | None = None) -> list[str]:
    """Remove the temporary files a writer of `path` left behind (a crash, a kill -9): the
    output's and its rejects file's, in its directory opened beneath `roots` (the output
    roots; None: as given). Returns what was removed."""
    try:
        found = temps_of(path, roots)
    except OSError as error:  # gone, out of the roots, not ours to read: nothing to remove
        _log.warning("cannot look for temporary files of %s: %s", path, error)
        return []
    return [temp for temp in found if discard(temp, roots)]


def discard(path: str, roots: Sequence[str] | None = None) -> bool:
    """Remove a file we created (in its directory, opened beneath `roots`); a failure is
    logged (the caller goes on cleaning up)."""
    try:
        directory = open_directory(os.path.dirname(os.path.abspath(path)), roots)
    except FileNotFoundError:
        return True
    except OSError as error:
        _log.warning("cannot remove %s: %s", path, error)
        return False
    with directory:
        return _unlink(directory, os.path.basename(path))


def _unlink(directory: Directory, name: str) -> bool:
    try:
        directory.unlink(name, missing_ok=True)
    except OSError as error:
        _log.warning("cannot remove %s: %s", directory.join(name), error)
        return False
    return True


def complete_publication(
    files: Sequence[tuple[str, str, int]], roots: Sequence[str] | None = None
) -> bool:
    """At a start, finish a publication the daemon died in (files as journaled: synced
    temporary file, final path and the file's inode, in rename order, the output last).

    True: every file is in place, the job is done. A file still at its temporary path is
    renamed (its data was synced before the publication was journaled); one already at its
    final path (the inode it was journaled with) is left as it is.

    False: the output is neither at its temporary path nor in place: at the final path is
    nothing, or another file (an older output that `overwrite` was to replace). Its
    publication never got its files (a rename that failed, the job's cleanup under way, a
    power cut that lost the temporary file's directory entry): nothing was published, and the
    job must run again. What is left of it (temporary files, files of its own already
    renamed) is removed, so the run starts clean.

    The directories are synced before this returns, so the journal may then say done. (An
    inode of 0, from a journal written before inodes were kept, matches any file.) Every
    file is renamed and removed in its directory opened beneath `roots` (the output roots).
    """
    # A job's files all lie in its output's directory (they were created in one descriptor).
    with open_directory(os.path.dirname(os.path.abspath(files[-1][1])), roots) as directory:
        named = [(os.path.basename(t), os.path.basename(f), i) for t, f, i in files]
        last_temp, last_final, last_inode = named[-1]
        if directory.lstat(last_temp) is None and not _is_ours(directory, last_final, last_inode):
            for temp, final, inode in named:
                directory.unlink(temp, missing_ok=True)
                if inode and _is_ours(directory, final, inode):
                    directory.unlink(final)
            return False
        for temp, final, _ in named:
            if directory.lstat(temp) is not None:
                directory.rename(temp, final)
        directory.sync()
    return True


def _is_ours(directory: Directory, name: str, inode: int) -> bool:
    """Whether `name` is the file a publication journaled (any file, for an inode of 0)."""
    found = directory.lstat(name)
    return found is not None and inode in (0, found.st_ino)


class AtomicFile:
    """A temporary file beside `path` that becomes `path` only on `commit()`, in `directory`
    (`path`'s, opened beneath its root by the caller, who closes it; None: opened here, as
    given, and closed by `commit` or `abort`)."""

    def __init__(self, path: str, directory: Directory | None = None) -> None:
        self.path = os.path.abspath(path)
        self._own = directory is None
        self.directory = directory or open_directory(os.path.dirname(self.path), None)
        self.name = os.path.basename(self.path)
        try:
            fd, self.temp = create_temp(self.path, self.directory)
        except BaseException:
            self._release()
            raise
        self.file: IO[bytes] = os.fdopen(fd, "wb")

    def _release(self) -> None:
        if self._own:
            self.directory.close()

    def commit(self) -> None:
        """Sync, rename into place, sync the directory (without a journal: the benches)."""
        self.sync()
        try:
            self.directory.rename(os.path.basename(self.temp), self.name)
            self.directory.sync()
        finally:
            self._release()

    def inode(self) -> int:
        """The temporary file's inode (journaled with the publication)."""
        found = self.directory.lstat(os.path.basename(self.temp))
        if found is None:
            raise FileNotFoundError(f"{self.temp} is gone")
        return found.st_ino

    def sync(self) -> None:
        """Flush the data to disk and close (the first half of commit)."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def abort(self) -> bool:
        """Remove the temporary file (its unflushed data is dropped with it); False if it
        could not be. Removed first: closing flushes, and a flush can fail (a full disk may
        be why the job ends)."""
        removed = _unlink(self.directory, os.path.basename(self.temp))
        self._release()
        if not self.file.closed:
            try:
                self.file.close()
            except OSError as error:  # the data was going nowhere: only worth a note
                _log.info("discarded %s: %s", self.temp, error)
        return removed


def _pause_for_test(point: str, kind: str, job: str) -> None:
    """A test-only hook, so that a test can kill -9 the daemon at an exact instant of a
    publication. Off unless ``ACTORD_TEST_PAUSE_PUBLISH`` is set to ``<point>:<kind>:<fifo>``:
    a `kind` writer ("log" or "fft") that reaches `point` ("before-rename": the publication is
    journaled, nothing renamed; "after-rename": renamed and synced, the journal not yet told
    done) writes its job id and a newline to the FIFO `fifo`, then waits until ``<fifo>.go``
    is opened for writing (or the process is killed). The test makes both FIFOs."""
    setting = os.environ.get(PAUSE_ENV)
    if not setting:
        return
    wanted, wanted_kind, fifo = setting.split(":", 2)
    if (wanted, wanted_kind) != (point, kind):
        return
    with open(fifo, "w") as note:
        note.write(job + "\n")
    with open(fifo + ".go", "rb") as go:  # blocks until the test lets go
        go.read()


class _StartRefused(Exception):
    """A writer cannot start its job (its output's directory is not beneath its root, the
    output exists, ...): the job fails with this message, code first."""


class _UnitWriter(Actor):
    """Counting units in, the end of the job once the reader's total is known, and the
    publication of its output."""

    kind: str  # the job kind, for the test hook

    def __init__(
        self,
        job: str,
        output: str,
        store: str,
        reader: str,
        *,
        roots: Sequence[str] | None = None,
        overwrite: bool = True,
    ) -> None:
        self.job = job
        self.output = os.path.abspath(output)
        self.store = store  # the job store: it journals the publication and hears every note
        self.reader = reader
        self.roots = roots  # the allowed output roots (None: any directory, as given)
        self.overwrite = overwrite  # False: an existing output fails the job at its start
        self.directory: Directory | None = None  # the output's, opened beneath its root
        self.refused = False  # its start found it cannot write the output: it is stopping
        self.total: int | None = None
        self.done = 0
        self.bytes = 0
        self.sealed = False  # every unit is in: the publication has begun (it happens once)
        self.committed = False  # published: nothing of the job's is removed any more
        self.started = time.monotonic()

    def _open_directory(self, targets: Sequence[str]) -> Directory:
        """Open the output's directory beneath its root and check the files the job will
        publish there (`targets`): what a queued job's start must find (it may start long
        after it was accepted). Raises `_StartRefused` (the job's error, code first)."""
        try:
            directory = self.directory = open_directory(os.path.dirname(self.output), self.roots)
        except OSError as error:
            refused = output_refused(self.output, error)
            raise _StartRefused(f"{refused.code.value}: {refused}") from None
        for target in targets:
            found = directory.lstat(os.path.basename(target))
            if found is not None and stat.S_ISDIR(found.st_mode):
                raise _StartRefused(f"{ErrorCode.INVALID_PATH.value}: {target} is a directory")
            if found is not None and not self.overwrite:
                raise _StartRefused(
                    f"{ErrorCode.CONFLICT.value}: {target} already exists"
                    " (submit with overwrite to replace it)"
                )
        return directory

    def _start(self, targets: Sequence[str]) -> Directory | None:
        """`_open_directory`, or None once the job is failed (this writer then stops)."""
        try:
            return self._open_directory(targets)
        except _StartRefused as error:
            self.refused = True
            self._fail(str(error))
            self.ref.stop(graceful=False, wait=False)  # on_stop tells the store it stopped
            return None

    def _close_directory(self) -> None:
        if self.directory is not None:
            self.directory.close()
            self.directory = None

    def _progress(self) -> None:
        if self.stop_requested:
            return  # the job has ended: its reader is stopping, and the store ignores its notes
        if self.total is None:
            # The reader paces itself on these notes until it has sent its last unit (its
            # `ReadDone` gave the total). After that it needs none, and one still queued when
            # the job is done and the store stops the reader would be a dead letter.
            self.send(self.reader, UnitsWritten(self.job, self.done))
        self.send(self.store, WrittenProgress(self.job, self.done, self.total or 0, self.bytes))

    def _fail(self, error: str) -> None:
        self.send(self.store, JobError(self.job, error))

    def _abort(self) -> bool:
        """Remove whatever this writer created, unless it was committed; False if something
        could not be removed."""
        raise NotImplementedError

    def _publish(self, files: list[tuple[str, str, int]], summary: LogSummary | FFTSummary) -> None:
        """Publish synced temporary files (temporary, final, inode; rename order, the output
        last) once: journaled, then renamed in the output's directory, then the directory
        synced, then the end told (see the module's doc). Each file's inode is journaled too:
        a restart then knows its file from an older one at the same path (an output that
        `overwrite` replaces)."""
        self.sealed = True
        directory = self.directory
        assert directory is not None
        refused = self._record(files, summary)
        if refused is not None:
            # Cancelled or released meanwhile: the job is not ours to publish. The store
            # ends it and stops this writer, whose on_stop removes the files.
            self._fail(f"{self.output} was not published: {refused}")
            return
        # From here a kill leaves the temporary files to the next start, which renames them.
        _pause_for_test("before-rename", self.kind, self.job)
        renamed: list[str] = []
        try:
            for temp, final, _ in files:
                directory.rename(os.path.basename(temp), os.path.basename(final))
                renamed.append(os.path.basename(final))
            directory.sync()
        except OSError:
            # Nothing may stay published, since the job fails: what was renamed goes, and
            # `_abort` (from on_failure) removes the temporary files left.
            for final in renamed:
                _unlink(directory, final)
            raise
        self.committed = True
        _pause_for_test("after-rename", self.kind, self.job)
        self.send(self.store, WriterDone(self.job, summary))

    def _record(
        self, files: list[tuple[str, str, int]], summary: LogSummary | FFTSummary
    ) -> str | None:
        """Have the store journal the publication; None once committed, else why not."""
        total = self.total if self.total is not None else self.done
        request = Publishing(self.job, tuple(files), summary, self.done, total, self.bytes)
        try:
            answer = self.ask(self.store, request, timeout=_RECORD_TIMEOUT)
        except (ActorDead, AskTimeout) as error:
            return f"the journal could not record it: {error}"
        if isinstance(answer, Rejected):
            return answer.message
        assert isinstance(answer, Recorded), answer
        return None

    def on_stop(self) -> None:
        """Actor thread: a job stopped before its end leaves no output and no temp file.
        The store settles the job when it hears `WriterStopped`: it is always sent."""
        self._abort_and_tell()

    def _abort_and_tell(self) -> None:
        # Remove what was not published, then tell the store (always), and whether some of
        # it could not be removed (the store sweeps it then).
        left = True  # until the files are known to be gone
        try:
            left = not self._abort()
        finally:
            self._close_directory()
            self.send(self.store, WriterStopped(self.job, left))

    def on_failure(self, error: Exception, message: Message | None) -> None:
        """Actor thread: a write failed (disk full, ...) or the writer crashed: the job fails,
        nothing is left, and the writer stops (a restarted one would have lost what was
        written). The job's error is sent first: removing the files makes pool members fail
        their units ("output file was removed"), which must not be taken for the cause."""
        if isinstance(error, OSError):
            self._fail(f"writing {self.output} failed: {error}")
        else:
            self._fail(f"the job's writer failed: {type(error).__name__}: {error}")
        try:
            self._abort_and_tell()
        finally:
            self.ref.stop(graceful=False, wait=False)


class LogWriter(_UnitWriter):
    """Writes parsed blocks in input order: JSON Lines output and a rejects file beside it."""

    kind = "log"

    def __init__(
        self,
        job: str,
        output: str,
        store: str,
        reader: str,
        *,
        roots: Sequence[str] | None = None,
        overwrite: bool = True,
    ) -> None:
        super().__init__(job, output, store, reader, roots=roots, overwrite=overwrite)
        self.rejects_path = self.output + REJECTS_SUFFIX
        self._pending: dict[int, ParsedBlock] = {}  # blocks that arrived ahead of their turn
        self._counts: Counter[str] = Counter()
        self._levels: Counter[str] = Counter()
        self._too_long = 0
        self._read_bytes = 0  # bytes read from the input (decompressed), from the reader
        self._out: AtomicFile | None = None
        self._rejects: AtomicFile | None = None

    def on_start(self) -> None:
        """Actor thread: create the temporary output and rejects files, in the output's
        directory opened beneath its root (or fail the job and stop)."""
        super().on_start()
        directory = self._start((self.output, self.rejects_path))
        if directory is None:
            return
        self._out = AtomicFile(self.output, directory)
        self._rejects = AtomicFile(self.rejects_path, directory)

    def handle(self, message: Message) -> None:
        """Actor thread: a parsed block, or the reader's end-of-input note."""
        if self.refused:
            return  # stopping: its job has failed
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
        if self.total is not None and self.done == self.total and not self.sealed:
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
        # The output appears last: whoever sees it may read the rejects file too.
        files = [(part.temp, part.path, part.inode()) for part in (self._rejects, self._out)]
        self._publish(files, summary)

    def _abort(self) -> bool:
        if self.committed:
            return True
        removed = [part.abort() for part in (self._out, self._rejects) if part is not None]
        return all(removed)


class ArrayWriter(_UnitWriter):
    """Owns the output `.npy` of an FFT job: creates it, counts the chunks the FFT workers
    write into it (in any order), syncs it as it fills and publishes it when all are in.

    The data is flushed to disk every `sync_bytes` as chunks arrive, so the disk works while
    the pool computes instead of all at once at the end.
    """

    kind = "fft"

    def __init__(
        self,
        job: str,
        output: str,
        store: str,
        reader: str,
        sync_bytes: int = 64 << 20,
        *,
        roots: Sequence[str] | None = None,
        overwrite: bool = True,
    ) -> None:
        super().__init__(job, output, store, reader, roots=roots, overwrite=overwrite)
        self.sync_bytes = sync_bytes
        self._plan: ArrayPlan | None = None
        self._temp: str | None = None
        self._fd: int | None = None
        self._unsynced = 0
        self._seen: set[int] = set()

    def on_start(self) -> None:
        """Actor thread: open the output's directory beneath its root (or fail the job and
        stop)."""
        super().on_start()
        self._start((self.output,))

    def handle(self, message: Message) -> None:
        """Actor thread: the reader's plan (a request), a written chunk, or the end note."""
        payload = message.payload
        if self.refused:  # stopping: its job has failed
            if isinstance(payload, ArrayPlan):
                self.reply(message, Rejected(ErrorCode.INVALID_PATH, "the output cannot be made"))
            return
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
        if self.total is not None and self.done == self.total and not self.sealed:
            self._commit()

    def _open(self, plan: ArrayPlan) -> OutputLayout | Rejected:
        self._plan = plan
        assert self.directory is not None, "opened in on_start"
        try:
            self._fd, self._temp = create_temp(self.output, self.directory)
            # The .npy header (as np.save writes it), then the (sparse) data: workers fill it.
            offset = _write_npy_header(self._fd, np.dtype(plan.dtype), plan.shape)
            item = np.dtype(plan.dtype).itemsize
            os.ftruncate(self._fd, offset + item * plan.shape[0] * plan.shape[1] * plan.shape[2])
        except OSError as error:
            return Rejected(
                ErrorCode.INTERNAL, f"cannot create the output beside {self.output}: {error}"
            )
        roots = None if self.roots is None else tuple(self.roots)
        return OutputLayout(self._temp, offset, item * plan.shape[1] * plan.shape[2], roots)

    def _commit(self) -> None:
        assert self._plan is not None and self._temp is not None and self._fd is not None
        os.fsync(self._fd)
        inode = os.fstat(self._fd).st_ino
        os.close(self._fd)
        self._fd = None
        final = self.output
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
        self._publish([(self._temp, final, inode)], summary)

    def _abort(self) -> bool:
        removed = True
        if not self.committed and self._temp is not None and self.directory is not None:
            removed = _unlink(self.directory, os.path.basename(self._temp))
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # unbuffered: nothing is flushed, so this does not fail on a full disk
        return removed


def _write_npy_header(fd: int, dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
    """Write a .npy header (format 1.0, as `np.save` writes one) at the start of `fd`;
    returns the data's offset."""
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": shape,
    }
    with os.fdopen(os.dup(fd), "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        return file.tell()
