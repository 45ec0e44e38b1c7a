"""Reload tells the truth, key by key.

The test walks every key of the config (read from the dataclasses, so a key added later is
walked too): it changes that key alone in the daemon's config file and reloads. The key is
then either listed in `restart_needed`, or applied live, and a live key's effect is checked
by what the daemon does (pool members, a submit under a new root, jobs held to the limit,
log lines, a stuck actor flagged, a stop's drain), never by reading the config back. After
each key the file is put back and a reload lists nothing pending.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from actord.control.protocol import encode_request
from actord.daemon.config import Config
from actors.demo import write_sample_log

from ._daemon import DaemonProcess
from ._logjobs import BACKTRACKING, log_job
from .test_sigterm import SLOW, _slow_width


def _keys() -> list[str]:
    keys = []
    for section in dataclasses.fields(Config):
        default = getattr(Config(), section.name)
        if dataclasses.is_dataclass(default):
            keys += [f"{section.name}.{f.name}" for f in dataclasses.fields(default)]
        else:
            keys.append(section.name)
    return keys


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


class _ConfigOnly(DaemonProcess):
    """A daemon configured by its file alone: every key can be reloaded from it."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, engine=None)
        self.config = base / "actord.toml"
        self.extra_root = base / "more"
        self.extra_root.mkdir()
        self.settings: dict[str, object] = {
            "daemon.socket": self.socket,
            "daemon.state_dir": str(self.state),
            "paths.input_roots": [str(self.inputs)],
            "paths.output_roots": [str(self.outputs)],
            "metrics.address": "",
            "fft.engine": "numpy",
        }

    def args(self) -> list[str]:
        return [sys.executable, "-m", "actord", "run", "--config", str(self.config)]

    def write(self, changes: dict[str, object]) -> None:
        merged = {**self.settings, **changes}
        tables: dict[str, list[str]] = {}
        top = []
        for key, value in merged.items():
            section, _, name = key.partition(".")
            if name:
                tables.setdefault(section, []).append(f"{name} = {_toml(value)}")
            else:
                top.append(f"{section} = {_toml(value)}")
        text = "\n".join(top) + "\n"
        for section, lines in tables.items():
            text += f"[{section}]\n" + "\n".join(lines) + "\n"
        self.config.write_text(text)

    def reload(self) -> list[str]:
        """Reload; the keys it lists as needing a restart. The notes it sends are read (as
        systemd reads them: unread, they would fill the socket and block the daemon)."""
        pending = list(self.call("reload")["restart_needed"])
        self.wait_note("READY=1")
        return pending

    def log_since(self, offset: int) -> str:
        return self.log.read_text(errors="replace")[offset:]


# A new value for each key (with what else it needs to be valid).
CHANGES: dict[str, dict[str, object]] = {
    "daemon.socket": {"daemon.socket": "/tmp/elsewhere.sock"},
    "daemon.state_dir": {"daemon.state_dir": "/tmp/elsewhere"},
    "daemon.drain_deadline": {"daemon.drain_deadline": 0.5},
    "daemon.log_level": {"daemon.log_level": "ERROR"},
    "daemon.log_format": {"daemon.log_format": "json"},
    "daemon.watch_timeout": {"daemon.watch_timeout": 0.5},
    "daemon.max_pool_size": {"daemon.max_pool_size": 2},
    "metrics.max_connections": {"metrics.max_connections": 7},
    "metrics.read_timeout": {"metrics.read_timeout": 2.0},
    "daemon.retention_days": {"daemon.retention_days": 0.00001},  # under a second
    "daemon.retention_jobs": {"daemon.retention_jobs": 1},
    "daemon.socket_group": {"daemon.socket_group": "root"},
    "daemon.max_connections": {"daemon.max_connections": 7},
    "daemon.frame_limit": {"daemon.frame_limit": 4096},
    "daemon.idle_timeout": {"daemon.idle_timeout": 5.0},
    "daemon.max_jobs": {"daemon.max_jobs": 1},
    "daemon.stuck_after": {"daemon.stuck_after": 0.3},
    "daemon.app": {"daemon.app": "actors.service:Other"},
    "daemon.new_journal": {"daemon.new_journal": True},
    "parser.size": {"parser.size": 3},
    "parser.executor": {"parser.executor": "thread"},
    "parser.capacity": {"parser.capacity": 5},
    "fft.size": {"fft.size": 3},
    "fft.executor": {"fft.executor": "ray", "ray.address": "local"},
    "fft.capacity": {"fft.capacity": 5},
    "fft.engine": {"fft.engine": "scipy"},
    "metrics.address": {"metrics.address": "127.0.0.1:19464"},
    "ray.address": {"ray.address": "local"},
    "ray.namespace": {"ray.namespace": "other"},
    "ray.shared_roots": {"ray.shared_roots": ["/srv/shared"]},
    "ray.cpus_per_worker": {"ray.cpus_per_worker": 0.5},
    "mailbox_capacity": {"mailbox_capacity": 100},
}


