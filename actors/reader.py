"""Readers: one per job. They stream the input to a pool and own the retry-once policy.

A reader sends itself a `_Next` message after each block, so a long input never holds its
thread inside one `handle` call: a stop or a retry is served between blocks. Memory stays
bounded by the block size and the line limit: the file is never read whole.

A reader opens its input beneath the allowed input roots (`beneath`): a regular file only,
never through a symlink that leaves its root, and never blocked by a FIFO. A gzip input is
bounded: past its `max_decompressed_bytes`, or its `max_ratio` of decompressed to compressed
bytes, the job fails, and no block beyond the limit is sent.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, Final, cast

import numpy as np

from actord import Actor, ActorDead, ActordError, AskTimeout, Message

from .beneath import open_file
from .input_guard import InputChanged, InputIdentity
from .model import (
    IN_FLIGHT_BYTES,
    LOG_RATIO_GRACE,
    ArrayPlan,
    BlockFailed,
    FFTChunk,
    FFTOptions,
    InputSized,
    InputSlice,
    JobEnded,
    JobError,
    LogBlock,
    LogOptions,
    OutputLayout,
    ReadDone,
    Rejected,
    SyntheticSource,
    Transform,
    UnitsWritten,
)
from .validate import input_refused, read_npy_header

__all__ = ["ArrayReader", "ChunkFailed", "LogReader", "open_log", "reader_capacity"]

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class _Next:
    """A reader's note to itself: read the next block."""


_NEXT = _Next()


@dataclass(frozen=True, slots=True)
class ChunkFailed:
    """A pool member to a unit's reader: the unit's data or its output failed (a zero side,
    a full disk), or its pool cannot run it (a Ray cluster down), which a retry would not
    cure: the job fails at once, naming the unit.

    Unlike `BlockFailed` (a worker that raised, retried once), the worker did not raise: the
    job's fault is no fault of the pool and never counts toward its restart intensity.
    """

    unit: FFTChunk | LogBlock
    error: str


def _where(unit: FFTChunk | LogBlock) -> str:
    if isinstance(unit, LogBlock):
        return f"block {unit.index} (from line {unit.first_line})"
    return f"chunk {unit.index}"


def open_log(path: str, roots: Sequence[str] | None = None) -> IO[bytes]:
    """Open a log for binary reading, beneath `roots` (the input roots; None: as given); gzip
    is recognised by its magic bytes, not its name. A gzip file's `fileobj` is the raw file
    (its position: the compressed bytes read)."""
    raw = os.fdopen(open_file(path, roots), "rb")
    try:
        magic = raw.read(2)
        raw.seek(0)
    except BaseException:
        raw.close()
        raise
    if magic == _GZIP_MAGIC:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    return raw


def _code_first(error: ActordError) -> str:
    """A job's error from a refusal: its code first, as a submit's would be answered."""
    return f"{error.code.value}: {error}"


def reader_capacity(window: int) -> int:
    """The mailbox a reader with this window needs so that no note to it ever waits."""
    return 3 * window + 16


_INPUT_ERRORS: Final = (OSError, EOFError, zlib.error, ValueError, ActordError)


