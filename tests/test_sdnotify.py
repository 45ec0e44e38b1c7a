"""sd_notify against a real datagram socket playing systemd's part."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from actord.daemon.sdnotify import Notifier, listen_fds, watchdog_interval


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(10)
    try:
        yield sock
    finally:
        sock.close()


def _fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_status_watchdog_stopping(manager: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": manager.getsockname()})
    assert notifier.ready("3 actors running")
    assert _fields(manager) == {"READY": "1", "STATUS": "3 actors running"}
    assert notifier.watchdog()
    assert _fields(manager) == {"WATCHDOG": "1"}
    assert notifier.reloading()
    reloading = _fields(manager)
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert notifier.stopping()
    assert _fields(manager) == {"STOPPING": "1"}
    notifier.close()


def test_abstract_socket_address() -> None:
    name = f"actord-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(10)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert sock.recv(100) == b"STATUS=hello"
    finally:
        sock.close()


def test_disabled_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    with pytest.raises(ValueError, match="newline"):
        Notifier({"NOTIFY_SOCKET": "/nonexistent"}).notify(STATUS="two\nlines")


def test_watchdog_interval_is_half_the_timeout_and_respects_the_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "7"}, pid=7) == 2.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_listen_fds() -> None:
    env = {"LISTEN_FDS": "2", "LISTEN_PID": "99", "LISTEN_FDNAMES": "control:metrics"}
    assert listen_fds(env, pid=99) == {"control": 3, "metrics": 4}
    assert listen_fds(env, pid=100) == {}
    assert listen_fds({"LISTEN_FDS": "1", "LISTEN_PID": "5"}, pid=5) == {"fd3": 3}


def test_a_manager_that_went_away_does_not_stop_the_daemon(tmp_path: Path) -> None:
    gone = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(gone))
    notifier = Notifier({"NOTIFY_SOCKET": str(gone)})
    assert notifier.ready()
    listener.close()  # the manager stopped listening: the path now refuses datagrams
    assert notifier.stopping() is False
    notifier.close()


def test_a_status_with_newlines_is_sent_on_one_line(manager: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": manager.getsockname()})
    assert notifier.ready('reload refused: "typo\nkey": unknown key')
    assert manager.recv(4096).decode() == 'READY=1\nSTATUS=reload refused: "typo key": unknown key'
    notifier.close()
