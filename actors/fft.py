"""The FFT pool: each member transforms one chunk at a time (scipy.fft and numpy.fft release
the GIL, so a pool of threads uses every core)."""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from actord import Actor, Message
from actord.runtime.errors import ErrorCode

from .beneath import Escape, NotRegular, open_file
from .model import BlockFailed, ChunkWritten, Engine, FFTChunk, SyntheticSource, Transform
from .reader import ChunkFailed, synthetic_chunk

__all__ = [
    "DATA_ERRORS",
    "FFTWorker",
    "default_engine",
    "transform",
    "transform_chunk",
    "write_chunk",
]

# What a chunk's own data can make the transform raise: a zero side or a bad shape
# (ValueError), a type numpy cannot transform (TypeError), an overflow under np.errstate
# (FloatingPointError), a chunk too big for the memory left (MemoryError). The same chunk
# fails the same way again, so these fail its job at once and are no fault of the worker.
# Anything else is a fault of the code: it raises, and the reader retries the chunk once.
DATA_ERRORS = (ValueError, TypeError, ArithmeticError, MemoryError)


def default_engine() -> Engine:
    """scipy when it is installed here (``pip install 'actord[scipy]'``), else numpy."""
    return Engine.SCIPY if importlib.util.find_spec("scipy") is not None else Engine.NUMPY


_Transform = Callable[[Any], Any]


@functools.cache
def _functions(engine: Engine) -> tuple[_Transform, _Transform]:
    """(fft2, rfft2) of `engine`. ImportError if it is scipy and scipy is not installed."""
    if engine is Engine.SCIPY:
        import scipy.fft  # noqa: PLC0415 - an optional extra

        # One thread a call (workers=1, scipy's default): the pool is the parallelism.
        return scipy.fft.fft2, scipy.fft.rfft2
    return np.fft.fft2, np.fft.rfft2


def transform(data: Any, kind: Transform, dtype: str, engine: Engine) -> Any:
    """`fft2` or `rfft2` of one 2-D chunk by `engine`, as `dtype` (complex128 or complex64).

    complex64 is computed in single precision from the start (both engines keep float32
    input in float32), which is faster than computing in double and casting. A complex
    chunk is transformed as complex: casting it to a real type would drop its imaginary part.
    scipy's results equal numpy's within 1e-15 relative error in complex128; in complex64
    they are within 4 float32 epsilons of the exact transform, as numpy's (tests/test_fft.py).
    """
    single = dtype == "complex64"
    if np.iscomplexobj(data):
        if kind is Transform.RFFT2:
            # Validation refuses this at submit; an input replaced since then ends here.
            raise TypeError(f"rfft2 needs a real input, not {np.asarray(data).dtype}")
        source = np.asarray(data, dtype=np.complex64 if single else np.complex128)
    else:
        source = np.asarray(data, dtype=np.float32 if single else np.float64)
    fft2, rfft2 = _functions(engine)
    result = rfft2(source) if kind is Transform.RFFT2 else fft2(source)
    return result.astype(dtype, copy=False)


def transform_chunk(data: Any, kind: Transform, dtype: str, planned: int, engine: Engine) -> Any:
    """`transform`, checked against the `planned` size of the chunk's slot in the output
    (ValueError if the input is not the shape the output was planned for: replaced since)."""
    result = transform(data, kind, dtype, engine)
    if result.nbytes != planned:
        raise ValueError(f"{result.nbytes} bytes, not the {planned} planned")
    return result


def write_chunk(path: str, position: int, result: Any, roots: Sequence[str] | None = None) -> None:
    """Write an array's bytes at `position` of an existing regular file (pwrite: no shared
    offset), opened beneath `roots` (the output roots; None: as given)."""
    view = np.ascontiguousarray(result).data.cast("B")
    fd = open_file(path, roots, os.O_WRONLY)
    try:
        while view:
            written = os.pwrite(fd, view, position)
            view = view[written:]
            position += written
    finally:
        os.close(fd)


class FFTWorker(Actor):
    """FFT pool member: transforms a chunk, writes it into its slot of the job's output, and
    tells the job's writer. Workers write in parallel, so the disk copy is not serialised.

    A chunk's bad data or a failed write of its output (a full disk) fails the chunk's job,
    told to its reader as a `ChunkFailed`: the worker does not raise, so a job's faults never
    count toward the pool's restart intensity, which is for faults of the code.
    """

    def __init__(self, engine: Engine = Engine.NUMPY) -> None:
        self.engine = engine  # the pool's library (fft.engine), the same for every member

    def on_start(self) -> None:
        """Actor thread: import the engine now (scipy.fft takes about 0.1 s), so that the
        daemon's start pays for it, not its first FFT job."""
        _functions(self.engine)

    def handle(self, message: Message) -> None:
        """Actor thread: transform and write one chunk."""
        chunk: FFTChunk = message.payload
        if chunk.ended:
            return  # its job is over (cancelled, failed): nobody waits for this chunk
        layout = chunk.layout
        try:
            data = chunk.data
            if isinstance(data, SyntheticSource):
                data = synthetic_chunk(data.seed, data.index, data.shape)
            result = transform_chunk(
                data, chunk.transform, chunk.dtype, layout.chunk_bytes, self.engine
            )
        except DATA_ERRORS as error:
            self._chunk_failed(chunk, f"the transform failed: {type(error).__name__}: {error}")
            return
        try:
            write_chunk(layout.path, layout.position(chunk.index), result, layout.roots)
        except FileNotFoundError:
            # Removed by its writer as the job ended (then nobody is told: its reader is
            # gone), or by someone else under a running job, which then fails.
            if not chunk.ended:
                self.send(chunk.reader, ChunkFailed(chunk, "its output file was removed"))
            return
        except (Escape, NotRegular) as error:
            # Its directory was swapped for a symlink out of the root (or its file for one):
            # the worker opens it by path, beneath the output root, and writes nowhere else.
            why = f"{ErrorCode.INVALID_PATH.value}: {error}"
            self._chunk_failed(chunk, f"writing the output failed: {why}")
            return
        except OSError as error:
            # ENOSPC, EIO, EFBIG, EDQUOT...: the output's disk, not the worker. A retry would
            # most likely fail the same way, and a full disk stays full.
            self._chunk_failed(chunk, f"writing the output failed: {error}")
            return
        if not chunk.ended:  # the job ended while it was done: its writer is gone
            self.send(chunk.writer, ChunkWritten(chunk.job, chunk.index, int(result.nbytes)))

    def _chunk_failed(self, chunk: FFTChunk, error: str) -> None:
        if not chunk.ended:
            self.send(chunk.reader, ChunkFailed(chunk, error))

    def on_failure(self, error: Exception, message: Message | None) -> None:
        """Actor thread: hand the failed chunk back to its reader, which retries it once."""
        chunk = None if message is None else message.payload
        if isinstance(chunk, FFTChunk) and not chunk.ended:  # an ended job's reader is gone
            self.send(chunk.reader, BlockFailed(chunk, repr(error)))
