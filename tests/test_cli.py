"""The console scripts, run as real subprocesses."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


def _actord(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from actord.cli import actord_main; sys.exit(actord_main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.timeout(90)
def test_demo_runs_the_pipeline_and_reports() -> None:
    result = _actord("demo", "--lines", "20000", "--block", "500", "--parsers", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    parsed = re.search(r"parsed ([\d,]+) lines", out)
    assert parsed and parsed.group(1) == "20,000"
    counts = re.search(r"matched ([\d,]+), rejected ([\d,]+)", out)
    assert counts
    matched, rejected = (int(g.replace(",", "")) for g in counts.groups())
    assert matched + rejected == 20_000
    assert 0 < rejected < 1000  # the sample has malformed lines, and they are counted
    assert "dead letters: 0" in out
    assert re.search(r"^parser#0\s+\d+\s+\d+", out, re.MULTILINE)
    assert re.search(r"^parser#1\s+\d+\s+\d+", out, re.MULTILINE)


def test_actord_without_a_command_prints_help_and_exits_2() -> None:
    result = _actord()
    assert result.returncode == 2
    assert "demo" in result.stdout


def test_demo_refuses_bad_numbers() -> None:
    result = _actord("demo", "--lines", "0")
    assert result.returncode == 2
    assert "must be positive" in result.stderr


def test_version() -> None:
    result = _actord("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("actord ")
