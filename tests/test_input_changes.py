"""An input that changes under its running job fails the job with an error that says how.

Every input kind (a plain log, a gzip log, an FFT `.npy` stack) and every change: truncated
(to a few blocks, before the reader's position: the end comes early), grown (appended to),
replaced at its path by another file, removed. The reader is held after its first units (the
pool waits on a gate) while the file changes, so the change always comes mid-job. A job
whose input is left alone still ends `done` with the right output.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from actord import ActorSystem
from actors.client import JobClient
from actors.launcher import JobSystemConfig, start_job_system
from actors.model import Executor, FFTOptions, JobKind, JobSpec, JobState, LogOptions

from .conftest import WAIT, UnitGate, join_job_actors
from .test_jobs import generate_log, read_records, temp_files

BLOCK = 4096


def _truncate(path: Path) -> None:
    with open(path, "r+b") as file:
        file.truncate(3 * BLOCK)


def _grow(path: Path) -> None:
    with open(path, "ab") as file:
        file.write(b"x" * BLOCK)


def _replace(path: Path) -> None:
    other = path.with_name("other" + path.suffix)
    other.write_bytes(path.read_bytes())
    os.replace(other, path)


def _remove(path: Path) -> None:
    path.unlink()


CHANGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, "was truncated while the job ran"),
    "grown": (_grow, "grew while the job ran"),
    "replaced": (_replace, "was replaced by another file while the job ran"),
    "removed": (_remove, "was removed or renamed while the job ran"),
}


@pytest.fixture
def client(journal: str, system: ActorSystem) -> JobClient:
    # A window of 2: the reader pauses after two units until one is written.
    config = JobSystemConfig(parsers=2, parser_executor=Executor.THREAD, fft_workers=2, window=2)
    return start_job_system(system, journal, config)


def _input(kind: str, tmp_path: Path) -> tuple[JobSpec, Path]:
    if kind == "fft":
        source = tmp_path / "in.npy"
        np.save(source, np.random.default_rng(1).random((16, 32, 32)))  # 8 KiB a chunk
        return JobSpec(JobKind.FFT, str(tmp_path / "out.npy"), str(source), FFTOptions()), source
    data = generate_log(4000).data  # about 80 blocks
    source = tmp_path / ("in.log.gz" if kind == "gzip" else "in.log")
    source.write_bytes(gzip.compress(data, compresslevel=1) if kind == "gzip" else data)
    options = LogOptions(block_bytes=BLOCK)
    return JobSpec(JobKind.LOG, str(tmp_path / "out.jsonl"), str(source), options), source


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("kind", ["log", "gzip", "fft"])
def test_an_input_that_changes_under_its_job_fails_it_saying_how(
    client: JobClient, unit_gate: UnitGate, tmp_path: Path, kind: str, change: str
) -> None:
    spec, source = _input(kind, tmp_path)
    assert source.stat().st_size > 6 * BLOCK  # a truncation cuts it well before its end
    job = client.submit(spec)
    assert unit_gate.entered.wait(WAIT)  # units are in the pool: the reader is mid-input
    how, says = CHANGES[change]
    how(source)
    unit_gate.opened.set()
    final = client.wait(job.id, WAIT)
    assert final.state is JobState.FAILED, f"{kind} {change}: ended {final.state.value}"
    assert final.error is not None and says in final.error, final.error
    assert str(source) in final.error
    join_job_actors(job.id)
    assert not Path(spec.output).exists()
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("kind", ["log", "gzip", "fft"])
def test_an_input_left_alone_ends_done(
    client: JobClient, unit_gate: UnitGate, tmp_path: Path, kind: str
) -> None:
    spec, source = _input(kind, tmp_path)
    unit_gate.opened.set()
    final = client.wait(client.submit(spec).id, WAIT)
    assert final.state is JobState.DONE, final.error
    if kind == "fft":
        expected = np.fft.fft2(np.load(source))
        np.testing.assert_allclose(np.load(spec.output), expected, rtol=1e-9, atol=1e-9)
    else:
        assert read_records(Path(spec.output)) == generate_log(4000).records
