"""The console scripts, run as real subprocesses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _actord(*args: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; from actord.daemon.cli import actord_main; sys.exit(actord_main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.timeout(120)
def test_demo_runs_a_log_job_and_an_fft_job(tmp_path: Path) -> None:
    result = _actord(
        "demo", "--dir", str(tmp_path), "--lines", "20000", "--chunks", "4", "--size", "64"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "log-1: done" in out
    assert "fft-2: done" in out
    counts = re.search(
        r"20,000 lines .* rejected ([\d,]+) \(the sample has ([\d,]+) malformed\)", out
    )
    assert counts and counts.group(1) == counts.group(2) != "0"
    records = (tmp_path / "sample.jsonl").read_bytes().splitlines()
    rejects = (tmp_path / "sample.jsonl.rejects").read_bytes().splitlines()
    assert len(records) + len(rejects) == 20_000
    assert len(rejects) == int(counts.group(1).replace(",", ""))
    stack = np.load(tmp_path / "sample.npy")
    result_stack = np.load(tmp_path / "sample-fft.npy")
    assert np.allclose(result_stack, np.fft.fft2(stack), rtol=1e-9, atol=1e-9)
    assert re.search(r"^parser#0\s+\d+\s+[\d,]+", out, re.MULTILINE)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_actord_without_a_command_prints_help_and_exits_2() -> None:
    result = _actord()
    assert result.returncode == 2
    assert "demo" in result.stdout


def test_demo_refuses_bad_numbers() -> None:
    result = _actord("demo", "--lines", "0")
    assert result.returncode == 2
    assert "must be positive" in result.stderr
    assert _actord("demo", "--executor", "fork").returncode == 2


def test_version() -> None:
    result = _actord("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("actord ")


@pytest.mark.parametrize(
    ("config", "flags", "expected"),
    [
        ("[daemon]\nmax_job = 3\n", (), "actord: daemon.max_job: unknown key"),
        ("[daemon]\ndrain_deadline = -1\n", (), "actord: daemon.drain_deadline: must be"),
        ("x = [", (), "actord: {config}: not valid TOML"),
        (None, (), "actord: {config}: no such config file"),
        ("", ("--max-jobs", "many"), "actord run: argument --max-jobs: invalid int value"),
        ("", ("--frob",), "actord: unrecognized arguments: --frob"),
    ],
    ids=["unknown-key", "bad-value", "invalid-toml", "missing-file", "bad-value-flag", "bad-flag"],
)
def test_a_failed_start_says_why_in_one_line_and_exits_2(
    tmp_path: Path, config: str | None, flags: tuple[str, ...], expected: str
) -> None:
    path = tmp_path / "actord.toml"
    if config is not None:
        path.write_text(config)
    state = str(tmp_path / "state")
    result = _actord("run", "--config", str(path), "--state-dir", state, *flags)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()  # one line: no traceback, no logging error
    assert line.startswith(expected.format(config=path)), line
    assert result.stdout == ""


def test_a_state_dir_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    import fcntl

    state = tmp_path / "state"
    state.mkdir()
    with open(state / "actord.lock", "w") as held:  # as a running daemon holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = _actord("run", "--state-dir", str(state), "--socket", str(tmp_path / "s"))
    assert result.returncode == 2
    # The log's one line (which config) and the error's one line, no traceback.
    starting, line = result.stderr.splitlines()
    assert "starting; config: built-in defaults" in starting
    assert line == (
        f"actord: daemon.state_dir: {state} is in use by another actord [set by --state-dir]"
    )
