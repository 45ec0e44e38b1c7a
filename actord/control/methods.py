"""Control methods: the dispatcher that maps errors to stable codes, and the runtime's own
methods (ping, status, actors, send, restart, scale, reload, shutdown, config).

Methods run on the connection's thread. They act through the actor system's public API and
typed messages; they never reach into an actor's state.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from ..runtime.errors import (
    ActordError,
    AskTimeout,
    ErrorCode,
    InvalidArgument,
    MailboxFull,
    Refused,
    UnknownActor,
)
from ..runtime.message import AdminCommand, MessageType, Scalar
from ..runtime.stats import ActorStats
from ..runtime.system import ActorSystem
from .protocol import ProtocolError
from .server import Call

__all__ = [
    "READ_ONLY",
    "Dispatcher",
    "Method",
    "RuntimeHooks",
    "audit",
    "param",
    "runtime_methods",
    "stats_to_wire",
]

_log: Final = logging.getLogger("actord.control")
# Who did what: one line for each call that may change something, and for each refusal.
_audit: Final = logging.getLogger("actord.audit")
# Methods that only read: audited only when refused.
READ_ONLY: Final = frozenset({"ping", "status", "actors", "jobs", "job", "watch", "config"})
_SHOWN: Final = 48  # characters of one argument in an audit line
_MISSING: Final = object()
Method = Callable[[Call], Any]


def param(call: Call, index: int, expected: type, name: str, default: Any = _MISSING) -> Any:
    """The `index`-th param, checked to be `expected`; a `bad_request` naming it if not."""
    if index >= len(call.params):
        if default is _MISSING:
            raise Refused(ErrorCode.BAD_REQUEST, f"{call.method}: missing param {name!r}")
        return default
    value = call.params[index]
    wrong_bool = isinstance(value, bool) and expected is not bool
    if wrong_bool or not isinstance(value, expected):
        raise Refused(
            ErrorCode.BAD_REQUEST,
            f"{call.method}: param {name!r} must be {expected.__name__}, got {value!r}",
        )
    return value


class Dispatcher:
    """The control server's handler: finds the method and turns failures into error codes.

    This is the control plane's failure boundary: a method that raises something unexpected
    is logged with its traceback and answered with ``internal``; the connection goes on.
    """

    def __init__(self, methods: Mapping[str, Method]) -> None:
        self.methods = dict(methods)
        # _lock guards calls: (method, error code or "") -> count, read by the metrics.
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()

    def __call__(self, call: Call) -> Any:
        method = self.methods.get(call.method)
        if method is None:
            self._count("unknown", ErrorCode.UNKNOWN_METHOD)
            known = ", ".join(sorted(self.methods))
            refused = Refused(
                ErrorCode.UNKNOWN_METHOD, f"no method {call.method!r} (known: {known})"
            )
            audit(call, refused)
            raise refused
        try:
            result = method(call)
        except Refused as error:  # a refusal with its own code (Refused, ProtocolError)
            self._count(call.method, error.code)
            audit(call, error)
            raise
        except (ConnectionError, TimeoutError) as error:
            if not isinstance(error, ActordError):
                raise  # the connection broke (a watcher went away): the server's business
            code, message = _classify(call.method, error)
            self._count(call.method, code)
            audit(call, Refused(code, message))
            raise Refused(code, message) from None
        except Exception as error:
            code, message = _classify(call.method, error)
            self._count(call.method, code)
            audit(call, Refused(code, message))
            raise Refused(code, message) from None
        self._count(call.method, None)
        if call.method not in READ_ONLY:
            audit(call, result)
        return result

    def _count(self, method: str, code: ErrorCode | None) -> None:
        with self._lock:
            self.calls[(method, "" if code is None else code.value)] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        """Calls by (method, error code or ""), every known method present (zeros too)."""
        with self._lock:
            calls = dict(self.calls)
        for method in self.methods:
            calls.setdefault((method, ""), 0)
        return calls


def audit(call: Call, outcome: object) -> None:
    """The audit line of a call: the method, the peer, the arguments (long paths shortened)
    and how it ended (``ok`` and the job or pool it made or changed, or the refusal)."""
    peer = call.peer
    args = " ".join(_shown(value) for value in call.params)
    if isinstance(outcome, Refused):
        _audit.warning(
            "%s by uid %d pid %d (%s): refused %s: %s",
            call.method,
            peer.uid,
            peer.pid,
            args,
            outcome.code.value,
            outcome,
        )
        return
    what = ""
    if isinstance(outcome, Mapping):
        what = " ".join(str(outcome[k]) for k in ("id", "state") if k in outcome)
    _audit.info(
        "%s by uid %d pid %d (%s): ok%s",
        call.method,
        peer.uid,
        peer.pid,
        args,
        f" {what}" * bool(what),
    )


def _shown(value: object) -> str:
    if isinstance(value, Mapping):
        return " ".join(
            f"{key}={_shown(item)}"
            for key, item in value.items()
            if item is not None and item is not False and item != {}  # 0 is shown
        )
    if isinstance(value, list | tuple):
        return ",".join(_shown(item) for item in value)
    text = str(value)
    if text.startswith("/") and len(text) > _SHOWN:  # a path: its last two parts say enough
        parts = text.rsplit("/", 2)
        text = "…/" + "/".join(parts[-2:])
        if len(text) > _SHOWN:
            text = "…/" + parts[-1]  # or its name alone
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _classify(method: str, error: Exception) -> tuple[ErrorCode, str]:
    if isinstance(error, ProtocolError):
        return error.code, str(error)
    if isinstance(error, UnknownActor):
        return ErrorCode.NOT_FOUND, str(error)
    if isinstance(error, InvalidArgument):
        return ErrorCode.BAD_REQUEST, str(error)
    if isinstance(error, MailboxFull | AskTimeout):
        return ErrorCode.BUSY, f"{error}; try again"
    if isinstance(error, ActordError):
        return ErrorCode.INTERNAL, f"{error.code.value}: {error}"
    if isinstance(error, OSError) and error.filename is not None:
        # A path that changed under us while it was resolved (a directory swapped for a
        # link, say): the request's fault, answered as such; the connection goes on.
        return ErrorCode.INVALID_PATH, f"{error.filename}: {error.strerror or error}"
    _log.exception("control method %s failed", method)
    return ErrorCode.INTERNAL, f"{type(error).__name__}: {error}"


class RuntimeHooks(Protocol):
    """What the runtime's methods need from the daemon (implemented by `Daemon`)."""

    def status(self) -> dict[str, Any]: ...

    def reload(self, timeout: float) -> dict[str, Any]: ...

    def shutdown(self) -> None: ...

    def scale(self, pool: str, size: int, asker: str = ...) -> dict[str, Any]: ...

    def effective_config(self) -> dict[str, Any]: ...


