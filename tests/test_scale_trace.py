"""`scale` leaves a trace in a real daemon: a log line with who asked, the pool's size beside
its configured one in `status` and `config`, members numbered from 0 after any resizes, and
a reload that says a scaled pool keeps its size."""

from __future__ import annotations

import os
from collections.abc import Callable

from ._daemon import DaemonProcess
from .test_scale_stall import _wait_members


def test_scale_is_logged_shown_numbered_from_zero_and_kept_by_a_reload(
    daemons: Callable[..., DaemonProcess],
) -> None:
    daemon = daemons("--parsers", "3", "--parser-executor", "thread").start()
    with daemon.client() as client:
        assert client.call("status")["pools"]["parser"] == {
            "size": 3,
            "configured": 3,
            "scaled": False,
        }
        client.call("scale", "parser", 7)
        _wait_members(client, 7, 60)
        client.call("scale", "parser", 2)
        _wait_members(client, 2, 60)  # the members that left have exited
        members = sorted(a["name"] for a in client.call("actors") if a["pool"] == "parser")
        assert members == ["parser#0", "parser#1"]
        assert client.call("send", "parser#0", "ping")["actor"] == "parser#0"
        pool = client.call("status")["pools"]["parser"]
        assert pool == {"size": 2, "configured": 3, "scaled": True}
        assert client.call("status")["pools"]["fft"]["scaled"] is False
        me = f"asked by uid {os.getuid()} pid {os.getpid()}"
        log = daemon.tail(400)
        assert f"scale: pool parser from 3 to 7 members (configured 3), {me}" in log
        assert f"scale: pool parser from 7 to 2 members (configured 3), {me}" in log
        reloaded = client.call("reload")
        assert reloaded["scaled_kept"] == {"parser": 2}
        assert client.call("status")["pools"]["parser"]["size"] == 2
        assert "pool parser keeps its scaled size 2 (configured 3)" in daemon.tail(40)
        shown = daemon.ctl("status")
        assert "parser 2 (configured 3, scaled)" in shown.stdout, shown.stdout
        config = daemon.ctl("config")
        assert "size = 3  # scaled to 2 (actorctl scale)" in config.stdout, config.stdout
        client.call("scale", "parser", 3)  # back to the configured size: scaled no more
        _wait_members(client, 3, 60)
        assert client.call("status")["pools"]["parser"]["scaled"] is False
        assert sorted(a["name"] for a in client.call("actors") if a["pool"] == "parser") == [
            "parser#0",
            "parser#1",
            "parser#2",
        ]
