"""Length-prefixed msgpack frames over a real pipe (`actors/frames.py`)."""

from __future__ import annotations

import fcntl
import os
import threading
from typing import Any

import pytest

from actors.frames import read_frame, widen_pipe, write_frame

from .conftest import WAIT


def test_big_frames_cross_a_pipe_whole_and_in_order() -> None:
    read_fd, write_fd = os.pipe()
    blocks = [os.urandom(3 << 20), b"", os.urandom(100)]  # a frame 48x the pipe's buffer
    got: list[Any] = []
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        thread = threading.Thread(target=lambda: got.extend(read_frame(reader) for _ in blocks))
        thread.start()
        writer.write(b"")  # a buffered stream, as the parse worker's and the bridge's are
        for number, block in enumerate(blocks):
            write_frame(writer, [block, number, "p"])
        thread.join(WAIT)
        assert not thread.is_alive()
    assert got == [[block, number, "p"] for number, block in enumerate(blocks)]


def test_a_frame_cut_short_is_an_eof_error() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader:
        with os.fdopen(write_fd, "wb") as writer:
            write_frame(writer, [b"x" * 1000])
        data = reader.read()
    cut_read, cut_write = os.pipe()
    os.write(cut_write, data[:500])
    os.close(cut_write)
    with os.fdopen(cut_read, "rb") as cut, pytest.raises(EOFError, match="inside a frame"):
        read_frame(cut)


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="Linux pipes only")
def test_a_widened_pipe_holds_a_mib_or_the_systems_limit() -> None:
    read_fd, write_fd = os.pipe()
    try:
        widen_pipe(write_fd)
        with open("/proc/sys/fs/pipe-max-size") as limit:
            expected = min(1 << 20, int(limit.read()))
        assert fcntl.fcntl(read_fd, fcntl.F_GETPIPE_SZ) == expected
    finally:
        os.close(read_fd)
        os.close(write_fd)