def _ended(daemon: DaemonProcess) -> list[str]:
    states = ("done", "failed", "cancelled")
    return [job["id"] for job in daemon.call("jobs") if job["state"] in states]


def _members(daemon: DaemonProcess, pool: str) -> int:
    return sum(actor["pool"] == pool for actor in daemon.call("actors"))


def _slow_job(daemon: _ConfigOnly, name: str, lines: int, width: int) -> dict[str, Any]:
    source = daemon.inputs / f"{name}.log"
    source.write_text(("x" * width + "\n") * lines)  # each line backtracks: a slow block
    options = {"pattern": SLOW, "block_bytes": width + 1}
    out = str(daemon.outputs / f"{name}.jsonl")
    return {"kind": "log", "input": str(source), "output": out, "options": options}


def _wait_log(daemon: _ConfigOnly, offset: int, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = daemon.log_since(offset)
        if text in log:
            return log
        time.sleep(0.05)  # the log file has no wake-up: looked at until the deadline
    raise AssertionError(f"no {text!r} in the log within {timeout}s:\n{daemon.tail()}")


class _Live:
    """Checks of what a live key does, each run after its reload (with its `before`, run
    under the original config, where there is one to compare with)."""

    def __init__(self, daemon: _ConfigOnly, width: int) -> None:
        self.daemon = daemon
        self.width = width
        self.jobs = 0

    def before(self, key: str) -> None:
        daemon = self.daemon
        if key == "paths.input_roots":
            with pytest.raises(Exception, match="not under"):
                daemon.call("submit", self._job(daemon.extra_root, daemon.outputs))
        elif key == "paths.output_roots":
            with pytest.raises(Exception, match="not under"):
                daemon.call("submit", self._job(daemon.inputs, daemon.extra_root))
        elif key.startswith("daemon.retention_"):
            for _ in range(2):  # ended jobs for the retention to remove
                job = daemon.call("submit", self._job(daemon.inputs, daemon.outputs))
                with daemon.client(timeout=60) as client:
                    client.stream("watch", job["id"], on_notification=None, timeout=60)
            time.sleep(1.0)  # they ended over a second ago: past the reloaded retention
            self.ended = _ended(daemon)
            assert len(self.ended) >= 2

    def _job(self, into: Path, out: Path) -> dict[str, Any]:
        self.jobs += 1
        source = into / f"in-{self.jobs}.log"
        write_sample_log(str(source), 50, seed=self.jobs)
        output = str(out / f"out-{self.jobs}.jsonl")
        return {"kind": "log", "input": str(source), "output": output}

    def after(self, key: str, offset: int) -> None:
        daemon = self.daemon
        if key in ("parser.size", "fft.size"):
            assert _members(daemon, key.split(".", maxsplit=1)[0]) == 3
        elif key == "paths.input_roots":
            job = daemon.call("submit", self._job(daemon.extra_root, daemon.outputs))
            assert job["state"] in ("accepted", "running", "done")
        elif key == "paths.output_roots":
            job = daemon.call("submit", self._job(daemon.inputs, daemon.extra_root))
            assert job["state"] in ("accepted", "running", "done")
        elif key == "daemon.max_jobs":
            ids = [
                daemon.call("submit", _slow_job(daemon, f"held-{n}", 20, self.width))["id"]
                for n in range(2)
            ]
            states = sorted(daemon.call("job", job_id)["state"] for job_id in ids)
            assert states == ["accepted", "running"], states  # one runs, one waits
            for job_id in ids:
                daemon.call("cancel", job_id)
        elif key == "daemon.max_pool_size":
            with pytest.raises(Exception, match="bad_request"):
                daemon.call("scale", "parser", 3)
        elif key == "daemon.watch_timeout":
            source = daemon.inputs / "watched.log"
            source.write_text(("a" * 16 + "!\n") * 3000)  # progress all along
            job = log_job(daemon, "watched", pattern=BACKTRACKING, block_bytes=18)
            job_id = daemon.call("submit", job)["id"]
            silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a stalled reader
            try:
                silent.connect(daemon.socket)
                silent.sendall(encode_request(7, "watch", [job_id]))
                _wait_log(daemon, offset, "no read for 0.5s: disconnected")
            finally:
                silent.close()
                daemon.call("cancel", job_id)
        elif key == "daemon.retention_days":
            assert _ended(daemon) == []  # all ended over a second ago: out of the journal
        elif key == "daemon.retention_jobs":
            assert _ended(daemon) == self.ended[-1:]  # the newest one stays
        elif key == "daemon.log_format":
            lines = daemon.log_since(offset).splitlines()
            assert lines and all(json.loads(line)["message"] for line in lines), lines
        elif key == "daemon.log_level":
            daemon.call("ping")
            assert " INFO " not in daemon.log_since(offset)  # "config generation N applied"
        elif key == "daemon.stuck_after":
            job = daemon.call("submit", _slow_job(daemon, "stuck", 3, self.width))
            _wait_log(daemon, offset, "has been on one message for over 0s")
            daemon.call("cancel", job["id"])
        elif key == "daemon.drain_deadline":
            daemon.call("submit", _slow_job(daemon, "drained", 40, self.width))
            started = time.monotonic()
            daemon.signal(15)
            assert daemon.wait(30) == 0
            assert time.monotonic() - started < 5.0  # the reloaded 0.5 s, not the 30 s
        else:
            raise AssertionError(f"{key}: applied live, and nothing checks what it does")


LAST = "daemon.drain_deadline"  # its check stops the daemon


@pytest.mark.timeout(600)
def test_every_key_is_applied_live_or_listed_as_needing_a_restart(tmp_path: Path) -> None:
    keys = _keys()
    daemon = _ConfigOnly(tmp_path)
    more = str(daemon.extra_root)
    changes = {
        **CHANGES,
        "paths.input_roots": {"paths.input_roots": [str(daemon.inputs), more]},
        "paths.output_roots": {"paths.output_roots": [str(daemon.outputs), more]},
    }
    assert sorted(changes) == sorted(keys), "a key without a change to walk it with"
    daemon.write({})
    daemon.start()
    live = _Live(daemon, _slow_width(1.5))
    restart, applied = [], []
    try:
        for key in [k for k in keys if k != LAST] + [LAST]:
            section = key.split(".")[0]
            live.before(key)
            offset = len(daemon.log.read_text(errors="replace"))
            daemon.write(changes[key])
            pending = daemon.reload()
            if key in pending or section in pending:
                assert key not in ("parser.size", "fft.size", "daemon.stuck_after"), key
                restart.append(key)
            else:
                live.after(key, offset)
                applied.append(key)
            if key == LAST:
                break
            daemon.write({})
            assert daemon.reload() == [], key
    finally:
        daemon.stop()
    print(f"\nlive: {applied}\nrestart: {restart}")
    assert "daemon.stuck_after" in applied and "daemon.drain_deadline" in applied
