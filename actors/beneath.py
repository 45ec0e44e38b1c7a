"""Opening a job's files beneath their allowed root, never by a path checked earlier.

A path is checked at submit (`paths.confine`) and the file is opened later: a user who can
write inside a root can swap a directory on the way for a symlink to elsewhere in between.
So every file a job reads or writes is opened here, relative to a descriptor of its root,
without following a symlink that leaves the root:

- the directory is opened with Linux's ``openat2(2)`` and ``RESOLVE_BENEATH |
  RESOLVE_NO_MAGICLINKS`` (a symlink that stays inside the root is followed; one that leaves
  it, an absolute one, ``..`` above the root and ``/proc`` magic links are refused); where
  the kernel lacks it (before 5.6) or a seccomp filter refuses it, by a walk from the root,
  one component at a time, with ``O_NOFOLLOW | O_DIRECTORY`` (any symlink is refused: the
  paths a job keeps are resolved at submit, so a symlink on the way is one swapped in since);
- the file itself is opened in that directory's descriptor with ``O_NOFOLLOW`` and
  ``O_NONBLOCK`` (a FIFO cannot block the open), then checked on the descriptor: a regular
  file only, never a FIFO, device, socket or directory;
- a rename, an unlink, a new temporary file (``O_CREAT | O_EXCL``) and the directory's fsync
  go through the directory's descriptor (`Directory`), never through a path again.

A job's directory is the one it opened: if it is swapped afterwards, the job goes on in the
directory it opened, which was beneath the root. Without roots (an in-process client, which
may use any path this process may) paths are opened as given, with the same file checks.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import stat
from collections.abc import Sequence
from enum import Enum
from types import TracebackType
from typing import Final

__all__ = [
    "Directory",
    "Escape",
    "Method",
    "NotRegular",
    "default_method",
    "open_directory",
    "open_file",
    "root_of",
]

_SYS_OPENAT2: Final = 437  # the same number on every Linux architecture (5.6+)
_RESOLVE_NO_MAGICLINKS: Final = 0x02
_RESOLVE_BENEATH: Final = 0x08
_OPENAT2_TRIES: Final = 16  # EAGAIN: a rename raced the resolution; the kernel asks to retry
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NONBLOCK


class Method(Enum):
    """How a directory beneath a root is opened."""

    OPENAT2 = "openat2"
    WALK = "walk"  # component by component with O_NOFOLLOW: the fallback


class Escape(OSError):
    """A path leaves its allowed root: ``..``, a symlink out of it, or any symlink on the
    walk; or it lies under no allowed root at all."""


class NotRegular(OSError):
    """A job's file is not a regular file (a FIFO, a device, a socket, a directory)."""


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_libc: Final = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _openat2(dir_fd: int, path: str, flags: int) -> int:
    how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    encoded = os.fsencode(path)
    for _ in range(_OPENAT2_TRIES):
        fd = _libc.syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(encoded),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        code = ctypes.get_errno()
        if code != errno.EAGAIN:
            raise OSError(code, os.strerror(code), path)
    raise OSError(errno.EAGAIN, "renames kept racing the path's resolution", path)


@functools.cache
def default_method() -> Method:
    """openat2 if this kernel (and its seccomp filter) lets us call it, else the walk."""
    try:
        fd = _openat2(-100, "/", _DIR_FLAGS)  # AT_FDCWD: an absolute path is refused beneath
    except OSError as error:
        if error.errno in (errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP):
            return Method.WALK
        return Method.OPENAT2  # it ran, and refused "/" beneath the cwd (EXDEV): it is there
    os.close(fd)
    return Method.OPENAT2


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise Escape(errno.EINVAL, f"{name!r} is not a file name in its directory")
    return name


def _locate(path: str, roots: Sequence[str]) -> tuple[str, list[str]]:
    """The root `path` lies under (resolved) and its components below it; raise `Escape`."""
    if not os.path.isabs(path) or "\x00" in path:
        raise Escape(errno.EINVAL, "not an absolute path", path)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise Escape(errno.EXDEV, "has a '..' component", path)
    normal = "/" + "/".join(parts)
    for root in roots:
        real = os.path.realpath(root)
        if os.path.commonpath([real, normal]) == real:
            below = os.path.relpath(normal, real)
            return real, [] if below == "." else below.split("/")
    raise Escape(errno.EXDEV, "not under an allowed root", path)


