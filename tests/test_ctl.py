"""actorctl against an in-process control server backed by a real actor system."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actord import ActorSystem
from actord.control.client import default_socket
from actord.control.ctl import main
from actord.control.methods import Dispatcher, runtime_methods
from actord.control.server import ControlServer

from .conftest import Recorder, RecordingActor


class _Hooks:
    def status(self) -> dict[str, Any]:
        return {"version": "test", "jobs_running": 0}

    def reload(self, timeout: float) -> dict[str, Any]:
        return {"generation": 2}

    def shutdown(self) -> None:
        pass


@pytest.fixture
def socket_path(tmp_path: Path, system: ActorSystem, recorder: Recorder) -> Iterator[str]:
    system.spawn_pool(lambda: RecordingActor(recorder), "workers", 2)
    server = ControlServer(
        str(tmp_path / "run" / "s.sock"), Dispatcher(runtime_methods(system, _Hooks()))
    )
    server.start()
    try:
        yield server.path
    finally:
        server.stop()


def test_json_works_before_or_after_the_subcommand(
    socket_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", socket_path, "--json", "actors"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert main(["actors", "--socket", socket_path, "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert [a["name"] for a in before] == [a["name"] for a in after] == ["workers#0", "workers#1"]


def test_tables_for_people(socket_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", socket_path, "actors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATE", "PROCESSED"]
    assert [line.split()[0] for line in lines[1:]] == ["workers#0", "workers#1"]


def test_send_parses_key_value_arguments(
    socket_path: str, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", socket_path, "send", "workers", "flush", "n=3", "why=disk"]) == 0
    recorder.wait_count(1)
    command = recorder.payloads()[0]
    assert (command.command, command.args) == ("flush", (("n", 3), ("why", "disk")))


def test_exit_codes(socket_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", str(tmp_path / "none.sock"), "status"]) == 3
    assert "not running" in capsys.readouterr().err
    assert main(["--socket", socket_path, "restart", "ghost"]) == 1
    assert "not_found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["--socket", socket_path, "scale", "workers", "many"])
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as bad_pair:
        main(["--socket", socket_path, "send", "workers", "flush", "broken"])
    assert bad_pair.value.code == 2


def test_the_socket_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_socket({"ACTORD_SOCKET": "/run/x.sock"}) == "/run/x.sock"
    assert default_socket({"XDG_RUNTIME_DIR": "/run/user/7"}) == "/run/user/7/actord/actord.sock"
