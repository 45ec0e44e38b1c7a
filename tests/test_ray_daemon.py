"""`actord run` with its FFT pool on a real 2-node Ray cluster: SIGTERM mid-job, and a
cluster that cannot be reached."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from actors.remote_work import HOLD_ENV

from ._daemon import DaemonProcess
from ._ray import RayCluster, free_port, hold_fifos, synthetic_fft, until, wait_held

pytestmark = pytest.mark.timeout(240)

Daemons = Callable[..., DaemonProcess]


def _ray_flags(address: str, *extra: str) -> list[str]:
    return [
        "--fft-executor",
        "ray",
        "--parser-executor",
        "ray",
        "--ray-address",
        address,
        "--ray-cpus-per-worker",
        "0.5",
        *extra,
    ]


def _bridges(pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "actors._ray_bridge" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_sigterm_mid_job_on_ray_exits_0_leaves_no_ray_actor_and_the_job_finishes_after(
    daemons: Daemons, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    # The default engine (scipy): the output must equal `synthetic_fft`'s bit for bit.
    daemon = daemons(*_ray_flags(ray_cluster.address, "--drain-deadline", "1"), engine=None)
    daemon.extra += ["--shared-root", str(daemon.outputs)]
    fifo = hold_fifos(tmp_path)
    daemon.env[HOLD_ENV] = f"any:{fifo}"
    daemon.start()
    job: dict[str, Any] = {
        "kind": "fft",
        "output": str(daemon.outputs / "stack.npy"),
        "options": {"synthetic": [12, 64, 80], "seed": 5},
    }
    submitted = daemon.call("submit", job)
    wait_held(fifo, 120)  # a unit of the job is running on a Ray worker, and held there
    status = daemon.call("status")
    assert status["ray"]["state"] == "up" and status["ray"]["nodes"] == 2
    bridges = _bridges(daemon.pid)
    assert len(bridges) == 1
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    assert "still busy" not in daemon.tail(80), "the bridge's close held up the stop"
    psutil.wait_procs(bridges, timeout=10)
    assert not any(b.is_running() for b in bridges), "the Ray bridge outlived the daemon"
    until(lambda: not ray_cluster.actor_processes(), 60, "every Ray actor of the daemon ends")
    assert not (daemon.outputs / "stack.npy").exists()
    del daemon.env[HOLD_ENV]
    daemon.start()
    with daemon.client(timeout=120) as client:
        final = client.call("job", submitted["id"])
        if final["state"] not in ("done", "failed", "cancelled"):
            final = client.stream(
                "watch", submitted["id"], on_notification=lambda m, p: None, timeout=120
            )
    assert final["state"] == "done", final
    assert final["crash_retries"] == 0
    assert np.array_equal(np.load(daemon.outputs / "stack.npy"), synthetic_fft(5, 12, (64, 80)))


def test_an_unreachable_cluster_is_unavailable_and_the_daemon_serves_on(daemons: Daemons) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    daemon = daemons(*_ray_flags(address))
    daemon.env["RAY_gcs_rpc_server_reconnect_timeout_s"] = "3"  # Ray gives up sooner
    daemon.start()
    until(lambda: daemon.call("status")["ray"]["state"] == "down", 120, "the pool is seen down")
    status = daemon.call("status")
    assert status["ray"] == {"address": address, "state": "down", "nodes": 0, "up": 0, "members": 4}
    source = daemon.inputs / "app.log"
    source.write_text("2026-11-25 12:00:00 [INFO] hello\n")
    refused = daemon.ctl("submit", "log", str(daemon.outputs / "app.jsonl"), "--input", str(source))
    assert refused.returncode == 1, refused
    assert "unavailable" in refused.stderr and address in refused.stderr
    assert "ray status" in refused.stderr
    # The daemon serves on: status, its metrics of the pool.
    shown = daemon.ctl("status")
    assert shown.returncode == 0 and "state down" in shown.stdout, shown.stdout
    assert json.loads(daemon.ctl("status", "--json").stdout)["pid"] == daemon.pid
    assert daemon.proc is not None and daemon.proc.poll() is None
