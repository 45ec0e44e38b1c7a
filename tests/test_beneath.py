"""Opening beneath a root (actors/beneath.py): every escape refused, with openat2 and with the
fallback walk; nothing but a regular file is ever opened, and nothing blocks an open."""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import beneath
from actors.beneath import (
    Escape,
    Method,
    NotRegular,
    default_method,
    open_directory,
    open_file,
)

pytestmark = pytest.mark.timeout(30)  # a FIFO that blocked an open would hang here


@pytest.fixture(params=list(Method), ids=[m.value for m in Method])
def method(request: pytest.FixtureRequest) -> Method:
    chosen: Method = request.param
    if chosen is Method.OPENAT2 and default_method() is not Method.OPENAT2:
        pytest.skip("this kernel (or its seccomp filter) has no openat2")
    return chosen


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A root with a file and a subdirectory, and an outside directory with a secret."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "ok.log").write_text("inside\n")
    (outside / "secret.log").write_text("SECRET\n")
    yield root, outside


def _read(path: Path, root: Path, method: Method) -> bytes:
    fd = open_file(str(path), [str(root)], method=method)
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def test_this_kernel_has_openat2() -> None:
    # Not a requirement of the product (the walk stands in), but on the CI machine the
    # openat2 path must be the one the other tests exercise.
    assert default_method() is Method.OPENAT2


def test_a_file_beneath_its_root_opens(tree: tuple[Path, Path], method: Method) -> None:
    root, _ = tree
    assert _read(root / "sub" / "ok.log", root, method) == b"inside\n"
    with open_directory(str(root), [str(root)], method=method) as directory:  # the root itself
        assert sorted(directory.names()) == ["sub"]


@pytest.mark.parametrize(
    "make",
    [
        lambda root, out: (str(root / "sub" / ".." / ".." / "outside" / "secret.log"), None),
        lambda root, out: (str(out / "secret.log"), None),  # not under the root at all
        lambda root, out: ("relative/ok.log", None),
        lambda root, out: (str(root / "abs" / "secret.log"), ("abs", str(out))),
        lambda root, out: (str(root / "rel" / "secret.log"), ("rel", "../outside")),
        lambda root, out: (
            str(root / "sub" / "deep" / "secret.log"),
            ("sub/deep", "../../outside"),
        ),
        lambda root, out: (str(root / "link.log"), ("link.log", str(out / "secret.log"))),
        lambda root, out: (str(root / "rlink.log"), ("rlink.log", "../outside/secret.log")),
    ],
    ids=[
        "dotdot",
        "outside",
        "relative",
        "absolute-dir-symlink",
        "relative-dir-symlink",
        "nested-dir-symlink",
        "absolute-file-symlink",
        "relative-file-symlink",
    ],
)
def test_every_way_out_is_refused(
    tree: tuple[Path, Path],
    method: Method,
    make: object,
) -> None:
    root, outside = tree
    path, link = make(root, outside)  # type: ignore[operator]
    if link is not None:
        (root / link[0]).symlink_to(link[1])
    with pytest.raises(Escape):
        open_file(path, [str(root)], method=method)


def test_a_symlink_that_stays_inside_is_followed_by_openat2_refused_by_the_walk(
    tree: tuple[Path, Path],
) -> None:
    root, _ = tree
    (root / "alias").symlink_to("sub")
    if default_method() is Method.OPENAT2:
        assert _read(root / "alias" / "ok.log", root, Method.OPENAT2) == b"inside\n"
    with pytest.raises(Escape):  # the walk follows no symlink at all (paths are kept resolved)
        _read(root / "alias" / "ok.log", root, Method.WALK)


def test_dev_null_through_a_symlink_is_refused(tree: tuple[Path, Path], method: Method) -> None:
    root, _ = tree
    (root / "sub" / "null.log").symlink_to("/dev/null")
    with pytest.raises(Escape):
        open_file(str(root / "sub" / "null.log"), [str(root)], method=method)


