"""The README as an operator follows it: its daemon example runs as printed against a real
daemon (in a throwaway HOME), the systemd unit verifies as its install steps put it, and what
it says about paths, the socket, summaries and links is what the code does."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from actord.control.client import SYSTEM_SOCKET, Client
from actord.daemon.config import Config, load_config
from actors.model import REJECTS_SUFFIX, FFTSummary, LogSummary

from ._daemon import ROOT
from ._prometheus import require

README = (ROOT / "README.md").read_text()
UNITS = ROOT / "systemd"
# Where `pip install .` put actord for this test run: the venv the README's `.venv` stands for.
BIN = Path(sys.executable).parent


def _block(name: str) -> str:
    """The shell block between `<!-- name -->` and `<!-- /name -->`."""
    found = re.search(rf"<!-- {name} -->\n```sh\n(.*?)```\n<!-- /{name} -->", README, re.S)
    assert found, f"no {name} block in the README"
    return found.group(1)


def _as_printed(commands: str) -> str:
    """The commands as printed; `.venv/bin/` is this run's venv when that is another one
    (the README's `.venv` is the checkout's, which `.ci/run` makes)."""
    if BIN == ROOT / ".venv" / "bin":
        return commands
    return commands.replace(".venv/bin/", f"{BIN}/")


@pytest.fixture
def session(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A user's environment with nothing of ours in it: a fresh HOME and XDG_RUNTIME_DIR."""
    run = tempfile.mkdtemp(prefix="actord-readme-")  # short: AF_UNIX paths are 108 bytes
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "ACTORD_", "LISTEN_", "WATCHDOG_", "NOTIFY_"))
        and k not in ("RUNTIME_DIRECTORY", "STATE_DIRECTORY", "PYTHONPATH")
    }
    env.update(HOME=str(home), XDG_RUNTIME_DIR=run)
    try:
        yield env
    finally:
        shutil.rmtree(run, ignore_errors=True)


def _metrics_port_free() -> bool:
    # The example's daemon serves metrics on the default address; a daemon of someone else's
    # there makes it refuse to start, as it would for the reader.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 9464))
        except OSError:
            return False
        return True


def _wait_ready(notify: socket.socket, log: Path) -> None:
    try:
        while "READY=1" not in notify.recv(4096).decode().split("\n"):
            pass
    except TimeoutError:
        raise AssertionError(
            f"the daemon never said READY=1; its log:\n{log.read_text()}"
        ) from None


@pytest.mark.timeout(180)
def test_the_daemon_example_runs_as_printed(session: dict[str, str], tmp_path: Path) -> None:
    if not _metrics_port_free():
        message = "127.0.0.1:9464 is taken: the README's daemon serves its metrics there"
        if os.environ.get("CI"):  # as for a missing tool: CI must run every test
            pytest.fail(message)
        pytest.skip(message)
    daemon_commands = [
        line for line in _block("readme-daemon").splitlines() if line.split("#")[0].strip()
    ]
    assert len(daemon_commands) == 1, daemon_commands  # one foreground command
    # The harness plays systemd: the daemon says READY=1 once it serves (never a sleep).
    notify_path = os.path.join(session["XDG_RUNTIME_DIR"], "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(60)
    log = tmp_path / "daemon.log"
    with open(log, "wb") as sink:
        daemon = subprocess.Popen(
            ["bash", "-c", "exec " + _as_printed(daemon_commands[0])],
            cwd=ROOT,
            env={**session, "NOTIFY_SOCKET": notify_path},
            stdout=sink,
            stderr=sink,
        )
    try:
        _wait_ready(notify, log)
        client = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _as_printed(_block("readme-client"))],
            cwd=ROOT,
            env=session,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert client.returncode == 0, client.stdout + client.stderr + log.read_text()
        socket_path = Path(session["XDG_RUNTIME_DIR"], "actord", "actord.sock")
        with Client(str(socket_path)) as control:
            jobs = control.call("jobs")
    finally:
        daemon.send_signal(signal.SIGINT)  # the README's Ctrl-C
        try:
            code = daemon.wait(60)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(10)
            notify.close()
    assert code == 0, log.read_text()
    out = client.stdout
    state = Path(session["HOME"], ".local", "state", "actord")
    assert str(state) in out  # `status` shows the state dir the example worked out
    assert [(j["id"], j["state"]) for j in jobs] == [("log-1", "done")]
    # What `submit --wait` printed ends on the job and its end (`status` says "0 done" too).
    ended = [line for line in out.splitlines() if line.startswith("log-1")]
    assert ended and re.search(r"\bdone\b", ended[-1]), out
    first = next(line for line in out.splitlines() if line.startswith("{"))
    assert json.loads(first) == {
        "line": 1,
        "timestamp": "2026-11-25 12:00:00",
        "level": "INFO",
        "message": "request 1 served",
    }
    assert out.endswith("100001\tnot a log line\n")  # the rejects file, printed last
    summary = jobs[0]["summary"]
    assert (summary["lines"], summary["matched"], summary["rejected"]) == (100_001, 100_000, 1)
    assert summary["rejects"] == str(state / "outputs" / "app.jsonl.rejects")


