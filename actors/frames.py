"""Length-prefixed msgpack frames over a pipe: how the daemon talks to its helper processes
(parse workers, the Ray bridge). Plain types only: no pickle crosses a pipe."""

from __future__ import annotations

import fcntl
import logging
import os
import struct
from typing import IO, Any

import msgpack

__all__ = ["read_frame", "widen_pipe", "write_frame"]

_HEADER = struct.Struct(">I")
_log = logging.getLogger(__name__)


def write_frame(stream: IO[bytes], value: Any) -> None:
    """Write one frame and flush it. The header and the body go in one writev, never
    joined: a frame carries a log block or its records (a MiB or more), and joining
    copied it once more."""
    body = msgpack.packb(value, use_bin_type=True)
    stream.flush()  # anything buffered goes first
    parts = [memoryview(_HEADER.pack(len(body))), memoryview(body)]
    fd = stream.fileno()
    while parts:
        written = os.writev(fd, parts)
        while parts and written >= len(parts[0]):
            written -= len(parts[0])
            parts.pop(0)
        if parts:
            parts[0] = parts[0][written:]


def widen_pipe(fd: int) -> None:
    """Give a pipe a 1 MiB buffer (Linux; 64 KiB by default, as much as the system allows
    otherwise): a block then crosses in one or two writes instead of sixteen hand-offs
    between the two processes."""
    size = 1 << 20
    try:
        with open("/proc/sys/fs/pipe-max-size") as limit:
            size = min(size, int(limit.read()))
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (OSError, ValueError, AttributeError) as error:  # not Linux, or a lower limit
        _log.debug("pipe buffer left as it is: %s", error)


def read_frame(stream: IO[bytes]) -> Any:
    """Read one frame; raises EOFError at the end of the stream (or a frame cut short)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the stream ended")
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        raise EOFError("the stream ended inside a frame")
    return msgpack.unpackb(body, raw=False)
