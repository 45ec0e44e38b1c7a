"""An operator's view of a real daemon: its log lines, retention, its config over the
socket, and what a reload says it changed."""

from __future__ import annotations

import json
from collections.abc import Callable

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
