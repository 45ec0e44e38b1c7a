"""`scale parser 256` mid-job on a real daemon (issue 21, item 6): the call answers at once
with the plan, members (parse worker processes) start off the control thread a step at a
time, `ping` answers in < 1 s throughout, and the configured maximum refuses more."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from actord.control.client import Client, RemoteError

from ._daemon import DaemonProcess
from ._logjobs import log_job, seed_lines

Daemons = Callable[..., DaemonProcess]
_MAX = 256


class _Pinger(threading.Thread):
    """Pings the daemon over one connection until told to stop (a bounded loop), keeping
    the slowest answer."""

    def __init__(self, socket_path: str) -> None:
        super().__init__(name="test-pinger")
        self.path = socket_path
        self.done = threading.Event()
        self.slowest = 0.0
        self.count = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Client(self.path, timeout=30) as client:
                for _ in range(20_000):
                    started = time.monotonic()
                    assert client.call("ping") == "pong"
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    self.count += 1
                    if self.done.wait(0.05):  # the pace of the pings, not a synchronisation
                        return
        except BaseException as error:
            self.error = error


def _members(client: Client) -> int:
    return sum(actor["pool"] == "parser" for actor in client.call("actors"))


def _wait_members(client: Client, wanted: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (have := _members(client)) != wanted:
        assert time.monotonic() < deadline, f"{have} of {wanted} parser members"
        threading.Event().wait(0.5)  # the daemon's own figure, looked at twice a second


@pytest.mark.timeout(600)
def test_scale_parser_256_mid_job_keeps_ping_under_a_second(
    daemons: Daemons, tmp_path: Path
) -> None:
    config = tmp_path / "actord.toml"
    config.write_text(f"[daemon]\nmax_pool_size = {_MAX}\n")
    daemon = daemons("--config", str(config), "--parser-executor", "process")
    (daemon.inputs / "big.log").write_text(seed_lines(200_000))
    daemon.start()
    pinger = _Pinger(daemon.socket)
    with daemon.client() as client:
        job = client.call("submit", log_job(daemon, "big", block_bytes=4096))
        assert job["state"] == "running"
        pinger.start()
        try:
            started = time.monotonic()
            plan = client.call("scale", "parser", _MAX)
            assert time.monotonic() - started < 1.0  # answered at once, with the plan
            assert plan["pool"] == "parser" and plan["size"] == _MAX and plan["from"] == 2
            assert 1 <= plan["step"] <= 8
            _wait_members(client, _MAX, 400)
            client.call("scale", "parser", 2)
            _wait_members(client, 2, 60)
        finally:
            pinger.done.set()
            pinger.join(60)
        assert pinger.error is None, pinger.error
        assert pinger.count > 10
        assert pinger.slowest < 1.0, f"a ping took {pinger.slowest:.2f}s"
        with pytest.raises(RemoteError) as refused:
            client.call("scale", "parser", _MAX + 1)
        assert refused.value.code == "bad_request"
        assert (
            "daemon.max_pool_size" in refused.value.message and str(_MAX) in refused.value.message
        )
        final = client.stream("watch", job["id"], on_notification=None, timeout=300)
        assert final["state"] == "done" and final["summary"]["matched"] == 200_000
    log = daemon.log.read_text()
    assert "grows to 256 members on" in log  # the warning: past the cores
    assert log.count("Traceback") == 0, daemon.tail(60)
