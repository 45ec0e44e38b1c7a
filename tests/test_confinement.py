"""A hostile local user against a real daemon: symlink swaps racing 200 jobs, FIFOs, devices
and sockets swapped in for an input, and a gzip bomb. Nothing is read from or written outside
the roots, the store always answers, and a bad file only fails its own job."""

from __future__ import annotations

import builtins
import ctypes
import gzip
import os
import platform
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actord import ActorSystem, InvalidArgument
from actors.launcher import STORE, JobSystemConfig, start_job_system
from actors.model import (
    Executor,
    FFTOptions,
    JobKind,
    JobRejected,
    JobSpec,
    JobState,
    LogOptions,
)
from actors.validate import check_spec
from actors.wire import spec_from_wire, spec_to_wire
from tests._daemon import DaemonProcess

Daemons = Callable[..., DaemonProcess]

pytestmark = pytest.mark.timeout(300)

SLOW_PATTERN = r"(?P<a>(x+x+)+y)"  # catastrophic backtracking: ~0.1 s per line of 22 x's
_RENAMEAT2: dict[str, int] = {"x86_64": 316, "aarch64": 276}
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): `a` and `b` swap names in one atomic step."""
    number = _RENAMEAT2.get(platform.machine())
    if number is None:
        pytest.skip(f"no renameat2 syscall number for {platform.machine()}")
    result = _libc.syscall(
        ctypes.c_long(number),
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(os.fsencode(a)),
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(os.fsencode(b)),
        ctypes.c_uint(_RENAME_EXCHANGE),
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a))


class _Flipper:
    """A thread swapping each (real directory, symlink out of the root) pair, in a loop,
    until stopped: what a user who can write inside a root does between check and use."""

    def __init__(self, pairs: list[tuple[Path, Path]]) -> None:
        self.pairs = pairs
        self.flips = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="flipper")

    def _run(self) -> None:
        try:
            # The adversary's schedule, not a synchronisation: bursts of 8 swaps 1 ms apart
            # (an even number: each burst ends with the real directories back), then 20 ms of
            # calm. In a tight loop nearly every submit is refused, and a job that met a burst
            # anywhere (its open, a block, its end, its publication) fails: the calm lets some
            # jobs run whole with the swaps still racing the others.
            while not self.stopping.wait(0.02):
                for _ in range(8):
                    if self.stopping.wait(0.001):
                        break
                    for a, b in self.pairs:
                        _exchange(a, b)
                    self.flips += 1
                if self.flips % 2:  # stopped mid-burst: put the real directories back
                    for a, b in self.pairs:
                        _exchange(a, b)
                    self.flips += 1
        except BaseException as error:
            self.error = error

    def __enter__(self) -> _Flipper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def _ignore(method: str, params: Any) -> None:
    """Progress notifications: only the end matters here."""


def _files(top: Path) -> Iterator[Path]:
    """Every regular file under `top`, never through a symlink."""
    for where, _, names in os.walk(top, followlinks=False):
        for name in names:
            path = Path(where) / name
            if stat.S_ISREG(path.lstat().st_mode):
                yield path


def _listing(top: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(top)), p.stat().st_size) for p in _files(top))


def _wait_all(daemon: DaemonProcess, ids: list[str]) -> list[dict[str, Any]]:
    with daemon.client(timeout=120) as client:
        return [client.stream("watch", job, on_notification=_ignore, timeout=120) for job in ids]


def test_symlink_swaps_racing_200_jobs_never_read_or_write_outside_the_roots(
    daemons: Daemons, tmp_path: Path
) -> None:
    daemon = daemons("--parser-executor", "thread", "--max-jobs", "4", base=tmp_path / "d").start()
    outside_in, outside_out = tmp_path / "outside-in", tmp_path / "outside-out"
    outside_in.mkdir()
    outside_out.mkdir()
    secret = "".join(f"SECRET root-only line {i}\n" for i in range(40))
    (outside_in / "x.log").write_text(secret)
    np.save(outside_in / "x.npy", np.full((2, 4, 4), 7.0))  # its fft2 holds 112
    os.chmod(outside_in / "x.log", 0o600)
    # The input side: in/d (real, benign) <-> in/link (-> outside-in), swapped in a loop.
    real_in = daemon.inputs / "d"
    real_in.mkdir()
    (real_in / "x.log").write_text("".join(f"benign line {i}\n" for i in range(40)))
    np.save(real_in / "x.npy", np.ones((2, 4, 4)))  # its fft2 holds 16
    (daemon.inputs / "link").symlink_to(outside_in)
    # The output side: out/o (real) <-> out/link (-> outside-out).
    (daemon.outputs / "o").mkdir()
    (daemon.outputs / "link").symlink_to(outside_out)
    before_in, before_out = _listing(outside_in), _listing(outside_out)
    ids: list[str] = []
    refused: list[str] = []
    pairs = [(real_in, daemon.inputs / "link"), (daemon.outputs / "o", daemon.outputs / "link")]
    with _Flipper(pairs) as flipper, daemon.client(timeout=60) as client:
        for i in range(200):
            kind = "fft" if i % 4 == 3 else "log"
            job = {
                "kind": kind,
                "input": str(real_in / ("x.npy" if kind == "fft" else "x.log")),
                "output": str(daemon.outputs / "o" / f"j{i}.{'npy' if kind == 'fft' else 'jsonl'}"),
            }
            try:
                ids.append(client.call("submit", job)["id"])
            except Exception as error:
                assert "invalid_path" in repr(error) or "not under" in str(error), error
                refused.append(str(error))
        ended = _wait_all(daemon, ids)
    assert flipper.error is None and flipper.flips > 0
    print(f"{flipper.flips} swaps; {len(ids)} accepted, {len(refused)} refused at submit")
    # Nothing read from outside: no secret line in any output or rejects file...
    published = list(_files(daemon.outputs))
    for path in published:
        data = path.read_bytes()
        assert b"SECRET" not in data, f"{path} holds a line read outside the input root"
        if path.suffix == ".npy":
            assert not np.any(np.abs(np.load(path)) > 100), f"{path}: the outside stack's FFT"
    # ... nothing published or left outside, and no temporary file left anywhere.
    assert _listing(outside_out) == before_out == []
    assert _listing(outside_in) == before_in
    assert not [p for p in published if p.name.endswith(".tmp")]
    # Every job ended, done or failed with an error naming why.
    states = [job["state"] for job in ended]
    assert set(states) <= {"done", "failed"}, states
    for job in ended:
        if job["state"] == "failed":
            assert job["error"] and "invalid_path" in job["error"], job["error"]
    assert states.count("done") > 0 and states.count("failed") + len(refused) > 0
    done = sum(1 for job in ended if job["state"] == "done")
    print(f"{done} done, {len(ended) - done} failed")
    assert len([p for p in published if not p.name.endswith(".rejects")]) == done
    assert daemon.call("ping") is not None


def _blocker(daemon: DaemonProcess) -> dict[str, Any]:
    """A slow job that holds the daemon's one slot until it is cancelled."""
    source = daemon.inputs / "slow.log"
    source.write_text(("x" * 22 + "\n") * 400)
    options = {"pattern": SLOW_PATTERN, "block_bytes": 64}
    return {
        "kind": "log",
        "input": str(source),
        "output": str(daemon.outputs / "slow.jsonl"),
        "options": options,
    }


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def _refusal(call: Callable[[], Any]) -> str:
    """The error a call is refused with (it must be, within a second)."""
    started = time.monotonic()
    try:
        call()
    except Exception as error:
        assert time.monotonic() - started < 1.0
        return repr(error)
    raise AssertionError("not refused")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dev_null(path: Path) -> None:
    path.symlink_to("/dev/null")


