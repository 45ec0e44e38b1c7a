"""The README's asyncio example runs as printed, against a real daemon."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable

from actors.demo import write_sample_log

from ._daemon import ROOT, DaemonProcess

README = (ROOT / "README.md").read_text()


def _example() -> str:
    found = re.search(
        r"<!-- readme-asyncio -->\n```python\n(.*?)```\n<!-- /readme-asyncio -->", README, re.S
    )
    assert found, "no readme-asyncio block in the README"
    return found.group(1)


def test_the_asyncio_example_runs_as_printed(daemons: Callable[..., DaemonProcess]) -> None:
    daemon = daemons().start()
    source = daemon.inputs / "example.log"
    write_sample_log(str(source), 500)
    output = daemon.outputs / "example.jsonl"
    env = {**os.environ, "ACTORD_SOCKET": daemon.socket, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", _example(), str(source), str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "sum of squares: 285"
    assert lines[1] == "1000 concurrent asks: [0, 1, 4, 9] ..."
    assert lines[-1].endswith(" done")
    assert output.exists()
