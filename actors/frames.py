"""Length-prefixed msgpack frames over a pipe: how the daemon talks to its helper processes
(parse workers, the Ray bridge). Plain types only: no pickle crosses a pipe."""

from __future__ import annotations

import struct
from typing import IO, Any

import msgpack

__all__ = ["read_frame", "write_frame"]

_HEADER = struct.Struct(">I")


def write_frame(stream: IO[bytes], value: Any) -> None:
    """Write one frame and flush it."""
    body = msgpack.packb(value, use_bin_type=True)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


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
