"""No temp file outlives its job.

The output directory is made immutable (`chattr +i`, as root) while a job runs: the job fails
with a clear EPERM when its writer renames the output, and its temp files cannot be removed.
Once the directory is writable again they go at the store's next sweep; a daemon stopped
before then removes them at its next start (the job system started again on the same
journal). Log and FFT jobs alike.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actord import ActorSystem, RestartPolicy
from actors.client import JobClient
from actors.launcher import JobSystemConfig, start_job_system
from actors.model import Executor, FFTOptions, JobKind, JobSpec, JobState, LogOptions

from .conftest import WAIT, FakeClock, UnitGate
from .test_jobs import generate_log, temp_files

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("chattr") is None, reason="chattr +i needs root"
)


def _chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, timeout=30)


@pytest.fixture
def outputs(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "out"
    directory.mkdir()
    try:
        yield directory
    finally:
        _chattr("-i", directory)  # pytest must be able to remove it


def _system(journal: str, sweep_every: float) -> tuple[ActorSystem, JobClient]:
    system = ActorSystem("temps", clock=FakeClock(), default_policy=RestartPolicy())
    config = JobSystemConfig(
        parsers=2, parser_executor=Executor.THREAD, fft_workers=2, sweep_every=sweep_every
    )
    return system, start_job_system(system, journal, config)


def _spec(kind: str, tmp_path: Path, outputs: Path) -> JobSpec:
    if kind == "fft":
        return JobSpec(JobKind.FFT, str(outputs / "f.npy"), None, FFTOptions(synthetic=(8, 32, 32)))
    source = tmp_path / "in.log"
    source.write_bytes(generate_log(2000).data)
    return JobSpec(JobKind.LOG, str(outputs / "a.jsonl"), str(source), LogOptions(block_bytes=4096))


def _fail_in_an_immutable_directory(
    client: JobClient, gate: UnitGate, spec: JobSpec, outputs: Path
) -> None:
    job = client.submit(spec)
    assert gate.entered.wait(WAIT)  # its temp files exist, its units wait
    assert temp_files(outputs) != []
    _chattr("+i", outputs)
    gate.opened.set()
    final = client.wait(job.id, WAIT)
    assert final.state is JobState.FAILED
    assert final.error is not None and "Operation not permitted" in final.error, final.error
    assert temp_files(outputs) != []  # nothing can be removed while it is immutable


def _wait_gone(outputs: Path) -> None:
    deadline = time.monotonic() + WAIT
    while temp_files(outputs) and time.monotonic() < deadline:
        time.sleep(0.02)  # the sweep runs on the store's timer: looked at until the deadline
    assert temp_files(outputs) == []


@pytest.mark.parametrize("kind", ["log", "fft"])
def test_temp_files_a_failed_job_could_not_remove_go_once_the_directory_is_writable(
    journal: str, tmp_path: Path, outputs: Path, unit_gate: UnitGate, kind: str
) -> None:
    system, client = _system(journal, sweep_every=0.05)
    try:
        _fail_in_an_immutable_directory(client, unit_gate, _spec(kind, tmp_path, outputs), outputs)
        _chattr("-i", outputs)
        _wait_gone(outputs)
    finally:
        system.stop(timeout=WAIT)


@pytest.mark.parametrize("kind", ["log", "fft"])
def test_the_next_start_removes_the_temp_files_of_a_job_that_is_not_running(
    journal: str, tmp_path: Path, outputs: Path, unit_gate: UnitGate, kind: str
) -> None:
    system, client = _system(journal, sweep_every=3600.0)  # no sweep before the stop
    try:
        _fail_in_an_immutable_directory(client, unit_gate, _spec(kind, tmp_path, outputs), outputs)
    finally:
        system.stop(timeout=WAIT)
    _chattr("-i", outputs)
    left = temp_files(outputs)
    assert left != []
    system, client = _system(journal, sweep_every=3600.0)
    try:
        assert client.list() != ()  # the store has started: its journal is read
        assert temp_files(outputs) == []
    finally:
        system.stop(timeout=WAIT)


def test_a_sweep_never_removes_a_temp_file_of_a_path_another_job_writes(tmp_path: Path) -> None:
    # FFT job A (output a.jsonl) ended; log job B writes the output a.jsonl.rejects: B's temp
    # file is named like A's rejects temp. Only A's own go.
    from actors.store import JobStore

    mine = tmp_path / ".a.jsonl.0123456789ab.tmp"
    theirs = tmp_path / ".a.jsonl.rejects.0123456789ab.tmp"
    for temp in (mine, theirs):
        temp.write_bytes(b"x")
    store = JobStore(str(tmp_path / "journal.sqlite3"), lambda *args: None, 4)  # type: ignore[arg-type,return-value]
    store.outputs[str(tmp_path / "a.jsonl.rejects")] = "log-2"
    assert store._remove_left(str(tmp_path / "a.jsonl"), "fft-1")
    assert not mine.exists() and theirs.exists()
    # Once B has ended, a sweep for A takes what is named like its rejects temp too.
    del store.outputs[str(tmp_path / "a.jsonl.rejects")]
    assert store._remove_left(str(tmp_path / "a.jsonl"), "fft-1")
    assert not theirs.exists()


def test_the_temp_files_of_an_output_named_like_a_rejects_file_are_found(tmp_path: Path) -> None:
    from actors.writer import temp_target, temps_of

    temp = tmp_path / ".b.rejects.0123456789ab.tmp"
    temp.write_bytes(b"x")
    assert temps_of(str(tmp_path / "b.rejects")) == [str(temp)]
    assert temp_target(str(temp)) == str(tmp_path / "b.rejects")


def test_a_sweep_keeps_what_it_cannot_list_for_later(tmp_path: Path) -> None:
    from actors.store import JobStore

    store = JobStore(str(tmp_path / "journal.sqlite3"), lambda *args: None, 4)  # type: ignore[arg-type,return-value]
    assert store._remove_left(str(tmp_path / "gone" / "a.jsonl"), "log-1")  # nothing left
    (tmp_path / "file").write_bytes(b"")  # a directory replaced by a file: tried again later
    assert not store._remove_left(str(tmp_path / "file" / "a.jsonl"), "log-1")
