"""Debian's Prometheus on loopback, scraping a real `actord run` every second."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ._daemon import ROOT, DaemonProcess

ALERTS = ROOT / "grafana" / "alerts.yml"


def require(tool: str) -> str:
    """The tool's path; a skip without it (a failure under CI, which installs it)."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (bash .ci/deps installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """One Prometheus process with its own storage, scraping `target` every second and
    evaluating actord's alerting rules (grafana/alerts.yml) as often."""

    def __init__(self, base: Path, target: str) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = base / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - '{ALERTS}'\n"
            "scrape_configs:\n  - job_name: actord\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = base / "prometheus.log"
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [
                require("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={base / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=info",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read_log, name="prometheus-log")
        self._reader.start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        with open(self.log, "ab") as out:
            for line in self.proc.stderr:
                out.write(line)
                if b"Server is ready to receive web requests" in line:
                    self.ready.set()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (raises on an error from Prometheus)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """Every rule Prometheus loaded, with its health and (for an alert) its state."""
        with urllib.request.urlopen(f"{self.url}/api/v1/rules", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def values(self, expr: str) -> dict[str, float]:
        """{label set as text: value} of an instant query."""
        return {
            json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in self.query(expr)
        }

    def until(self, expr: str, check: Any, timeout: float = 30.0) -> dict[str, float]:
        """Query `expr` until `check(values)` holds. Prometheus has no way to push "a scrape
        has landed", so this re-asks about twice per scrape interval, up to `timeout`."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()  # never set: a bounded wait between queries
        while True:
            values = self.values(expr)
            if check(values):
                return values
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr} never satisfied the check: {values}")
            pause.wait(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)


class Observed:
    """A daemon with its metrics on loopback, and a Prometheus scraping it."""

    def __init__(self, base: Path) -> None:
        self.metrics_port = free_port()
        # The default engine: test_prometheus compares the workers' CPU with that engine's.
        self.daemon = DaemonProcess(
            base / "daemon", "--parsers", "2", "--fft-workers", "2", engine=None
        )
        self.daemon.extra += ["--metrics-address", f"127.0.0.1:{self.metrics_port}"]
        self.daemon.start()
        self.instance = f"127.0.0.1:{self.metrics_port}"  # its `instance` label in Prometheus
        self.prometheus = Prometheus(base, self.instance)

    def stop(self) -> None:
        self.prometheus.stop()
        self.daemon.stop()
