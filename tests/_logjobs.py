"""Log jobs for the daemon tests of issue 21: their params, their inputs."""

from __future__ import annotations

from typing import Any

from ._daemon import DaemonProcess

# Catastrophic backtracking: a line of n a's and a "!" takes time doubling with each a.
BACKTRACKING = "(?P<a>(a+)+)b"


def seed_lines(count: int) -> str:
    """`count` lines of the default ("seed") format: every one matches."""
    return "".join(f"2026-01-01 12:00:00 [INFO] line {i}\n" for i in range(count))


def log_job(daemon: DaemonProcess, name: str, output: str = "", **options: Any) -> dict[str, Any]:
    """A log job's params: the input `name`.log in the daemon's input root, the output
    `output` (default `name`).jsonl in its output root."""
    return {
        "kind": "log",
        "input": str(daemon.inputs / f"{name}.log"),
        "output": str(daemon.outputs / f"{output or name}.jsonl"),
        "options": options,
    }
