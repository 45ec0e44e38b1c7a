"""FFT jobs whose data or output is bad fail alone (issue 10, items a, c and f).

The system here has the daemon's own restart policy (more than 5 failures in 60 s escalates,
and the daemon exits 1), on a fake clock so that a restart does not wait: a job that made a
pool member raise would show as restarts, and a few such jobs as an escalation.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest

import actors.client as client_module
import actors.fft as fft_module
import actors.validate as validate_module
from actord import ActorSystem, DeadLetterReason, InvalidArgument, RestartPolicy
from actors.client import JobClient
from actors.launcher import FFT_WORKERS, JobSystemConfig, start_job_system
from actors.model import (
    FFT_MAX_CHUNK_ELEMENTS,
    FFT_MAX_CHUNKS,
    FFT_MAX_ELEMENTS,
    FFT_MAX_SIDE,
    Engine,
    FFTOptions,
    JobInfo,
    JobKind,
    JobSpec,
    JobState,
    Transform,
)
from actors.reader import synthetic_chunk
from actors.validate import check_spec

from .conftest import WAIT, FakeClock, join_job_actors


@pytest.fixture
def daemon_system() -> Iterator[ActorSystem]:
    """A system with the daemon's default restart policy (5 restarts in 60 s)."""
    system = ActorSystem("faults", clock=FakeClock(), default_policy=RestartPolicy())
    try:
        yield system
    finally:
        system.stop(timeout=WAIT)


@pytest.fixture
def client(journal: str, daemon_system: ActorSystem) -> JobClient:
    return start_job_system(daemon_system, journal, JobSystemConfig(parsers=1, fft_workers=2))


def fft_spec(output: Path, source: Path | None = None, **options: Any) -> JobSpec:
    return JobSpec(
        JobKind.FFT, str(output), None if source is None else str(source), FFTOptions(**options)
    )


def run(client: JobClient, spec: JobSpec) -> JobInfo:
    return client.wait(client.submit(spec).id, WAIT)


def assert_pool_unharmed(system: ActorSystem) -> None:
    """No FFT pool member raised, restarted or escalated, and no unit went to the retry."""
    members = [s for s in system.stats() if s.pool == FFT_WORKERS]
    assert len(members) == 2
    assert [(s.errors, s.restarts) for s in members] == [(0, 0), (0, 0)]
    assert not system.escalated.is_set()
    assert system.escalations == []
    failed = [
        letter
        for letter in system.channel.dead_letters()
        if letter.reason is DeadLetterReason.FAILED
    ]
    assert failed == []


def assert_serves_a_good_job(client: JobClient, output: Path) -> None:
    """The same system still runs an FFT job to the right result."""
    final = run(client, fft_spec(output, synthetic=(3, 8, 8), seed=4))
    assert final.state is JobState.DONE, final.error
    expected = np.stack([np.fft.fft2(synthetic_chunk(4, i, (8, 8))) for i in range(3)])
    result = np.load(output)
    assert float(np.max(np.abs(result - expected))) < 1e-9 * float(np.max(np.abs(expected)))


# -- item a: a job's bad data or output fails the job, never the pool ------------------------