def root_of(path: str, roots: Sequence[str]) -> str | None:
    """The root (resolved) `path` lies under, judged by its text alone (nothing is opened
    or looked at: a job's paths are kept resolved), or None."""
    try:
        return _locate(path, roots)[0]
    except Escape:
        return None


def _walk(root_fd: int, parts: Sequence[str]) -> int:
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                following = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as error:
                # O_NOFOLLOW | O_DIRECTORY on a symlink says ENOTDIR (or ELOOP): which is it?
                if error.errno in (errno.ENOTDIR, errno.ELOOP) and stat.S_ISLNK(
                    os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                ):
                    raise OSError(errno.ELOOP, "a symlink on the walk") from None
                raise
            os.close(fd)
            fd = following
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_beneath(root: str, parts: Sequence[str], method: Method) -> int:
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        if not parts:
            return os.dup(root_fd)
        if method is Method.OPENAT2:
            return _openat2(root_fd, "/".join(parts), _DIR_FLAGS)
        return _walk(root_fd, parts)
    finally:
        os.close(root_fd)


class Directory:
    """An open directory (its descriptor), in which a job's files are opened, created,
    renamed and removed by name. Close it (or use it as a context manager). Any thread; one
    at a time (it is a descriptor and its path: nothing else)."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    def __enter__(self) -> Directory:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def join(self, name: str) -> str:
        """The path a name in this directory had when it was opened (for messages, journals)."""
        return os.path.join(self.path, name)

    def open(self, name: str, flags: int = os.O_RDONLY) -> int:
        """An existing regular file `name`, opened with `flags` (blocking once opened).
        Raises `Escape` for a symlink, `NotRegular` for anything but a regular file."""
        try:
            fd = os.open(
                _check_name(name),
                flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=self.fd,
            )
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise Escape(
                    errno.ELOOP, "a symbolic link: not followed", self.join(name)
                ) from None
            if error.errno == errno.ENXIO:  # O_WRONLY on a FIFO nobody reads, or a socket
                raise NotRegular(errno.ENXIO, "not a regular file", self.join(name)) from None
            raise OSError(error.errno, error.strerror, self.join(name)) from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise NotRegular(
                    errno.EINVAL, f"{_kind(mode)}, not a regular file", self.join(name)
                )
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def create(self, name: str, mode: int = 0o666) -> int:
        """A new file `name` (O_EXCL: never one that exists, nor a symlink), for writing."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(_check_name(name), flags, mode, dir_fd=self.fd)

    def lstat(self, name: str) -> os.stat_result | None:
        """What `name` is (a symlink is not followed), or None if there is nothing."""
        try:
            return os.stat(_check_name(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def rename(self, source: str, target: str) -> None:
        """Rename within this directory (replacing `target`)."""
        os.rename(_check_name(source), _check_name(target), src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str, *, missing_ok: bool = False) -> None:
        try:
            os.unlink(_check_name(name), dir_fd=self.fd)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def names(self) -> list[str]:
        """The entries of the directory."""
        return os.listdir(self.fd)

    def sync(self) -> None:
        """fsync the directory: its renames and new entries are on disk."""
        os.fsync(self.fd)


def open_directory(
    path: str, roots: Sequence[str] | None, *, method: Method | None = None
) -> Directory:
    """The directory `path`, opened beneath the allowed root it lies under (`roots`, None for
    none: opened as given). Raises `Escape` if it leaves its root, OSError if it is missing
    or not a directory. `method` is for tests: by default openat2 where the kernel has it."""
    if roots is None:
        return Directory(os.open(path, _DIR_FLAGS), path)
    root, parts = _locate(path, roots)
    try:
        fd = _open_beneath(root, parts, method or default_method())
    except OSError as error:
        if error.errno in (errno.EXDEV, errno.ELOOP):
            raise Escape(
                error.errno, "leaves its allowed root (a symlink on the way)", path
            ) from None
        if error.errno == errno.ENOTDIR:
            raise OSError(error.errno, "not a directory (or a symlink on the way)", path) from None
        raise OSError(error.errno, error.strerror, path) from None
    return Directory(fd, "/".join([root.rstrip("/"), *parts]) or "/")


def open_file(
    path: str,
    roots: Sequence[str] | None,
    flags: int = os.O_RDONLY,
    *,
    method: Method | None = None,
) -> int:
    """The existing regular file `path`, opened with `flags` beneath its root (see the
    module): a descriptor, blocking. Raises `Escape`, `NotRegular` or OSError."""
    directory, name = os.path.split(path)
    with open_directory(directory or "/", roots, method=method) as opened:
        return opened.open(name, flags)
