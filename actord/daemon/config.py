"""Daemon configuration: TOML with built-in defaults; every key can be overridden by a flag.

Unknown keys and bad values are errors that name the key (``daemon.drain_deadline: must be
> 0, got -1``). Defaults work both for an unprivileged user (``$XDG_RUNTIME_DIR``,
``~/.local/state``) and for a systemd service (``$RUNTIME_DIRECTORY``, ``$STATE_DIRECTORY``).
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..runtime.errors import InvalidArgument

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "FFTConfig",
    "MetricsConfig",
    "PathsConfig",
    "PoolConfig",
    "RayConfig",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path("/etc/actord/actord.toml")
_EXECUTORS = {"parser": ("thread", "process", "ray"), "fft": ("thread", "ray")}
_ENGINES = ("scipy", "numpy")  # fft.engine ("" = scipy when installed, else numpy)
_MIN_CPUS, _MAX_CPUS = 0.0001, 1024.0  # what one Ray worker may ask for (Ray's own bounds)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MAX_POOL = 4096  # daemon.max_pool_size's own bound (actorctl scale's too)
_LOG_FORMATS = ("text", "json")
# Numbers for which 0 means "off" (keep every ended job), not an error.
_ZERO_MEANS_OFF = frozenset({"daemon.retention_days", "daemon.retention_jobs"})


class ConfigError(InvalidArgument):
    """A config file or override is invalid; the message names the key."""


def _runtime_dir(env: Mapping[str, str]) -> Path:
    if env.get("RUNTIME_DIRECTORY"):  # systemd RuntimeDirectory= (may list several)
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "actord"
    # Per-user, created 0750; the server refuses it if another user owns it (made first).
    return Path(f"/tmp/actord-{os.getuid()}")  # noqa: S108


def _state_dir(env: Mapping[str, str]) -> Path:
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME", "~")).expanduser() / ".local/state"
    )
    return Path(base) / "actord"


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    socket: str = ""  # "" -> <runtime dir>/actord.sock
    state_dir: str = ""  # "" -> the state directory (journal, outputs' bookkeeping)
    drain_deadline: float = 30.0  # seconds SIGTERM waits for in-flight jobs
    log_level: str = "INFO"
    log_format: str = "text"  # "text" (one line) or "json" (one object per record)
    socket_group: str = ""  # peers in this group may connect (besides root and our uid)
    max_connections: int = 64  # open control connections (each has its own thread)
    frame_limit: int = 1 << 20  # bytes per request frame
    idle_timeout: float = 60.0  # seconds a connection may stay silent
    # Seconds a `watch` whose client reads nothing is kept: its progress waits, coalesced
    # (only the latest state is sent once it reads), and past this it is disconnected.
    watch_timeout: float = 60.0
    max_jobs: int = 4  # jobs running at once; the rest wait, journaled, in order
    # Seconds on one message (or in on_start/on_stop) before an actor counts as wedged and
    # the watchdog pings stop: above the parse workers' 60 s limit on one block.
    stuck_after: float = 90.0
    app: str = "actors.service:JobService"  # what the daemon hosts (module:factory)
    # Begin a new, empty journal where the state dir says one was kept and it is missing or
    # empty (`actord run --new-journal`, for the start that means it); refused otherwise.
    new_journal: bool = False
    # Journal retention, applied at start and hourly: ended jobs older than retention_days,
    # and those beyond the newest retention_jobs ended ones, leave the journal (their outputs
    # stay). 0 keeps them all.
    retention_days: float = 0.0
    retention_jobs: int = 0
    # Members one pool may have (`scale`, and the pools' `size`): four per core by default,
    # room for pools that wait on I/O or on a Ray cluster without letting a typo start
    # hundreds of worker processes on a small host.
    max_pool_size: int = field(default_factory=lambda: max(8, 4 * (os.cpu_count() or 1)))


@dataclass(frozen=True, slots=True)
class PathsConfig:
    input_roots: tuple[str, ...] = ()  # () -> the state directory's "inputs"
    output_roots: tuple[str, ...] = ()  # () -> the state directory's "outputs"


@dataclass(frozen=True, slots=True)
class PoolConfig:
    size: int = 2
    executor: str = "thread"
    capacity: int = 8


@dataclass(frozen=True, slots=True)
class FFTConfig:
    size: int = 2
    executor: str = "thread"
    capacity: int = 8
    engine: str = ""  # "scipy" or "numpy"; "" = scipy when installed, else numpy


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    address: str = "127.0.0.1:9464"  # "" disables the HTTP endpoint
    max_connections: int = 128  # open at once; past it, 503 (no thread per connection)
    read_timeout: float = 5.0  # seconds a client has to send its whole request


@dataclass(frozen=True, slots=True)
class RayConfig:
    # "" no Ray (the default); "local" starts a private Ray instance (to try it out);
    # "auto", "host:port" or "ray://host:port" joins a running cluster.
    address: str = ""
    namespace: str = "actord"  # the Ray namespace the daemon's Ray actors live in
    shared_roots: tuple[str, ...] = ()  # mounted at the same path on every node
    cpus_per_worker: float = 1.0  # CPUs each Ray worker (one per pool member) asks for


@dataclass(frozen=True, slots=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    parser: PoolConfig = field(default_factory=lambda: PoolConfig(executor="process"))
    fft: FFTConfig = field(default_factory=FFTConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    mailbox_capacity: int = 1024

    def resolved(self, env: Mapping[str, str] | None = None) -> Config:
        """Fill the environment-dependent defaults (socket, state dir, roots)."""
        env = os.environ if env is None else env
        state = Path(self.daemon.state_dir) if self.daemon.state_dir else _state_dir(env)
        socket = self.daemon.socket or str(_runtime_dir(env) / "actord.sock")
        paths = PathsConfig(
            input_roots=self.paths.input_roots or (str(state / "inputs"),),
            output_roots=self.paths.output_roots or (str(state / "outputs"),),
        )
        daemon = replace(self.daemon, socket=socket, state_dir=str(state))
        return replace(self, daemon=daemon, paths=paths)


_SECTIONS: dict[str, type[Any]] = {
    "daemon": DaemonConfig,
    "paths": PathsConfig,
    "parser": PoolConfig,
    "fft": FFTConfig,
    "metrics": MetricsConfig,
    "ray": RayConfig,
}


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Read `path` (TOML) over the defaults, then apply dotted `overrides` ("parser.size")."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
        except (OSError, UnicodeDecodeError) as error:  # a directory, no permission, ...
            why = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise ConfigError(f"{path}: cannot read the config: {why}") from None
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if key:
            table = data.setdefault(section, {})
            if not isinstance(table, dict):  # `daemon = 3` in the file, and a daemon flag
                raise ConfigError(f"{section}: must be a table")
            table[key] = value
        else:
            data[section] = value
    return _build(data)


def _build(data: Mapping[str, Any]) -> Config:
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name == "mailbox_capacity":
            values[name] = _positive_int(name, value)
        elif name in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name}: must be a table")
            default = getattr(Config(), name)
            values[name] = _section(name, default, value)
        else:
            known = ["mailbox_capacity", *_SECTIONS]
            raise ConfigError(f"{name}: unknown key{_did_you_mean(name, known)}")
    config = Config(**values)
    for pool in ("parser", "fft"):
        if getattr(config, pool).size > config.daemon.max_pool_size:
            raise ConfigError(
                f"{pool}.size: must be at most daemon.max_pool_size "
                f"({config.daemon.max_pool_size}), got {getattr(config, pool).size}"
            )
        if getattr(config, pool).executor == "ray" and not config.ray.address:
            raise ConfigError(
                f'{pool}.executor: "ray" needs ray.address ("local", "auto", "host:port" '
                'or "ray://host:port")'
            )
    return config


def _section(name: str, default: Any, table: Mapping[str, Any]) -> Any:
    allowed = {f.name: f for f in fields(default)}
    changes: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{name}.{key}"
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key{_did_you_mean(key, list(allowed))}")
        changes[key] = _check(where, getattr(default, key), value)
    return replace(default, **changes)


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (known: {', '.join(known)})"


def _one_of(values: tuple[str, ...]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def _check(where: str, default: object, value: object) -> object:
    key = where.rsplit(".", 1)[-1]
    if where in _ZERO_MEANS_OFF and value == 0 and not isinstance(value, bool):
        return 0.0 if isinstance(default, float) else 0  # off
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if where in _ZERO_MEANS_OFF and isinstance(value, int) and value < 0:
            raise ConfigError(f"{where}: must be a whole number >= 0 (0: no limit), got {value}")
        number = _positive_int(where, value)
        if where == "daemon.max_pool_size" and number > _MAX_POOL:
            raise ConfigError(f"{where}: must be at most {_MAX_POOL}, got {number}")
        return number
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            off = ", or 0 for no limit" if where in _ZERO_MEANS_OFF else ""
            raise ConfigError(f"{where}: must be a number > 0{off}, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        if where == "ray.cpus_per_worker" and not _MIN_CPUS <= value <= _MAX_CPUS:
            raise ConfigError(
                f"{where}: must be from {_MIN_CPUS} (Ray's finest share) to {_MAX_CPUS}, "
                f"got {value!r}"
            )
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: must be a list of paths, got {value!r}")
        if not all(os.path.isabs(v) for v in value):
            raise ConfigError(f"{where}: paths must be absolute, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string, got {value!r}")
    section = where.split(".", 1)[0]
    if key == "executor" and value not in _EXECUTORS[section]:
        raise ConfigError(f"{where}: must be one of {_one_of(_EXECUTORS[section])}, got {value!r}")
    if where == "fft.engine" and value:
        if value not in _ENGINES:
            raise ConfigError(f"{where}: must be one of {_one_of(_ENGINES)}, got {value!r}")
        if importlib.util.find_spec(value) is None:
            raise ConfigError(
                f"{where}: {value} is not installed (pip install 'actord[{value}]'), "
                'or set fft.engine = "numpy"'
            )
    if key == "log_level" and value.upper() not in _LOG_LEVELS:
        raise ConfigError(f"{where}: must be one of {_one_of(_LOG_LEVELS)}, got {value!r}")
    if key == "log_format" and value not in _LOG_FORMATS:
        raise ConfigError(f"{where}: must be one of {_one_of(_LOG_FORMATS)}, got {value!r}")
    if where == "ray.address" and value and not _is_ray_address(value):
        raise ConfigError(
            f'{where}: must be "", "local", "auto", host:port or ray://host:port, got {value!r}'
        )
    if where == "metrics.address" and value and not _is_host_port(value):
        raise ConfigError(f"{where}: must be host:port, got {value!r}")
    if where == "ray.namespace" and not value:
        raise ConfigError(f"{where}: must not be empty")
    return value.upper() if key == "log_level" else value


def _positive_int(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: must be a whole number >= 1, got {value!r}")
    return value


def _is_ray_address(value: str) -> bool:
    if value in ("local", "auto"):
        return True
    return _is_host_port(value.removeprefix("ray://"))


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and "/" not in host and port.isdigit() and 0 < int(port) < 65536)
