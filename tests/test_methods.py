"""Control methods in-process: the dispatcher's error codes and the runtime's methods."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from actord import (
    Actor,
    ActorSystem,
    AdminCommand,
    AskTimeout,
    InvalidArgument,
    Message,
    MessageType,
    RestartPolicy,
    UnknownActor,
)
from actord.control.methods import Dispatcher, runtime_methods
from actord.control.protocol import ProtocolError, Request
from actord.control.server import Call, Peer
from actord.runtime.errors import ErrorCode, Refused
from actord.runtime.scaler import PoolScaler

from .conftest import WAIT, Gate, Recorder, RecordingActor
from .conftest import Call as CallThread


def _call(method: str, *params: Any) -> Call:
    return Call(Request(1, method, params), Peer(1, 0, 0), lambda data: None)


class _Hooks:
    def __init__(self, scaler: PoolScaler | None = None) -> None:
        self.shutdowns = 0
        self.reloads: list[float] = []  # the timeout of each reload asked for
        self.scaler = scaler

    def scale(self, pool: str, size: int, asker: str = "") -> dict[str, Any]:
        assert self.scaler is not None, "this test resizes nothing"
        assert asker == "uid 0 pid 1"  # who asked, for the daemon's log line
        return self.scaler.request(pool, size).to_wire()

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


class _Flusher(RecordingActor):
    """Records what it gets, and declares the admin commands it accepts."""

    commands: ClassVar[frozenset[str]] = frozenset({"level", "flush"})


def test_send_delivers_a_typed_admin_command(system: ActorSystem, recorder: Recorder) -> None:
    system.spawn(lambda: _Flusher(recorder), "target")
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


@pytest.mark.parametrize(
    ("actor", "says"),
    [(RecordingActor, "it accepts none"), (_Flusher, "it accepts: flush, level")],
)
def test_send_refuses_a_command_the_actor_does_not_declare(
    system: ActorSystem, recorder: Recorder, actor: type[RecordingActor], says: str
) -> None:
    ref = system.spawn(lambda: actor(recorder), "target")
    dispatch = Dispatcher(runtime_methods(system, _Hooks()))
    with pytest.raises(Refused) as raised:
        dispatch(_call("send", "target", "command", {"command": "frob", "args": {"x": 1}}))
    assert raised.value.code is ErrorCode.BAD_REQUEST
    assert "'frob'" in str(raised.value) and says in str(raised.value)
    ref.tell("marker")  # behind anything the refusal might have let through
    recorder.wait_count(1)
    assert recorder.payloads() == ["marker"]


def test_actors_lists_the_commands_each_accepts(system: ActorSystem, recorder: Recorder) -> None:
    system.spawn(lambda: _Flusher(recorder), "flusher")
    system.spawn_pool(lambda: RecordingActor(recorder), "plain", 2)
    dispatch = Dispatcher(runtime_methods(system, _Hooks()))
    # Known once each member's first instance is made: these wait for that.
    assert system.commands("flusher", timeout=WAIT) == {"flush", "level"}
    assert system.commands("plain", timeout=WAIT) == frozenset()
    listed = {a["name"]: a["commands"] for a in dispatch(_call("actors"))}
    assert listed == {"flusher": ["flush", "level"], "plain#0": [], "plain#1": []}


def test_commands_are_known_once_the_first_instance_is_made(
    system: ActorSystem, recorder: Recorder
) -> None:
    made = threading.Event()

    def slow() -> _Flusher:
        assert made.wait(WAIT)
        return _Flusher(recorder)

    system.spawn(slow, "slow")
    assert system.commands("slow", timeout=0) == frozenset()  # not known yet: none accepted
    asking = CallThread(lambda: system.commands("slow", timeout=WAIT))
    asking.start()
    made.set()
    asking.finish()
    assert asking.result == {"flush", "level"}


class _Held:
    """Which member took "hold", set once it holds it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.member = ""


class _HoldingFlusher(_Flusher):
    """A `_Flusher` that, on "hold", says which member it is and waits for `release`."""

    def __init__(self, recorder: Recorder, held: _Held, release: threading.Event) -> None:
        super().__init__(recorder)
        self.held = held
        self.release = release

    def handle(self, message: Message) -> None:
        if message.payload == "hold":
            self.held.member = self.member
            self.held.entered.set()
            assert self.release.wait(WAIT)
        else:
            super().handle(message)


