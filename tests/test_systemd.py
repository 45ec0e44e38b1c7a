"""systemd: the units pass systemd's own checks; a harness plays the manager's part for notify,
the watchdog and socket activation against a real `actord run`."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from actord.control.client import Client

from ._daemon import ROOT, DaemonProcess
from ._prometheus import require

UNITS = ROOT / "systemd"
Daemons = Callable[..., DaemonProcess]


def _installed_units(tmp_path: Path) -> list[str]:
    """The units as installed, with ExecStart pointing at this checkout's actord."""
    actord = Path(sys.executable).parent / "actord"
    assert actord.exists(), "the package is installed in this venv"
    service = (UNITS / "actord.service").read_text()
    # Wherever the README's steps install it (a venv's bin/, say): that path, swapped for ours.
    shipped = re.search(r"^ExecStart=(/\S+/bin/actord) run ", service, re.MULTILINE)
    assert shipped is not None, "ExecStart runs an installed actord"
    (tmp_path / "actord.service").write_text(service.replace(shipped.group(1), str(actord)))
    shutil.copy(UNITS / "actord.socket", tmp_path / "actord.socket")
    return [str(tmp_path / "actord.service"), str(tmp_path / "actord.socket")]


# `systemd-analyze verify` of the units as the README installs them: tests/test_readme.py.


def test_the_service_is_hardened(tmp_path: Path) -> None:
    analyze = require("systemd-analyze")
    service = _installed_units(tmp_path)[0]
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=20", service],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "Overall exposure level for actord.service" in result.stdout


def test_the_units_say_what_the_issue_asks() -> None:
    service = (UNITS / "actord.service").read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "StateDirectory=actord",
        "LimitNOFILE=65536",  # room above the connection caps (issue 21)
    ):
        assert line in service.splitlines(), line
    stop = int(next(x for x in service.splitlines() if x.startswith("TimeoutStopSec="))[15:-1])
    assert stop > 30  # above the default drain deadline
    sock = (UNITS / "actord.socket").read_text().splitlines()
    assert "SocketMode=0660" in sock and "FileDescriptorName=control" in sock
    listen = next(x for x in sock if x.startswith("ListenStream="))
    assert not listen.startswith("ListenStream=/run/actord/")  # not in the RuntimeDirectory


def test_ready_status_reload_and_stopping(daemons: Daemons) -> None:
    daemon = daemons().start()
    ready = daemon.notes[-1].split("\n")
    assert "READY=1" in ready and any(x.startswith("STATUS=generation 1") for x in ready)
    daemon.signal(signal.SIGHUP)
    reloading = daemon.wait_note("RELOADING=1").split("\n")
    usec = int(next(x for x in reloading if x.startswith("MONOTONIC_USEC="))[15:])
    assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 30
    assert "STATUS=generation 2" in daemon.wait_note("READY=1")
    daemon.signal(signal.SIGTERM)
    daemon.wait_note("STOPPING=1")
    assert daemon.wait(30) == 0


class _Watchdog(threading.Thread):
    """Plays the manager's watchdog: records when each WATCHDOG=1 arrives. `resumed` is set
    once two pings have arrived after `after` (set by the test)."""

    def __init__(self, daemon: DaemonProcess) -> None:
        super().__init__(name="test-watchdog")
        assert daemon._notify is not None
        self.sock = daemon._notify
        self.times: list[float] = []
        self.after = float("inf")
        self.resumed = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(0.1)  # to notice `stop`
        while not self.stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            if "WATCHDOG=1" in data.split("\n"):
                self.times.append(time.monotonic())
                if sum(t > self.after for t in self.times) >= 2:
                    self.resumed.set()


# Catastrophic backtracking: rejecting a line of n x's takes time doubling with each x.
_WEDGE = r"(?P<a>(x+x+)+y)"
# The wedge costs this much CPU: on an idle machine it lasts as long, on a busy one longer,
# never shorter. Long past the 1 s stuck-after, so the silence it causes is well over 3 s.
_WEDGE_CPU = 7.0
# ... but no longer than this by the wall clock as timed here, so that on a heavily loaded
# machine the test stays well inside its timeouts (watch: 60 s per wait; pytest: 60 s).
_WEDGE_WALL_MAX = 20.0