def _installed_as_the_readme_says(tmp_path: Path) -> list[str]:
    """The units as the README's steps install them, the venv being this run's."""
    steps = _block("readme-systemd")
    # Debian's own interpreter, which the service user can run (not one under a home).
    venv = re.search(r"^sudo /usr/bin/python3 -m venv (/\S+)$", steps, re.M)
    assert venv, steps
    prefix = venv.group(1)
    # The wheel of this checkout, built first (as the user), goes into that venv, with the
    # scipy extra: the service runs the fast FFT engine.
    assert re.search(r"^rm -rf dist && \.venv/bin/pip wheel -q --no-deps -w dist \.$", steps, re.M)
    assert f'sudo {prefix}/bin/pip install -q "$(echo dist/actord-*.whl)[scipy]"' in steps
    config = re.search(r"install -D -m 0644 systemd/actord.toml (\S+)", steps)
    assert config, steps
    assert re.search(
        r"install -m 0644 systemd/actord.service systemd/actord.socket /etc/systemd/system/$",
        steps,
        re.M,
    )
    service = (UNITS / "actord.service").read_text()
    exec_start = f"ExecStart={prefix}/bin/actord run --config {config.group(1)}"
    assert exec_start in service.splitlines()  # the unit runs what the steps installed
    # This run's venv was made the same way (`python3 -m venv`, then `pip install`).
    assert (Path(sys.prefix) / "bin" / "actord").exists()
    (tmp_path / "actord.service").write_text(service.replace(f"{prefix}/", f"{sys.prefix}/"))
    shutil.copy(UNITS / "actord.socket", tmp_path / "actord.socket")
    return [str(tmp_path / "actord.service"), str(tmp_path / "actord.socket")]