def test_pool_members_answer_to_the_names_actors_prints(
    system: ActorSystem, recorder: Recorder
) -> None:
    held, release = _Held(), threading.Event()
    pool = system.spawn_pool(lambda: _HoldingFlusher(recorder, held, release), "pool", 3)
    dispatch = Dispatcher(runtime_methods(system, _Hooks()))
    members = [a["name"] for a in dispatch(_call("actors"))]
    assert members == ["pool#0", "pool#1", "pool#2"]
    for member in members:
        assert dispatch(_call("send", member, "ping"))["actor"] == member
    # A command for one member goes to that member, never to whichever is free: here the
    # one busy on "hold" while the others wait for work.
    pool.tell("hold")
    assert held.entered.wait(WAIT)
    for _ in range(5):
        sent = dispatch(_call("send", held.member, "command", {"command": "flush"}))
        assert sent == {"delivered": held.member, "command": "flush"}
    release.set()
    recorder.wait_count(5)
    assert {member for member, _ in recorder.handled} == {held.member}
    # A member's restart restarts that member alone (its ping is answered after it).
    assert dispatch(_call("restart", "pool#1")) == {"actor": "pool#1", "members": 1}
    assert dispatch(_call("send", "pool#1", "ping"))["actor"] == "pool#1"
    restarts = {s.name: s.restarts for s in system.lookup("pool").stats()}
    assert restarts == {"pool#0": 0, "pool#1": 1, "pool#2": 0}
    assert dispatch(_call("restart", "pool")) == {"actor": "pool", "members": 3}


@pytest.mark.parametrize("name", ["pool#3", "pool#", "single#0", "ghost#0", "pool#0#0"])
def test_a_name_no_member_has_is_not_found(
    system: ActorSystem, recorder: Recorder, name: str
) -> None:
    system.spawn_pool(lambda: _Flusher(recorder), "pool", 2)
    system.spawn(lambda: _Flusher(recorder), "single")
    dispatch = Dispatcher(runtime_methods(system, _Hooks()))
    for params in ((name, "ping"), (name, "command", {"command": "flush"})):
        with pytest.raises(Refused) as raised:
            dispatch(_call("send", *params))
        assert raised.value.code is ErrorCode.NOT_FOUND, params
    with pytest.raises(Refused) as raised:
        dispatch(_call("restart", name))
    assert raised.value.code is ErrorCode.NOT_FOUND
    assert recorder.handled == []


def test_a_member_with_a_full_lane_is_busy(system: ActorSystem, recorder: Recorder) -> None:
    entered, release = threading.Event(), threading.Event()

    class _GatedFlusher(Gate):
        commands: ClassVar[frozenset[str]] = frozenset({"flush"})

    ref = system.spawn_pool(lambda: _GatedFlusher(entered, release), "pool", 1, capacity=2)
    ref.tell("hold")
    assert entered.wait(WAIT)
    dispatch = Dispatcher(runtime_methods(system, _Hooks()))
    for _ in range(2):
        dispatch(_call("send", "pool#0", "command", {"command": "flush"}))
    with pytest.raises(Refused) as raised:
        dispatch(_call("send", "pool#0", "command", {"command": "flush"}))
    assert raised.value.code is ErrorCode.BUSY
    release.set()
    assert ref.ask("after", timeout=WAIT) == "after"
    # The two commands, and the ask (a COMMAND request too).
    assert ref.stats()[0].processed[MessageType.COMMAND] == 3


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


@pytest.fixture
def scaler(system: ActorSystem) -> Iterator[PoolScaler]:
    scaler = PoolScaler(system, max_size=16, step=2)
    scaler.start()
    try:
        yield scaler
    finally:
        scaler.stop(WAIT)


def test_scale_answers_with_a_plan_grows_in_steps_and_refuses_a_bad_size(
    system: ActorSystem, recorder: Recorder, scaler: PoolScaler
) -> None:
    system.spawn_pool(lambda: RecordingActor(recorder), "pool", 2)
    dispatch = Dispatcher(runtime_methods(system, _Hooks(scaler)))
    plan = dispatch(_call("scale", "pool", 7))
    assert plan == {"pool": "pool", "size": 7, "from": 2, "step": 2}
    assert scaler.settled(WAIT)
    assert len(system.lookup("pool").stats()) == 7
    assert dispatch(_call("scale", "pool", 3))["from"] == 7  # a shrink
    assert scaler.settled(WAIT)
    assert system.size("pool") == 3
    for size, code in ((0, "bad_request"), (17, "bad_request"), ("3", "bad_request")):
        with pytest.raises(Refused) as raised:
            dispatch(_call("scale", "pool", size))
        assert raised.value.code.value == code
    with pytest.raises(Refused) as raised:
        dispatch(_call("scale", "pool", 17))
    assert "daemon.max_pool_size" in str(raised.value) and "16" in str(raised.value)
    with pytest.raises(Refused) as raised:
        dispatch(_call("scale", "nope", 3))
    assert raised.value.code is ErrorCode.NOT_FOUND


