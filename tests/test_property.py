"""A property of the job layer, end to end: whatever sequence of submits, retried submits,
cancels, kill -9s and restarts a real daemon goes through, every accepted job ends exactly
once, and each output file is created once (the same inode across every restart).

The sequences are random but seeded, so a failure replays: `ACTORD_PROPERTY_SEEDS=1,2,3,...`
runs more of them (CI runs the default seeds). Each step waits on the daemon's own events (a
job's progress notifications, READY=1, the exit), never on time.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actors.demo import write_sample_log
from actors.reader import synthetic_chunk

from ._daemon import DaemonProcess

Daemons = Callable[..., DaemonProcess]

SLOW_PATTERN = r"(?P<a>(x+x+)+y)"  # catastrophic backtracking: ~0.1 s per line of 22 x's
SEEDS = [int(s) for s in os.environ.get("ACTORD_PROPERTY_SEEDS", "7,2026,3,11").split(",")]
STEPS = 14
MAX_KILLS = 4  # a job running through more than 5 daemon deaths fails by design
ENDED = ("done", "failed", "cancelled")


class _Enough(Exception):
    """Ends a watch after the events a step wanted to see."""


class _Run:
    """The daemon, the jobs the test's clients submitted, and what the test was told."""

    def __init__(self, daemon: DaemonProcess, rng: np.random.Generator) -> None:
        self.daemon = daemon
        self.rng = rng
        self.specs: dict[str, dict[str, Any]] = {}  # idempotency key -> job
        self.ids: dict[str, str] = {}  # idempotency key -> job id
        self.cancelled: set[str] = set()  # ids whose cancel was answered "cancelled"
        self.cancel_asked: set[str] = set()
        self.inodes: dict[str, int] = {}  # output file -> the inode it was first seen with
        self.kills = 0

    # -- steps ---------------------------------------------------------------------------

    def submit_new(self) -> None:
        n = len(self.specs)
        key = f"job-{n}"
        kind = int(self.rng.integers(3))
        inputs, outputs = self.daemon.inputs, self.daemon.outputs
        if kind == 0:  # slow: a kill or a cancel lands while it runs
            source = inputs / f"{key}.log"
            source.write_text(("x" * 22 + "\n") * int(self.rng.integers(8, 24)))
            options = {"pattern": SLOW_PATTERN, "block_bytes": 64}
            job = {"kind": "log", "input": str(source), "output": str(outputs / f"{key}.jsonl")}
            job["options"] = options
        elif kind == 1:
            source = inputs / f"{key}.log"
            write_sample_log(str(source), int(self.rng.integers(5_000, 40_000)), seed=n)
            job = {"kind": "log", "input": str(source), "output": str(outputs / f"{key}.jsonl")}
            job["options"] = {}
        else:
            synthetic = {"synthetic": [int(self.rng.integers(8, 40)), 128, 128], "seed": n}
            job = {"kind": "fft", "output": str(outputs / f"{key}.npy"), "options": synthetic}
        self.specs[key] = job
        self.submit(key)

    def submit(self, key: str) -> None:
        """A submit, or a client's retry of one (the same key): always the same job."""
        answer = self.daemon.call("submit", {**self.specs[key], "idempotency_key": key})
        assert self.ids.setdefault(key, answer["id"]) == answer["id"], (key, answer)

    def resubmit(self) -> None:
        if self.ids:
            self.submit(self._pick(sorted(self.ids)))

    def cancel(self) -> None:
        if not self.ids:
            return
        job_id = self.ids[self._pick(sorted(self.ids))]
        answer = self.daemon.call("cancel", job_id)
        self.cancel_asked.add(job_id)
        if answer["state"] == "cancelled":
            self.cancelled.add(job_id)
        else:  # ended already, or publishing its output: too late, and it ends done
            assert answer["state"] in ("running", "done"), answer

    def advance(self) -> None:
        """Let a random unfinished job make 1 to 3 progress events (or end)."""
        unfinished = [j["id"] for j in self.daemon.call("jobs") if j["state"] not in ENDED]
        if not unfinished:
            return
        target, left = self._pick(unfinished), int(self.rng.integers(1, 4))

        def on_progress(method: str, params: Any) -> None:
            nonlocal left
            left -= 1
            if left == 0:
                raise _Enough

        with self.daemon.client(timeout=120) as client, contextlib.suppress(_Enough):
            client.stream("watch", target, on_notification=on_progress, timeout=120)

    def kill(self) -> None:
        self.daemon.kill()
        self.kills += 1
        self.check_outputs_created_once()
        self.daemon.start()

    def restart(self) -> None:
        self.daemon.signal(signal.SIGTERM)
        assert self.daemon.wait(60) == 0
        self.check_outputs_created_once()
        self.daemon.start()

    def _pick(self, items: list[str]) -> str:
        return items[int(self.rng.integers(len(items)))]

    # -- the property ----------------------------------------------------------------------

    def check_outputs_created_once(self) -> None:
        for path in self.daemon.outputs.iterdir():
            if not path.name.startswith("."):
                inode = self.inodes.setdefault(str(path), path.stat().st_ino)
                assert path.stat().st_ino == inode, f"{path} was created twice"

    def finish_and_check(self) -> None:
        daemon = self.daemon
        finals: dict[str, dict[str, Any]] = {}
        with daemon.client(timeout=120) as client:
            for key, job_id in self.ids.items():
                finals[key] = client.stream("watch", job_id, on_notification=_ignore, timeout=120)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        self.check_outputs_created_once()
        with contextlib.closing(sqlite3.connect(daemon.state / "journal.sqlite3")) as db:
            rows = dict(db.execute("SELECT id, state FROM jobs").fetchall())
        # Each accepted job is one row, ended, as the clients were last told.
        assert rows == {self.ids[key]: final["state"] for key, final in finals.items()}
        for key, final in finals.items():
            job_id, spec = final["id"], self.specs[key]
            assert final["state"] in ("done", "cancelled"), final
            if job_id in self.cancelled:
                assert final["state"] == "cancelled", final  # "cancelled" was a promise
            if final["state"] == "cancelled":
                assert job_id in self.cancel_asked, final
                assert not Path(spec["output"]).exists(), final
            else:
                _check_output(spec)
        assert sorted(daemon.outputs.glob(".*.tmp")) == []
        # Ended exactly once: no job's end is logged twice across every run of the daemon
        # (a kill between the journal's commit and the log line may leave none).
        ends = re.findall(r"job (\S+) (?:done|failed|cancelled) after", daemon.log.read_text())
        assert len(ends) == len(set(ends)), sorted(ends)


