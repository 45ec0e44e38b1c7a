"""The code checks that CI enforces: ruff (lint and format) and mypy strict on the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "actord", "actors", "tests", "bench"),
        ("ruff", "format", "--check", "actord", "actors", "tests", "bench"),
    ],
    ids=["ruff-check", "ruff-format"],
)
def test_ruff(command: tuple[str, ...]) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is part of the test extra"
    result = _run(ruff, *command[1:])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(240)
def test_mypy_strict() -> None:
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