def _device(path: Path) -> None:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")


def _socket(path: Path, keep: list[socket.socket]) -> None:
    here = os.getcwd()
    os.chdir(path.parent)  # AF_UNIX paths are short: bind by the name alone
    try:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path.name)
        server.listen(1)
        keep.append(server)
    finally:
        os.chdir(here)


@pytest.mark.parametrize("swap", ["fifo", "dev-null", "device", "socket"])
def test_a_fifo_device_or_socket_swapped_in_fails_its_job_and_the_store_answers(
    daemons: Daemons, tmp_path: Path, swap: str
) -> None:
    daemon = daemons("--parser-executor", "thread", "--max-jobs", "1").start()
    keep: list[socket.socket] = []
    make: dict[str, Callable[[Path], None]] = {
        "fifo": _fifo,
        "dev-null": _dev_null,
        "device": _device,
        "socket": lambda path: _socket(path, keep),
    }
    try:
        # At submit: refused at once, nothing opened that could block.
        named = daemon.inputs / "named.log"
        make[swap](named)
        for kind, suffix in (("log", "jsonl"), ("fft", "npy")):
            output = str(daemon.outputs / f"n.{suffix}")
            job = {"kind": kind, "input": str(named), "output": output}
            with daemon.client(timeout=10) as client:
                error = _refusal(lambda: client.call("submit", job))  # noqa: B023
            assert "invalid_path" in error, error
        # After submit, while the jobs wait in the queue: the swap is met by their reader
        # (a log's input, an FFT stack) or writer (the output's directory) as they start.
        blocker = daemon.call("submit", _blocker(daemon))["id"]
        log_in, fft_in = daemon.inputs / "queued.log", daemon.inputs / "queued.npy"
        log_in.write_text("a line\n")
        np.save(fft_in, np.ones((2, 4, 4)))
        out_dir = daemon.outputs / "qd"
        out_dir.mkdir()
        jobs = [
            {"kind": "log", "input": str(log_in), "output": str(daemon.outputs / "q.jsonl")},
            {"kind": "fft", "input": str(fft_in), "output": str(daemon.outputs / "q.npy")},
            {"kind": "log", "input": str(named.with_name("ok.log")), "output": str(out_dir / "q")},
        ]
        named.with_name("ok.log").write_text("a line\n")
        queued = [daemon.call("submit", job) for job in jobs]
        assert [job["state"] for job in queued] == ["accepted"] * 3
        for path in (log_in, fft_in):
            path.unlink()
            make[swap](path)
        out_dir.rmdir()
        make[swap](out_dir)
        daemon.call("cancel", blocker)  # the queued jobs start now, one at a time
        ended = _wait_all(daemon, [job["id"] for job in queued])
        words = ("FIFO", "device", "socket", "symbolic", "not a directory", "allowed root")
        for job in ended:
            assert job["state"] == "failed", job
            assert "invalid_path" in job["error"], job["error"]
            assert any(word in job["error"] for word in words), job["error"]
        # The store never waited on a file: it answers at once.
        for method, params in (("status", ()), ("job", (queued[0]["id"],)), ("jobs", ())):
            _, seconds = _timed(lambda: daemon.call(method, *params))  # noqa: B023
            assert seconds < 1.0, f"{method} took {seconds:.2f}s"
        assert sorted(p.name for p in daemon.outputs.iterdir()) == ["qd"]  # nothing published
    finally:
        for server in keep:
            server.close()


