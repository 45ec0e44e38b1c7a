"""A restart or a crash of a job's own actors (its reader, its writer) never strands the job.

An operator's restart of a job actor is refused with a reason (a fresh reader would read
the input again, a fresh writer would wait for units already written): the job goes on and
ends with the right bytes. A crash of either ends the job `failed`, with an error that names
the actor and its error, at whichever message it comes; nothing of the job stays on disk,
nothing escalates, and the same job submitted again ends with the right bytes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actord import ActorSystem, InvalidArgument, Message
from actors.client import JobClient
from actors.launcher import start_job_system
from actors.model import FFTOptions, JobKind, JobSpec, JobState, LogOptions
from actors.reader import ArrayReader, LogReader, synthetic_chunk
from actors.writer import ArrayWriter, LogWriter

from .conftest import WAIT, UnitGate
from .test_jobs import generate_log, make_config, read_records, temp_files

SMALL = LogOptions(block_bytes=4096)
FFT = FFTOptions(synthetic=(24, 32, 32), seed=5)
ROLES = {
    ("log", "reader"): LogReader,
    ("log", "writer"): LogWriter,
    ("fft", "reader"): ArrayReader,
    ("fft", "writer"): ArrayWriter,
}


@pytest.fixture
def client(journal: str, system: ActorSystem) -> JobClient:
    return start_job_system(system, journal, make_config())


def _spec(kind: str, tmp_path: Path, name: str) -> JobSpec:
    if kind == "log":
        source = tmp_path / "in.log"
        if not source.exists():
            source.write_bytes(generate_log(3000).data)
        return JobSpec(JobKind.LOG, str(tmp_path / f"{name}.jsonl"), str(source), SMALL)
    return JobSpec(JobKind.FFT, str(tmp_path / f"{name}.npy"), None, FFT)


def _check_output(kind: str, tmp_path: Path, spec: JobSpec) -> None:
    if kind == "log":
        assert read_records(Path(spec.output)) == generate_log(3000).records
        return
    got = np.load(spec.output)
    for index in range(FFT.synthetic[0]):  # type: ignore[index]
        expected = np.fft.fft2(synthetic_chunk(5, index, (32, 32)))
        np.testing.assert_allclose(got[index], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["log", "fft"])
@pytest.mark.parametrize("role", ["reader", "writer"])
def test_an_operators_restart_of_a_job_actor_is_refused_and_the_job_goes_on(
    client: JobClient,
    system: ActorSystem,
    tmp_path: Path,
    unit_gate: UnitGate,
    kind: str,
    role: str,
) -> None:
    spec = _spec(kind, tmp_path, "out")
    job = client.submit(spec)
    name = f"{job.id}.{role}"
    assert unit_gate.entered.wait(WAIT)  # its actors run, its units wait on the gate
    with pytest.raises(InvalidArgument, match=f"{job.id}") as refused:
        system.restart(name)
    assert "cancel" in str(refused.value)  # and what to do instead
    unit_gate.opened.set()
    final = client.wait(job.id, WAIT)
    assert final.state is JobState.DONE, final.error
    _check_output(kind, tmp_path, spec)
    assert not system.escalated.is_set()


@pytest.mark.parametrize(("kind", "role"), sorted(ROLES))
def test_a_crash_of_a_job_actor_at_a_random_message_fails_its_job_truthfully(
    client: JobClient,
    system: ActorSystem,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    role: str,
) -> None:
    cls = ROLES[kind, role]
    original = cls.handle
    rng = random.Random(f"{kind}.{role}")
    for attempt in range(4):
        crash_at = rng.randrange(0, 12)
        seen = [0]

        def crashing(
            self: Any, message: Message, at: int = crash_at, seen: list[int] = seen
        ) -> None:
            seen[0] += 1
            if seen[0] == at + 1:
                raise RuntimeError(f"injected crash at message {at}")
            original(self, message)

        monkeypatch.setattr(cls, "handle", crashing)
        spec = _spec(kind, tmp_path, f"crash-{attempt}")
        final = client.wait(client.submit(spec).id, WAIT)  # never hangs
        monkeypatch.setattr(cls, "handle", original)
        if seen[0] <= crash_at:  # the job ended before that message: nothing crashed
            assert final.state is JobState.DONE, final.error
            continue
        where = f"crash at message {crash_at} of the {kind} {role}"
        assert final.state is JobState.FAILED, where
        assert final.error is not None and f"injected crash at message {crash_at}" in final.error
        assert role in final.error, final.error  # names the actor that crashed
        assert "removed" not in final.error, final.error  # not a consequence taken for a cause
        assert not Path(spec.output).exists(), where
        assert temp_files(tmp_path) == [], where
        again = client.wait(client.submit(spec).id, WAIT)
        assert again.state is JobState.DONE, again.error
        _check_output(kind, tmp_path, spec)
    assert not system.escalated.is_set()
