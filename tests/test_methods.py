"""Control methods in-process: the dispatcher's error codes and the runtime's methods."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from actord import (
    ActorSystem,
    AdminCommand,
    AskTimeout,
    InvalidArgument,
    MessageType,
    RestartPolicy,
    UnknownActor,
)
from actord.control.methods import Dispatcher, runtime_methods
from actord.control.protocol import ProtocolError, Request
from actord.control.server import Call, Peer
from actord.runtime.errors import ErrorCode, Refused

from .conftest import WAIT, Gate, Recorder, RecordingActor


def _call(method: str, *params: Any) -> Call:
    return Call(Request(1, method, params), Peer(1, 0, 0), lambda data: None)


class _Hooks:
    def __init__(self) -> None:
        self.shutdowns = 0
        self.reloads: list[float] = []  # the timeout of each reload asked for

    def status(self) -> dict[str, Any]:
        return {"pid": 1}

    def reload(self, timeout: float) -> dict[str, Any]:
        self.reloads.append(timeout)
        return {"generation": 1 + len(self.reloads), "restart_needed": []}

    def shutdown(self) -> None:
        self.shutdowns += 1


def _raiser(error: Exception) -> Any:
    def method(call: Call) -> Any:
        raise error

    return method


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("size: must be positive"), ErrorCode.BAD_REQUEST),
        (UnknownActor("no actor 'x'"), ErrorCode.NOT_FOUND),
        (AskTimeout("no reply"), ErrorCode.BUSY),
        (ProtocolError(ErrorCode.INVALID_PATH, "outside"), ErrorCode.INVALID_PATH),
        (Refused(ErrorCode.CONFLICT, "taken"), ErrorCode.CONFLICT),
        # A path that changed while it was resolved: answered, not a closed connection.
        (NotADirectoryError(20, "Not a directory", "/srv/in/d/x.log"), ErrorCode.INVALID_PATH),
        (PermissionError(13, "Permission denied", "/srv/in/x.npy"), ErrorCode.INVALID_PATH),
    ],
)
def test_failures_become_stable_codes(error: Exception, code: ErrorCode) -> None:
    dispatcher = Dispatcher({"m": _raiser(error)})
    with pytest.raises(Refused) as raised:  # one family: what the server answers with
        dispatcher(_call("m"))
    assert raised.value.code is code
    assert dispatcher.snapshot() == {("m", code.value): 1, ("m", ""): 0}  # known: zeros too


@pytest.mark.parametrize("broken", [BrokenPipeError(32, "Broken pipe"), ConnectionResetError()])
def test_a_broken_connection_is_left_to_the_server(broken: OSError) -> None:
    # The peer went away (a watcher): nothing to answer; the server closes the connection.
    dispatcher = Dispatcher({"watch": _raiser(broken)})
    with pytest.raises(type(broken)):
        dispatcher(_call("watch"))


def test_an_unexpected_failure_is_logged_and_answered_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher = Dispatcher({"m": _raiser(KeyError("oops"))})
    with caplog.at_level(logging.ERROR), pytest.raises(Refused) as raised:
        dispatcher(_call("m"))
    assert raised.value.code is ErrorCode.INTERNAL and "KeyError" in str(raised.value)
    assert any(r.exc_info for r in caplog.records)  # with its traceback


def test_an_unknown_method_lists_the_known_ones() -> None:
    dispatcher = Dispatcher({"ping": lambda call: "pong"})
    with pytest.raises(Refused, match="known: ping") as raised:
        dispatcher(_call("pnig"))
    assert raised.value.code is ErrorCode.UNKNOWN_METHOD
    assert dispatcher(_call("ping")) == "pong"


def test_send_delivers_a_typed_admin_command(system: ActorSystem, recorder: Recorder) -> None:
    system.spawn(lambda: RecordingActor(recorder), "target")
    dispatch = Dispatcher(runtime_methods(system, _Hooks()))
    payload = {"command": "flush", "args": {"level": 2, "force": True}}
    assert dispatch(_call("send", "target", "command", payload))["delivered"] == "target"
    recorder.wait_count(1)
    _, message = recorder.handled[0]
    assert message.type is MessageType.COMMAND
    assert message.payload == AdminCommand("flush", (("level", 2), ("force", True)))
    assert message.payload.arg("level") == 2


@pytest.mark.parametrize(
    ("params", "code"),
    [
        (("ghost", "command", {"command": "x"}), ErrorCode.NOT_FOUND),
        (("target", "shout", {}), ErrorCode.BAD_REQUEST),
        (("target", "command", {"args": {}}), ErrorCode.BAD_REQUEST),
        (("target", "command", {"command": "x", "args": {"a": [1]}}), ErrorCode.BAD_REQUEST),
        (("target",), ErrorCode.BAD_REQUEST),
        ((5, "ping"), ErrorCode.BAD_REQUEST),
    ],
)
def test_send_refuses_what_it_cannot_deliver(
    system: ActorSystem, recorder: Recorder, params: tuple[Any, ...], code: ErrorCode
) -> None:
    system.spawn(lambda: RecordingActor(recorder), "target")
    dispatch = Dispatcher(runtime_methods(system, _Hooks()))
    with pytest.raises(Refused) as raised:
        dispatch(_call("send", *params))
    assert raised.value.code is code
    assert recorder.handled == []


def test_ping_through_send_reaches_the_receive_loop(
    system: ActorSystem, recorder: Recorder
) -> None:
    system.spawn(lambda: RecordingActor(recorder), "target")
    dispatch = Dispatcher(runtime_methods(system, _Hooks()))
    assert dispatch(_call("send", "target", "ping"))["actor"] == "target"


def test_restart_replaces_the_instance_and_keeps_what_is_queued(system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()
    ref = system.spawn(lambda: Gate(entered, release), "gate")
    ref.tell("first")
    assert entered.wait(WAIT)
    for i in range(5):
        ref.tell(i)
    dispatch = Dispatcher(runtime_methods(system, _Hooks()))
    assert dispatch(_call("restart", "gate")) == {"actor": "gate", "members": 1}
    release.set()
    assert ref.ask("after", timeout=WAIT) == "after"  # served by the fresh instance
    stats = ref.stats()[0]
    assert stats.restarts == 1 and stats.errors == 0
    assert stats.processed_total >= 7  # nothing queued was lost


def test_scale_resizes_a_pool_and_refuses_a_bad_size(
    system: ActorSystem, recorder: Recorder
) -> None:
    system.spawn_pool(lambda: RecordingActor(recorder), "pool", 2)
    dispatch = Dispatcher(runtime_methods(system, _Hooks()))
    assert dispatch(_call("scale", "pool", 4)) == {"pool": "pool", "size": 4}
    assert len(system.lookup("pool").stats()) == 4
    for size in (0, 1000, "3", True):
        with pytest.raises(Refused) as raised:
            dispatch(_call("scale", "pool", size))
        assert raised.value.code is ErrorCode.BAD_REQUEST


def test_shutdown_and_reload_go_to_the_daemon(system: ActorSystem) -> None:
    hooks = _Hooks()
    dispatch = Dispatcher(runtime_methods(system, hooks))
    assert dispatch(_call("shutdown")) == {"stopping": True}
    assert hooks.shutdowns == 1
    assert hooks.reloads == []  # the shutdown did not reload
    assert dispatch(_call("reload")) == {"generation": 2, "restart_needed": []}
    assert dispatch(_call("reload")) == {"generation": 3, "restart_needed": []}
    assert len(hooks.reloads) == 2 and all(t > 0 for t in hooks.reloads)  # bounded waits


def test_restart_is_refused_for_an_actor_whose_state_it_would_lose(
    system: ActorSystem, recorder: Recorder
) -> None:
    system.spawn(lambda: RecordingActor(recorder), "stateful", policy=RestartPolicy(max_restarts=0))
    dispatch = Dispatcher(runtime_methods(system, _Hooks()))
    with pytest.raises(Refused, match="restart the daemon instead") as raised:
        dispatch(_call("restart", "stateful"))
    assert raised.value.code is ErrorCode.BAD_REQUEST
    assert system.lookup("stateful").stats()[0].restarts == 0


def test_a_stateful_actor_that_crashes_escalates_at_once(system: ActorSystem) -> None:
    recorder = Recorder()
    ref = system.spawn(
        lambda: RecordingActor(recorder), "stateful", policy=RestartPolicy(max_restarts=0)
    )
    ref.tell("boom")
    assert system.escalated.wait(WAIT)
    assert system.escalations[0].actor == "stateful"
