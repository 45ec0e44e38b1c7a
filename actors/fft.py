"""The FFT pool: each member transforms one chunk at a time (numpy releases the GIL, so a
pool of threads uses every core)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from actord import Actor, Message

from .model import BlockFailed, ChunkWritten, FFTChunk, SyntheticSource, Transform
from .reader import synthetic_chunk

__all__ = ["FFTWorker", "transform"]


def transform(data: Any, kind: Transform, dtype: str) -> Any:
    """`numpy.fft.fft2` or `rfft2` of one 2-D chunk, as `dtype` (complex128 or complex64).

    complex64 is computed in single precision from the start (numpy 2 keeps float32 input in
    float32), which is twice as fast as computing in double and casting.
    """
    source = np.asarray(data, dtype=np.float32 if dtype == "complex64" else np.float64)
    result = np.fft.rfft2(source) if kind is Transform.RFFT2 else np.fft.fft2(source)
    return result.astype(dtype, copy=False)


def write_chunk(path: str, position: int, result: Any) -> None:
    """Write an array's bytes at `position` of an existing file (pwrite: no shared offset)."""
    view = np.ascontiguousarray(result).data.cast("B")
    fd = os.open(path, os.O_WRONLY)
    try:
        while view:
            written = os.pwrite(fd, view, position)
            view = view[written:]
            position += written
    finally:
        os.close(fd)


class FFTWorker(Actor):
    """FFT pool member: transforms a chunk, writes it into its slot of the job's output, and
    tells the job's writer. Workers write in parallel, so the disk copy is not serialised."""

    def handle(self, message: Message) -> None:
        """Actor thread: transform and write one chunk."""
        chunk: FFTChunk = message.payload
        data = chunk.data
        if isinstance(data, SyntheticSource):
            data = synthetic_chunk(data.seed, data.index, data.shape)
        result = transform(data, chunk.transform, chunk.dtype)
        layout = chunk.layout
        if result.nbytes != layout.chunk_bytes:
            raise ValueError(
                f"chunk {chunk.index}: {result.nbytes} bytes, not {layout.chunk_bytes}"
            )
        try:
            write_chunk(layout.path, layout.offset + chunk.index * layout.chunk_bytes, result)
        except FileNotFoundError:
            # The job ended (cancelled or failed) and its writer removed the file: say so to
            # the reader, which is gone too, so this becomes a counted dead letter.
            self.send(chunk.reader, BlockFailed(chunk, "the job's output is gone"))
            return
        self.send(chunk.writer, ChunkWritten(chunk.job, chunk.index, int(result.nbytes)))

    def on_failure(self, error: Exception, message: Message | None) -> None:
        """Actor thread: hand the failed chunk back to its reader, which retries it once."""
        if message is not None and isinstance(message.payload, FFTChunk):
            self.send(message.payload.reader, BlockFailed(message.payload, repr(error)))
