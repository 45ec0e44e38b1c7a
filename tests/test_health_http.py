"""`/healthz` and `/readyz` on the metrics port of a real daemon (real HTTP to a daemon
subprocess), and what the daemon's two checks say in each state."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from actord import ActorState
from actord.daemon.health import ActorSample, MonitorSample
from actord.daemon.main import Daemon

from ._daemon import DaemonProcess
from ._prometheus import free_port


def _request(url: str, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, body
    finally:
        connection.close()


def test_a_running_daemon_answers_health_ready_metrics_and_404(
    daemons: Callable[..., DaemonProcess],
) -> None:
    daemon = daemons("--metrics-address", f"127.0.0.1:{free_port()}").start()
    url = daemon.call("status")["metrics"]
    assert url.endswith("/metrics")
    assert _request(url, "GET", "/healthz")[::2] == (200, b"ok\n")  # sampled before READY
    assert _request(url, "GET", "/readyz")[::2] == (200, b"ok\n")
    status, headers, body = _request(url, "GET", "/metrics")
    assert status == 200 and b"actord_actor_up{" in body
    head = _request(url, "HEAD", "/metrics")
    assert (head[0], head[2]) == (200, b"") and head[1].keys() == headers.keys()
    assert _request(url, "HEAD", "/healthz")[:2][0] == 200
    status, _, body = _request(url, "GET", "/")
    assert status == 404 and b"actord_" not in body
    status, headers, _ = _request(url, "POST", "/metrics")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def _daemon(tmp_path: Path) -> Daemon:
    # Not started: its two checks read only the state fields a start and a stop set.
    return Daemon(None, {"daemon.state_dir": str(tmp_path)}, env={})


def _actor(name: str, state: ActorState = ActorState.RUNNING) -> ActorSample:
    return ActorSample(name, name.partition("#")[0], state, 0, 0, 0, 0, 8, 0, 0.0, 0.0, 0.0, False)


def test_healthz_says_why_an_actor_is_not_healthy(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path)
    assert daemon.unhealthy() == "no health sample yet: the daemon is starting"
    actors = (_actor("parser#0"), _actor("parser#1"), _actor("store"))
    daemon._sampled(MonitorSample(actors, ()))
    assert daemon.unhealthy() is None
    daemon._sampled(MonitorSample(actors, ("parser#1",)))
    assert daemon.unhealthy() == "unhealthy: stuck on one message: parser#1"
    failed = (*actors[:2], _actor("store", ActorState.FAILED))
    daemon._sampled(MonitorSample(failed, ("parser#1",)))
    assert daemon.unhealthy() == "unhealthy: stuck on one message: parser#1; failed: store"
    daemon._sample = (time.monotonic() - 60, MonitorSample(actors, ()))  # a monitor gone quiet
    assert daemon.unhealthy() == "the monitor has not sampled for 60s"


def test_readyz_is_ok_from_ready_until_the_drain(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path)
    assert daemon.not_ready() == "starting: not ready yet"
    daemon.ready = True
    assert daemon.not_ready() is None
    daemon.draining = True
    assert daemon.not_ready() == "draining: actord is stopping and takes no new jobs"