@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_WRONLY], ids=["read", "write"])
def test_a_fifo_is_refused_at_once_never_waited_on(
    tree: tuple[Path, Path], method: Method, flags: int
) -> None:
    root, _ = tree
    os.mkfifo(root / "sub" / "fifo.log")
    with pytest.raises(NotRegular, match="not a regular file"):
        open_file(str(root / "sub" / "fifo.log"), [str(root)], flags, method=method)


def test_a_socket_is_refused(tree: tuple[Path, Path], method: Method) -> None:
    root, _ = tree
    # AF_UNIX paths are short: bind by a relative name from inside the directory.
    here = os.getcwd()
    os.chdir(root / "sub")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind("sock.log")
            server.listen(1)
            with pytest.raises(NotRegular, match="not a regular file"):
                open_file(str(root / "sub" / "sock.log"), [str(root)], method=method)
    finally:
        os.chdir(here)


def test_a_device_node_inside_the_root_is_refused(tree: tuple[Path, Path], method: Method) -> None:
    root, _ = tree
    try:
        os.mknod(root / "sub" / "null.log", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    with pytest.raises(NotRegular, match="a device"):
        open_file(str(root / "sub" / "null.log"), [str(root)], method=method)


def test_a_directory_is_not_a_file(tree: tuple[Path, Path], method: Method) -> None:
    root, _ = tree
    with pytest.raises(NotRegular, match="a directory"):
        open_file(str(root / "sub"), [str(root)], method=method)


def test_a_directory_swapped_after_it_was_opened_keeps_every_file_in_it(
    tree: tuple[Path, Path], method: Method
) -> None:
    # What a writer does: its directory is opened once; a swap for a symlink afterwards moves
    # nothing it creates, renames or removes out of the root.
    root, outside = tree
    with open_directory(str(root / "sub"), [str(root)], method=method) as directory:
        (root / "sub").rename(root / "moved")
        (root / "sub").symlink_to(outside)
        fd = directory.create(".out.tmp")
        os.write(fd, b"data")
        directory.sync()
        os.close(fd)
        directory.rename(".out.tmp", "out.jsonl")
        assert directory.lstat("out.jsonl") is not None
        directory.unlink("ok.log")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.log"]
    assert (root / "moved" / "out.jsonl").read_bytes() == b"data"
    assert not (root / "moved" / "ok.log").exists()


def test_a_new_file_never_follows_a_symlink_planted_at_its_name(
    tree: tuple[Path, Path], method: Method
) -> None:
    root, outside = tree
    (root / "sub" / ".out.tmp").symlink_to(outside / "planted")
    with open_directory(str(root / "sub"), [str(root)], method=method) as directory:
        with pytest.raises(FileExistsError):
            directory.create(".out.tmp")
        with pytest.raises(Escape):
            directory.create("../escape")
    assert not (outside / "planted").exists()


def test_a_missing_directory_is_an_os_error_not_an_escape(
    tree: tuple[Path, Path], method: Method
) -> None:
    root, _ = tree
    with pytest.raises(FileNotFoundError):
        open_directory(str(root / "nope"), [str(root)], method=method)


def test_without_roots_a_path_opens_as_given_with_the_same_file_checks(
    tree: tuple[Path, Path],
) -> None:
    root, outside = tree
    fd = open_file(str(root / "sub" / "ok.log"), None)
    os.close(fd)
    (root / "link.log").symlink_to(outside / "secret.log")
    with pytest.raises(Escape):  # a job's paths are kept resolved: a last link is a swap
        open_file(str(root / "link.log"), None)
    os.mkfifo(root / "fifo")
    with pytest.raises(NotRegular):
        open_file(str(root / "fifo"), None)


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EPERM], ids=["enosys", "seccomp-eperm"])
def test_a_kernel_or_filter_without_openat2_falls_back_to_the_walk(
    monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refused(dir_fd: int, path: str, flags: int) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(beneath, "_openat2", refused)
    default_method.cache_clear()
    try:
        assert default_method() is Method.WALK
    finally:
        default_method.cache_clear()
