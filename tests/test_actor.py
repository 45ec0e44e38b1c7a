"""Actor hooks, ActorRef (tell / ask / ping / stop), logging context and actor timers."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from actord import (
    Actor,
    ActorDead,
    ActorSystem,
    AskTimeout,
    BadPayload,
    DeadLetterReason,
    MailboxFull,
    Message,
    MessageType,
    ThreadChannel,
)
from actord.runtime.message import ControlKind

from .conftest import WAIT, Gate, Recorder, RecordingActor


def test_tell_delivers_in_order(system: ActorSystem, recorder: Recorder) -> None:
    ref = system.spawn(lambda: RecordingActor(recorder), "rec")
    for i in range(100):
        ref.tell(i)
    recorder.wait_count(100)
    assert recorder.payloads() == list(range(100))


def test_hooks_run_on_the_actor_thread_in_order(system: ActorSystem) -> None:
    events: list[tuple[str, str]] = []
    stopped = threading.Event()

    class Hooks(Actor):
        def on_start(self) -> None:
            events.append(("start", threading.current_thread().name))

        def handle(self, message: Message) -> None:
            events.append(("handle", threading.current_thread().name))

        def on_stop(self) -> None:
            events.append(("stop", threading.current_thread().name))
            stopped.set()

    ref = system.spawn(Hooks, "hooks")
    ref.tell(1)
    ref.stop(timeout=WAIT)
    assert stopped.is_set()
    assert events == [
        ("start", "actord:hooks"),
        ("handle", "actord:hooks"),
        ("stop", "actord:hooks"),
    ]


def test_ask_returns_the_reply_and_is_safe_from_many_threads(
    system: ActorSystem, recorder: Recorder
) -> None:
    ref = system.spawn(lambda: RecordingActor(recorder), "echo")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: ref.ask(("n", i), timeout=WAIT), range(200)))
    assert results == [("n", i) for i in range(200)]
    assert all(m.type is MessageType.COMMAND for _, m in recorder.handled)


def test_ask_timeout_then_late_reply_is_a_dead_letter(system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()
    ref = system.spawn(lambda: Gate(entered, release), "slow")
    with pytest.raises(AskTimeout):
        ref.ask("late", timeout=0.05)
    assert entered.wait(WAIT)
    release.set()
    # A ping is served after the slow message, so once it returns the late reply was made.
    ref.ping(timeout=WAIT)
    late = [d for d in system.channel.dead_letters() if d.reason is DeadLetterReason.LATE_REPLY]
    assert [d.message.payload for d in late] == ["late"]
    assert late[0].message.type is MessageType.RESPONSE


def test_ask_a_stopped_actor_raises_actor_dead(system: ActorSystem, recorder: Recorder) -> None:
    ref = system.spawn(lambda: RecordingActor(recorder), "gone")
    ref.stop(timeout=WAIT)
    assert not ref.alive
    with pytest.raises(ActorDead):
        ref.ask("hello", timeout=WAIT)


def test_handler_exception_reaches_the_asker(system: ActorSystem, recorder: Recorder) -> None:
    ref = system.spawn(lambda: RecordingActor(recorder), "crashy")
    with pytest.raises(RuntimeError, match="boom"):
        ref.ask("boom", timeout=WAIT)
    assert ref.ask("after", timeout=WAIT) == "after"  # restarted on the same mailbox


def test_mutable_payload_is_refused(system: ActorSystem, recorder: Recorder) -> None:
    ref = system.spawn(lambda: RecordingActor(recorder), "strict")
    with pytest.raises(BadPayload):
        ref.tell({"a": 1})
    with pytest.raises(BadPayload):
        ref.ask([1, 2], timeout=WAIT)


def test_send_blocks_while_full_and_times_out(system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()
    ref = system.spawn(lambda: Gate(entered, release), "narrow", capacity=2)
    ref.tell(0)
    assert entered.wait(WAIT)  # message 0 is in hand; the mailbox holds two more
    ref.tell(1)
    ref.tell(2)
    with pytest.raises(MailboxFull) as info:
        ref.tell(3, timeout=0.05)
    assert isinstance(info.value.message, Message)
    assert info.value.message.payload == 3
    blocked_sender_done = threading.Event()

    def blocked_sender() -> None:
        ref.tell(4)  # blocks until the actor makes room
        blocked_sender_done.set()

    sender = threading.Thread(target=blocked_sender)
    sender.start()
    assert not blocked_sender_done.wait(0.05)
    release.set()
    sender.join(WAIT)
    assert blocked_sender_done.is_set()


def test_ping_answers_from_the_loop_even_behind_a_full_mailbox(system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()
    ref = system.spawn(lambda: Gate(entered, release), "busy", capacity=1)
    ref.tell(0)
    assert entered.wait(WAIT)
    ref.tell(1)  # the mailbox is full now
    pong_box: list[Any] = []
    pinger = threading.Thread(target=lambda: pong_box.append(ref.ping(timeout=WAIT)))
    pinger.start()
    release.set()
    pinger.join(WAIT)
    stats = ref.stats()[0]
    assert pong_box[0].actor == "busy"
    assert pong_box[0].native_thread_id == stats.native_thread_id


def test_log_records_carry_actor_and_correlation_id(
    system: ActorSystem, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("tests.actor")

    class Logs(Actor):
        def handle(self, message: Message) -> None:
            log.warning("handling %s", message.payload)
            self.reply(message, "ok")

    ref = system.spawn(Logs, "logger")
    with caplog.at_level(logging.WARNING, logger="tests.actor"):
        ref.ask("x", timeout=WAIT)
        log.warning("outside")
    inside, outside = caplog.records
    assert inside.actor == "logger"  # type: ignore[attr-defined]
    assert inside.correlation_id.startswith("$ask:")  # type: ignore[attr-defined]
    assert outside.actor == "-"  # type: ignore[attr-defined]
    assert outside.correlation_id == "-"  # type: ignore[attr-defined]


def test_failure_is_logged_with_traceback_and_actor(
    system: ActorSystem, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    ref = system.spawn(lambda: RecordingActor(recorder), "fails")
    with caplog.at_level(logging.ERROR, logger="actord"):
        ref.tell("boom")
        ref.ask("sync", timeout=WAIT)
    failures = [r for r in caplog.records if r.exc_info]
    assert failures, "the failure was not logged with its traceback"
    assert failures[0].actor == "fails"  # type: ignore[attr-defined]


def test_actor_timer_once_and_repeating_with_cancel(system: ActorSystem) -> None:
    ticks: list[Any] = []
    three = threading.Event()
    after_cancel = threading.Event()

    class Ticker(Actor):
        def on_start(self) -> None:
            self.timer = self.schedule(0.01, "tick", interval=0.01)
            self.schedule(0.0, "once")

        def handle(self, message: Message) -> None:
            ticks.append(message.payload)
            if message.payload == "tick" and ticks.count("tick") == 3:
                self.timer.cancel()
                # Posted after any tick already in flight (one timer thread, in deadline
                # order), so ticks fired before the cancel may still come before it.
                self.schedule(0.05, "marker")
                three.set()
            if message.payload == "marker":
                self.schedule(0.05, "marker2")  # five intervals later
            if message.payload == "marker2":
                after_cancel.set()

    system.spawn(Ticker, "ticker")
    assert three.wait(WAIT)
    assert after_cancel.wait(WAIT)
    assert ticks.count("once") == 1
    assert ticks.count("tick") >= 3  # more if the actor fell behind a busy timer
    # A live timer would have fired about five times between the markers: none after cancel.
    assert ticks[ticks.index("marker") :] == ["marker", "marker2"]


def test_system_schedule_to_another_actor(system: ActorSystem, recorder: Recorder) -> None:
    system.spawn(lambda: RecordingActor(recorder), "target")
    timer = system.schedule(0.01, "target", "hello")
    recorder.wait_count(1)
    assert recorder.handled[0][1].sender == "$timer"
    assert recorder.payloads() == ["hello"]
    assert not timer.active or timer.interval is None


def test_actor_can_stop_itself(system: ActorSystem) -> None:
    stopped = threading.Event()

    class Quitter(Actor):
        def handle(self, message: Message) -> None:
            self.ref.stop()

        def on_stop(self) -> None:
            stopped.set()

    ref = system.spawn(Quitter, "quitter")
    ref.tell("bye")
    assert stopped.wait(WAIT)
    assert not ref.alive


def test_a_pending_ping_fails_at_once_when_the_actor_is_removed(system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()
    ref = system.spawn(lambda: Gate(entered, release), "wedged")
    ref.tell(0)
    assert entered.wait(WAIT)
    pinger_error: list[BaseException] = []

    def ping() -> None:
        try:
            ref.ping(timeout=WAIT)
        except ActorDead as error:
            pinger_error.append(error)

    pinger = threading.Thread(target=ping)
    pinger.start()
    system.channel.unregister("wedged")  # the ping is still in the control lane
    pinger.join(WAIT)
    release.set()
    assert pinger_error, "the pinger waited out its timeout instead of hearing ActorDead"
    assert system.channel.size("wedged") == (0, 0)


def test_what_waits_for_a_member_that_left_becomes_a_dead_letter(channel: ThreadChannel) -> None:
    # A pool member's own lane (an operator's command to ``pool#i``) is never lost silently:
    # its leftovers become dead letters when its thread exits, or when the pool's mailbox goes.
    channel.register("p", capacity=4)
    first, second = channel.inbox("p", "p#0"), channel.inbox("p", "p#1")
    first.tell("own", sender="$test", mtype=MessageType.COMMAND)
    first.control(ControlKind.RESTART)  # meaningless once p#0 is gone: dropped
    assert first.leave() == 1
    first.tell("late", sender="$test", mtype=MessageType.COMMAND)  # p#0 has left: at once
    with pytest.raises(ActorDead):  # not a wait for a member that will never answer
        channel.ask_control("p", ControlKind.PING, timeout=WAIT, member="p#0")
    second.tell("queued", sender="$test", mtype=MessageType.COMMAND)
    assert channel.unregister("p") == 1  # the drain takes a member's own lane too
    letters = [(d.message.payload, d.message.recipient, d.reason) for d in channel.dead_letters()]
    assert letters == [
        ("own", "p#0", DeadLetterReason.STOPPED),
        ("late", "p#0", DeadLetterReason.STOPPED),
        ("queued", "p#1", DeadLetterReason.STOPPED),
    ]


def test_tell_self_from_another_thread_reaches_that_member_alone(
    system: ActorSystem, recorder: Recorder
) -> None:
    made: list[RecordingActor] = []

    def make() -> RecordingActor:
        actor = RecordingActor(recorder)
        made.append(actor)
        return actor

    system.spawn_pool(make, "pool", 3)
    system.ping("pool#0")
    system.ping("pool#1")
    system.ping("pool#2")
    target = next(a for a in made if a.member == "pool#1")
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.extend(target.tell_self(n) for n in range(5)))
    thread.start()
    thread.join(WAIT)
    assert results == [True] * 5
    recorder.wait_count(5)
    assert [(who, m.payload) for who, m in recorder.handled] == [("pool#1", n) for n in range(5)]
    assert all(m.sender == "pool#1" for _, m in recorder.handled)
