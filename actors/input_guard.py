"""What a job's input was when its reader opened it, and whether it is still that.

A job reads the file that was at its input path when it started, whole and unchanged. The
reader keeps the open descriptor's identity and size, and checks before each unit it reads
and once more at the end: a file truncated (shorter than at the start), grown (a log still
being written to: a job does not read a moving target, and would otherwise end `done` with
whatever part it happened to read), or replaced at its path (another inode there, or none:
renamed or removed) fails the job with an error that says which. The descriptor is checked
with fstat and the path with an lstat in its directory, opened beneath the input roots
(`beneath`): a path that now leads out of its root (a directory swapped for a symlink) fails
the job as `invalid_path`, and no file outside the roots is looked at. A rewrite in place that
keeps the size is not seen.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .beneath import Escape, open_directory

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
    roots: tuple[str, ...] | None  # the allowed input roots (None: any path, as given)

    @classmethod
    def of(cls, path: str, fd: int, roots: Sequence[str] | None) -> InputIdentity:
        """The identity of `path`, open as `fd`, now (at the job's start)."""
        stat = os.fstat(fd)
        kept = None if roots is None else tuple(roots)
        return cls(path, stat.st_dev, stat.st_ino, stat.st_size, kept)

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
            with open_directory(os.path.dirname(self.path), self.roots) as directory:
                stat = directory.lstat(os.path.basename(self.path))
        except Escape as error:
            raise InputChanged(
                f"invalid_path: {self.path} leads out of its allowed root now ({error.strerror})"
            ) from None
        except FileNotFoundError:
            stat = None
        if stat is None:
            raise InputChanged(f"{self.path} was removed or renamed while the job ran")
        if (stat.st_dev, stat.st_ino) != (self.device, self.inode):
            raise InputChanged(f"{self.path} was replaced by another file while the job ran")
