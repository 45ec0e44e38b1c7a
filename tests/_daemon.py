"""A real `actord run` in a subprocess, for end-to-end tests.

Readiness is not guessed: the harness plays systemd's part and passes ``NOTIFY_SOCKET``; the
daemon says READY=1 once its socket listens and every actor runs. The same datagrams tell a
test when a reload or a stop has begun.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from actord.control.client import Client

ROOT = Path(__file__).resolve().parent.parent
_RUNS = itertools.count(1)  # this process's harnesses: each its own socket directory


def connect_unix(path: str, timeout: float = 10.0) -> socket.socket:
    """A raw client connection to a Unix stream socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


class DaemonProcess:
    """One daemon on its own state dir, socket and roots (all under `base`)."""

    def __init__(self, base: Path, *extra: str, engine: str | None = "numpy") -> None:
        self.base = base
        self.state = base / "state"
        self.inputs = base / "in"
        self.outputs = base / "out"
        for d in (self.inputs, self.outputs):
            d.mkdir(parents=True, exist_ok=True)
        # AF_UNIX paths are short (108 bytes): the socket lives in a short temp dir, made
        # (0700) by `start` and removed by `stop`: a harness never started (one only used for
        # its paths) leaves nothing behind.
        self._run_dir = os.path.join(
            tempfile.gettempdir(), f"actord-e2e-{os.getpid()}-{next(_RUNS)}-{secrets.token_hex(4)}"
        )
        self.socket = os.path.join(self._run_dir, "run", "actord.sock")
        self.extra = list(extra)
        # numpy's FFT engine unless a test says otherwise (None: the daemon's default, scipy
        # with the test extras). Importing scipy.fft costs a daemon 0.3 to 0.5 s of CPU at
        # start on the CI machine, paid by every one of the suite's daemon starts; the
        # engines themselves are tested in test_fft.py, and the default one in a daemon by
        # test_daemon.py and the Ray tests (whose outputs must equal scipy's bit for bit).
        if engine is not None and "--fft-engine" not in self.extra:
            self.extra += ["--fft-engine", engine]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / "daemon.log"
        self._notify: socket.socket | None = None
        self.notes: list[str] = []
        self.env: dict[str, str] = {}  # extra environment (WATCHDOG_USEC, ...)

    def args(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "actord",
            "run",
            "--socket",
            self.socket,
            "--state-dir",
            str(self.state),
            "--input-root",
            str(self.inputs),
            "--output-root",
            str(self.outputs),
            "--metrics-address",
            "",
            *self.extra,
        ]

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> DaemonProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        os.makedirs(self._run_dir, mode=0o700, exist_ok=True)
        notify_path = os.path.join(self._run_dir, "notify")
        Path(notify_path).unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(notify_path)
        env = {**os.environ, "NOTIFY_SOCKET": notify_path, "PYTHONPATH": str(ROOT), **self.env}
        env.pop("ACTORD_SOCKET", None)
        self.notes = []
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args(), env=env, stdout=log, stderr=log, cwd=ROOT)
        if wait_ready:
            self.wait_note("READY=1", timeout)
        return self

    def wait_note(self, field: str, timeout: float = 30.0) -> str:
        """Block until the daemon sends a notify datagram containing `field`."""
        assert self._notify is not None
        self._notify.settimeout(timeout)
        while True:
            try:
                data = self._notify.recv(4096).decode()
            except TimeoutError:
                raise AssertionError(f"no {field} within {timeout}s; log:\n{self.tail()}") from None
            self.notes.append(data)
            if field in data.split("\n"):
                return data

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def call(self, method: str, *params: Any) -> Any:
        with self.client() as client:
            return client.call(method, *params)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ACTORD_SOCKET": self.socket, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [
                sys.executable,
                "-c",
                "from actord.daemon.cli import actorctl_main as m; exit(m())",
                *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Always leaves nothing running (used by fixtures)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        # Its short socket directory under /tmp goes too (a start makes it again).
        shutil.rmtree(self._run_dir, ignore_errors=True)
