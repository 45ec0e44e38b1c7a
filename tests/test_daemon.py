"""`actord run` end to end: a real subprocess, a real socket, real signals, a real journal."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import psutil
import pytest
import scipy.fft

from actord.control.client import RemoteError
from actors.demo import write_sample_log
from actors.reader import synthetic_chunk
from actors.writer import PAUSE_ENV

from ._daemon import DaemonProcess

Daemons = Callable[..., DaemonProcess]
SLOW_PATTERN = r"(?P<a>(x+x+)+y)"  # catastrophic backtracking: ~0.1 s per line of 22 x's


def _slow_log(path: Path, lines: int) -> None:
    path.write_text("x" * 22 + "\n" * 1 + ("x" * 22 + "\n") * (lines - 1))


def _slow_job(daemon: DaemonProcess, name: str, lines: int = 40, **extra: Any) -> dict[str, Any]:
    source = daemon.inputs / f"{name}.log"
    _slow_log(source, lines)
    options = {"pattern": SLOW_PATTERN, "block_bytes": 64}
    job = {"kind": "log", "input": str(source), "output": str(daemon.outputs / f"{name}.jsonl")}
    return {**job, "options": options, **extra}


def _watch(daemon: DaemonProcess, job_id: str) -> tuple[dict[str, Any], list[Any]]:
    seen: list[Any] = []
    with daemon.client(timeout=120) as client:
        final = client.stream(
            "watch", job_id, on_notification=lambda m, p: seen.append(p[0]), timeout=120
        )
    return final, seen


def _temps(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


def test_submit_and_watch_through_actorctl(daemons: Daemons) -> None:
    daemon = daemons().start()
    source = daemon.inputs / "app.log"
    malformed = write_sample_log(str(source), 20_000)
    out = daemon.outputs / "nested" / "app.jsonl"
    out.parent.mkdir()
    done = daemon.ctl("submit", "log", str(out), "--input", str(source), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["event"] == "end"  # every line of --json follow mode says what it is
    final = last["job"]
    assert final["state"] == "done"
    assert final["summary"]["rejected"] == malformed
    assert len(out.read_text().splitlines()) == 20_000 - malformed
    assert len(Path(str(out) + ".rejects").read_text().splitlines()) == malformed
    listed = daemon.ctl("jobs", "--json")
    assert [job["id"] for job in json.loads(listed.stdout)] == [final["id"]]
    table = daemon.ctl("job", final["id"])
    assert table.returncode == 0 and "done" in table.stdout


def test_a_raw_msgpack_client_submits_and_watches(daemons: Daemons) -> None:
    daemon = daemons().start()
    out = daemon.outputs / "f.npy"
    job = {"kind": "fft", "output": str(out), "options": {"synthetic": [6, 32, 32], "seed": 5}}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(daemon.socket)
        sock.sendall(msgpack.packb([0, 1, "submit", [job]]))
        unpacker = msgpack.Unpacker(raw=False)
        replies: list[Any] = []

        def until(done: Callable[[], bool]) -> None:
            while not done():
                unpacker.feed(sock.recv(65536))
                replies.extend(unpacker)

        until(lambda: len(replies) == 1)
        kind, msgid, error, submitted = replies[0]
        assert (kind, msgid, error) == (1, 1, None)
        sock.sendall(msgpack.packb([0, 2, "watch", [submitted["id"]]]))
        until(lambda: replies[-1][0] == 1 and replies[-1][1] == 2)
    final = replies[-1][3]
    assert final["state"] == "done" and final["done"] == 6
    assert all(r[0] == 2 and r[1] == "progress" for r in replies[1:-1])
    expected = np.fft.fft2(synthetic_chunk(5, 3, (32, 32)))
    np.testing.assert_allclose(np.load(out)[3], expected)


def _scipy_mapped(pid: int) -> bool:
    # A module's shared libraries are mapped into the process once it is imported.
    return "/scipy/" in Path(f"/proc/{pid}/maps").read_text()


def _parse_workers(pid: int) -> list[psutil.Process]:
    children = psutil.Process(pid).children()
    return [c for c in children if "actors._parse_worker" in " ".join(c.cmdline())]


def test_the_default_engine_is_scipy_and_the_log_says_so(daemons: Daemons) -> None:
    # no --fft-engine: the daemon chooses
    daemon = daemons("--parser-executor", "process", engine=None).start()
    # What a start does not need is not loaded before READY: the engine comes with the
    # first chunk.
    assert not _scipy_mapped(daemon.pid)
    out = daemon.outputs / "s.npy"
    job = {"kind": "fft", "output": str(out), "options": {"synthetic": [4, 48, 40], "seed": 2}}
    final, _ = _watch(daemon, daemon.call("submit", job)["id"])
    assert final["state"] == "done"
    assert _scipy_mapped(daemon.pid)
    source = daemon.inputs / "a.log"
    write_sample_log(str(source), 100, seed=1)
    job = {"kind": "log", "input": str(source), "output": str(daemon.outputs / "a.jsonl")}
    assert _watch(daemon, daemon.call("submit", job)["id"])[0]["state"] == "done"
    assert _parse_workers(daemon.pid) != []
    got = np.load(out)
    chunks = [synthetic_chunk(2, i, (48, 40)) for i in range(4)]
    # The test extras install scipy: its engine computed every chunk, bit for bit (numpy's
    # differs in the last bits, so this also tells the two apart).
    assert all(np.array_equal(got[i], scipy.fft.fft2(c)) for i, c in enumerate(chunks))
    assert not all(np.array_equal(got[i], np.fft.fft2(c)) for i, c in enumerate(chunks))
    assert re.search(r"FFT workers \(thread, scipy engine\)", daemon.log.read_text())


def test_status_and_exit_codes_of_actorctl(daemons: Daemons, tmp_path: Path) -> None:
    daemon = daemons()
    assert daemon.ctl("status").returncode == 3  # not running yet
    daemon.start()
    status = json.loads(daemon.ctl("status", "--json").stdout)
    assert status["pid"] == daemon.pid and status["generation"] == 1
    missing = daemon.ctl("job", "log-999")
    assert missing.returncode == 1 and "not_found" in missing.stderr
    assert daemon.ctl("scale").returncode == 2  # usage
    assert daemon.ctl("scale", "parser", "3").returncode == 0
    actors = json.loads(daemon.ctl("actors", "--json").stdout)
    assert sum(a["pool"] == "parser" for a in actors) == 3


def test_kill_9_at_random_points_loses_no_job_and_runs_none_twice(
    daemons: Daemons, tmp_path: Path
) -> None:
    rng = np.random.default_rng(2026)
    # Random instants: after a random number of progress events of a random running job.
    run = _KillRounds(daemons("--max-jobs", "3"), slow=True)
    for _ in range(5):
        if not run.round(rng=rng):
            break
    run.check_every_job_done_once()
    assert run.kills >= 3
    assert run.crash_retries() >= 1  # the kills landed on running jobs, counted apart from failures
    # The instants of a publication, for each writer: the publication journaled and nothing
    # renamed, then everything renamed and the journal not yet told done. A daemon of their
    # own: a job running through more than five kills would fail (max_crash_retries).
    run = _KillRounds(daemons("--max-jobs", "3", base=tmp_path / "publication"), slow=False)
    for point in ("before-rename", "after-rename"):
        for kind in ("log", "fft"):
            # A fresh job of that kind: some writer of it is sure to reach the pause, however
            # many of the others finished in the rounds before (which pause the other kind).
            run.add(kind)
            assert run.round(pause=(point, kind))
    run.check_every_job_done_once()
    assert len(run.published) == 4


class _KillRounds:
    """24 jobs (12 without the slow ones), submitted again at each start with the same keys
    (as clients retry after a crash), and the daemon killed with SIGKILL once per round."""

    def __init__(self, daemon: DaemonProcess, *, slow: bool) -> None:
        self.daemon = daemon
        self.jobs: dict[str, dict[str, Any]] = {}
        for i in range(24 if slow else 12):
            self.add(("slow", "log", "fft")[i % 3] if slow else ("log", "fft")[i % 2])
        self.ids: dict[str, str] = {}
        self.kills = 0
        self.inodes: dict[str, int] = {}  # each output seen at a kill, and the inode it keeps
        self.published: dict[str, int] = {}  # a job killed mid-publication: its crash retries

    def add(self, kind: str) -> None:
        """One more job ("slow", "log" or "fft"), submitted from the next round on."""
        daemon, i = self.daemon, len(self.jobs)
        key = f"job-{i}"
        if kind == "slow":
            self.jobs[key] = _slow_job(daemon, key, lines=12)
        elif kind == "log":
            source = daemon.inputs / f"{key}.log"
            write_sample_log(str(source), 3_000 + i, seed=i)
            out = str(daemon.outputs / f"{key}.jsonl")
            self.jobs[key] = {"kind": "log", "input": str(source), "output": out, "options": {}}
        else:
            out = str(daemon.outputs / f"{key}.npy")
            synthetic = {"synthetic": [20, 64, 64], "seed": i}
            self.jobs[key] = {"kind": "fft", "output": out, "options": synthetic}

    def round(
        self, *, rng: np.random.Generator | None = None, pause: tuple[str, str] | None = None
    ) -> bool:
        """Start, submit, kill: at a random instant, or where a writer of `pause`'s kind
        waits at `pause`'s point of its publication. False if no job was left to kill under."""
        daemon = self.daemon
        notes = None if pause is None else _pause_publications(daemon, len(self.published), *pause)
        try:
            daemon.start()
            with daemon.client() as client:
                for key, job in self.jobs.items():
                    submitted = client.call("submit", {**job, "idempotency_key": key})
                    assert self.ids.setdefault(key, submitted["id"]) == submitted["id"]
                unfinished = [
                    j for j in client.call("jobs") if j["state"] in ("accepted", "running")
                ]
            if not unfinished:
                return False
            if pause is not None and notes is not None:
                paused = _paused_job(notes)  # a writer of that kind waits at that instant
                daemon.kill()
                output = next(j["output"] for k, j in self.jobs.items() if self.ids[k] == paused)
                self.published[paused] = _killed_in_publication(
                    daemon, paused, output, pause[0], self.inodes
                )
            else:
                assert rng is not None
                target = unfinished[int(rng.integers(len(unfinished)))]["id"]
                killer = _KillAfter(daemon, int(rng.integers(1, 6)))
                # The daemon dies under the watch: that is the point.
                with (
                    daemon.client(timeout=120) as client,
                    contextlib.suppress(ConnectionError, OSError),
                ):
                    client.stream("watch", target, on_notification=killer, timeout=120)
                if daemon.proc is not None and daemon.proc.poll() is None:
                    daemon.kill()
        finally:
            if notes is not None:
                os.close(notes)
                del daemon.env[PAUSE_ENV]
        self.kills += 1
        _keep_inodes(daemon.outputs, self.inodes)
        return True

    def check_every_job_done_once(self) -> None:
        daemon = self.daemon
        daemon.start()
        finals = {key: _watch(daemon, self.ids[key])[0] for key in self.jobs}
        daemon.stop()
        assert {f["state"] for f in finals.values()} == {"done"}, finals
        for job in self.jobs.values():
            out = Path(job["output"])
            assert out.exists()
            if job["kind"] == "fft":
                seed = job["options"]["seed"]
                got = np.load(out)
                for index in (0, 19):
                    expected = np.fft.fft2(synthetic_chunk(seed, index, (64, 64)))
                    np.testing.assert_allclose(got[index], expected)
            elif "pattern" not in job["options"]:
                total = len(Path(job["input"]).read_text().splitlines())
                records = len(out.read_text().splitlines())
                rejects = len(Path(str(out) + ".rejects").read_text().splitlines())
                assert records + rejects == total
        # Created once: an output that existed at a kill (or was about to, from its journaled
        # temporary file) is the same file now, never replaced by a second run.
        for path, inode in self.inodes.items():
            assert Path(path).stat().st_ino == inode, f"{path} was replaced after a restart"
        assert _temps(daemon.outputs) == []
        with contextlib.closing(sqlite3.connect(daemon.state / "journal.sqlite3")) as db:
            rows = db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
            after = dict(db.execute("SELECT id, crash_retries FROM jobs").fetchall())
        assert rows == [("done", len(self.jobs))]  # each job once, and done
        # A job killed mid-publication was finished by the restart, not run again.
        assert {job: after[job] for job in self.published} == self.published

    def crash_retries(self) -> int:
        with contextlib.closing(sqlite3.connect(self.daemon.state / "journal.sqlite3")) as db:
            return int(db.execute("SELECT sum(crash_retries) FROM jobs").fetchone()[0])


