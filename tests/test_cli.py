"""The console scripts, run as real subprocesses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _actord(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from actord.cli import actord_main; sys.exit(actord_main(sys.argv[1:]))"
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
