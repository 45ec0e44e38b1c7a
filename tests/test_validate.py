"""The one validation of a job (`actors/validate.py`) and the one way a submit reaches the store
(`actors/client.py`, `submit_job`): what is refused, with which code, and what a retry gets."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import actors.validate as validate_module
from actord import ActordError, ActorSystem, InvalidArgument
from actord.runtime.errors import ErrorCode, Refused
from actors.client import JobClient
from actors.launcher import JobSystemConfig, start_job_system
from actors.model import Executor, FFTOptions, JobKind, JobSpec, JobState, LogOptions
from actors.validate import check_spec, read_npy_header, resolve

from .conftest import WAIT


@pytest.fixture
def roots(tmp_path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    for name in ("in", "out"):
        (tmp_path / name).mkdir()
    return ((str(tmp_path / "in"),), (str(tmp_path / "out"),))


@pytest.fixture
def client(journal: str) -> Iterator[JobClient]:
    with ActorSystem("validate") as system:
        yield start_job_system(system, journal, JobSystemConfig(parser_executor=Executor.THREAD))


def test_a_path_that_resolves_to_a_name_that_is_not_utf8_is_refused(
    roots: tuple[tuple[str, ...], tuple[str, ...]], tmp_path: Path
) -> None:
    # The journal keeps paths as text: a link to a Latin-1 name once reached the store and
    # took it down (msgpack refused the string inside its handler).
    inputs = tmp_path / "in"
    with open(os.fsencode(inputs) + b"/caf\xe9.log", "wb") as file:
        file.write(b"2026-11-25 12:00:00 [INFO] m\n")
    os.symlink(b"caf\xe9.log", os.fsencode(inputs / "link.log"))
    spec = JobSpec(JobKind.LOG, str(tmp_path / "out" / "o.jsonl"), str(inputs / "link.log"))
    with pytest.raises(Refused, match="not valid UTF-8") as refused:
        check_spec(spec, roots)
    assert refused.value.code is ErrorCode.INVALID_PATH


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (FFTOptions(synthetic=(1, 2, 2), seed=2**70), "seed: must be between"),
        (FFTOptions(synthetic=(1, 2, 2), seed=-1), "seed: must be between"),
        (FFTOptions(synthetic=(1, 2, 2), seed="7"), "seed: must be an integer"),  # type: ignore[arg-type]
        (FFTOptions(synthetic=(1, 2, 2), seed=True), "seed: must be an integer"),
        (FFTOptions(synthetic=(1, 2, 2), dtype=64), "dtype"),  # type: ignore[arg-type]
        (LogOptions(block_bytes=True), "block_bytes: must be an integer"),
        (LogOptions(pattern=b"(?P<a>a)"), "pattern: must be a string"),  # type: ignore[arg-type]
    ],
)
def test_an_in_process_caller_gets_the_type_checks_the_wire_makes(
    tmp_path: Path, options: Any, named: str
) -> None:
    # Whatever passes is journaled and read back: a seed msgpack cannot hold, or a string
    # where the wire has an integer, once passed here and broke the store later.
    kind = JobKind.FFT if isinstance(options, FFTOptions) else JobKind.LOG
    source = None
    if kind is JobKind.LOG:
        (tmp_path / "in.log").write_text("x\n")
        source = str(tmp_path / "in.log")
    with pytest.raises(InvalidArgument, match=named):
        check_spec(JobSpec(kind, str(tmp_path / "o"), source, options))


def test_resolve_needs_nothing_to_exist_but_keeps_the_roots(
    roots: tuple[tuple[str, ...], tuple[str, ...]], tmp_path: Path
) -> None:
    spec = JobSpec(JobKind.LOG, str(tmp_path / "out" / "o.jsonl"), str(tmp_path / "in" / "gone"))
    assert resolve(spec, roots) == spec  # nothing exists: still resolved, and confined
    outside = JobSpec(JobKind.LOG, str(tmp_path / "o.jsonl"), str(tmp_path / "in" / "gone"))
    with pytest.raises(Refused, match="not under an allowed root") as refused:
        resolve(outside, roots)
    assert str(refused.value).endswith(f"(allowed: {', '.join(roots[1])})")  # the output roots


def test_a_retried_submit_gets_its_job_even_once_its_input_is_gone(
    client: JobClient, tmp_path: Path
) -> None:
    source = tmp_path / "in.log"
    source.write_text("2026-11-25 12:00:00 [INFO] m\n")
    spec = JobSpec(JobKind.LOG, str(tmp_path / "o.jsonl"), str(source))
    first = client.submit(spec, "key-1")
    assert client.wait(first.id, WAIT).state is JobState.DONE
    source.unlink()  # the client retries after a crash of its own, the input cleaned up
    again = client.submit(spec, "key-1")
    assert again.id == first.id and again.state is JobState.DONE
    # Without a key, or with another key, it is a new job, and the check refuses it.
    for key in (None, "key-2"):
        with pytest.raises(ActordError, match="does not exist") as refused:
            client.submit(spec, key)
        assert refused.value.code is ErrorCode.INVALID_PATH
    # A known key with another spec is a conflict, whatever the check says.
    other = JobSpec(JobKind.LOG, str(tmp_path / "p.jsonl"), str(source))
    with pytest.raises(ActordError, match="was used for another job") as conflict:
        client.submit(other, "key-1")
    assert conflict.value.code is ErrorCode.CONFLICT
    assert [job.id for job in client.list()] == [first.id]


# -- .npy headers, read by many threads at once ----------------------------------------------


def _npy_bytes(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(shape))
    return buffer.getvalue()


def test_numpy_parses_a_header_only_under_the_parse_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    # The guard of the test below, deterministic: CPython 3.11's AST constructor is not safe
    # for two threads at once, so numpy's literal_eval of a header runs under one lock.
    parse = np.lib.format.read_array_header_1_0
    held: list[bool] = []

    def checked(file: Any) -> Any:
        held.append(validate_module._parse_lock.locked())
        return parse(file)

    monkeypatch.setattr(np.lib.format, "read_array_header_1_0", checked)
    data = _npy_bytes((3, 4, 5))
    file = io.BytesIO(data)
    assert read_npy_header("x.npy", file) == ((3, 4, 5), np.dtype("<f8"))
    assert held == [True]
    assert data[file.tell() :] == bytes(3 * 4 * 5 * 8)  # left at the start of the data


class _Cycle:
    """Cyclic garbage with a finalizer: a collection inside the AST constructor runs Python
    code, where the interpreter may switch threads."""

    def __init__(self) -> None:
        self.other = self

    def __del__(self) -> None:
        [i for i in range(4)]  # bytecode to switch threads in


def test_headers_read_by_many_threads_at_once_all_parse(frequent_thread_switches: None) -> None:
    # Four readers starting FFT jobs at once once failed a healthy job: "malformed .npy
    # header: AST constructor recursion depth mismatch" (CPython gh-106905). Without the
    # parse lock, this failed about 20 of its 12,000 reads.
    data = _npy_bytes((24, 32, 32))
    errors: list[BaseException] = []
    start = threading.Barrier(4, timeout=WAIT)

    def reader() -> None:
        start.wait()
        for _ in range(3000):
            try:
                assert read_npy_header("x.npy", io.BytesIO(data))[0] == (24, 32, 32)
            except Exception as error:  # counted, and shown by the assert
                errors.append(error)
            _Cycle()

    threads = [threading.Thread(target=reader, name=f"reader-{i}") for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    assert errors == []