def _bomb(path: Path, megabytes: int) -> int:
    """A gzip of `megabytes` MiB of one repeated line (about 1,000:1); its size unpacked."""
    line = b"A" * 99 + b"\n"
    block = line * ((1 << 20) // len(line) + 1)
    block = block[: 1 << 20]
    with gzip.open(path, "wb", compresslevel=9) as packed:
        for _ in range(megabytes):
            packed.write(block)
    return megabytes << 20


@pytest.mark.parametrize(
    ("options", "limit", "named"),
    [
        ({"max_decompressed_bytes": 4 << 20}, 4 << 20, "max_decompressed_bytes"),
        ({}, None, "max_ratio"),  # the defaults: 200:1, once past 16 MiB
    ],
    ids=["size", "ratio"],
)
def test_a_gzip_bomb_fails_its_job_naming_the_limit_with_no_more_written(
    daemons: Daemons, options: dict[str, Any], limit: int | None, named: str
) -> None:
    daemon = daemons("--parser-executor", "thread").start()
    source = daemon.inputs / "bomb.log.gz"
    unpacked = _bomb(source, 64)
    compressed = source.stat().st_size
    assert unpacked / compressed > 200
    output = daemon.outputs / "bomb.jsonl"
    job = {
        "kind": "log",
        "input": str(source),
        "output": str(output),
        "options": {"block_bytes": 1 << 20, **options},
    }
    submitted = daemon.call("submit", job)
    with daemon.client(timeout=120) as client:
        ended = client.stream("watch", submitted["id"], on_notification=_ignore, timeout=120)
    assert ended["state"] == "failed"
    assert named in ended["error"], ended["error"]
    bound = limit if limit is not None else max(16 << 20, 200 * compressed)
    # Met while reading, at the limit's own figure (the failure may reach the store before
    # the writer has written a block: how much was written is bounded, not promised).
    assert f"more than {limit if limit is not None else 200}" in ended["error"], ended["error"]
    assert ended["bytes"] <= bound < unpacked
    assert not output.exists() and not Path(str(output) + ".rejects").exists()
    assert not list(daemon.outputs.glob(".*.tmp"))


@pytest.mark.parametrize(
    "options",
    [
        {"max_ratio": 0},
        {"max_ratio": (1 << 16) + 1},
        {"max_decompressed_bytes": 0},
        {"max_decompressed_bytes": (1 << 40) + 1},
        {"max_ratio": "200"},
    ],
)
def test_decompression_limits_out_of_bounds_are_refused_at_submit(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    source = tmp_path / "in.log"
    source.write_text("a line\n")
    wire = {"kind": "log", "input": str(source), "output": str(tmp_path / "o"), "options": options}
    with pytest.raises(InvalidArgument, match="max_"):
        check_spec(spec_from_wire(wire))


def test_decompression_limits_travel_and_defaults_pack_as_before() -> None:
    # A spec journaled before the limits existed packs the same (a retried submit with its
    # idempotency key finds its job): the defaults are left out.
    plain = JobSpec(JobKind.LOG, "/o", "/i", LogOptions())
    assert "max_ratio" not in spec_to_wire(plain)["options"]
    limited = JobSpec(JobKind.LOG, "/o", "/i", LogOptions(max_ratio=50, max_decompressed_bytes=9))
    back = spec_from_wire(spec_to_wire(limited))
    assert back == limited


def test_the_store_thread_never_opens_or_stats_a_users_file(
    system: ActorSystem, journal: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever a user's file is (a FIFO, a symlink swapped in, a file on a hung mount), the
    # store must not wait on it: every client waits on the store. So its thread touches none.
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    touched: list[tuple[str, str, str]] = []  # (thread, call, path) under tmp_path

    def watch(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(path, str | Path) and str(path).startswith(str(tmp_path)):
                touched.append((threading.current_thread().name, name, str(path)))
            return real(path, *args, **kwargs)

        return call

    for name in ("open", "stat", "lstat", "listdir", "scandir", "unlink", "rename", "replace"):
        monkeypatch.setattr(os, name, watch(f"os.{name}", getattr(os, name)))
    monkeypatch.setattr(builtins, "open", watch("open", builtins.open))
    roots = ((str(inputs),), (str(outputs),))
    config = JobSystemConfig(parsers=1, parser_executor=Executor.THREAD, roots=roots)
    client = start_job_system(system, journal, config)
    (inputs / "a.log").write_text("a line\n" * 10)
    np.save(inputs / "s.npy", np.ones((3, 4, 4)))
    (outputs / "taken.jsonl").write_text("old")
    specs = [
        JobSpec(JobKind.LOG, str(outputs / "a.jsonl"), str(inputs / "a.log")),
        JobSpec(JobKind.FFT, str(outputs / "s.npy"), str(inputs / "s.npy"), FFTOptions()),
        JobSpec(JobKind.LOG, str(outputs / "taken.jsonl"), str(inputs / "a.log"), overwrite=True),
    ]
    ended = [client.wait(client.submit(spec).id, timeout=60) for spec in specs]
    assert [info.state for info in ended] == [JobState.DONE] * 3, [i.error for i in ended]
    with pytest.raises(JobRejected, match="already exists"):
        client.submit(specs[0])
    assert touched, "the watch sees the jobs' own calls"
    assert [call for call in touched if call[0] == f"actord:{STORE}"] == []