def _check_output(job: dict[str, Any]) -> None:
    out = Path(job["output"])
    if job["kind"] == "fft":
        n, seed = job["options"]["synthetic"][0], job["options"]["seed"]
        got = np.load(out)
        assert got.shape == (n, 128, 128)
        for index in (0, n - 1):
            expected = np.fft.fft2(synthetic_chunk(seed, index, (128, 128)))
            np.testing.assert_allclose(got[index], expected)
        return
    lines = len(Path(job["input"]).read_text().splitlines())
    records = len(out.read_text().splitlines())
    rejects = len(Path(str(out) + ".rejects").read_text().splitlines())
    assert records + rejects == lines, job


def _steps(rng: np.random.Generator) -> list[str]:
    """A random sequence that submits first and kills between 2 and MAX_KILLS times."""
    ops = ["submit_new", "submit_new", "resubmit", "cancel", "advance", "advance", "kill"]
    steps = ["submit_new", "submit_new"]
    steps += [ops[int(rng.integers(len(ops)))] for _ in range(STEPS - 2)]
    steps.insert(int(rng.integers(3, len(steps) + 1)), "restart")
    while steps.count("kill") < 2:
        steps.insert(int(rng.integers(2, len(steps) + 1)), "kill")
    while steps.count("kill") > MAX_KILLS:
        steps.remove("kill")
    return steps


@pytest.mark.parametrize("seed", SEEDS)
def test_every_job_ends_once_and_each_output_is_created_once(
    daemons: Daemons, tmp_path: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    run = _Run(daemons("--max-jobs", "2").start(), rng)
    steps = _steps(rng)
    for step in steps:
        getattr(run, step)()
    run.finish_and_check()
    assert run.kills == steps.count("kill") >= 2


def _ignore(method: str, params: Any) -> None:
    """A watch's progress notifications, when only its result matters."""