def _seconds_to_reject(width: int) -> tuple[float, float]:
    """(CPU, wall) seconds, each the median of 3, for the parser's fullmatch to reject one
    line of `width` x's, timed in this process, on the same CPU as the daemon's parser."""
    fullmatch = re.compile(_WEDGE).fullmatch
    cpu, wall = [], []
    for _ in range(3):
        cpu_start, wall_start = time.thread_time(), time.perf_counter()
        assert fullmatch("x" * width) is None
        cpu.append(time.thread_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    return sorted(cpu)[1], sorted(wall)[1]


def _wedge_lines() -> tuple[int, int]:
    """(width, lines): that many lines of `width` x's cost the parser about _WEDGE_CPU here.
    A fixed count lasts half as long on a CPU twice as fast (and the silence it must cause
    shrinks below what the test asserts), or twice as long on a slower one."""
    width = 22
    cpu, wall = _seconds_to_reject(width)
    while cpu > _WEDGE_CPU / 8 and width > 12:  # a slow machine: shorter lines
        width -= 1
        cpu, wall = _seconds_to_reject(width)
    return width, max(1, round(min(_WEDGE_CPU / cpu, _WEDGE_WALL_MAX / wall)))


def test_the_watchdog_pings_only_while_every_actor_is_healthy(daemons: Daemons) -> None:
    daemon = daemons("--stuck-after", "1", "--parsers", "1")
    daemon.env["WATCHDOG_USEC"] = "1000000"  # a ping wanted every 0.5 s
    daemon.start()
    # Wedge the only parser on one message: one block of lines costing ~7 s of CPU.
    width, lines = _wedge_lines()
    source = daemon.inputs / "wedge.log"
    source.write_text(("x" * width + "\n") * lines)
    assert source.stat().st_size < 1 << 20  # one block
    job = {
        "kind": "log",
        "input": str(source),
        "output": str(daemon.outputs / "wedge.jsonl"),
        "options": {"pattern": _WEDGE, "block_bytes": 1 << 20},
    }
    manager = _Watchdog(daemon)
    manager.start()
    try:
        with daemon.client() as client:
            before = time.monotonic()
            submitted = client.call("submit", job)
            final = client.stream("watch", submitted["id"], on_notification=None, timeout=60)
            manager.after = ended = time.monotonic()
        assert manager.resumed.wait(10), "no pings after the actor recovered"
    finally:
        manager.stop.set()
        manager.join(10)
    assert final["state"] == "done"
    during = [t for t in manager.times if before <= t <= ended]
    gaps = [b - a for a, b in zip([before, *during], [*during, ended], strict=True)]
    # A healthy daemon pings every 0.5 s; the wedge (flagged after 1 s) silences it for 6 s or more.
    assert max(gaps) > 3.0, (gaps, width, lines)
    assert len(manager.times) > len(during)  # pings before or after the wedge


def test_the_log_gives_the_real_watchdog_interval(daemons: Daemons) -> None:
    daemon = daemons()
    daemon.env["WATCHDOG_USEC"] = "4000000"  # half is 2 s, above the monitor's 1 s sampling
    daemon.start()
    daemon.wait_note("WATCHDOG=1", timeout=10)  # one that may have waited in the socket
    times = []
    while len(times) < 4:
        daemon.wait_note("WATCHDOG=1", timeout=10)
        times.append(time.monotonic())
    said = re.search(r"systemd watchdog \(timeout 4\.0s\): a ping every ([0-9.]+)s", daemon.tail())
    assert said is not None, daemon.tail()
    every = float(said.group(1))
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert every == 1.0
    assert abs(gaps[1] - every) < 0.5, gaps  # the median gap: what the log promised


def test_socket_activation_through_systemd_socket_activate(tmp_path: Path) -> None:
    activate = require("systemd-socket-activate")
    daemon = DaemonProcess(tmp_path)
    path = daemon.socket
    os.makedirs(os.path.dirname(path), exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [activate, "-l", path, "--fdname=control", *daemon.args()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    listening = threading.Event()
    copier = threading.Thread(target=_copy_log, args=(proc, daemon.log, listening))
    copier.start()
    try:
        # systemd-socket-activate binds first, says so, and starts actord on the first connect.
        assert listening.wait(30), "systemd-socket-activate never listened"
        inode = os.stat(path).st_ino
        with Client(path, timeout=60) as client:
            assert client.call("ping") == "pong"
            status = client.call("status")
        assert status["pid"] == proc.pid  # it execs actord in place
        assert os.stat(path).st_ino == inode  # actord used the passed socket, did not rebind
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        copier.join(30)
    assert code == 0
    assert "socket activation: control is fd 3" in daemon.tail()
    assert os.path.exists(path)  # the socket belongs to the manager: actord leaves it


def _copy_log(proc: subprocess.Popen[bytes], log: Path, listening: threading.Event) -> None:
    assert proc.stderr is not None
    with open(log, "ab") as out:
        for line in proc.stderr:
            out.write(line)
            out.flush()
            if line.startswith(b"Listening on"):
                listening.set()


_AS_SYSTEMD = """
import fcntl, os, sys
fds, names = sys.argv[1].split(","), sys.argv[2]
moved = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 64) for fd in fds]  # out of the way of 3, 4, ...
for target, fd in enumerate(moved, start=3):
    os.dup2(fd, target)
    os.close(fd)
env = dict(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=names)
os.environ.update(env)
os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
"""


def _activated_daemon(
    daemon: DaemonProcess, *listeners: tuple[str, socket.socket]
) -> subprocess.Popen[bytes]:
    """Start `actord run` as systemd would: the named listening sockets as fds 3, 4, ...,
    LISTEN_* set for the process that runs actord (the wrapper execs it, keeping its pid)."""
    fds = [sock.fileno() for _, sock in listeners]
    names = ":".join(name for name, _ in listeners)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    args = [sys.executable, "-c", _AS_SYSTEMD, ",".join(map(str, fds)), names]
    with open(daemon.log, "ab") as log:
        return subprocess.Popen(
            [*args, *daemon.args()[1:]], env=env, stdout=log, stderr=log, pass_fds=fds
        )


def _control_listener(daemon: DaemonProcess) -> socket.socket:
    """The daemon's control socket, bound and listening here, as systemd's .socket unit would:
    not where the daemon's own config (``--socket``) says, which activation overrides."""
    path = os.path.join(os.path.dirname(daemon.socket), "activated.sock")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    return listener


def test_an_activated_socket_outlives_the_daemon_and_is_the_one_named(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    # We play systemd: we own the listening socket and keep it across daemon restarts.
    listener = _control_listener(daemon)
    path = listener.getsockname()
    try:
        for run in range(2):  # the second daemon gets the same socket, still working
            proc = _activated_daemon(daemon, ("control", listener))
            try:
                with Client(path, timeout=60) as client:
                    assert client.call("ping") == "pong"
                    status = client.call("status")
                assert status["pid"] == proc.pid
                assert status["socket"] == path  # the activated one, not the configured one
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0
            assert os.path.exists(path)
            log = daemon.log.read_text().split("socket activation: ")[run + 1]
            assert log.startswith(f"control is fd 3, {path}\n")
            assert f"listening on {path}\n" in log
        assert not os.path.exists(daemon.socket)  # nothing was bound where the config says
    finally:
        listener.close()


def test_a_failed_start_exits_at_once_and_leaves_nothing_serving(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    daemon = DaemonProcess(tmp_path, "--metrics-address", f"127.0.0.1:{port}")
    try:
        daemon.start(wait_ready=False)
        assert daemon.wait(30) == 2  # a taken port is the config's to change: exit 2
        assert f"metrics.address 127.0.0.1:{port} is in use" in daemon.tail()
        assert not os.path.exists(daemon.socket)
    finally:
        daemon.stop()
        taken.close()


def test_the_metrics_socket_can_be_activated_too(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    control = _control_listener(daemon)
    metrics = socket.socket()
    metrics.bind(("127.0.0.1", 0))
    metrics.listen(16)
    port = metrics.getsockname()[1]
    try:
        proc = _activated_daemon(daemon, ("control", control), ("metrics", metrics))
        try:
            with Client(control.getsockname(), timeout=60) as client:
                url = client.call("status")["metrics"]
            assert url == f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert b'actord_actor_up{actor="store",pool="store"} 1.0' in response.read()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    finally:
        control.close()
        metrics.close()
