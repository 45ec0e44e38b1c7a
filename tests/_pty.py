"""A command on a real pseudo-terminal, and what a person would see on it.

`Terminal` runs a process with a pty as its stdin, stdout and stderr (of a given size) and
reads everything it writes; `Screen` replays that output the way a terminal draws it (enough
of it for actorctl: carriage return, newline, clear to end of line, colours), keeping each
line a carriage return was about to overwrite, so a test can see a bar advance.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Sequence

__all__ = ["Screen", "Terminal"]

_CSI = re.compile(rb"\x1b\[([0-9;?]*)([A-Za-z])")


class Terminal:
    """One process on its own pty; `output` is every byte it has written so far."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str], *, columns: int = 100, rows: int = 30
    ) -> None:
        controller, tty = os.openpty()
        fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self._fd = controller
        self.output = b""
        self.proc = subprocess.Popen(
            list(argv),
            stdin=tty,
            stdout=tty,
            stderr=tty,
            env={**env, "TERM": "xterm", "COLUMNS": str(columns), "LINES": str(rows)},
            start_new_session=True,  # the pty becomes its controlling terminal
        )
        os.close(tty)

    def write(self, data: bytes) -> None:
        os.write(self._fd, data)

    def read_until(self, done: Callable[[bytes], bool], timeout: float = 60.0) -> bytes:
        """Read until `done(output)` holds or the process has closed the pty (EOF)."""
        deadline = time.monotonic() + timeout
        while not done(self.output):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; the terminal shows:\n{self.output!r}")
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 65536)
            except OSError:  # EIO: every process on the pty has closed it
                data = b""
            if not data:
                break
            self.output += data
        return self.output

    def finish(self, timeout: float = 60.0) -> int:
        """Read to the end and return the exit code."""
        self.read_until(lambda _: False, timeout)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self._fd)


class Screen:
    """What the output looks like on a terminal: its lines, and the lines overwritten."""

    def __init__(self, output: bytes) -> None:
        self.lines: list[str] = [""]
        self.overwritten: list[str] = []  # the current line, each time a CR went back over it
        self.coloured = False
        self._col = 0
        self._feed(output)

    def _feed(self, data: bytes) -> None:
        i = 0
        while i < len(data):
            match = _CSI.match(data, i)
            if match:
                self._csi(match.group(1).decode(), match.group(2).decode())
                i = match.end()
                continue
            char = data[i : i + 1]
            i += 1
            if char == b"\r":
                # A CR before a LF ends the line (the tty turns each LF into CR LF).
                if self.lines[-1] and data[i : i + 1] != b"\n":
                    self.overwritten.append(self.lines[-1])
                self._col = 0
            elif char == b"\n":
                self.lines.append("")
                self._col = 0
            elif char >= b" " or char == b"\t":
                # Multi-byte characters: take the whole UTF-8 sequence.
                while i < len(data) and 0x80 <= data[i] < 0xC0:
                    char += data[i : i + 1]
                    i += 1
                self._put(char.decode("utf-8", "replace"))

    def _put(self, text: str) -> None:
        line = self.lines[-1].ljust(self._col)
        self.lines[-1] = line[: self._col] + text + line[self._col + len(text) :]
        self._col += len(text)

    def _csi(self, params: str, final: str) -> None:
        if final == "K":  # erase to the end of the line
            self.lines[-1] = self.lines[-1][: self._col]
        elif final == "m" and params not in ("", "0"):
            self.coloured = True

    def text(self) -> list[str]:
        """The lines as they stand, without the trailing empty one."""
        lines = [line.rstrip() for line in self.lines]
        while lines and not lines[-1]:
            lines.pop()
        return lines
