"""actorctl against an in-process control server backed by a real actor system (and, for the
job commands, scripted job methods: what the client makes of each answer)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from actord import ActorSystem, __version__
from actord.control.client import default_socket
from actord.control.ctl import main, parser
from actord.control.methods import Dispatcher, runtime_methods
from actord.control.server import Call, ControlServer
from actord.runtime.errors import ErrorCode, Refused

from .conftest import WAIT, Recorder, RecordingActor, ctrl_c_able

ROOT = Path(__file__).resolve().parent.parent


class _Hooks:
    def status(self) -> dict[str, Any]:
        return {"version": "9.8.7", "pid": 4242, "uptime": 267.447, "jobs_running": 0}

    def reload(self, timeout: float) -> dict[str, Any]:
        return {"generation": 2, "restart_needed": ["daemon.socket"]}

    def shutdown(self) -> None:
        pass


class _Flusher(RecordingActor):
    commands: ClassVar[frozenset[str]] = frozenset({"flush"})


def _job(job_id: str, state: str, **fields: Any) -> dict[str, Any]:
    job = {
        "id": job_id,
        "kind": "log",
        "state": state,
        "input": "/in/app.log",
        "output": "/out/app.jsonl",
        "done": 0,
        "total": 0,
        "bytes": 0,
        "error": None,
        "crash_retries": 0,
        "summary": None,
        "created": "2026-12-01T04:00:00.000Z",
        "started": "2026-12-01T04:00:00.000Z",
        "ended": None,
    }
    return {**job, **fields}


class _Jobs:
    """Scripted job methods: each job id says how its job goes."""

    def __init__(self) -> None:
        self.jobs = {
            "log-1": _job("log-1", "cancelled", error="cancelled"),  # cancelled now
            "log-2": _job("log-2", "done", ended="2026-12-01T04:00:01.000Z"),  # ended before
            "log-3": _job("log-3", "running"),  # publishing: too late to cancel
            # cancelled before this cancel: nothing cancelled now
            "log-4": _job("log-4", "cancelled", error="cancelled", already_ended=True),
        }
        self.submitted: list[dict[str, Any]] = []
        self.watching = threading.Event()  # a watch is under way
        self.release = threading.Event()  # lets a held watch end

    def methods(self) -> dict[str, Any]:
        return {"cancel": self.cancel, "submit": self.submit, "watch": self.watch, "job": self.job}

    def job(self, call: Call) -> dict[str, Any]:
        if call.params[0] not in self.jobs:
            raise Refused(ErrorCode.NOT_FOUND, f"no job {call.params[0]!r}")
        return self.jobs[call.params[0]]

    def cancel(self, call: Call) -> dict[str, Any]:
        return self.jobs[call.params[0]]

    def submit(self, call: Call) -> dict[str, Any]:
        spec = call.params[0]
        self.submitted.append(spec)
        if spec["kind"] == "fft":
            return _job("fft-9", "accepted", kind="fft", input=None, started=None)
        return _job("log-9", "accepted", started=None)

    def watch(self, call: Call) -> dict[str, Any]:
        if call.params[0] == "log-big":  # a progress note per block: 200 blocks
            for done in range(1, 201):
                note = _job("log-big", "running", done=done, total=200, bytes=done * 10)
                call.notify("progress", [note])
            return _job("log-big", "done", done=200, total=200, bytes=2000, ended=None)
        if call.params[0] == "fft-9":  # the daemon does not know N yet: total 0
            call.notify("progress", [_job("fft-9", "running", kind="fft", done=2, input=None)])
            return _job("fft-9", "done", kind="fft", done=8, total=8, input=None)
        call.notify("progress", [_job("log-9", "running", done=1, total=4, bytes=10)])
        call.notify("progress", [_job("log-9", "running", done=2, total=4, bytes=20)])
        self.watching.set()
        if call.params[0] == "log-hold":
            # Held until the test ends (the fixture sets it): never ended by a timeout of its
            # own while the test is still on its way to interrupt it, however slow the machine.
            self.release.wait(120)
        ended = "2026-12-01T04:00:02.000Z"
        return _job("log-9", "failed", done=2, total=4, error="boom", ended=ended)


@pytest.fixture
def jobs() -> _Jobs:
    return _Jobs()


@pytest.fixture
def socket_path(
    tmp_path: Path, system: ActorSystem, recorder: Recorder, jobs: _Jobs
) -> Iterator[str]:
    system.spawn_pool(lambda: _Flusher(recorder), "workers", 2)
    methods = {**runtime_methods(system, _Hooks()), **jobs.methods()}
    server = ControlServer(str(tmp_path / "run" / "s.sock"), Dispatcher(methods))
    server.start()
    try:
        yield server.path
    finally:
        jobs.release.set()
        server.stop()


def test_json_works_before_or_after_the_subcommand(
    socket_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", socket_path, "--json", "actors"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert main(["actors", "--socket", socket_path, "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert [a["name"] for a in before] == [a["name"] for a in after] == ["workers#0", "workers#1"]


def test_tables_for_people(socket_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", socket_path, "actors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "STATE",
        "PROCESSED",
        "ERRORS",
        "RESTARTS",
        "MAILBOX",
        "P99",
        "TID",
        "COMMANDS",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["workers#0", "workers#1"]
    assert [line.split()[-1] for line in lines[1:]] == ["flush", "flush"]
    assert all("\x1b" not in line for line in lines)  # no colour off a terminal


def test_status_for_people(socket_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", socket_path, "status"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "actord 9.8.7, pid 4242, up 4m27s"
    assert "267.447" not in out


def test_send_parses_key_value_arguments(
    socket_path: str, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", socket_path, "send", "workers", "flush", "n=3", "why=disk"]) == 0
    recorder.wait_count(1)
    command = recorder.payloads()[0]
    assert (command.command, command.args) == ("flush", (("n", 3), ("why", "disk")))
    assert capsys.readouterr().out == "flush delivered to workers\n"


def test_send_refuses_a_command_the_actor_does_not_take(
    socket_path: str, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", socket_path, "send", "workers", "frob", "x=1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("actorctl: bad_request: ") and "frob" in captured.err
    assert recorder.payloads() == []


def test_exit_codes(socket_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", str(tmp_path / "none.sock"), "status"]) == 3
    assert "not running" in capsys.readouterr().err
    assert main(["--socket", socket_path, "restart", "ghost"]) == 1
    assert "not_found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--timeout", "-1", "status"],
        ["--timeout", "nan", "status"],
        ["status", "--timeout", "0"],
        ["jobs", "--limit", "0"],
        ["jobs", "--limit", "10001"],
        ["scale", "workers", "many"],
        ["scale", "workers", "0"],
        ["send", "workers", "flush", "broken"],
        ["submit", "fft", "/o.npy", "--synthetic", "4,4"],
        ["submit", "fft", "/o.npy", "--synthetic", "0,4,4"],
        ["completion", "fish"],
    ],
    ids=" ".join,
)
def test_usage_errors_exit_2_in_one_message(
    socket_path: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["--socket", socket_path, *argv])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


def test_version_names_the_running_daemon_too(
    socket_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", socket_path, "--version"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"actorctl {__version__}",
        f"actord 9.8.7 (pid 4242, {socket_path})",
    ]
    gone = str(tmp_path / "none.sock")
    assert main(["--socket", gone, "--version"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"actord not running at {gone}"
    assert main(["--socket", socket_path, "--version", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["actord"] == "9.8.7"


def test_cancel_says_whether_it_cancelled(
    socket_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", socket_path, "cancel", "log-1"]) == 0
    assert capsys.readouterr() == ("log-1 cancelled\n", "")
    assert main(["--socket", socket_path, "cancel", "log-2"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "actorctl: log-2 had already ended (done): nothing to cancel\n"
    assert main(["--socket", socket_path, "cancel", "log-3"]) == 1
    assert "too late to cancel" in capsys.readouterr().err
    assert main(["--socket", socket_path, "cancel", "log-2", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["state"] == "done" and "already ended" in captured.err
    # Cancelled before: the README's exit 1, not a second "cancelled".
    assert main(["--socket", socket_path, "cancel", "log-4"]) == 1
    assert capsys.readouterr() == (
        "",
        "actorctl: log-4 had already ended (cancelled): nothing to cancel\n",
    )


def test_a_piped_watch_prints_a_line_per_tenth_not_per_block(
    socket_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", socket_path, "watch", "log-big"]) == 0
    lines = capsys.readouterr().out.splitlines()
    percents = [line.split()[2] for line in lines[:-1]]
    tenths = ["0%", "10%", "20%", "30%", "40%", "50%", "60%", "70%", "80%", "90%"]
    assert percents == [*tenths, "100%"]  # 200 of 200 blocks written: 100, as the count says
    assert lines[-1].startswith("log-big done")
    assert main(["--socket", socket_path, "watch", "log-big", "--quiet"]) == 0
    (only,) = capsys.readouterr().out.splitlines()
    assert only.startswith("log-big done")
    assert main(["--socket", socket_path, "watch", "log-big", "-q", "--json"]) == 0
    (end,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert end["event"] == "end"


def test_json_failures_are_json_on_stdout_too(
    socket_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", socket_path, "--json", "job", "nope"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": {"code": "not_found", "message": "no job 'nope'"}}
    assert captured.err == "actorctl: not_found: no job 'nope'\n"
    assert main(["--socket", str(tmp_path / "none.sock"), "--json", "jobs"]) == 3
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "not_running"


def test_an_unknown_command_lists_no_internal_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["stauts"])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'stauts'" in err and "'status'" in err
    assert "_names" not in err


def test_a_failed_wait_says_why_on_stderr_and_exits_1(
    socket_path: str, jobs: _Jobs, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--socket", socket_path, "submit", "log", "o.jsonl", "--input", "i.log", "--wait"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err == "actorctl: log-9 failed: boom\n"
    lines = captured.out.splitlines()
    assert lines[0].startswith("log-9  running  25%  1 of 4 blocks")  # off a terminal: lines
    assert lines[-1] == "log-9 failed after 2.0s (2 of 4 blocks done)"
    assert jobs.submitted[0]["input"] == os.path.abspath("i.log")
    assert main([*argv, "--quiet"]) == 1  # only how it ended
    assert capsys.readouterr() == (
        "log-9 failed after 2.0s (2 of 4 blocks done)\n",
        "actorctl: log-9 failed: boom\n",
    )


def test_submit_says_how_to_follow_the_job(
    socket_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", socket_path, "submit", "log", "/out/app.jsonl"]) == 0
    assert capsys.readouterr().out == (
        "log-9 accepted: log /in/app.log -> /out/app.jsonl (actorctl watch log-9 follows it)\n"
    )


def test_json_follow_mode_gives_every_line_an_event(
    socket_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--socket", socket_path, "submit", "log", "o.jsonl", "--wait", "--json"]
    assert main(argv) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["submitted", "progress", "progress", "end"]
    assert lines[-1]["job"]["state"] == "failed"


def test_a_synthetic_jobs_n_gives_its_share_from_the_start(
    socket_path: str, jobs: _Jobs, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--socket", socket_path, "submit", "fft", "o.npy", "--synthetic", "8,4,4", "--wait"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("fft-9  running  25%  2 of 8 chunks")
    assert list(jobs.submitted[0]["options"]["synthetic"]) == [8, 4, 4]


def test_names_for_completion(socket_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", socket_path, "_names", "actors"]) == 0
    assert capsys.readouterr().out.split() == ["workers#0", "workers#1", "workers"]
    assert main(["--socket", socket_path, "_names", "pools"]) == 0
    assert capsys.readouterr().out.split() == ["workers"]


def test_the_socket_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_socket({"ACTORD_SOCKET": "/run/x.sock"}) == "/run/x.sock"
    assert default_socket({"XDG_RUNTIME_DIR": "/run/user/7"}) == "/run/user/7/actord/actord.sock"


# -- as a process: a closed pipe, Ctrl-C --------------------------------------------------------


def _actorctl(*args: str) -> list[str]:
    code = "import sys; from actord.control.ctl import main; sys.exit(main())"
    return [sys.executable, "-c", code, *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_a_reader_that_goes_away_ends_actorctl_quietly(socket_path: str) -> None:
    # `actorctl actors | head -0`: the reader has gone before the first write.
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "wb") as stdout:
        done = subprocess.run(
            _actorctl("--socket", socket_path, "actors"),
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=_env(),
            timeout=60,
        )
    # Exit 0: `actorctl jobs | head -1` is no failure, under `set -o pipefail` either.
    assert (done.returncode, done.stderr) == (0, b"")


def test_ctrl_c_while_watching_says_the_job_goes_on(socket_path: str, jobs: _Jobs) -> None:
    proc = subprocess.Popen(
        ctrl_c_able(_actorctl("--socket", socket_path, "watch", "log-hold")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"log-9  running")  # it is watching
        assert jobs.watching.wait(WAIT)
        proc.send_signal(2)  # SIGINT, as Ctrl-C sends it
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert b"log-hold goes on (actorctl watch log-hold)" in err
    assert b"Traceback" not in err


def test_the_choices_offered_are_the_daemons() -> None:
    # actord/ may not import the jobs: the client's lists are checked against them here.
    from actors.formats import BUILTIN_FORMATS
    from actors.model import Transform

    subparsers = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    submit = subparsers.choices["submit"]
    choices = {a.dest: a.choices for a in submit._actions if a.choices}
    assert sorted(choices["format"]) == sorted(BUILTIN_FORMATS)
    assert sorted(choices["transform"]) == sorted(t.value for t in Transform)