def _pause_publications(daemon: DaemonProcess, n: int, point: str, kind: str) -> int:
    """Have the daemon's `kind` writers wait at `point` of their publication (the writer's
    test hook); returns the read end of the FIFO each one notes its job id on."""
    fifo = daemon.base / f"publication-{n}"
    os.mkfifo(fifo)
    os.mkfifo(f"{fifo}.go")  # never opened: a paused writer waits for the kill
    notes = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open first: writers need a reader
    daemon.env[PAUSE_ENV] = f"{point}:{kind}:{fifo}"
    return notes


def _paused_job(notes: int, timeout: float = 30.0) -> str:
    """Wait for the first writer to reach the pause; its job id."""
    ready, _, _ = select.select([notes], [], [], timeout)
    assert ready, f"no writer reached the pause within {timeout}s"
    return os.read(notes, 4096).decode().split()[0]


def _killed_in_publication(
    daemon: DaemonProcess, job_id: str, output: str, point: str, inodes: dict[str, int]
) -> int:
    """Check what a kill mid-publication left: the journal knew the job's files before the
    first rename. Notes the inode each final file must have; returns the job's crash retries."""
    with contextlib.closing(sqlite3.connect(daemon.state / "journal.sqlite3")) as db:
        state, publication, retries = db.execute(
            "SELECT state, publication, crash_retries FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    assert state == "running" and publication is not None, (job_id, state, publication)
    files = json.loads(publication)
    assert files[-1][1] == str(Path(output).resolve())  # the output is renamed last
    for temp, final, inode in files:
        if point == "before-rename":  # nothing renamed: the synced temp file becomes the output
            assert not Path(final).exists()
            assert inode == Path(temp).stat().st_ino  # journaled: a restart knows its file
            inodes[final] = inode
        else:
            assert not Path(temp).exists() and Path(final).stat().st_ino == inode
    return int(retries)


def _keep_inodes(outputs: Path, inodes: dict[str, int]) -> None:
    for path in outputs.iterdir():
        if not path.name.startswith("."):
            known = inodes.setdefault(str(path), path.stat().st_ino)
            assert known == path.stat().st_ino, f"{path} was replaced after a restart"


class _KillAfter:
    """A watch callback that kills the daemon with SIGKILL at its `events`-th event."""

    def __init__(self, daemon: DaemonProcess, events: int) -> None:
        self.daemon = daemon
        self.left = events

    def __call__(self, method: str, params: Any) -> None:
        self.left -= 1
        proc = self.daemon.proc
        if self.left == 0 and proc is not None and proc.poll() is None:
            self.daemon.kill()


def test_sigterm_drains_within_the_deadline_and_the_job_finishes_after_restart(
    daemons: Daemons,
) -> None:
    deadline = 1.0
    daemon = daemons("--drain-deadline", str(deadline)).start()
    submitted = daemon.call("submit", _slow_job(daemon, "slow", lines=60))
    with daemon.client(timeout=60) as client:
        first = []

        def on_progress(method: str, params: Any) -> None:
            first.append(params[0])
            if params[0]["state"] == "running":
                raise _Stop

        with pytest.raises(_Stop):
            client.stream("watch", submitted["id"], on_notification=on_progress, timeout=60)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    daemon.wait_note("STOPPING=1", 10)
    assert daemon.wait(deadline + 1.0) == 0
    assert time.monotonic() - started < deadline + 1.0
    assert _temps(daemon.outputs) == []
    assert not (daemon.outputs / "slow.jsonl").exists()
    daemon.start()
    final, _ = _watch(daemon, submitted["id"])
    assert final["state"] == "done"
    assert final["crash_retries"] == 0  # a clean stop is not a crash
    assert final["summary"]["rejected"] == 60


class _Stop(Exception):
    pass


def test_sighup_keeps_the_old_config_when_the_new_one_is_broken(
    daemons: Daemons, tmp_path: Path
) -> None:
    config = tmp_path / "actord.toml"
    config.write_text("[parser]\nsize = 2\nexecutor = 'thread'\n")
    daemon = daemons("--config", str(config)).start()
    config.write_text("[parser]\nsize = 'many'\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_note("RELOADING=1")
    refused = daemon.wait_note("READY=1")
    assert "reload refused" in refused and "parser.size" in refused
    assert daemon.call("status")["generation"] == 1
    config.write_text("[parser]\nsize = 3\nexecutor = 'thread'\n[daemon]\nlog_level = 'DEBUG'\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_note("RELOADING=1")
    daemon.wait_note("READY=1")
    assert daemon.call("status")["generation"] == 2
    parsers = [a for a in daemon.call("actors") if a["pool"] == "parser"]
    assert len(parsers) == 3
    with pytest.raises(RemoteError) as refused_call:
        config.write_text("[nope]\n")
        daemon.call("reload")
    assert refused_call.value.code == "bad_request" and "nope" in refused_call.value.message


def test_restart_needed_lists_every_pending_key_until_the_restart(
    daemons: Daemons, tmp_path: Path
) -> None:
    config = tmp_path / "actord.toml"
    config.write_text("[parser]\nexecutor = 'thread'\n")
    daemon = daemons("--config", str(config)).start()
    both = ["daemon.idle_timeout", "parser.executor"]  # the daemon's key, the application's
    for text, pending in (
        ("[parser]\nexecutor = 'process'\n[daemon]\nidle_timeout = 30.0\n", both),
        # A reload that changes nothing more: both changes still wait for the restart.
        ("[parser]\nexecutor = 'process'\n[daemon]\nidle_timeout = 30.0\nmax_jobs = 3\n", both),
        # Set back to what the daemon started with: nothing to wait for any more.
        ("[parser]\nexecutor = 'thread'\n[daemon]\nidle_timeout = 30.0\n", both[:1]),
    ):
        config.write_text(text)
        assert list(daemon.call("reload")["restart_needed"]) == pending, text
    assert daemon.call("status")["generation"] == 4


def test_the_same_idempotency_key_across_a_restart_is_one_job(daemons: Daemons) -> None:
    daemon = daemons().start()
    job = {
        "kind": "fft",
        "output": str(daemon.outputs / "once.npy"),
        "options": {"synthetic": [4, 16, 16]},
        "idempotency_key": "upload-42",
    }
    first = daemon.call("submit", job)
    _watch(daemon, first["id"])
    daemon.kill()
    daemon.start()
    again = daemon.call("submit", job)
    assert again["id"] == first["id"] and again["state"] == "done"
    assert [j["id"] for j in daemon.call("jobs")] == [first["id"]]


def test_a_second_daemon_on_the_same_state_dir_is_refused(daemons: Daemons) -> None:
    first = daemons().start()
    second = daemons()
    second.socket = first.socket + "2"
    second.start(wait_ready=False)
    assert second.wait(30) != 0
    assert "in use by another actord" in second.tail()
    assert first.call("ping") == "pong"


def test_a_bad_config_exits_2_naming_the_key(daemons: Daemons, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[daemon]\ndrain_deadline = -1\n")
    daemon = daemons("--config", str(config)).start(wait_ready=False)
    assert daemon.wait(30) == 2
    assert "daemon.drain_deadline" in daemon.tail()


def test_sigterm_with_watchers_attached_still_exits_0_in_time(daemons: Daemons) -> None:
    deadline = 1.0
    daemon = daemons("--drain-deadline", str(deadline), "--max-jobs", "1").start()
    running = daemon.call("submit", _slow_job(daemon, "first", lines=60))
    queued = daemon.call("submit", _slow_job(daemon, "second", lines=4))
    watchers = [daemon.client(timeout=60) for _ in range(4)]
    for client in watchers:  # each starts a watch of the queued job and never reads it
        client._sock.sendall(msgpack.packb([0, 1, "watch", [queued["id"]]]))
    abandoned = daemon.client(timeout=60)  # and one client that goes away mid-watch
    abandoned._sock.sendall(msgpack.packb([0, 1, "watch", [queued["id"]]]))
    abandoned.close()
    assert daemon.call("job", running["id"])["state"] == "running"
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(deadline + 1.0) == 0
    assert time.monotonic() - started < deadline + 1.0
    for client in watchers:
        client.close()


def test_actorctl_restart_of_a_jobs_writer_is_refused_and_the_job_ends(daemons: Daemons) -> None:
    daemon = daemons().start()
    job = daemon.call("submit", _slow_job(daemon, "held", lines=8))
    assert daemon.call("job", job["id"])["state"] == "running"
    for role in ("writer", "reader"):
        result = daemon.ctl("restart", f"{job['id']}.{role}")
        if "no actor" in result.stderr:  # the job has ended meanwhile: nothing to refuse
            break
        assert result.returncode == 1, result.stdout
        assert "cannot restart" in result.stderr and "cancel the job" in result.stderr
    final, _ = _watch(daemon, job["id"])
    assert final["state"] == "done"
    assert final["summary"]["lines"] == 8