class _UnitReader(Actor):
    """What both readers share: the retry-once policy, the in-flight window, and reporting
    errors to the job store.

    At most `window` units are sent and not yet written: past that the reader pauses until the
    writer's `UnitsWritten` note, so one slow unit cannot make the writer buffer the rest of
    the input. The reader's mailbox must hold `3 * window` notes (one written note and two
    failures per unit in flight), so that no note to it ever waits: see `reader_capacity`.

    Once its job has ended (`ended`, set by the store just before it stops the job's actors)
    a reader retries no unit and sends itself no note: either would be a dead letter on the
    path of every cancelled or failed job (a retry's result, or the note left queued).
    """

    def __init__(
        self,
        job: str,
        pool: str,
        writer: str,
        store: str,
        window: int,
        ended: JobEnded | None = None,
    ) -> None:
        self.job = job
        self.pool = pool
        self.writer = writer
        self.store = store
        self.window = window
        self.ended = ended
        self._sent = 0
        self._written = 0
        self._paused = False
        self._failed = False  # a unit failed the job: send nothing more

    def _fit_window(self, unit_bytes: int) -> None:
        # Big units, fewer in flight: a job holds about IN_FLIGHT_BYTES of input (2 units at
        # least, so that one is read while another is worked on).
        self.window = max(2, min(self.window, IN_FLIGHT_BYTES // max(1, unit_bytes)))

    def _room(self) -> bool:
        # Called before reading the next unit: False pauses the reader until a written note.
        if self._sent - self._written < self.window:
            return True
        self._paused = True
        return False

    def _on_written(self, note: UnitsWritten) -> None:
        self._written = max(self._written, note.done)
        if self._paused and self._sent - self._written < self.window:
            self._paused = False
            self._next()

    def _next(self) -> None:
        # A note to itself: the next unit is read after the messages queued now.
        if not self.ended:  # an ended job's reader is being stopped: the note would be lost
            self.send(self.name, _NEXT)

    def _retry_or_fail(self, failed: BlockFailed) -> None:
        unit = failed.unit
        if self.ended:
            return  # the job is over: neither a retry nor its failure matters any more
        if unit.attempt == 0:
            self.send(self.pool, dataclasses.replace(unit, attempt=1))
            return
        self._fail(f"{_where(unit)} failed twice: {failed.error}")

    def _unit_failed(self, failed: ChunkFailed) -> None:
        # Only the first failure is the job's: the others are of units already in flight.
        if not self._failed:
            self._fail(f"{_where(failed.unit)}: {failed.error}")

    def _fail(self, error: str) -> None:
        self._failed = True
        self.send(self.store, JobError(self.job, error))

    def on_failure(self, error: Exception, message: Message | None) -> None:
        """Actor thread: a reader that raised (a corrupt input, say) fails its job and stops;
        a restart would read the input again from the start."""
        # What reading raises (a corrupt gzip stream, a short .npy) is the input's; anything
        # else is a fault of the reader itself, and the error says so.
        what = "reading the input" if isinstance(error, _INPUT_ERRORS) else "the job's reader"
        try:
            self._close()
        finally:
            self._fail(f"{what} failed: {type(error).__name__}: {error}")
            self.ref.stop(graceful=False, wait=False)

    def _close(self) -> None:
        """Release the input (a no-op where there is nothing to release)."""


class LogReader(_UnitReader):
    """Reads a log in blocks of whole lines and sends each block to the parser pool."""

    def __init__(
        self,
        job: str,
        path: str,
        options: LogOptions,
        pattern: str,
        *,
        pool: str,
        writer: str,
        store: str,
        window: int = 32,
        ended: JobEnded | None = None,
        roots: Sequence[str] | None = None,
    ) -> None:
        super().__init__(job, pool, writer, store, window, ended)
        self._fit_window(options.block_bytes)
        self.path = path
        self.roots = roots  # the allowed input roots (None: any file, as given)
        self.options = options
        self.pattern = pattern
        self._file: IO[bytes] | None = None
        self._input: InputIdentity | None = None  # the input as opened: checked each block
        self._compressed: IO[bytes] | None = None  # a gzip input's raw file (its position)
        self._carry = b""  # the start of a line whose end has not been read yet
        self._skipping = False  # inside an over-long line: drop bytes up to its newline
        self._index = 0
        self._next_line = 1
        self._bytes = 0
        self._too_long = 0
        self._done = False
        # A line longer than the limit: its first `limit` bytes are kept (one C-level pass).
        self._long_line = re.compile(rb"([^\n]{%d})[^\n]+" % options.max_line_bytes)

    def on_start(self) -> None:
        """Actor thread: open the input and start reading."""
        try:
            self._file = open_log(self.path, self.roots)
            self._input = InputIdentity.of(self.path, self._file.fileno(), self.roots)
        except OSError as error:  # checked at submit: replaced since (a symlink, a FIFO)
            self._done = True
            self._close()
            self._fail(_code_first(input_refused(self.path, error)))
            return
        if isinstance(self._file, gzip.GzipFile):
            self._compressed = cast(IO[bytes], self._file.fileobj)
            size = 0  # the decompressed size is not known before it is read
        else:
            size = os.fstat(self._file.fileno()).st_size
        if not self.ended:  # for the clients' progress (an ended job's reader says nothing)
            self.send(self.store, InputSized(self.job, size, 0))
        self._next()

    def handle(self, message: Message) -> None:
        """Actor thread: read and send one block, or retry a failed one."""
        payload = message.payload
        if isinstance(payload, UnitsWritten):
            self._on_written(payload)
        elif isinstance(payload, BlockFailed):
            self._retry_or_fail(payload)
        elif isinstance(payload, ChunkFailed):
            self._unit_failed(payload)
        elif payload is _NEXT and not self._done and not self._failed and self._room():
            self._read_block()

    def _read_block(self) -> None:
        assert self._file is not None and self._input is not None
        want = self.options.block_bytes
        if self._compressed is not None:  # one byte past the limit tells it was passed
            want = min(want, self.options.max_decompressed_bytes - self._bytes + 1)
        try:
            self._input.check(self._file.fileno())  # before the read: a cut file reads short
            chunk = self._file.read(want)
            if not chunk:  # the end, unless the file changed since the last check
                self._input.check(self._file.fileno())
        except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
            self._done = True
            self._close()
            self._fail(
                str(error)
                if isinstance(error, InputChanged)
                else f"cannot read {self.path}: {error}"
            )
            return
        if self._compressed is not None and self._past_limit(self._bytes + len(chunk)):
            return
        self._bytes += len(chunk)
        if not chunk:
            self._finish()
            return
        data = self._take_lines(chunk)
        if data:
            self._send_block(data)
        self._next()

    def _past_limit(self, total: int) -> bool:
        """Whether a gzip input has decompressed past its limits (`total` bytes so far): if
        so, the job fails (the block that passed them is not sent)."""
        assert self._compressed is not None
        options = self.options
        error = None
        if total > options.max_decompressed_bytes:
            error = (
                f"max_decompressed_bytes: {self.path} decompresses to more than"
                f" {options.max_decompressed_bytes} bytes"
            )
        else:
            compressed = max(1, self._compressed.tell())
            if total > LOG_RATIO_GRACE and total > options.max_ratio * compressed:
                error = (
                    f"max_ratio: {self.path} decompresses to more than {options.max_ratio}"
                    f" times its compressed size ({total} bytes from {compressed})"
                )
        if error is None:
            return False
        self._done = True
        self._close()
        self._fail(f"the input is past a limit, {error}")
        return True

    def _take_lines(self, chunk: bytes) -> bytes:
        # Whole lines from carry + chunk; cut over-long lines at max_line_bytes.
        limit = self.options.max_line_bytes
        if self._skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                return b""
            chunk = chunk[newline + 1 :]
            self._skipping = False
        data = self._carry + chunk
        cut = data.rfind(b"\n")
        tail = data[cut + 1 :]
        whole = data[: cut + 1]
        if len(whole) > limit:  # only then can a finished line in it be over the limit
            whole, cut_lines = self._long_line.subn(rb"\1", whole)
            self._too_long += cut_lines
        if len(tail) > limit:
            # An over-long line: keep its first `limit` bytes as a line, skip the rest.
            whole += tail[:limit] + b"\n"
            tail = b""
            self._too_long += 1
            self._skipping = True
        self._carry = tail
        return whole

    def _send_block(self, data: bytes) -> None:
        block = LogBlock(
            job=self.job,
            index=self._index,
            first_line=self._next_line,
            data=data,
            pattern=self.pattern,
            reader=self.name,
            writer=self.writer,
            ended=self.ended,  # parsers drop the blocks of a job that has ended
        )
        self._index += 1
        self._sent += 1
        self._next_line += data.count(b"\n")
        self.send(self.pool, block)

    def _finish(self) -> None:
        if self._carry:  # the last line has no newline: it is a line all the same
            self._send_block(self._carry)
            self._carry = b""
        self._done = True
        self.send(self.writer, ReadDone(self.job, self._index, self._bytes, self._too_long))
        self._close()

    def on_stop(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._compressed is not None:  # GzipFile leaves a fileobj it was given open
            self._compressed.close()
            self._compressed = None


class ArrayReader(_UnitReader):
    """Sends an (N, H, W) stack chunk by chunk: a memory-mapped `.npy`, or generated."""

    def __init__(
        self,
        job: str,
        path: str | None,
        options: FFTOptions,
        *,
        pool: str,
        writer: str,
        store: str,
        window: int = 32,
        ended: JobEnded | None = None,
        shared: tuple[bool, bool] = (False, False),
        roots: Sequence[str] | None = None,
    ) -> None:
        super().__init__(job, pool, writer, store, window, ended)
        self.path = path
        self.roots = roots  # the allowed input roots (None: any file, as given)
        self.options = options
        # (input, output) under a root every Ray node mounts: a remote worker reads its chunk
        # by offset, and writes its result into the output, itself.
        self.by_path, self.remote_output = shared
        self._fd: int | None = None  # the input, read chunk by chunk (never memory-mapped)
        self._input: InputIdentity | None = None  # the input as opened: checked each chunk
        self._dtype: Any = None
        self._offset = 0  # of chunk 0, after the .npy header
        self._shape: tuple[int, int, int] = (0, 0, 0)
        self._layout: OutputLayout | None = None
        self._index = 0

    def on_start(self) -> None:
        """Actor thread: open the input (or plan the synthetic one) and start sending.

        The input is read chunk by chunk (pread), not memory-mapped: a file truncated under a
        running job then gives a short read, which fails the job, where a mapped page past the
        new end would kill the whole process with SIGBUS."""
        options = self.options
        if self.path is None:
            assert options.synthetic is not None
            self._shape = options.synthetic
        elif not self._open(self.path):
            return
        n, h, w = self._shape
        if not self.ended:  # for the clients' progress (an ended job's reader says nothing)
            self.send(self.store, InputSized(self.job, 0, n))
        itemsize = 8 if self._dtype is None else int(self._dtype.itemsize)
        if not (self.by_path and self.remote_output):
            # The chunk or its result is held in memory here. Not on the shared path: a Ray
            # worker reads and writes it, and the daemon holds only offsets.
            self._fit_window(h * w * itemsize)
        out_w = w // 2 + 1 if options.transform is Transform.RFFT2 else w
        plan = ArrayPlan(self.job, (n, h, out_w), options.dtype, options.transform.value)
        # The writer creates the output first; the FFT workers then write into it directly.
        try:
            layout = self.ask(self.writer, plan, timeout=60.0)
        except (ActorDead, AskTimeout) as error:  # it could not start (it failed the job)
            self._fail(f"the job's writer did not answer: {error}")
            return
        if not isinstance(layout, OutputLayout):
            self._fail(layout.message if isinstance(layout, Rejected) else repr(layout))
            return
        self._layout = layout
        if n == 0:
            self.send(self.writer, ReadDone(self.job, 0, 0))
            return
        self._next()

    def handle(self, message: Message) -> None:
        """Actor thread: send one chunk, retry one whose worker raised, or fail the job on a
        chunk whose data or output failed."""
        payload = message.payload
        if isinstance(payload, UnitsWritten):
            self._on_written(payload)
            return
        if isinstance(payload, BlockFailed):
            self._retry_or_fail(payload)
            return
        if isinstance(payload, ChunkFailed):
            self._unit_failed(payload)
            return
        if payload is not _NEXT or self._index >= self._shape[0] or self._layout is None:
            return
        if self._failed:  # the job is over: its remaining chunks would be wasted work
            return
        if not self._room():
            return
        index = self._index
        try:
            data = self._chunk(index)
        except InputChanged as error:  # truncated, grown or replaced under the job
            self._fail(str(error))
            return
        except OSError as error:  # the input was cut or became unreadable under the job
            self._fail(f"reading the input failed: {error}")
            return
        self._index += 1
        self._sent += 1
        self.send(
            self.pool,
            FFTChunk(
                job=self.job,
                index=index,
                data=data,
                transform=self.options.transform,
                dtype=self.options.dtype,
                layout=self._layout,
                reader=self.name,
                writer=self.writer,
                ended=self.ended,  # workers drop the chunks of a job that has ended
                remote_output=self.remote_output,
            ),
        )
        if self._index < self._shape[0]:
            self._next()
        else:
            self.send(self.writer, ReadDone(self.job, self._shape[0], 0))

    def _open(self, path: str) -> bool:
        try:
            with os.fdopen(open_file(path, self.roots), "rb") as file:
                shape, self._dtype = read_npy_header(path, file)
                self._offset = file.tell()
                self._input = InputIdentity.of(path, file.fileno(), self.roots)
                self._fd = os.dup(file.fileno())
        except OSError as error:  # checked at submit: replaced since (a symlink, a FIFO)
            self._fail(_code_first(input_refused(path, error)))
            return False
        except ActordError as error:
            self._fail(f"cannot read {path} as .npy: {error}")
            return False
        if len(shape) != 3 or not np.issubdtype(self._dtype, np.number):
            self._fail(f"{path}: need a numeric (N, H, W) stack, got {shape} {self._dtype}")
            return False
        self._shape = (shape[0], shape[1], shape[2])
        return True

    def _chunk(self, index: int) -> Any:
        _, h, w = self._shape
        if self._fd is None:
            return SyntheticSource(self.options.seed, index, (h, w))
        size = h * w * self._dtype.itemsize
        if self._input is not None:
            self._input.check(self._fd)
        if self.by_path and self.path is not None:
            roots = None if self.roots is None else tuple(self.roots)
            offset = self._offset + index * size
            return InputSlice(self.path, offset, self._dtype.str, (h, w), roots)
        data = os.pread(self._fd, size, self._offset + index * size)
        if len(data) < size:
            if self._input is not None:
                self._input.check(self._fd)  # cut since the check above: say so
            raise OSError(f"{self.path} ends before chunk {index}: it was cut while the job ran")
        return np.frombuffer(data, self._dtype).reshape(h, w)  # read-only: backed by bytes

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def on_stop(self) -> None:
        """Actor thread: release the input."""
        self._close()


def synthetic_chunk(seed: int, index: int, shape: tuple[int, int]) -> Any:
    """Generated chunk `index` of a synthetic job: uniform [0, 1) floats from seed + index."""
    return np.random.default_rng(seed + index).random(shape)
