"""A real 2-node Ray cluster on this machine, for the Ray executor's tests.

`ray start --head --num-cpus 1` and `ray start --address ... --num-cpus 1`, each node with
its own temp dir. Ray's processes outlive `ray start` (they are re-parented to init), so each
node's processes are found by its temp dir (every one of Ray's daemons names it in its
command line) plus their descendants (the worker processes, renamed ``ray::...``): stopping
the cluster kills exactly those, never another cluster's (``ray stop`` would kill them all).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import scipy.fft

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for `condition` (checked every 20 ms) or fail naming `what`."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        tick.wait(0.02)


def hold_fifos(directory: Path) -> Path:
    """The FIFO pair of the hold hook (see `actors.remote_work._hold_for_test`)."""
    fifo = directory / "held"
    os.mkfifo(fifo)
    os.mkfifo(f"{fifo}.go")
    return fifo


def wait_held(fifo: Path, timeout: float) -> str:
    """Wait for a Ray worker's note that it holds a unit (opening the FIFO blocks until the
    worker opens it: done on a thread, with a deadline)."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), name="note-reader")
    reader.start()
    reader.join(timeout)
    if not got:
        with open(fifo, "w"):  # unblock our own reader before failing
            pass
        reader.join(5)
        raise AssertionError(f"no unit was held on Ray within {timeout}s")
    return got[0]


class RayNode:
    def __init__(self, temp_dir: Path, args: list[str], tag: str) -> None:
        self.temp_dir = temp_dir
        self.args = args
        self.tag = tag  # ACTORD_TEST_NODE_TAG on its processes (see remote_work's hook)

    def start(self) -> None:
        # A temp dir of this node's own, short: Ray's socket paths must fit in 107 bytes.
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.temp_dir.mkdir(parents=True)
        subprocess.run(
            [RAY, "start", *self.args, "--temp-dir", str(self.temp_dir)],
            check=True,
            capture_output=True,
            timeout=120,
            env={
                # Never a test's hold (it reaches a pool's workers through the bridge only).
                **{k: v for k, v in os.environ.items() if k != "ACTORD_TEST_HOLD_UNIT"},
                "RAY_USAGE_STATS_ENABLED": "0",
                "ACTORD_TEST_NODE_TAG": self.tag,
                # A lost node is noticed in about 3 s (Ray's default: about 15 s).
                "RAY_health_check_period_ms": "1000",
                "RAY_health_check_failure_threshold": "3",
            },
        )

    def processes(self) -> list[psutil.Process]:
        """This node's processes: Ray's daemons (found by temp dir) and their descendants."""
        mark = str(self.temp_dir)
        found: dict[int, psutil.Process] = {}
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if any(mark in part for part in cmdline):
                found[process.pid] = process
                with contextlib.suppress(psutil.Error):
                    for child in process.children(recursive=True):
                        found[child.pid] = child
        return list(found.values())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of this node and wait until all are gone."""
        processes = self.processes()
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)
        _, alive = psutil.wait_procs(processes, timeout=20)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=10)


class RayCluster:
    """A head node and one worker node, 1 CPU each, on free ports."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        self.head = RayNode(
            self.base / "h",
            [
                "--head",
                "--port",
                str(self.port),
                "--include-dashboard",
                "false",
                "--dashboard-port",
                str(free_port()),
                *common,
            ],
            "head",
        )
        self.worker = RayNode(self.base / "w", ["--address", self.address, *common], "worker")

    def start(self) -> RayCluster:
        self.head.start()
        self.worker.start()
        return self

    def stop(self) -> None:
        """Stop exactly the processes this cluster started (worker node first). SIGKILL: a
        head node's processes take 20 s and more over SIGTERM, and a test's cluster keeps
        nothing worth a graceful stop."""
        self.worker.kill()
        self.head.kill()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def actor_processes(self) -> list[psutil.Process]:
        """The cluster's live Ray actor processes of the pools (``ray::RemoteWorker``)."""
        found = []
        for process in [*self.head.processes(), *self.worker.processes()]:
            with contextlib.suppress(psutil.Error):
                if "RemoteWorker" in " ".join(process.cmdline()):
                    found.append(process)
        return found


def synthetic_fft(seed: int, count: int, shape: tuple[int, int]) -> np.ndarray[Any, Any]:
    """A synthetic fft2 job's output, as the daemon's default engine computes it (scipy: the
    test extras install it). Equal byte for byte only if the Ray workers use that engine."""
    rng = np.random.default_rng
    return np.stack([scipy.fft.fft2(rng(seed + i).random(shape)) for i in range(count)])
