"""An operator's view of a real daemon: its log lines, retention, its config over the
socket, and what a reload says it changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ._daemon import DaemonProcess

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
