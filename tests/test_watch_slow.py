"""A watcher that never reads costs nothing (issue 21, item 5): a real daemon, a real job
that publishes progress for every block, and a raw client that sends `watch` and never
reads. No dead letter; its connection is closed, with the reason, past daemon.watch_timeout."""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import msgpack

from actord.control.protocol import encode_request

from ._daemon import DaemonProcess
from ._logjobs import BACKTRACKING, log_job
from ._prometheus import free_port

Daemons = Callable[..., DaemonProcess]
_BOUND = 2.0  # daemon.watch_timeout for the test


def _dead_letters(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        reason: float(value)
        for reason, value in re.findall(r'actord_dead_letters_total\{reason="(\w+)"\} (\S+)', text)
    }


def _frames(sock: socket.socket) -> list[list[object]]:
    """Everything the daemon sent, until it closed the connection."""
    unpacker = msgpack.Unpacker(raw=False)
    sock.settimeout(30)
    while data := sock.recv(1 << 20):
        unpacker.feed(data)
    return [list(frame) for frame in unpacker]


def test_a_watcher_that_never_reads_gets_no_dead_letter_and_is_disconnected(
    daemons: Daemons, tmp_path: Path
) -> None:
    config = tmp_path / "actord.toml"
    config.write_text(f"[daemon]\nwatch_timeout = {_BOUND}\n")
    daemon = daemons("--config", str(config), "--metrics-address", f"127.0.0.1:{free_port()}")
    # One line a block, each a few ms of backtracking: a job that runs for a while and
    # publishes progress all along (hundreds of events).
    (daemon.inputs / "slow.log").write_text(("a" * 16 + "!\n") * 3000)
    daemon.start()
    url = daemon.call("status")["metrics"]
    with daemon.client() as client:
        job = client.call("submit", log_job(daemon, "slow", pattern=BACKTRACKING, block_bytes=18))
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills fast: a stalled reader
    silent.connect(daemon.socket)
    try:
        silent.sendall(encode_request(7, "watch", [job["id"]]))
        started = time.monotonic()
        # The daemon gives up on it once it has left the bound's worth of progress unread;
        # the connections gauge says when (a bounded wait on the daemon's own figure).
        state = "running"
        while daemon.call("status")["connections"] > 1 and state == "running":
            assert time.monotonic() - started < 60, daemon.tail()
            state = daemon.call("job", job["id"])["state"]
        waited = time.monotonic() - started
        dead = _dead_letters(url)
        assert dead["mailbox_full"] == 0, dead  # its progress was coalesced, never queued
        assert state == "running", "the job ended before its stalled watcher was let go"
        assert waited >= _BOUND
        frames = _frames(silent)  # read only now: all it was sent, then the end
    finally:
        silent.close()
    progress = [f for f in frames if f[0] == 2]
    assert progress and all(f[1] == "progress" for f in progress)
    kind, msgid, error, result = frames[-1]
    assert (kind, msgid, result) == (1, 7, None)
    assert error["code"] == "busy"
    assert "daemon.watch_timeout" in error["message"] and job["id"] in error["message"]
    with daemon.client() as client:
        assert client.call("job", job["id"])["state"] == "running"  # the job goes on
        client.call("cancel", job["id"])
        assert client.stream("watch", job["id"], on_notification=None)["state"] == "cancelled"
    assert _dead_letters(url)["mailbox_full"] == 0
    assert "disconnected" in daemon.log.read_text()
