"""The FFT pool: each member transforms one chunk at a time (numpy releases the GIL, so a
pool of threads uses every core)."""

from __future__ import annotations

from typing import Any

import numpy as np

from actord import Actor, Message

from .model import BlockFailed, FFTChunk, FFTResult, SyntheticSource, Transform
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


class FFTWorker(Actor):
    """FFT pool member: FFTChunk in, FFTResult (a read-only array) to the chunk's writer."""

    def handle(self, message: Message) -> None:
        """Actor thread: transform one chunk."""
        chunk: FFTChunk = message.payload
        data = chunk.data
        if isinstance(data, SyntheticSource):
            data = synthetic_chunk(data.seed, data.index, data.shape)
        result = transform(data, chunk.transform, chunk.dtype)
        result.setflags(write=False)
        self.send(chunk.writer, FFTResult(chunk.job, chunk.index, result, int(result.nbytes)))

    def on_failure(self, error: Exception, message: Message | None) -> None:
        """Actor thread: hand the failed chunk back to its reader, which retries it once."""
        if message is not None and isinstance(message.payload, FFTChunk):
            self.send(message.payload.reader, BlockFailed(message.payload, repr(error)))
