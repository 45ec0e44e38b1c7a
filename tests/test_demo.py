"""`actord demo` as a user runs it: a real subprocess, piped or on a pseudo-terminal."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from actors.writer import PAUSE_ENV

from ._daemon import ROOT
from .conftest import ctrl_c_able

_SMALL = ("--lines", "20000", "--chunks", "4", "--size", "64")
# Every actor of a demo run: the pools' members, the store, the monitor, the progress view,
# and each job's own reader and writer (which stop as their job ends).
_ACTORS = {
    "fft#0",
    "fft#1",
    "parser#0",
    "parser#1",
    "store",
    "monitor",
    "progress",
    "log-1.reader",
    "log-1.writer",
    "fft-2.reader",
    "fft-2.writer",
}


def _env(tmp: Path) -> dict[str, str]:
    # The demo's temporary directory goes under `tmp`: what it leaves behind is visible there.
    return {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}


def _run_demo(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`actord demo ARGS` to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "actord", "demo", *args],
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def _demo_dir(out: str) -> Path:
    found = re.search(r"^writing sample inputs to (.+)$", out, re.MULTILINE)
    assert found, out
    return Path(found.group(1))


def _actor_table(out: str) -> dict[str, list[str]]:
    """The rows of the actor table, by actor name."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"actor\s+thread\s+messages", line))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip() or line.startswith("parse worker processes"):
            break
        name, *cells = line.split()
        rows[name] = cells
    return rows


@pytest.mark.timeout(120)
def test_a_piped_demo_cleans_up_never_redraws_and_lists_every_actor(tmp_path: Path) -> None:
    result = _run_demo(tmp_path, *_SMALL)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    directory = _demo_dir(out)
    assert directory.parent == tmp_path
    assert not directory.exists()
    assert list(tmp_path.iterdir()) == []
    assert f"removed {directory}" in out
    # Piped: no status line redrawn in place, but one line per change of a job's state.
    assert "\r" not in out
    assert re.search(r"^log-1 done 5/5 blocks$", out, re.MULTILINE), out
    assert re.search(r"^fft-2 done 4/4 chunks$", out, re.MULTILINE), out
    # The test extras install scipy: the default engine is scipy's, and the summary says so.
    assert re.search(r"4 chunks 64x64 fft2 -> complex128 .* MB/s written; scipy engine\)", out)
    rows = _actor_table(out)
    assert set(rows) == _ACTORS, out
    for name in ("log-1.reader", "log-1.writer", "fft-2.reader", "fft-2.writer"):
        thread, messages = rows[name][:2]
        assert thread == "ended" and int(messages.replace(",", "")) > 0, rows[name]


@pytest.mark.timeout(120)
def test_keep_keeps_the_temporary_directory(tmp_path: Path) -> None:
    small = ["--lines", "2000", "--chunks", "2", "--size", "16", "--parsers", "1"]
    result = _run_demo(tmp_path, "--keep", *small, "--executor", "thread")
    assert result.returncode == 0, result.stderr
    directory = _demo_dir(result.stdout)
    assert f"inputs and outputs are in {directory}" in result.stdout
    kept = {p.name for p in directory.iterdir()}
    assert {"sample.log", "sample.jsonl", "sample.jsonl.rejects", "sample-fft.npy"} <= kept


@pytest.mark.timeout(120)
def test_an_interrupted_demo_cleans_up_too(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The log job's writer waits just before its rename (the writers' test hook), so the
    # Ctrl-C lands mid-job however slow the machine: the demo cannot have finished first.
    fifo = tmp_path_factory.mktemp("pause") / "paused"
    os.mkfifo(fifo)
    os.mkfifo(f"{fifo}.go")
    notes = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the writer needs a reader to note to
    env = {**_env(tmp_path), PAUSE_ENV: f"before-rename:log:{fifo}"}
    proc = subprocess.Popen(
        ctrl_c_able([sys.executable, "-m", "actord", "demo", "--chunks", "4", "--size", "64"]),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        directory = _demo_dir(proc.stdout.readline())  # printed (and flushed) as it begins
        ready, _, _ = select.select([notes], [], [], 100)
        assert ready, "the log job's writer never reached its rename"
        proc.send_signal(signal.SIGINT)  # a Ctrl-C, while the demo waits for its jobs
        os.close(os.open(f"{fifo}.go", os.O_WRONLY))  # and the writer may go on
        _, err = proc.communicate(timeout=100)
    finally:
        os.close(notes)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    assert not directory.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
def test_on_a_terminal_the_demo_redraws_one_status_line(tmp_path: Path) -> None:
    main, child = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "actord", "demo", *_SMALL],
            env=_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=child,
            stderr=subprocess.PIPE,
        )
        os.close(child)
        child = -1
        chunks = []
        while True:  # until the child's side is closed: EIO (Linux) or EOF
            try:
                data = os.read(main, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(100) == 0
    finally:
        os.close(main)
        if child >= 0:
            os.close(child)
    screen = b"".join(chunks).decode()
    # The terminal turns each "\n" into "\r\n"; a redraw is a "\r" that starts a line again.
    redraws = re.findall(r"\r(?!\n)([^\r\n]*)", screen)
    assert redraws, screen
    assert "log-1 done 5/5 blocks" in redraws[-1] and "fft-2 done 4/4 chunks" in redraws[-1]
    assert not re.search(r"^log-1 running", screen.replace("\r\n", "\n"), re.MULTILINE)
    assert not list(tmp_path.iterdir())
