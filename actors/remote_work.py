"""What a Ray worker runs: one FFT chunk or one log block, timed in its own CPU seconds.

`RemoteWorker` is a plain class: the Ray bridge (`_ray_bridge.py`) makes it a Ray actor, one
per pool member, so this module never imports Ray and its functions are tested without it.
Every argument and result is a plain msgpack type (bytes, numbers, strings, lists): the same
values cross the daemon's pipe to the bridge and Ray's object store.

An FFT chunk's source is its bytes (the object-store path), a slice of the input file (the
shared-path mode: every node mounts the input at the same path), or a synthetic recipe; its
result comes back as bytes, or is written at its offset into the writer's temporary file
(shared-path mode). Failures a retry cannot cure come back as an `(kind, message)` answer,
never as an exception, so that the daemon can tell a job's bad data from a lost worker.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from .beneath import open_file
from .fft import DATA_ERRORS, transform_chunk, write_chunk
from .model import Engine, Transform
from .parser import parse_block
from .reader import synthetic_chunk

__all__ = ["DATA", "GONE", "IO", "OK", "RemoteWorker", "fft_unit", "parse_unit"]

# The kinds of answer a unit gets (the first item of the returned list).
OK = "ok"
DATA = "data"  # the chunk's own data cannot be transformed: the job fails
IO = "io"  # writing the output failed (a full disk): the job fails
GONE = "gone"  # the output file was removed (its job ended)

# Test-only: off unless set (see `_hold_for_test`); the bridge passes it to its Ray actors.
HOLD_ENV = "ACTORD_TEST_HOLD_UNIT"
_held: list[bool] = []  # this worker process has held its unit (it holds one, once)


def _hold_for_test() -> None:
    """A test-only hook, so that a test can kill a node or stop the daemon while a unit runs
    on Ray. Off unless ``ACTORD_TEST_HOLD_UNIT`` is ``<where>:<fifo>``: the first FFT unit a
    worker process gets, on any node (`where` ``any``) or on a node started with
    ``ACTORD_TEST_NODE_TAG=<where>``, writes a line to the FIFO, then waits until
    ``<fifo>.go`` is opened for writing (or its process is killed). The test makes both."""
    setting = os.environ.get(HOLD_ENV)
    if not setting or _held:
        return
    where, fifo = setting.split(":", 1)
    if where not in ("any", os.environ.get("ACTORD_TEST_NODE_TAG")):
        return
    _held.append(True)
    with open(fifo, "w") as note:
        note.write(f"{os.getpid()}\n")
    with open(fifo + ".go", "rb") as go:
        go.read()


def _source(source: list[Any]) -> Any:
    kind = source[0]
    if kind == "bytes":
        _, data, dtype, shape = source
        return np.frombuffer(data, np.dtype(dtype)).reshape(shape)
    if kind == "file":  # opened beneath the input roots (None: as given)
        _, path, offset, dtype, shape, roots = source
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        fd = open_file(path, roots)
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if len(data) < size:
            raise ValueError(f"{path} ends before this chunk: it was cut while the job ran")
        return np.frombuffer(data, np.dtype(dtype)).reshape(shape)
    _, seed, index, shape = source
    return synthetic_chunk(seed, index, (shape[0], shape[1]))


def fft_unit(source: list[Any], kind: str, dtype: str, target: list[Any], engine: str) -> list[Any]:
    """Transform one chunk with the daemon's `engine` (its fft.engine: the same library as a
    local pool). `target` is ``["return", nbytes]`` (the result's bytes come back) or
    ``["file", path, offset, nbytes, roots]`` (written there, opened beneath the output
    roots; None: as given). Returns ``[OK, bytes or None,
    cpu_seconds]`` or ``[DATA | IO | GONE, message, cpu_seconds]``."""
    started = time.thread_time()
    _hold_for_test()
    try:
        result = transform_chunk(
            _source(source),
            Transform(kind),
            dtype,
            target[1 if target[0] == "return" else 3],
            Engine(engine),
        )
    except ImportError as error:  # this node lacks the daemon's engine: every unit would
        message = (
            f"fft.engine {engine!r} is not installed on Ray node {os.uname().nodename} "
            f'({error}): install it on every node, or set fft.engine = "numpy"'
        )
        return [DATA, message, time.thread_time() - started]
    except OSError as error:  # the input is gone, cut or unreadable under the job
        return [DATA, f"reading the input failed: {error}", time.thread_time() - started]
    except DATA_ERRORS as error:
        message = f"the transform failed: {type(error).__name__}: {error}"
        return [DATA, message, time.thread_time() - started]
    if target[0] == "return":
        return [OK, np.ascontiguousarray(result).tobytes(), time.thread_time() - started]
    _, path, offset, _, roots = target
    try:
        write_chunk(path, offset, result, roots)
    except FileNotFoundError:
        return [GONE, "its output file was removed", time.thread_time() - started]
    except OSError as error:
        return [IO, f"writing the output failed: {error}", time.thread_time() - started]
    return [OK, None, time.thread_time() - started]


def parse_unit(data: bytes, first_line: int, pattern: str) -> list[Any]:
    """Parse one block: ``[OK, fields, cpu_seconds]`` (see `parse_block`)."""
    started = time.thread_time()
    fields = parse_block(data, first_line, pattern)
    fields["levels"] = [list(pair) for pair in fields["levels"]]
    return [OK, fields, time.thread_time() - started]


class RemoteWorker:
    """One pool member's Ray actor. Its methods run on the Ray worker's thread."""

    def ready(self) -> list[Any]:
        """The node this worker was placed on (answered once it is alive)."""
        import ray  # noqa: PLC0415 - only ever called inside a Ray worker

        return [OK, str(ray.get_runtime_context().get_node_id()), 0.0]

    def fft(
        self, source: list[Any], kind: str, dtype: str, target: list[Any], engine: str
    ) -> list[Any]:
        return fft_unit(source, kind, dtype, target, engine)

    def parse(self, data: bytes, first_line: int, pattern: str) -> list[Any]:
        return parse_unit(data, first_line, pattern)
