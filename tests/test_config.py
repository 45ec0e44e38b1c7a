"""Daemon configuration: defaults, TOML, overrides, and errors that name the key."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from actord.daemon.config import Config, ConfigError, load_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "actord.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    config = load_config()
    assert config == Config()
    assert config.parser.executor == "process"
    assert config.metrics.address == "127.0.0.1:9464"


def test_a_file_and_overrides(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        mailbox_capacity = 256
        [daemon]
        drain_deadline = 5
        log_level = "debug"
        [parser]
        size = 4
        executor = "thread"
        [paths]
        input_roots = ["/srv/in"]
        """,
    )
    config = load_config(path, {"parser.size": 3, "metrics.address": ""})
    assert config.mailbox_capacity == 256
    assert config.daemon.drain_deadline == 5.0
    assert config.daemon.log_level == "DEBUG"
    assert (config.parser.size, config.parser.executor) == (3, "thread")
    assert config.paths.input_roots == ("/srv/in",)
    assert config.metrics.address == ""


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("colour = 1", "colour"),
        ("[daemon]\nsokcet = '/x'", "daemon.sokcet"),
        ("[daemon]\ndrain_deadline = -1", "daemon.drain_deadline"),
        ("[daemon]\nmax_connections = 0", "daemon.max_connections"),
        ("[daemon]\nmax_connections = true", "daemon.max_connections"),
        ("[daemon]\nlog_level = 'LOUD'", "daemon.log_level"),
        ("[parser]\nexecutor = 'fork'", "parser.executor"),
        ("[paths]\noutput_roots = ['relative/dir']", "paths.output_roots"),
        ("[metrics]\naddress = 'nowhere'", "metrics.address"),
        ("daemon = 3", "daemon"),
        ("mailbox_capacity = 'big'", "mailbox_capacity"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=f"^{names}:"):
        load_config(_write(tmp_path, text))


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[daemon"))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def test_an_override_is_checked_like_the_file() -> None:
    with pytest.raises(ConfigError, match=r"^parser\.size:"):
        load_config(None, {"parser.size": 0})


def test_defaults_for_a_user_and_for_a_service() -> None:
    user = Config().resolved({"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/ann"})
    assert user.daemon.socket == "/run/user/1000/actord/actord.sock"
    assert user.daemon.state_dir == "/home/ann/.local/state/actord"
    assert user.paths.input_roots == ("/home/ann/.local/state/actord/inputs",)
    service = Config().resolved(
        {"RUNTIME_DIRECTORY": "/run/actord", "STATE_DIRECTORY": "/var/lib/actord"}
    )
    assert service.daemon.socket == "/run/actord/actord.sock"
    assert service.daemon.state_dir == "/var/lib/actord"
    assert service.paths.output_roots == ("/var/lib/actord/outputs",)


def test_a_section_that_is_not_a_table_is_refused_by_name_with_a_flag_too(tmp_path: Path) -> None:
    path = tmp_path / "actord.toml"
    path.write_text("daemon = 3\n")
    with pytest.raises(ConfigError, match=r"^daemon: must be a table"):
        load_config(path, {"daemon.max_jobs": 2})


def test_a_config_path_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the config: Is a directory$") as refused:
        load_config(tmp_path)  # a directory
    assert "Errno" not in str(refused.value)


# -- the [ray] section ------------------------------------------------------------------------


def test_the_ray_section_and_executors_load() -> None:
    config = load_config(
        None,
        {
            "ray.address": "10.0.0.5:6379",
            "ray.shared_roots": ("/srv/shared",),
            "ray.cpus_per_worker": 0.5,
            "fft.executor": "ray",
            "parser.executor": "ray",
        },
    )
    assert config.ray.address == "10.0.0.5:6379" and config.ray.namespace == "actord"
    assert config.ray.shared_roots == ("/srv/shared",) and config.ray.cpus_per_worker == 0.5
    assert (config.fft.executor, config.parser.executor) == ("ray", "ray")
    for address in ("", "local", "auto", "ray://head:10001", "head:6379"):
        assert load_config(None, {"ray.address": address}).ray.address == address
    assert Config().ray.address == ""  # off by default


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"ray.address": "head"}, "ray.address: must be"),
        ({"ray.address": "ray://head"}, "ray.address: must be"),
        ({"ray.address": "http://head:1"}, "ray.address: must be"),
        ({"fft.executor": "ray"}, 'fft.executor: "ray" needs ray.address'),
        ({"parser.executor": "ray"}, 'parser.executor: "ray" needs ray.address'),
        ({"fft.executor": "process"}, "fft.executor: must be one of"),
        ({"ray.cpus_per_worker": float("inf")}, "ray.cpus_per_worker: must be a finite"),
        ({"ray.cpus_per_worker": 0.00001}, "ray.cpus_per_worker: must be from"),
        ({"ray.cpus_per_worker": 5000}, "ray.cpus_per_worker: must be from"),
        ({"ray.shared_roots": ("relative",)}, "ray.shared_roots: paths must be absolute"),
        ({"ray.namespace": ""}, "ray.namespace: must not be empty"),
        ({"ray.nodes": 3}, "ray.nodes: unknown key"),
    ],
)
def test_bad_ray_values_name_the_key(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        load_config(None, overrides)


def test_the_fft_engine_loads_and_defaults_to_the_pool_choosing() -> None:
    assert Config().fft.engine == ""  # scipy when installed, else numpy (actors.fft)
    for engine in ("scipy", "numpy"):
        assert load_config(None, {"fft.engine": engine}).fft.engine == engine


def test_a_bad_fft_engine_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r'fft\.engine: must be one of "scipy", "numpy"'):
        load_config(None, {"fft.engine": "fftw"})
    with pytest.raises(ConfigError, match=r"parser\.engine: unknown key"):
        load_config(None, {"parser.engine": "scipy"})
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real(name, *a)
    )
    with pytest.raises(ConfigError) as refused:
        load_config(None, {"fft.engine": "scipy"})
    assert str(refused.value) == (
        "fft.engine: scipy is not installed (pip install 'actord[scipy]'), "
        'or set fft.engine = "numpy"'
    )
    assert load_config(None, {"fft.engine": "numpy"}).fft.engine == "numpy"


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("[daemon]\nmax_job = 3", "daemon.max_job: unknown key; did you mean 'max_jobs'?"),
        ("mailbox_capacty = 3", "mailbox_capacty: unknown key; did you mean 'mailbox_capacity'?"),
    ],
)
def test_an_unknown_key_says_which_was_meant(tmp_path: Path, text: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text))
    assert str(caught.value).startswith(hint)


def test_allowed_values_are_listed_as_people_write_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"parser.executor": "fork"})
    assert 'must be one of "thread", "process", "ray"' in str(caught.value)
    assert "(" not in str(caught.value).split("must be one of")[1]


def test_retention_and_log_format_keys(tmp_path: Path) -> None:
    config = load_config(
        _write(tmp_path, '[daemon]\nretention_days = 30\nretention_jobs = 0\nlog_format = "json"')
    )
    assert (config.daemon.retention_days, config.daemon.retention_jobs) == (30.0, 0)
    assert config.daemon.log_format == "json"
    assert (Config().daemon.retention_days, Config().daemon.retention_jobs) == (0.0, 0)
    for bad in ({"daemon.retention_days": -1}, {"daemon.retention_jobs": -2}):
        with pytest.raises(ConfigError, match=r"^daemon\.retention_"):
            load_config(None, bad)
    with pytest.raises(ConfigError, match=r"^daemon\.log_format:"):
        load_config(None, {"daemon.log_format": "xml"})
