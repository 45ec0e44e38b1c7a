"""A parse worker process: length-prefixed msgpack frames in on stdin, results out on stdout.

Started by a process-executor Parser pool member (one worker per member); it exits when its
stdin closes. A block that raises is answered with the error text, and the worker goes on.
"""

from __future__ import annotations

import os
import sys

from actors.frames import read_frame, write_frame
from actors.parser import parse_block


def main() -> int:
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    while True:
        try:
            data, first_line, pattern = read_frame(stdin)
        except EOFError:
            return 0
        try:
            reply: object = parse_block(data, first_line, pattern)
        except Exception as error:  # noqa: BLE001 - reported to the actor, which fails the block
            reply = f"{type(error).__name__}: {error}"
        try:
            write_frame(stdout, reply)
        except BrokenPipeError:
            # The daemon is gone (killed): nobody wants the answer. Point stdout at /dev/null
            # so the interpreter's last flush does not fail too (as the Python docs advise).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
