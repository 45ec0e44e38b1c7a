"""`actord check-config`, and what a start says about its config (which file, which key)."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from actord.daemon.checks import describe_os_error, host_problems, key_of, origin, render
from actord.daemon.config import Config, load_config


def _actord(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    code = "import sys; from actord.daemon.cli import actord_main; sys.exit(actord_main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "actord.toml"
    path.write_text(text)
    return path


def _local_flags(tmp_path: Path) -> list[str]:
    return [
        "--state-dir",
        str(tmp_path / "state"),
        "--socket",
        str(tmp_path / "run" / "actord.sock"),
        "--metrics-address",
        "",
    ]


def test_check_config_prints_the_effective_config_with_origins_and_exits_0(
    tmp_path: Path,
) -> None:
    path = _config(tmp_path, "[daemon]\nmax_jobs = 3\n")
    result = _actord(
        "check-config", "--config", str(path), "--parsers", "5", *_local_flags(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"max_jobs = 3  # file {path}" in out
    assert "size = 5  # flag --parsers" in out
    assert "drain_deadline = 30.0  # default" in out
    # It is TOML that loads back to the very config a start would use.
    loaded = tomllib.loads(out)
    assert loaded["daemon"]["max_jobs"] == 3
    assert loaded["parser"]["size"] == 5
    again = tmp_path / "again.toml"
    again.write_text(out)
    assert load_config(again) == load_config(path, {"parser.size": 5, **_overrides(tmp_path)})


def _overrides(tmp_path: Path) -> dict[str, object]:
    return {
        "daemon.state_dir": str(tmp_path / "state"),
        "daemon.socket": str(tmp_path / "run" / "actord.sock"),
        "metrics.address": "",
        "paths.input_roots": (str(tmp_path / "state" / "inputs"),),
        "paths.output_roots": (str(tmp_path / "state" / "outputs"),),
    }


def test_check_config_names_each_problem_by_key_and_file_and_exits_2(tmp_path: Path) -> None:
    path = _config(tmp_path, '[daemon]\nsocket_group = "no-such-group-here"\n')
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = _actord(
        "check-config",
        "--config",
        str(path),
        "--input-root",
        str(not_a_dir),
        *_local_flags(tmp_path),
    )
    assert result.returncode == 2
    err = result.stderr
    assert f"error: daemon.socket_group: no group named 'no-such-group-here' [in {path}]" in err, (
        err
    )
    assert f"error: paths.input_roots: {not_a_dir} is not a directory [set by --input-root]" in err
    assert "[Errno" not in err
    assert not (tmp_path / "state").exists()  # nothing started, nothing made


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process (here: this one) listens on."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    try:
        yield held.getsockname()[1]
    finally:
        held.close()


def test_check_config_finds_a_metrics_port_in_use(tmp_path: Path, taken_port: int) -> None:
    port = taken_port
    flags = [*_local_flags(tmp_path)[:4], "--metrics-address", f"127.0.0.1:{port}"]
    result = _actord("check-config", *flags)
    assert result.returncode == 2
    assert f"error: metrics.address: 127.0.0.1:{port} is in use" in result.stderr
    assert "--metrics-address" in result.stderr


def test_a_second_daemon_on_a_taken_metrics_port_names_the_key(
    tmp_path: Path, taken_port: int
) -> None:
    port = taken_port
    flags = [*_local_flags(tmp_path)[:4], "--metrics-address", f"127.0.0.1:{port}"]
    result = _actord("run", "--fft-engine", "numpy", *flags, timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"actord: metrics.address 127.0.0.1:{port} is in use"), last
    assert "--metrics-address" in last
    assert "Errno" not in result.stderr
    assert "Traceback" not in result.stderr


def test_the_start_log_names_the_config_file_first_and_a_bad_group_stops_before_the_pools(
    tmp_path: Path,
) -> None:
    path = _config(tmp_path, '[daemon]\nsocket_group = "no-such-group-here"\n')
    result = _actord("run", "--config", str(path), *_local_flags(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert f"starting; config: {path}" in lines[0]
    assert lines[-1] == (
        f"actord: daemon.socket_group: no group named 'no-such-group-here' [in {path}]"
    )
    assert not any("parser" in line for line in lines)  # no pool was started
    defaults = _actord("run", "--socket-group", "no-such-group-here", *_local_flags(tmp_path))
    assert "config: built-in defaults" in defaults.stderr.splitlines()[0]
    assert defaults.stderr.splitlines()[-1].endswith("[set by --socket-group]")


def test_an_unreachable_root_at_start_names_the_key_and_where_it_was_set(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    path = _config(tmp_path, f'[paths]\noutput_roots = ["{not_a_dir}"]\n')
    result = _actord("run", "--config", str(path), *_local_flags(tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"actord: paths.output_roots: {not_a_dir} is not a directory [in {path}]"
    )


def test_unit_helpers() -> None:
    assert key_of("daemon.max_job: unknown key") == "daemon.max_job"
    assert key_of("daemon.max_jobs: must be") == "daemon.max_jobs"
    assert key_of("/etc/x.toml: no such config file") is None
    assert origin("parser.size", None, {"parser.size": 3}, {"parser.size": "--parsers"}) == (
        "set by --parsers"
    )
    assert origin("parser.size", None, {}, {"parser.size": "--parsers"}).startswith("the default")
    error = PermissionError(13, "Permission denied", "/srv/in")
    assert describe_os_error(error) == "/srv/in: Permission denied"


def test_render_marks_values_from_the_environment() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/7", "HOME": "/home/u"}
    config = Config().resolved(env)
    text = render(config, None, {}, {}, Config())
    assert 'socket = "/run/user/7/actord/actord.sock"  # default, from the environment' in text


@pytest.mark.parametrize("write", [False, True])
def test_host_problems_of_a_root_that_is_missing_are_warnings(tmp_path: Path, write: bool) -> None:
    key = "paths.output_roots" if write else "paths.input_roots"
    missing = str(tmp_path / "missing")
    config = load_config(None, {key: (missing,), "daemon.state_dir": str(tmp_path / "s")})
    (problem,) = host_problems(config.resolved(), listeners=False)
    assert problem.key == key
    assert not problem.fatal


def test_one_log_level_whether_it_comes_before_or_after_the_command(tmp_path: Path) -> None:
    for argv in (
        ["--log-level", "DEBUG", "check-config"],
        ["check-config", "--log-level", "DEBUG"],
    ):
        result = _actord(*argv, *_local_flags(tmp_path))
        assert result.returncode == 0, result.stderr
        assert 'log_level = "DEBUG"  # flag --log-level' in result.stdout
