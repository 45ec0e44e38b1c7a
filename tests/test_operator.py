"""An operator's view of a real daemon: its log lines, retention, its config over the
socket, and what a reload says it changed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._daemon import ROOT, DaemonProcess

Daemons = Callable[..., DaemonProcess]


def test_json_log_lines_one_object_per_record(daemons: Daemons) -> None:
    daemon = daemons("--log-format", "json").start()
    assert daemon.call("ping") == "pong"
    daemon.stop()
    records = [json.loads(line) for line in daemon.log.read_text().splitlines() if line]
    assert "starting; config: " in records[0]["message"]
    assert records[0]["actor"] == "daemon"
    assert {"time", "level", "logger", "actor", "correlation_id", "message"} <= set(records[0])
    assert any(r["message"].startswith("stopped in") for r in records)


def test_reload_says_what_changed_and_config_shows_it_with_what_waits_for_a_restart(
    daemons: Daemons, tmp_path: Path
) -> None:
    config = tmp_path / "actord.toml"
    config.write_text("[parser]\nexecutor = 'thread'\nsize = 2\n")
    daemon = daemons("--config", str(config)).start()
    config.write_text("[parser]\nexecutor = 'process'\nsize = 3\n[daemon]\nmax_jobs = 2\n")
    reloaded = daemon.ctl("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert "  parser.size: 2 -> 3" in reloaded.stdout.splitlines()
    assert "  daemon.max_jobs: 4 -> 2" in reloaded.stdout.splitlines()
    assert "a restart is needed for:\n  parser.executor\n" in reloaded.stdout
    assert "[" not in reloaded.stdout.split("restart is needed")[1]  # no Python list
    log = daemon.tail(100)
    assert "reloaded; these changes apply at the next start: parser.executor" in log
    assert "config generation 2 applied: " in log
    applied = log.split("config generation 2 applied: ")[1].splitlines()[0]
    assert 'parser.executor "thread" -> "process"' in applied
    assert "parser.size 2 -> 3" in applied
    shown = daemon.ctl("config")
    assert shown.returncode == 0, shown.stderr
    assert f"# config file: {config}" in shown.stdout
    assert '\n[parser]\nsize = 3\nexecutor = "process"\n' in shown.stdout
    assert '#   parser.executor: "thread" -> "process"' in shown.stdout
    assert "# waiting for a restart: parser.executor" in shown.stdout
    as_json = json.loads(daemon.ctl("--json", "config").stdout)
    assert as_json["config"]["parser"]["size"] == 3
    assert as_json["changed_since_start"]["parser.size"] == [2, 3]
    assert as_json["restart_needed"] == ["parser.executor"]
    assert as_json["path"] == str(config)


SLOW_PATTERN = r"(?P<a>(x+x+)+y)"  # catastrophic backtracking: ~0.1 s per line of 22 x's


def test_status_says_draining_while_jobs_drain_and_shutdown_wait_returns_once_exited(
    daemons: Daemons,
) -> None:
    # A job of about 30 s of parsing outlasts the 8 s drain: the drain is under way for all
    # of it, however slow the machine is to run the commands below.
    daemon = daemons("--drain-deadline", "8").start()
    source = daemon.inputs / "slow.log"
    source.write_text(("x" * 22 + "\n") * 300)
    job = {
        "kind": "log",
        "input": str(source),
        "output": str(daemon.outputs / "slow.jsonl"),
        "options": {"pattern": SLOW_PATTERN, "block_bytes": 64},
    }
    submitted = daemon.call("submit", job)
    with daemon.client(timeout=60) as client:  # running, so the drain has to wait for it

        def running(method: str, params: Any) -> None:
            if params[0]["state"] == "running":
                raise _Running

        with pytest.raises(_Running):
            client.stream("watch", submitted["id"], on_notification=running, timeout=60)
    status = daemon.ctl("status", "--json")
    actors = json.loads(daemon.ctl("actors", "--json").stdout)
    assert json.loads(status.stdout)["actors"] == len(actors)  # one count, both commands
    waited = subprocess.Popen(
        [*_ctl(daemon), "shutdown", "--wait", "--timeout", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(daemon),
    )
    daemon.wait_note("STOPPING=1")
    draining = daemon.ctl("status")
    assert draining.returncode == 0, draining.stderr
    assert "draining" in draining.stdout.splitlines()[0]
    refused = daemon.ctl(
        "submit", "log", str(daemon.outputs / "late.jsonl"), "--input", str(source)
    )
    assert refused.returncode == 1 and "shutting down" in refused.stderr
    out, err = waited.communicate(timeout=120)
    assert waited.returncode == 0, err
    assert daemon.proc is not None and daemon.proc.poll() is not None  # exited before it said so
    assert out.splitlines()[-1] == f"actord (pid {daemon.pid}) has exited"


class _Running(Exception):
    pass


def _ctl(daemon: DaemonProcess) -> list[str]:
    code = "from actord.daemon.cli import actorctl_main as m; exit(m())"
    return [sys.executable, "-c", code]


def _env(daemon: DaemonProcess) -> dict[str, str]:
    return {**os.environ, "ACTORD_SOCKET": daemon.socket, "PYTHONPATH": str(ROOT)}


def test_a_harness_leaves_no_socket_directory_behind(tmp_path: Path) -> None:
    # This process's (other tests, other checkouts may run meanwhile).
    ours = f"actord-e2e-{os.getpid()}-*"
    before = set(Path(tempfile.gettempdir()).glob(ours))
    unused = DaemonProcess(tmp_path / "unused")  # only its paths are used: nothing made
    assert not Path(unused.socket).parent.parent.exists()
    unused.stop()
    daemon = DaemonProcess(tmp_path / "used").start()
    assert Path(daemon.socket).exists()
    daemon.stop()
    assert set(Path(tempfile.gettempdir()).glob(ours)) <= before


def test_sigusr1_logs_one_named_dump_with_a_header(daemons: Daemons) -> None:
    daemon = daemons().start()
    actors = daemon.call("actors")
    daemon.signal(signal.SIGUSR1)
    # The dump is written by the main thread as soon as it runs Python again: before it
    # serves the SIGHUP sent after it, whose READY=1 says that reload is over.
    daemon.signal(signal.SIGHUP)
    daemon.wait_note("RELOADING=1")
    daemon.wait_note("READY=1")
    lines = daemon.log.read_text().splitlines()
    (head,) = [i for i, line in enumerate(lines) if "actord.dump" in line]
    assert re.search(
        r"WARNING actord\.dump \[actor=daemon cid=-\] thread dump at \S+Z, pid \d+, \d+ threads$",
        lines[head],
    )
    body = "\n".join(lines[head:])
    assert "MainThread, native id" in body
    parser = next(a for a in actors if a["name"] == "parser#0")
    assert f"(actor parser#0), native id {parser['native_thread_id']}:" in body
    # One record: the stack lines that follow carry no timestamp of their own.
    after = lines[head + 1 :]
    end = next(
        (i for i, line in enumerate(after) if re.match(r"\d{4}-\d\d-\d\d ", line)), len(after)
    )
    assert end > 10


def test_check_config_against_a_running_daemon_counts_its_socket_as_its_own(
    daemons: Daemons,
) -> None:
    daemon = daemons().start()
    flags = daemon.args()[4:]  # `python -m actord run` and then its flags
    code = "import sys; from actord.daemon.cli import actord_main; sys.exit(actord_main())"
    checked = subprocess.run(
        [sys.executable, "-c", code, "check-config", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert (
        f"warning: daemon.socket: {daemon.socket} is the running actord's (pid {daemon.pid})"
        in (checked.stderr)
    )
    assert "is in use by a running actord" in checked.stderr
