"""What a start needs of the host, checked without starting: `actord check-config`, and the
first thing `actord run` does.

`host_problems` finds what would stop a start (or hurt it): a socket group that does not
exist, a root or state directory this user cannot reach, a metrics address in use, a socket
path another server holds. Each problem names its config key. `origin` says where a key's
value came from (the config file, a flag, the default), and `render` prints the effective
config as TOML with that origin beside each value.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import socket
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final

from ..control.client import Client
from .config import Config

__all__ = [
    "Origin",
    "Problem",
    "describe_os_error",
    "dotted_keys",
    "file_keys",
    "host_problems",
    "key_of",
    "origin",
    "render",
]

_SOCKET_PATH_MAX: Final = 107  # sun_path holds 108 bytes with the final NUL


class Origin(Enum):
    DEFAULT = "default"
    FILE = "file"
    FLAG = "flag"


@dataclass(frozen=True, slots=True)
class Problem:
    key: str
    message: str  # begins with what is wrong; the key is not repeated in it
    fatal: bool = True  # False: a start goes on, but something will not work

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def describe_os_error(error: OSError) -> str:
    """An OSError as people read it: ``/srv/in: Permission denied``, never ``[Errno 13]``."""
    text = error.strerror or str(error)
    names = [n for n in (error.filename, error.filename2) if n is not None]
    return ": ".join([*(str(n) for n in names), text]) if names else text


def dotted_keys(config: Config | None = None) -> list[str]:
    """Every key of the config, dotted (``daemon.socket``, ``mailbox_capacity``), in order."""
    config = Config() if config is None else config
    keys = []
    for item in fields(config):
        value = getattr(config, item.name)
        if is_dataclass(value):
            keys += [f"{item.name}.{sub.name}" for sub in fields(value)]
        else:
            keys.append(item.name)
    return keys


def key_of(message: str) -> str | None:
    """The config key an error message begins with (``daemon.max_jobs: ...``), if any."""
    head = message.split(":", 1)[0].split(" ", 1)[0]
    known = {key.split(".")[0] for key in dotted_keys()}  # sections and top-level keys
    return head if head.split(".")[0] in known else None


def file_keys(path: str | Path | None) -> set[str]:
    """The dotted keys a config file sets (empty if it cannot be read: loading says why)."""
    if path is None:
        return set()
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return set()
    keys = set()
    for name, value in data.items():
        if isinstance(value, dict):
            keys |= {f"{name}.{key}" for key in value}
        keys.add(name)
    return keys


def origin(
    key: str, path: str | Path | None, overrides: Mapping[str, object], flags: Mapping[str, str]
) -> str:
    """Where `key`'s value comes from, for people: ``set by --metrics-address``, ``in
    /etc/actord/actord.toml``, ``the default (set it in FILE or with --x)``."""
    flag = flags.get(key)
    if key in overrides:
        return f"set by {flag}" if flag else "set on the command line"
    if key in file_keys(path):
        return f"in {path}"
    where = [f"in {path}"] if path else ["in a config file (--config FILE)"]
    if flag:
        where.append(f"with {flag}")
    return f"the default; set it {' or '.join(where)}"


def _origin_of(key: str, file: set[str], overrides: Mapping[str, object]) -> Origin:
    if key in overrides:
        return Origin.FLAG
    return Origin.FILE if key in file else Origin.DEFAULT


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def render(
    config: Config,
    path: str | Path | None,
    overrides: Mapping[str, object],
    flags: Mapping[str, str],
    unresolved: Config | None = None,
) -> str:
    """The effective config as TOML (it loads back to the same config), each value with a
    comment saying where it came from. `unresolved`: the config before the environment's
    defaults were filled in (so that those say so)."""
    file = file_keys(path)
    lines = [f"# effective config; file: {path or 'none (built-in defaults)'}"]

    def line(key: str, value: object, before: object) -> str:
        how = _origin_of(key, file, overrides)
        note = how.value
        if how is Origin.FLAG and flags.get(key):
            note = f"flag {flags[key]}"
        elif how is Origin.FILE:
            note = f"file {path}"
        elif before is not None and before != value:
            note = "default, from the environment"
        return f"{key.rsplit('.', 1)[-1]} = {_toml(value)}  # {note}"

    tables = []
    for item in fields(config):
        value = getattr(config, item.name)
        original = None if unresolved is None else getattr(unresolved, item.name)
        if not is_dataclass(value):
            lines.append(line(item.name, value, original))
            continue
        table = ["", f"[{item.name}]"]
        for sub in fields(value):
            before = None if original is None else getattr(original, sub.name)
            table.append(line(f"{item.name}.{sub.name}", getattr(value, sub.name), before))
        tables += table
    return "\n".join(lines + tables) + "\n"


# -- the host ----------------------------------------------------------------------------------


def host_problems(
    config: Config, *, listeners: bool = True, running: Mapping[str, Any] | None = None
) -> list[Problem]:
    """What would stop a start of `config` (fatal) or hurt it (not fatal), on this host, as
    this user. `listeners`: also the socket path and the metrics address (a start that binds
    them itself); `running`: the status of the actord already running on this state dir, whose
    socket and metrics address are its own (not a clash: a restart frees them)."""
    problems: list[Problem] = []
    daemon = config.daemon
    if daemon.socket_group:
        try:
            grp.getgrnam(daemon.socket_group)
        except KeyError:
            problems.append(
                Problem("daemon.socket_group", f"no group named {daemon.socket_group!r}")
            )
    _creatable(problems, "daemon.state_dir", Path(daemon.state_dir))
    state = Path(daemon.state_dir)
    for key, roots, write in (
        ("paths.input_roots", config.paths.input_roots, False),
        ("paths.output_roots", config.paths.output_roots, True),
    ):
        for root in roots:
            if Path(root).parent == state:  # a default root: the start creates it
                continue
            problem = _directory(key, Path(root), write=write)
            if problem is not None:
                problems.append(problem)
    if listeners:
        problems += _socket_problems(daemon.socket, running)
        if config.metrics.address:
            problem = _metrics_problem(config.metrics.address, running)
            if problem is not None:
                problems.append(problem)
    return problems


def _user() -> str:
    return f"uid {os.getuid()}"


def _directory(key: str, path: Path, *, write: bool) -> Problem | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return Problem(key, f"{path} does not exist (yet): jobs under it fail", fatal=False)
    except PermissionError:
        return Problem(key, f"{path} cannot be reached by {_user()} (permission denied)")
    except OSError as error:
        return Problem(key, f"{path}: {error.strerror or error}")
    if not stat.S_ISDIR(info.st_mode):
        return Problem(key, f"{path} is not a directory")
    need, what = (os.W_OK | os.X_OK, "written") if write else (os.R_OK | os.X_OK, "read")
    if not os.access(path, need):
        return Problem(key, f"{path} cannot be {what} by {_user()}: jobs under it fail", False)
    return None


def _creatable(problems: list[Problem], key: str, path: Path) -> None:
    """A directory the daemon uses or makes: it must be writable, or its nearest existing
    parent must be."""
    probe = path
    while True:
        try:
            info = probe.stat()
        except FileNotFoundError:
            if probe.parent == probe:
                return
            probe = probe.parent
            continue
        except PermissionError:
            problems.append(Problem(key, f"{path} cannot be reached by {_user()}"))
            return
        except OSError as error:
            problems.append(Problem(key, f"{path}: {error.strerror or error}"))
            return
        if not stat.S_ISDIR(info.st_mode):
            problems.append(Problem(key, f"{probe} is not a directory"))
        elif not os.access(probe, os.W_OK | os.X_OK):
            made = "" if probe == path else f" (to create {path} in)"
            problems.append(Problem(key, f"{probe}{made} is not writable by {_user()}"))
        return


def _socket_problems(path: str, running: Mapping[str, Any] | None) -> list[Problem]:
    key = "daemon.socket"
    if len(os.fsencode(path)) > _SOCKET_PATH_MAX:
        return [Problem(key, f"{path} is too long for a Unix socket ({_SOCKET_PATH_MAX} bytes)")]
    directory = Path(path).parent
    problems: list[Problem] = []
    if directory.is_dir():
        info = directory.stat()
        if info.st_uid not in (os.getuid(), 0):
            problems.append(
                Problem(key, f"its directory {directory} belongs to uid {info.st_uid}, not us")
            )
        elif info.st_mode & 0o022:
            problems.append(
                Problem(key, f"its directory {directory} may be written by others (make it 0750)")
            )
    else:
        _creatable(problems, key, directory)
    if not problems and _listening(path):
        if running is not None and running.get("socket") == path:
            problems.append(
                Problem(key, f"{path} is the running actord's (pid {running.get('pid')})", False)
            )
        else:
            problems.append(Problem(key, f"another server is listening on {path}"))
    return problems


def _listening(path: str) -> bool:
    try:
        Client(path, timeout=1.0).close()  # a live server answers; a stale file refuses
    except OSError:
        return False
    return True


def metrics_in_use(address: str) -> str:
    """What an operator reads when the metrics address cannot be bound because it is taken."""
    return (
        f"metrics.address {address} is in use (another actord on this host?): choose another "
        'port (metrics.address = "127.0.0.1:9465" in the config, or --metrics-address '
        '127.0.0.1:9465), or serve no metrics (metrics.address = "")'
    )


def _metrics_problem(address: str, running: Mapping[str, Any] | None) -> Problem | None:
    key = "metrics.address"
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return Problem(key, f"{address}: {error.strerror}")
    family, kind, proto, _, where = infos[0]
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        probe.bind(where)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            ours = running is not None and str(running.get("metrics") or "").startswith(
                f"http://{address}/"
            )
            if ours:
                return Problem(key, f"{address} is the running actord's", fatal=False)
            return Problem(key, metrics_in_use(address).removeprefix(f"{key} "))
        if error.errno == errno.EACCES:
            return Problem(key, f"{address}: a port below 1024 needs privileges")
        return Problem(key, f"{address}: {error.strerror or error}")
    finally:
        probe.close()
    return None
