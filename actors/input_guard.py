"""What a job's input was when its reader opened it, and whether it is still that.

A job reads the file that was at its input path when it started, whole and unchanged. The
reader keeps the open descriptor's identity and size, and checks before each unit it reads
and once more at the end: a file truncated (shorter than at the start), grown (a log still
being written to: a job does not read a moving target, and would otherwise end `done` with
whatever part it happened to read), or replaced at its path (another inode there, or none:
renamed or removed) fails the job with an error that says which. The descriptor is checked
with fstat and the path with stat; nothing is opened again by path. A rewrite in place that
keeps the size is not seen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["InputChanged", "InputIdentity"]


class InputChanged(OSError):
    """The input is no longer the file, or the size, that its job started with."""


@dataclass(frozen=True, slots=True)
class InputIdentity:
    """The input as its reader opened it: which file (device, inode) and its size."""

    path: str
    device: int
    inode: int
    size: int

    @classmethod
    def of(cls, path: str, fd: int) -> InputIdentity:
        """The identity of `path`, open as `fd`, now (at the job's start)."""
        stat = os.fstat(fd)
        return cls(path, stat.st_dev, stat.st_ino, stat.st_size)

    def check(self, fd: int) -> None:
        """Raise `InputChanged` saying how, if `fd` or the path changed since the start."""
        size = os.fstat(fd).st_size
        if size < self.size:
            raise InputChanged(
                f"{self.path} was truncated while the job ran ({self.size:,} bytes at the "
                f"start, {size:,} now)"
            )
        if size > self.size:
            raise InputChanged(
                f"{self.path} grew while the job ran ({self.size:,} bytes at the start, "
                f"{size:,} now): a job reads a file that is no longer written to"
            )
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise InputChanged(f"{self.path} was removed or renamed while the job ran") from None
        if (stat.st_dev, stat.st_ino) != (self.device, self.inode):
            raise InputChanged(f"{self.path} was replaced by another file while the job ran")
