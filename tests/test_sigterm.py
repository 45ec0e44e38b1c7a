"""SIGTERM at random moments, with both cores kept busy by two other processes.

Twenty stops of a real `actord run`: during start-up, mid-job, with watchers attached, with
the parser pool's mailbox full, with each parser executor. Each exits 0 within the drain
deadline plus one second, and its log holds no traceback. After the next start every job
finishes exactly once (one journal row each, no crash retry counted, an output written once)
with the right output.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from actord.control.client import RemoteError
from actors.demo import write_sample_log
from actors.reader import synthetic_chunk

from ._daemon import DaemonProcess

DEADLINE = 1.0  # --drain-deadline of every run
ROUNDS = 20
SCENARIOS = ("startup", "job", "watchers", "full", "job")  # taken in turn
SLOW = r"(?P<a>(x+x+)+y)"  # a line of x's ending in y matches at once; without, it backtracks


def _slow_width(target: float = 0.02) -> int:
    # The line length at which one failing match takes about `target` seconds here (each
    # x doubles it), so the slow jobs last about as long on a fast machine as on a slow one.
    pattern = re.compile(SLOW)
    for width in range(14, 26):
        started = time.perf_counter()
        pattern.match("x" * width)
        if time.perf_counter() - started >= target:
            return width
    return 25


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Two processes that keep both cores busy; exactly these are stopped afterwards."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait(10)


def _round_jobs(base: DaemonProcess, number: int, width: int) -> dict[str, dict[str, Any]]:
    """The jobs a client submits in round `number`: a slow log job, one line per block (so
    the reader fills the parser pool's mailbox and waits in send), and an FFT or sample log
    job. Each round adds work: some job is running whenever the next SIGTERM comes."""
    slow = f"slow-{number}"
    source = base.inputs / f"{slow}.log"
    rows = ["x" * width + ("y" if i % 4 == 0 else "") for i in range(80)]
    source.write_text("\n".join(rows) + "\n")
    options: dict[str, Any] = {"pattern": SLOW, "block_bytes": width + 2}
    jobs = {
        slow: {
            "kind": "log",
            "input": str(source),
            "output": str(base.outputs / f"{slow}.jsonl"),
            "options": options,
        }
    }
    if number % 2:
        source = base.inputs / f"sample-{number}.log"
        write_sample_log(str(source), 3_000 + number, seed=number)
        out = str(base.outputs / f"sample-{number}.jsonl")
        jobs[f"sample-{number}"] = {"kind": "log", "input": str(source), "output": out}
        jobs[f"sample-{number}"]["options"] = {}
    else:
        out = str(base.outputs / f"fft-{number}.npy")
        options = {"synthetic": [12, 128, 128], "seed": number}
        jobs[f"fft-{number}"] = {"kind": "fft", "output": out, "options": options}
    return jobs


class _Round:
    """One run of the daemon, stopped by SIGTERM at a moment its scenario picks."""

    def __init__(self, daemon: DaemonProcess, rng: random.Random) -> None:
        self.daemon = daemon
        self.rng = rng
        self.full_seen = False

    def running(self) -> list[str]:
        return [j["id"] for j in self.daemon.call("jobs") if j["state"] == "running"]

    def after_progress(self, job_id: str, events: int, until: Any = None) -> None:
        """Return after `events` progress events of the job (or `until()` turning true, or
        the job's end): the moment to stop is then picked at random just after."""
        seen = 0

        def on_progress(method: str, params: Any) -> None:
            nonlocal seen
            seen += 1
            if seen >= events or (until is not None and until()):
                raise _Enough

        # The daemon may stop under a watch: that is the point, not a failure.
        with (
            self.daemon.client(timeout=60) as client,
            contextlib.suppress(_Enough, RemoteError, ConnectionError),
        ):
            client.stream("watch", job_id, on_notification=on_progress, timeout=60)

    def parser_mailbox_full(self) -> bool:
        parsers = [a for a in self.daemon.call("actors") if a["pool"] == "parser"]
        full = any(a["mailbox_depth"] >= a["mailbox_capacity"] for a in parsers)
        self.full_seen |= full
        return full


class _Enough(Exception):
    pass


def _stop_in_scenario(run: _Round, scenario: str, submit: Any) -> list[Any]:
    """Bring the daemon to the scenario's moment; returns what must stay open meanwhile."""
    daemon, rng = run.daemon, run.rng
    held: list[Any] = []
    if scenario == "startup":
        daemon.start(wait_ready=False)
        daemon.wait_note("STATUS=starting")  # our code runs: the handlers are in
        time.sleep(rng.uniform(0.0, 0.8))  # a random moment of the start, not a wait
        return held
    daemon.start()
    submit(daemon)
    running = run.running()
    if scenario == "watchers" and running:
        for job_id in running:  # watchers that never read, and one that reads
            client = daemon.client(timeout=60)
            client._sock.sendall(msgpack.packb([0, 1, "watch", [job_id]]))
            held.append(client)
        reader = threading.Thread(target=run.after_progress, args=(running[0], 10_000))
        reader.start()
        held.append(reader)
    if scenario == "full" and running:
        run.after_progress(running[0], 200, until=run.parser_mailbox_full)
    elif running:
        run.after_progress(rng.choice(running), rng.randint(1, 3))
    time.sleep(rng.uniform(0.0, 0.3))  # a random moment, not a wait
    return held


@pytest.mark.timeout(300)
def test_twenty_sigterms_at_random_moments_on_a_busy_machine(
    tmp_path: Path, busy_cores: None
) -> None:
    rng = random.Random(9)
    width = _slow_width()
    base = DaemonProcess(tmp_path)
    jobs: dict[str, dict[str, Any]] = {}
    ids: dict[str, str] = {}
    written: dict[str, tuple[int, int]] = {}  # key: (inode, mtime) when first seen done
    elapsed: list[float] = []
    full_seen = False
    mid_job = 0  # rounds stopped while a job was running
    log_offset = 0
    daemon: DaemonProcess | None = None
    try:
        for number in range(ROUNDS):
            scenario = SCENARIOS[number % len(SCENARIOS)]
            executor = ("process", "thread")[number % 2]
            daemon = DaemonProcess(
                tmp_path,
                "--drain-deadline",
                str(DEADLINE),
                "--max-jobs",
                "3",
                "--parser-executor",
                executor,
            )
            run = _Round(daemon, rng)
            jobs.update(_round_jobs(base, number, width))
            held = _stop_in_scenario(run, scenario, lambda d: _submit_all(d, jobs, ids, written))
            busy = scenario != "startup" and bool(run.running())
            started = time.monotonic()
            daemon.signal(signal.SIGTERM)
            try:
                code: int | None = daemon.wait(DEADLINE + 1.0)
            except subprocess.TimeoutExpired:
                code = None  # reported below, with this round's log
                daemon.signal(signal.SIGUSR1)  # every thread's stack, into the log
                time.sleep(0.5)  # the dump is written at once; give it a moment to land
                daemon.kill()
                daemon.wait(10)
            elapsed.append(time.monotonic() - started)
            mid_job += busy
            for item in held:
                if isinstance(item, threading.Thread):
                    item.join(10)
                else:
                    item.close()
            full_seen |= run.full_seen
            text = base.log.read_text(errors="replace")
            log, log_offset = text[log_offset:], len(text)
            where = f"round {number} ({scenario}, {executor})"
            assert code == 0, f"{where}: exit {code}\n{log}"
            assert elapsed[-1] < DEADLINE + 1.0, f"{where}: {elapsed[-1]:.2f}s\n{log}"
            assert "Traceback" not in log and "Logging error" not in log, f"{where}:\n{log}"
        daemon = DaemonProcess(tmp_path, "--max-jobs", "3")
        daemon.start()
        _submit_all(daemon, jobs, ids, written)
        finals = {}
        for key in jobs:
            with daemon.client(timeout=120) as client:
                finals[key] = client.stream("watch", ids[key], on_notification=None, timeout=120)
    finally:
        if daemon is not None:
            daemon.stop()
    print(
        f"\n{ROUNDS} SIGTERMs, {mid_job} mid-job: exit 0 after a median of "
        f"{np.median(elapsed):.3f}s, at most {max(elapsed):.3f}s (deadline {DEADLINE}s)"
    )
    assert full_seen, "no round stopped the daemon with the parser mailbox full"
    assert mid_job >= ROUNDS // 2, f"only {mid_job} rounds stopped a running job"
    assert {key: f["state"] for key, f in finals.items()} == dict.fromkeys(jobs, "done")
    assert all(f["crash_retries"] == 0 for f in finals.values())  # a SIGTERM is no crash
    _check_outputs(jobs, width)
    for key, before in written.items():  # done once: never written again by a later round
        stat = os.stat(jobs[key]["output"])
        assert (stat.st_ino, stat.st_mtime_ns) == before, key
    assert sorted(base.outputs.glob(".*.tmp")) == []
    with sqlite3.connect(base.state / "journal.sqlite3") as db:
        rows = db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
    assert rows == [("done", len(jobs))]


def _submit_all(
    daemon: DaemonProcess,
    jobs: dict[str, dict[str, Any]],
    ids: dict[str, str],
    written: dict[str, tuple[int, int]],
) -> None:
    # As a retrying client would: the same keys, so never a second job.
    with daemon.client() as client:
        for key, job in jobs.items():
            info = client.call("submit", {**job, "idempotency_key": key})
            assert ids.setdefault(key, info["id"]) == info["id"]
            if info["state"] == "done" and key not in written:
                stat = os.stat(job["output"])
                written[key] = (stat.st_ino, stat.st_mtime_ns)


def _check_outputs(jobs: dict[str, dict[str, Any]], width: int) -> None:
    for job in jobs.values():
        out = Path(job["output"])
        if job["kind"] == "fft":
            got = np.load(out)
            seed, (chunks, height, side) = job["options"]["seed"], job["options"]["synthetic"]
            for index in (0, chunks - 1):
                expected = np.fft.fft2(synthetic_chunk(seed, index, (height, side)))
                np.testing.assert_allclose(got[index], expected)
            continue
        lines = Path(job["input"]).read_text().splitlines()
        records = out.read_text().splitlines()
        rejects = Path(str(out) + ".rejects").read_text().splitlines()
        assert len(records) + len(rejects) == len(lines)
        if job["options"].get("pattern") == SLOW:
            assert len(records) == sum(line.endswith("y") for line in lines)
            assert all(f'"{"x" * width}y"' in record for record in records)


@pytest.mark.timeout(60)
def test_a_sigterm_inside_an_import_of_the_start_exits_0_at_once(tmp_path: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text('[daemon]\napp = "tests._slow_import_app:factory"\n')
    daemon = DaemonProcess(tmp_path, "--config", str(config))
    daemon.start(wait_ready=False)
    try:
        daemon.wait_note("X-IMPORTING=1")  # the main thread is inside the app's import
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0, daemon.tail()
        assert time.monotonic() - started < 1.0
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
    assert "stopped while starting" in daemon.tail()
    assert "Traceback" not in daemon.tail()


START_ROUNDS = 30


@pytest.mark.timeout(600)
def test_thirty_sigterms_at_random_moments_of_the_start_on_a_busy_machine(
    tmp_path: Path, busy_cores: None
) -> None:
    # The default FFT engine (scipy), each parser executor in turn; the moment is picked at
    # random from the handlers' installation (STATUS=starting) to a little past READY.
    rng = random.Random(22)
    elapsed, before_ready = [], 0
    # How long a start takes here now (to READY, from the handlers' installation): the
    # moments are picked up to a little past it.
    probe = DaemonProcess(tmp_path / "probe", engine=None)
    probe.start(wait_ready=False)
    try:
        probe.wait_note("STATUS=starting")
        began = time.monotonic()
        probe.wait_note("READY=1")
        span = 1.2 * (time.monotonic() - began)
    finally:
        probe.stop()
    for number in range(START_ROUNDS):
        executor = ("process", "thread")[number % 2]
        daemon = DaemonProcess(tmp_path / str(number), "--parser-executor", executor, engine=None)
        daemon.start(wait_ready=False)
        try:
            daemon.wait_note("STATUS=starting")
            time.sleep(rng.uniform(0.0, span))  # a random moment of the start, not a wait
            started = time.monotonic()
            daemon.signal(signal.SIGTERM)
            code = daemon.wait(10)
            elapsed.append(time.monotonic() - started)
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.signal(signal.SIGUSR1)
                daemon.kill()
        log = daemon.log.read_text(errors="replace")
        where = f"round {number} ({executor})"
        assert code == 0, f"{where}: exit {code}\n{log}"
        assert elapsed[-1] < 1.0, f"{where}: {elapsed[-1]:.2f}s\n{log}"
        assert "Traceback" not in log, f"{where}:\n{log}"
        before_ready += "listening on" not in log
    print(
        f"\n{START_ROUNDS} SIGTERMs in the start ({before_ready} before READY): exit 0 after "
        f"a median of {np.median(elapsed):.3f}s, at most {max(elapsed):.3f}s"
    )
    assert before_ready >= START_ROUNDS // 3  # most moments fell inside the start itself