def test_the_unit_verifies_as_the_readme_installs_it(tmp_path: Path) -> None:
    analyze = require("systemd-analyze")
    result = subprocess.run(
        [analyze, "verify", "--man=no", *_installed_as_the_readme_says(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_the_readme_never_installs_system_wide() -> None:
    # Debian 12 refuses it (externally-managed-environment).
    commands = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert any("pip install" in block for block in commands)
    for block in commands:
        # A venv's pip (`.venv/bin/pip`, `/opt/actord/bin/pip`) is fine; no other pip is.
        assert not re.search(r"(?<![/\w])(pip3?|python3? -m pip) install", block), block


def test_one_system_socket_path_everywhere() -> None:
    listen = next(
        line.partition("=")[2]
        for line in (UNITS / "actord.socket").read_text().splitlines()
        if line.startswith("ListenStream=")
    )
    config = load_config(UNITS / "actord.toml")  # the example config is valid, too
    assert listen == config.daemon.socket == SYSTEM_SOCKET
    connects = re.findall(r's\.connect\("([^"]+)"\)', README)
    assert connects == [listen]  # the protocol example
    toml_example = re.search(r'^socket = "([^"]+)"', README, re.M)
    assert toml_example and toml_example.group(1) == listen
    assert "/run/actord/" not in README


# Each default the README documents, and an environment to check it in.
_DOCUMENTED_DEFAULTS = [
    ("socket", "$RUNTIME_DIRECTORY/actord.sock", {"RUNTIME_DIRECTORY": "/run/actord"}),
    ("socket", "$XDG_RUNTIME_DIR/actord/actord.sock", {"XDG_RUNTIME_DIR": "/run/user/7"}),
    ("socket", "/tmp/actord-<uid>/actord.sock", {"HOME": "/home/u"}),
    ("state_dir", "$STATE_DIRECTORY", {"STATE_DIRECTORY": "/var/lib/actord"}),
    ("state_dir", "$XDG_STATE_HOME/actord", {"XDG_STATE_HOME": "/home/u/.st"}),
    ("state_dir", "~/.local/state/actord", {"HOME": "/home/u"}),
]


@pytest.mark.parametrize(("key", "documented", "env"), _DOCUMENTED_DEFAULTS)
def test_the_documented_default_paths_are_the_daemon_s(
    key: str, documented: str, env: dict[str, str]
) -> None:
    assert f"`{documented}`" in README
    expected = documented.replace("<uid>", str(os.getuid())).replace("~", env.get("HOME", "~"))
    for name, value in env.items():
        expected = expected.replace(f"${name}", value)
    assert getattr(Config().resolved(env).daemon, key) == expected


def _summary_text() -> str:
    start = README.index("A job's `summary`")
    return README[start : README.index("\n\n", README.index("\n- fft:", start))]


def test_every_summary_key_is_documented() -> None:
    text = _summary_text()
    for summary in (LogSummary, FFTSummary):
        for field in dataclasses.fields(summary):
            assert f"`{field.name}`" in text, field.name
    assert "`type`" in text


def test_the_rejects_file_is_documented() -> None:
    assert f"`<output>{REJECTS_SUFFIX}`" in README
    assert "**always** writes its rejects file" in README


def test_the_readme_links_only_files_in_the_repository() -> None:
    links = re.findall(r"\]\(([^)]+)\)", README)
    assert links
    for link in links:
        assert not re.match(r"[a-z]+:|/", link), link
        assert (ROOT / link.split("#")[0]).exists(), link


@pytest.mark.timeout(180)
def test_the_jobs_example_runs_as_printed_and_again(tmp_path: Path) -> None:
    found = re.search(
        r"<!-- readme-jobs -->\n```python\n(.*?)```\n<!-- /readme-jobs -->", README, re.S
    )
    assert found, "no readme-jobs block"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for run in (1, 2):  # the second run finds the first one's output: it replaces it
        done = subprocess.run(
            [sys.executable, "-c", found.group(1)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"run {run}: {done.stderr}"
        assert "lines=1000" in done.stdout and "matched=1000" in done.stdout, done.stdout
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1000


def test_the_readme_says_how_long_the_test_command_takes() -> None:
    after = README.split("<!-- /test-command -->", 1)[1].split("##", 1)[0]
    assert re.search(r"about 5 minutes on 2 cores.*up to about 10", after, re.S), after


def test_the_runtime_example_imports_only_what_it_uses() -> None:
    example = README.split("## Using the runtime", 1)[1].split("```python\n", 1)[1]
    example = example.split("```", 1)[0]
    imports = re.findall(r"^import (\w+)", example, re.M)
    for name in imports:
        assert re.search(rf"\b{name}\.", example), f"{name} is imported and unused"
