"""actorctl against a real `actord run`, as a person sees it on a real pseudo-terminal and as
a script sees it through a pipe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from actord import __version__
from actors.demo import write_sample_log

from ._daemon import ROOT, DaemonProcess
from ._pty import Screen, Terminal

SLOW_PATTERN = r"(?P<a>(x+x+)+y)"  # catastrophic backtracking: ~0.1 s per line of 22 x's
BAR = re.compile(r"^(log-\d+)  running  \[([#.]{24})\]  (\d+)%")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    # One job at a time: a job can be held queued behind a slow one.
    running = DaemonProcess(tmp_path_factory.mktemp("ctl"), "--max-jobs", "1").start()
    try:
        yield running
    finally:
        running.stop()


def _slow_job(daemon: DaemonProcess, name: str, lines: int) -> dict[str, Any]:
    """A log job of `lines` lines, each about 0.1 s of parsing, in blocks of about 3 lines."""
    source = daemon.inputs / f"{name}.log"
    source.write_text(("x" * 22 + "\n") * lines)
    options = {"pattern": SLOW_PATTERN, "block_bytes": 64}
    spec = {"kind": "log", "input": str(source), "output": str(daemon.outputs / f"{name}.jsonl")}
    job: dict[str, Any] = daemon.call("submit", {**spec, "options": options})
    return job


def _actorctl(daemon: DaemonProcess, *args: str) -> list[str]:
    code = "import sys; from actord.control.ctl import main; sys.exit(main())"
    return [sys.executable, "-c", code, "--socket", daemon.socket, *args]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


def _on_a_terminal(daemon: DaemonProcess, *args: str, **env: str) -> tuple[int, Screen]:
    terminal = Terminal(_actorctl(daemon, *args), _env(**env))
    try:
        code = terminal.finish()
        return code, Screen(terminal.output)
    finally:
        terminal.close()


def test_watch_on_a_terminal_shows_a_bar_that_advances_then_the_summary(
    daemon: DaemonProcess,
) -> None:
    job = _slow_job(daemon, "watched", lines=20)
    code, screen = _on_a_terminal(daemon, "watch", job["id"])
    assert code == 0, screen.text()
    bars = [m for m in map(BAR.match, screen.overwritten) if m]
    assert bars, screen.overwritten
    assert {m.group(1) for m in bars} == {job["id"]}
    percents = [int(m.group(3)) for m in bars]
    assert percents == sorted(percents) and len(set(percents)) >= 2  # it advanced
    fills = [m.group(2).count("#") for m in bars]
    assert fills == sorted(fills) and fills[-1] > fills[0]  # and so did its bar
    # Every bar was drawn over the last: what stays on the screen is the one summary line.
    (last,) = screen.text()
    assert re.fullmatch(
        rf"{job['id']} done in \S+: 20 lines, 0 matched, 20 rejected; 460 B at .* -> "
        + re.escape(job["output"]),
        last,
    ), last


def test_submit_wait_on_a_terminal_ends_on_the_summary(daemon: DaemonProcess) -> None:
    source = daemon.inputs / "wait.log"
    source.write_text(("x" * 22 + "\n") * 20)
    out = daemon.outputs / "wait.jsonl"
    args = ("submit", "log", str(out), "--input", str(source), "--pattern", SLOW_PATTERN)
    code, screen = _on_a_terminal(daemon, *args, "--wait")
    assert code == 0, screen.text()
    assert any(BAR.match(line) for line in screen.overwritten), screen.overwritten
    (last,) = screen.text()
    assert re.fullmatch(r"log-\d+ done in \S+: 20 lines, 0 matched, 20 rejected; .*", last), last


def test_colour_on_a_terminal_only_and_never_with_no_color(daemon: DaemonProcess) -> None:
    _slow_job(daemon, "coloured", lines=1)
    code, screen = _on_a_terminal(daemon, "jobs")
    assert code == 0 and screen.coloured
    code, screen = _on_a_terminal(daemon, "jobs", NO_COLOR="1")
    assert code == 0 and not screen.coloured
    assert screen.text()[0].split() == [
        "ID",
        "KIND",
        "STATE",
        "PROGRESS",
        "MEMBERS",
        "STARTED",
        "DURATION",
        "INPUT",
    ]
    piped = daemon.ctl("jobs")
    assert piped.returncode == 0 and "\x1b" not in piped.stdout


def test_a_failed_job_says_why_on_stderr_and_a_late_cancel_says_so(
    daemon: DaemonProcess,
) -> None:
    blocker = _slow_job(daemon, "blocker", lines=40)  # holds the one slot
    source = daemon.inputs / "vanishing.log"
    write_sample_log(str(source), 100)
    out = daemon.outputs / "vanishing.jsonl"
    waiting = subprocess.Popen(
        _actorctl(daemon, "submit", "log", str(out), "--input", str(source), "--wait"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert waiting.stdout is not None
        first = waiting.stdout.readline()  # off a terminal: one plain line per event
        assert re.fullmatch(r"log-\d+  accepted\n", first), first
        job_id = first.split()[0]
        source.unlink()  # the input goes while the job waits: it fails as it starts
        cancel = daemon.ctl("cancel", blocker["id"])
        assert (cancel.returncode, cancel.stdout) == (0, f"{blocker['id']} cancelled\n")
        rest, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 1
    assert err == (
        f"actorctl: {job_id} failed: invalid_path: the input {source} does not exist or is "
        "not a file\n"
    )
    # Its reader starts and finds the input gone (the store opens no file of a user's).
    assert re.fullmatch(rf"{job_id} failed after \S+ \(0 blocks done\)", rest.splitlines()[-1])
    again = daemon.ctl("cancel", job_id)
    assert again.returncode == 1
    assert again.stderr == f"actorctl: {job_id} had already ended (failed): nothing to cancel\n"


def test_version_shows_the_daemons_too(daemon: DaemonProcess) -> None:
    shown = daemon.ctl("--version")
    assert shown.returncode == 0
    assert shown.stdout.splitlines() == [
        f"actorctl {__version__}",
        f"actord {__version__} (pid {daemon.pid}, {daemon.socket})",
    ]
