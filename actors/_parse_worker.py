"""A parse worker process: length-prefixed msgpack frames in on stdin, results out on stdout.

Started by a process-executor Parser pool member (one worker per member); it exits when its
stdin closes. A block that raises is answered with the error text, and the worker goes on.
"""

from __future__ import annotations

import os
import struct
import sys

import msgpack

from actors.parser import parse_block

_FRAME = struct.Struct(">I")


def main() -> int:
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    while True:
        header = stdin.read(_FRAME.size)
        if len(header) < _FRAME.size:
            return 0
        (size,) = _FRAME.unpack(header)
        data, first_line, pattern = msgpack.unpackb(stdin.read(size), raw=False)
        try:
            reply: object = parse_block(data, first_line, pattern)
        except Exception as error:  # noqa: BLE001 - reported to the actor, which fails the block
            reply = f"{type(error).__name__}: {error}"
        body = msgpack.packb(reply, use_bin_type=True)
        try:
            stdout.write(_FRAME.pack(len(body)) + body)
            stdout.flush()
        except BrokenPipeError:
            # The daemon is gone (killed): nobody wants the answer. Point stdout at /dev/null
            # so the interpreter's last flush does not fail too (as the Python docs advise).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
