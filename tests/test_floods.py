"""Connection floods against a real daemon under `ulimit -n 1024` (issue 21, item 3): idle
connections to the metrics port and the control socket cost no job, no escalation and no
traceback flood, and `ping` still answers at once."""

from __future__ import annotations

import resource
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from actord.control.client import Client

from ._daemon import DaemonProcess
from ._logjobs import log_job, seed_lines
from ._prometheus import free_port

_METRICS_IDLE = 2000
_CONTROL_IDLE = 200
_NOFILE = 1024


class _Limited(DaemonProcess):
    """A daemon started under ``prlimit --nofile=1024:1024`` (soft and hard, as `ulimit -n`
    sets them: the daemon cannot raise it)."""

    def args(self) -> list[str]:
        return ["prlimit", f"--nofile={_NOFILE}:{_NOFILE}", "--", *super().args()]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[_Limited]:
    address = f"127.0.0.1:{free_port()}"
    daemon = _Limited(tmp_path, "--metrics-address", address, "--parser-executor", "process")
    try:
        yield daemon
    finally:
        daemon.stop()


def _room_for(descriptors: int) -> None:
    # This test holds a few thousand sockets: its own soft limit up to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < descriptors:
        pytest.skip(f"the test needs {descriptors} descriptors; the hard limit is {hard}")
    if soft < descriptors:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _ping_seconds(path: str) -> float:
    started = time.monotonic()
    with Client(path, timeout=10) as client:
        assert client.call("ping") == "pong"
    return time.monotonic() - started


def test_idle_floods_cost_no_job_and_ping_answers(limited: _Limited) -> None:
    _room_for(_METRICS_IDLE + _CONTROL_IDLE + 200)
    daemon = limited.start()
    (daemon.inputs / "big.log").write_text(seed_lines(20_000))
    status = daemon.call("status")
    host, port = status["metrics"].removeprefix("http://").split("/")[0].rsplit(":", 1)
    held: list[socket.socket] = []
    try:
        for _ in range(_METRICS_IDLE):  # connect, send nothing, keep it open
            held.append(socket.create_connection((host, int(port)), timeout=10))
        for _ in range(_CONTROL_IDLE):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            held.append(sock)
            sock.connect(daemon.socket)  # blocking: waits while the backlog is full
        # Flooded: the control socket still answers at once, and a job runs to its end.
        pings = [_ping_seconds(daemon.socket) for _ in range(5)]
        assert max(pings) < 1.0, pings
        with daemon.client() as client:
            # Many units: many descriptors' worth.
            job = client.call("submit", log_job(daemon, "big", block_bytes=4096))
            final = client.stream("watch", job["id"], on_notification=None, timeout=120)
        assert final["state"] == "done", final
        assert final["summary"]["matched"] == 20_000
        # A scrape gets through the flood too: the idlest connection made room for it.
        with urllib.request.urlopen(status["metrics"], timeout=10) as response:
            assert response.status == 200
            assert b"actord_dead_letters_total" in response.read()
        assert max(_ping_seconds(daemon.socket) for _ in range(5)) < 1.0
        assert daemon.proc is not None and daemon.proc.poll() is None  # no escalation
    finally:
        for sock in held:
            sock.close()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    log = daemon.log.read_text(errors="replace")
    assert log.count("Traceback") <= 2, daemon.tail(80)
    assert "keeps failing" not in log
    assert "Too many open files" not in log.replace("cannot accept", "")