def test_stacks_with_a_zero_side_that_reach_the_pool_fail_their_jobs_only(
    daemon_system: ActorSystem,
    client: JobClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Validation refuses such a stack at submit; here it is let through, as if the file had
    # been replaced between submit and start, so that the workers meet the bad chunks.
    monkeypatch.setattr(client_module, "check_spec", lambda spec, roots: spec)
    np.save(tmp_path / "in.npy", np.zeros((3, 0, 8)))
    jobs = [client.submit(fft_spec(tmp_path / f"out{i}.npy", tmp_path / "in.npy")) for i in (1, 2)]
    for job in jobs:
        final = client.wait(job.id, WAIT)
        assert final.state is JobState.FAILED
        assert final.error is not None
        # numpy's words or scipy's (the pool's engine): the library's own message.
        assert re.search(
            r"chunk [0-2]: .*ValueError: [Ii]nvalid number of (FFT )?data points", final.error
        ), final.error
        join_job_actors(job.id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]
    assert_pool_unharmed(daemon_system)
    monkeypatch.undo()
    assert_serves_a_good_job(client, tmp_path / "ok.npy")
    assert_pool_unharmed(daemon_system)


SENTINEL = -1234.5  # chunk 3's first pixel: the injected transform failure recognises it


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad chunk"),
        TypeError("bad chunk type"),
        FloatingPointError("overflow in chunk"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_chunk_whose_transform_raises_fails_its_job_at_once(
    daemon_system: ActorSystem,
    client: JobClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    original = fft_module.transform
    calls: list[int] = []
    lock = threading.Lock()

    def poisoned(data: Any, kind: Transform, dtype: str, engine: Engine) -> Any:
        if data[0, 0] == SENTINEL:
            with lock:
                calls.append(1)
            raise error
        return original(data, kind, dtype, engine)

    monkeypatch.setattr(fft_module, "transform", poisoned)
    stack = np.random.default_rng(2).random((6, 8, 8))
    stack[3, 0, 0] = SENTINEL
    np.save(tmp_path / "in.npy", stack)
    final = run(client, fft_spec(tmp_path / "out.npy", tmp_path / "in.npy"))
    assert final.state is JobState.FAILED
    assert final.error is not None
    assert f"chunk 3: the transform failed: {type(error).__name__}: {error}" in final.error
    assert calls == [1]  # a chunk's data does not change: no retry
    join_job_actors(final.id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]
    assert_pool_unharmed(daemon_system)
    assert_serves_a_good_job(client, tmp_path / "ok.npy")


def test_a_full_disk_fails_the_job_once_not_the_pool(
    daemon_system: ActorSystem,
    client: JobClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The disk fills while the workers write their chunks: every pwrite of the job raises
    # ENOSPC, as the kernel would (the FFT workers are the only users of pwrite).
    disk_full = threading.Event()
    disk_full.set()
    positions: list[int] = []
    lock = threading.Lock()
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: Any, position: int) -> int:
        if not disk_full.is_set():
            return real_pwrite(fd, data, position)
        with lock:
            positions.append(position)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", pwrite)
    final = run(client, fft_spec(tmp_path / "out.npy", synthetic=(12, 16, 16)))
    assert final.state is JobState.FAILED
    assert final.error is not None
    assert re.search(
        r"chunk \d+: writing the output failed: \[Errno 28\] No space left on device",
        final.error,
    ), final.error
    assert len(positions) == len(set(positions))  # no chunk is written twice: no retry
    join_job_actors(final.id)
    assert list(tmp_path.iterdir()) == []  # its temporary output is gone
    assert_pool_unharmed(daemon_system)
    disk_full.clear()
    assert_serves_a_good_job(client, tmp_path / "ok.npy")
    assert_pool_unharmed(daemon_system)


# -- item c: complex input -------------------------------------------------------------------


def relative_error(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("output", ["complex128", "complex64"])
@pytest.mark.parametrize("given", ["complex128", "complex64", "float64", "float32", "int16"])
def test_fft2_of_any_numeric_input(
    daemon_system: ActorSystem, client: JobClient, tmp_path: Path, given: str, output: str
) -> None:
    rng = np.random.default_rng(7)
    stack = rng.standard_normal((4, 16, 12)) * 100
    if given.startswith("complex"):
        stack = stack + 1j * rng.standard_normal((4, 16, 12)) * 100
    stack = stack.astype(given)
    np.save(tmp_path / "in.npy", stack)
    final = run(client, fft_spec(tmp_path / "out.npy", tmp_path / "in.npy", dtype=output))
    assert final.state is JobState.DONE, final.error
    result = np.load(tmp_path / "out.npy")
    # The reference is computed in double precision from exactly the values given.
    expected = np.fft.fft2(stack.astype(np.complex128))
    assert result.dtype == np.dtype(output) and result.shape == (4, 16, 12)
    assert relative_error(result, expected) < (1e-9 if output == "complex128" else 1e-4)
    assert_pool_unharmed(daemon_system)


def test_rfft2_of_a_complex_input_is_refused_at_submit(client: JobClient, tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", np.ones((2, 4, 4), dtype=np.complex64))
    spec = fft_spec(tmp_path / "out.npy", tmp_path / "in.npy", transform=Transform.RFFT2)
    with pytest.raises(InvalidArgument, match=r"rfft2 needs a real input.*complex64.*fft2"):
        client.submit(spec)
    assert client.list() == ()


# -- item f: the FFT input and shape are checked at submit -----------------------------------


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _npy(array: Any, *, allow_pickle: bool = False) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        np.save(tmp / "in.npy", array, allow_pickle=allow_pickle)
        return tmp / "in.npy"

    return make


def _truncated(tmp: Path) -> Path:
    np.save(tmp / "in.npy", np.ones((4, 8, 8)))
    with open(tmp / "in.npy", "r+b") as file:
        file.truncate(os.path.getsize(tmp / "in.npy") - 8)
    return tmp / "in.npy"


def _header_only(shape: tuple[int, ...], dtype: str = "<f8") -> Callable[[Path], Path]:
    # Only a header: the size checks come before the file's length is looked at.
    def make(tmp: Path) -> Path:
        header = {"descr": dtype, "fortran_order": False, "shape": shape}
        with open(tmp / "in.npy", "wb") as file:
            np.lib.format.write_array_header_1_0(file, header)
        return tmp / "in.npy"

    return make


BAD_INPUTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "text-file": (_write("in.txt", b"1 2 3\n4 5 6\n"), r"in\.txt is not a \.npy file"),
    "empty-file": (_write("in.npy", b""), r"is not a \.npy file"),
    "broken-header": (
        _write("in.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': <f8',   }\n"),
        r"in\.npy has a malformed \.npy header",
    ),
    "header-over-10000-bytes": (
        _write("in.npy", b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr'"),
        r"malformed \.npy header: 4294967295 bytes long \(at most 10000\)",
    ),
    "header-cut-short": (
        _write("in.npy", b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f8'"),
        r"malformed \.npy header: it is cut short",
    ),
    "ends-in-its-length": (
        _write("in.npy", b"\x93NUMPY\x01\x00\x76"),
        r"malformed \.npy header: it ends in its length",
    ),
    "object-dtype": (
        _npy(np.array([[[1, "a"]]], dtype=object), allow_pickle=True),
        r"holds Python objects",
    ),
    "bool-dtype": (_npy(np.zeros((1, 2, 2), dtype=bool)), r"numeric.*not bool"),
    "string-dtype": (_npy(np.zeros((1, 2, 2), dtype="<U3")), r"numeric.*not <U3"),
    "datetime-dtype": (_npy(np.zeros((1, 2, 2), dtype="M8[s]")), r"numeric.*not datetime64"),
    "structured-dtype": (
        _npy(np.zeros((1, 2, 2), dtype=[("a", "<f8"), ("b", "<i4")])),
        r"numeric",
    ),
    "2d": (_npy(np.zeros((4, 4))), r"an \(N, H, W\) stack.*shape \(4, 4\)"),
    "4d": (_npy(np.zeros((1, 2, 2, 2))), r"an \(N, H, W\) stack.*shape \(1, 2, 2, 2\)"),
    "negative-side": (_header_only((2, -3, -4)), r"malformed \.npy header: shape \(2, -3, -4\)"),
    "zero-height": (_npy(np.zeros((3, 0, 8))), r"no zero side.*\(3, 0, 8\)"),
    "zero-width": (_npy(np.zeros((3, 8, 0))), r"no zero side.*\(3, 8, 0\)"),
    "truncated": (_truncated, r"in\.npy is truncated"),
    "too-many-chunks": (_header_only((FFT_MAX_CHUNKS + 1, 1, 1)), r"at most 65536 chunks"),
    "too-wide": (_header_only((1, 1, FFT_MAX_SIDE + 1)), r"at most 16384 per side"),
    "too-big-a-chunk": (
        _header_only((1, FFT_MAX_SIDE, FFT_MAX_SIDE)),
        r"at most 67108864 elements per chunk",
    ),
    "too-big-in-all": (
        _header_only((FFT_MAX_CHUNKS, 8192, 8192)),
        r"at most 1073741824 elements in all",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_bad_fft_input_is_refused_at_submit(client: JobClient, tmp_path: Path, case: str) -> None:
    make, message = BAD_INPUTS[case]
    source = make(tmp_path)
    spec = fft_spec(tmp_path / "out.npy", source)
    with pytest.raises(InvalidArgument, match=message) as refused:
        client.submit(spec)
    assert "allow_pickle" not in str(refused.value)
    assert client.list() == ()
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


BAD_SHAPES: dict[str, tuple[tuple[int, int, int], str]] = {
    "zero-chunks": ((0, 4, 4), "positive"),
    "negative-side": ((2, -4, 4), "positive"),
    "too-many-chunks": ((FFT_MAX_CHUNKS + 1, 1, 1), "at most 65536 chunks"),
    "too-tall": ((1, FFT_MAX_SIDE + 1, 1), "at most 16384 per side"),
    "too-big-a-chunk": ((1, 8192, 8193), "at most 67108864 elements per chunk"),
    "too-big-in-all": ((FFT_MAX_CHUNKS, 128, 129), "at most 1073741824 elements in all"),
}


@pytest.mark.parametrize("case", sorted(BAD_SHAPES))
def test_a_bad_synthetic_shape_is_refused_at_submit(
    client: JobClient, tmp_path: Path, case: str
) -> None:
    shape, message = BAD_SHAPES[case]
    spec = fft_spec(tmp_path / "out.npy", synthetic=shape)
    with pytest.raises(InvalidArgument, match=message):
        client.submit(spec)
    assert client.list() == ()


def test_the_limits_are_consistent() -> None:
    # The per-chunk and total limits are what bind: a stack at the side limit is refused.
    assert FFT_MAX_CHUNK_ELEMENTS < FFT_MAX_SIDE * FFT_MAX_SIDE
    assert FFT_MAX_CHUNK_ELEMENTS <= FFT_MAX_ELEMENTS < FFT_MAX_CHUNKS * FFT_MAX_CHUNK_ELEMENTS


@pytest.mark.parametrize("shape", [(1, 1, FFT_MAX_SIDE), (FFT_MAX_CHUNKS, 1, 1), (16, 4096, 4096)])
def test_shapes_at_the_limits_are_accepted(tmp_path: Path, shape: tuple[int, int, int]) -> None:
    check_spec(fft_spec(tmp_path / "out.npy", synthetic=shape))


class _CountingFile:
    """A binary file that counts the bytes read from it."""

    def __init__(self, file: IO[bytes], counts: list[int]) -> None:
        self._file = file
        self._counts = counts

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._counts.append(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def test_validation_reads_only_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = np.ones((8, 256, 512), dtype=np.complex128)  # 16 MiB
    np.save(tmp_path / "in.npy", stack)
    counts: list[int] = []
    opened: list[str] = []

    def counting_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        opened.append(str(path))
        return _CountingFile(open(path, mode, *args, **kwargs), counts)

    def no_load(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("validation loaded the array")

    # check_spec's module sees this `open` before the builtin one.
    monkeypatch.setattr(validate_module, "open", counting_open, raising=False)
    monkeypatch.setattr(np, "load", no_load)
    check_spec(fft_spec(tmp_path / "out.npy", tmp_path / "in.npy"))
    assert len(opened) == 1  # one file (a descriptor opened beneath its root: `beneath`)
    assert 0 < sum(counts) <= 4096


def test_an_input_cut_short_under_a_running_job_fails_the_job_not_the_daemon(
    journal: str, daemon_system: ActorSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The input was once memory-mapped: a page past the new end of a truncated file killed
    # the whole process with SIGBUS (this test's process too). It is read chunk by chunk now.
    client = start_job_system(
        daemon_system, journal, JobSystemConfig(parsers=1, fft_workers=2, window=2)
    )
    np.save(tmp_path / "in.npy", np.random.default_rng(1).random((16, 32, 32)))
    first, go = threading.Event(), threading.Event()
    real = fft_module.transform

    def held(data: Any, kind: Transform, dtype: str, engine: Engine) -> Any:
        # Every chunk waits: the reader, 2 chunks in flight and none written, pauses before
        # it reads a third, whichever worker took what.
        first.set()
        assert go.wait(WAIT)
        return real(data, kind, dtype, engine)

    monkeypatch.setattr(fft_module, "transform", held)
    info = client.submit(fft_spec(tmp_path / "out.npy", tmp_path / "in.npy"))
    assert first.wait(WAIT)
    with open(tmp_path / "in.npy", "r+b") as file:
        file.truncate(4096)  # a few chunks' worth is gone under the job
    go.set()
    final = client.wait(info.id, WAIT)
    assert final.state is JobState.FAILED
    assert "cut while the job ran" in (final.error or ""), final.error
    join_job_actors(info.id)
    assert_pool_unharmed(daemon_system)
    assert_serves_a_good_job(client, tmp_path / "good.npy")


def test_a_fortran_ordered_stack_is_refused_at_submit(client: JobClient, tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", np.asfortranarray(np.zeros((2, 4, 4))))
    with pytest.raises(InvalidArgument, match="Fortran order: save it in C order"):
        client.submit(fft_spec(tmp_path / "out.npy", tmp_path / "in.npy"))