class _SlowStart(Actor):
    """A member whose start waits for the test's permit; `starting` counts those waiting."""

    def __init__(self, gate: threading.Semaphore, starting: list[int], cond: threading.Condition):
        self.gate, self.starting, self.cond = gate, starting, cond

    def on_start(self) -> None:
        with self.cond:
            self.starting[0] += 1
            self.starting[1] = max(self.starting[1], self.starting[0])
            self.cond.notify_all()
        assert self.gate.acquire(timeout=WAIT)
        with self.cond:
            self.starting[0] -= 1

    def handle(self, message: Message) -> None:
        """Nothing to do."""


def test_a_growth_never_starts_more_than_a_step_at_once(system: ActorSystem) -> None:
    gate = threading.Semaphore(1)  # the first member starts at once
    starting, cond = [0, 0], threading.Condition()  # starting now, the most at once
    system.spawn_pool(lambda: _SlowStart(gate, starting, cond), "slow", 1)
    system.lookup("slow").ping(timeout=WAIT)  # started
    scaler = PoolScaler(system, max_size=64, step=3)
    scaler.start()
    try:
        assert scaler.request("slow", 13).current == 1  # answered before any start
        with cond:
            assert cond.wait_for(lambda: starting[0] == 3, WAIT)
        # The first step's members wait to start: the pool has not grown past them.
        assert system.size("slow") == 4
        for _ in range(12):
            gate.release()
        assert scaler.settled(WAIT)
    finally:
        scaler.stop(WAIT)
    assert len(system.lookup("slow").stats()) == 13
    assert starting[1] <= 3, starting


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


def test_an_audit_line_names_the_peer_the_arguments_and_the_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def submit(call: Call) -> dict[str, Any]:
        raise Refused(ErrorCode.CONFLICT, "taken")

    dispatcher = Dispatcher(
        {"submit": submit, "status": lambda call: {}, "scale": lambda call: {"pool": "p"}}
    )
    long = "/srv/actord/out/" + "d" * 40 + "/result.jsonl"
    job = {"kind": "fft", "output": long, "options": {"seed": 0}, "overwrite": False}
    with caplog.at_level(logging.INFO, logger="actord.audit"):
        with pytest.raises(Refused):
            dispatcher(Call(Request(1, "submit", (job,)), Peer(77, 1000, 1000), lambda d: None))
        dispatcher(Call(Request(2, "status", ()), Peer(78, 1000, 1000), lambda d: None))
        dispatcher(Call(Request(3, "scale", ("p", 3)), Peer(79, 0, 0), lambda d: None))
    refused, scaled = (r.getMessage() for r in caplog.records)
    assert refused == (
        "submit by uid 1000 pid 77 (kind=fft output=…/result.jsonl options=seed=0): "
        "refused conflict: taken"
    )
    assert scaled == "scale by uid 0 pid 79 (p 3): ok"  # and no line for the status read


def test_the_scaler_outlives_a_thread_it_could_not_start(
    system: ActorSystem, recorder: Recorder, scaler: PoolScaler, monkeypatch: pytest.MonkeyPatch
) -> None:
    system.spawn_pool(lambda: RecordingActor(recorder), "pool", 1)
    resize = system.resize
    failures = [RuntimeError("can't start new thread")]

    def resize_once_failing(pool: str, size: int) -> None:
        if failures:
            raise failures.pop()
        resize(pool, size)

    monkeypatch.setattr(system, "resize", resize_once_failing)
    scaler.request("pool", 3)
    assert scaler.settled(WAIT)  # abandoned, and said so in the log
    assert system.size("pool") == 1
    scaler.request("pool", 3)  # the scaler's thread is still there to take it
    assert scaler.settled(WAIT)
    assert system.size("pool") == 3


def test_a_cancelled_scale_takes_no_step_after_the_one_under_way(system: ActorSystem) -> None:
    # A reload that sets a pool's size cancels a scale in progress first: no later step of
    # the scale may undo the reload's size.
    gate = threading.Semaphore(1)
    starting, cond = [0, 0], threading.Condition()
    system.spawn_pool(lambda: _SlowStart(gate, starting, cond), "slow", 1)
    system.lookup("slow").ping(timeout=WAIT)
    scaler = PoolScaler(system, max_size=64, step=3)
    scaler.start()
    try:
        scaler.request("slow", 13)
        with cond:
            assert cond.wait_for(lambda: starting[0] == 3, WAIT)  # a step is under way
        assert scaler.pending() == ("slow",)
        assert not scaler.cancel("slow", 0.05)  # it waits for that step to end...
        for _ in range(3):
            gate.release()
        assert scaler.cancel("slow", WAIT)  # ...which then does
        system.resize("slow", 2)  # what the reload does next
        assert scaler.settled(WAIT) and scaler.pending() == ()
    finally:
        scaler.stop(WAIT)
    assert system.size("slow") == 2