def stats_to_wire(stats: ActorStats) -> dict[str, Any]:
    return {
        "name": stats.name,
        "pool": stats.pool,
        "state": stats.state.value,
        "processed": stats.processed_total,
        "by_type": {t.name.lower(): n for t, n in stats.processed.items() if n},
        "errors": stats.errors,
        "restarts": stats.restarts,
        "mailbox_depth": stats.mailbox_depth,
        "mailbox_capacity": stats.mailbox_capacity,
        "native_thread_id": stats.native_thread_id,
        "busy_seconds": stats.busy_seconds,
        "handle_p50": stats.handle_time.quantile(0.5),
        "handle_p99": stats.handle_time.quantile(0.99),
        "commands": sorted(stats.commands),
    }


def _admin_command(payload: object) -> AdminCommand:
    if not isinstance(payload, Mapping) or not isinstance(payload.get("command"), str):
        raise InvalidArgument('a command payload is {"command": name, "args": {key: value}}')
    args = payload.get("args") or {}
    if not isinstance(args, Mapping):
        raise InvalidArgument("args: must be a map of names to plain values")
    checked: list[tuple[str, Scalar]] = []
    for key, value in args.items():
        if not isinstance(value, str | int | float | bool) and value is not None:
            raise InvalidArgument(f"args.{key}: must be a string, number, boolean or nil")
        checked.append((key, value))
    return AdminCommand(payload["command"], tuple(checked))


def _check_declared(recipient: str, command: str, accepted: frozenset[str]) -> None:
    # Before anything is delivered: an actor that takes every message for work (a pool
    # member) would crash on a command it does not know, and enough of them, sent in a
    # loop, would exceed its restart intensity and take the daemon down.
    if command not in accepted:
        known = f"it accepts: {', '.join(sorted(accepted))}" if accepted else "it accepts none"
        raise Refused(
            ErrorCode.BAD_REQUEST,
            f"{recipient} does not accept the command {command!r} ({known}); nothing was sent",
        )


def runtime_methods(system: ActorSystem, hooks: RuntimeHooks) -> dict[str, Method]:
    """The methods every actord serves, whatever application it hosts."""

    def ping(call: Call) -> str:
        return "pong"

    def status(call: Call) -> dict[str, Any]:
        return hooks.status()

    def actors(call: Call) -> list[dict[str, Any]]:
        return [stats_to_wire(s) for s in system.stats()]

    def send(call: Call) -> dict[str, Any]:
        # The recipient is an actor, a pool or one member (``pool#i``, as `actors` names
        # it); an unknown one is not_found, never a dead letter.
        recipient = param(call, 0, str, "recipient")
        kind = param(call, 1, str, "type")
        if kind == "ping":
            pong = system.ping(recipient, timeout=5.0)
            return {"actor": pong.actor, "native_thread_id": pong.native_thread_id}
        if kind != "command":
            raise InvalidArgument(f"type: must be 'command' or 'ping', got {kind!r}")
        command = _admin_command(param(call, 2, dict, "payload"))
        _check_declared(recipient, command.command, system.commands(recipient, timeout=5.0))
        system.tell(recipient, command, mtype=MessageType.COMMAND, sender="$control", timeout=5.0)
        return {"delivered": recipient, "command": command.command}

    def restart(call: Call) -> dict[str, Any]:
        name = param(call, 0, str, "actor")
        return {"actor": name, "members": system.restart(name)}

    def scale(call: Call) -> dict[str, Any]:
        # Answered at once with the plan; the members start off this thread, in steps.
        pool, size = param(call, 0, str, "pool"), param(call, 1, int, "size")
        return hooks.scale(pool, size, asker=f"uid {call.peer.uid} pid {call.peer.pid}")

    def reload(call: Call) -> dict[str, Any]:
        return hooks.reload(timeout=30.0)

    def shutdown(call: Call) -> dict[str, Any]:
        hooks.shutdown()
        return {"stopping": True}

    def config(call: Call) -> dict[str, Any]:
        return hooks.effective_config()

    return {
        "ping": ping,
        "status": status,
        "actors": actors,
        "send": send,
        "restart": restart,
        "scale": scale,
        "reload": reload,
        "shutdown": shutdown,
        "config": config,
    }
