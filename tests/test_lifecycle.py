"""Lifecycle regressions: a stop reaches blocked actors, nothing restarts or escalates once
stopping, an escalated actor ends like a stopped one, per-member control, cells hold their
mailbox (not its name), stop joins every thread and names what the stuck ones hold, no spawn
after the stop began, publish counts deliveries, a full mailbox during an ask is AskTimeout.

Every test synchronises on events, futures and joins with timeouts; none sleeps.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import actord.runtime.errors as actord_errors
import actord.runtime.system
from actord import (
    Actor,
    ActorDead,
    ActorSystem,
    AskTimeout,
    Control,
    ControlKind,
    DeadLetter,
    DeadLetterReason,
    MailboxFull,
    Message,
    MessageType,
    RestartPolicy,
    StopTimeout,
    UnknownActor,
)
from actord.runtime.mailbox import Mailbox

from .conftest import WAIT, Call, Recorder, RecordingActor

PROMPT = 2.0  # a stop that the runtime can carry out at once must be done well within this


class Journal:
    """Thread-safe list of events with a condition to wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: list[tuple[Any, ...]] = []

    def add(self, *item: Any) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[list[tuple[Any, ...]]], bool]) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: predicate(self.items), WAIT)
            assert ok, f"condition not met within {WAIT}s: {self.items}"

    def snapshot(self) -> list[tuple[Any, ...]]:
        with self.cond:
            return list(self.items)


class Hold(Actor):
    """Enters handle, says so, and blocks until `release` (ignoring stop requests); then
    records the message and answers a request with its payload."""

    def __init__(
        self,
        entered: threading.Event,
        release: threading.Event,
        recorder: Recorder | None = None,
    ) -> None:
        self.entered = entered
        self.release = release
        self.recorder = recorder

    def handle(self, message: Message) -> None:
        self.entered.set()
        self.release.wait(WAIT)
        if self.recorder is not None:
            self.recorder.add(self.member, message)
        if message.correlation_id is not None:
            self.reply(message, message.payload)


def letters(system: ActorSystem, recipient: str) -> list[DeadLetter]:
    return [d for d in system.channel.dead_letters() if d.message.recipient == recipient]


def actor_threads(member: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"actord:{member}" and t.is_alive()]


# -- 1, 2: an immediate stop reaches an actor blocked in a send or an ask --------------------


class Pusher(Actor):
    """Forwards each message to `target` (a blocking send); on_stop says it ran."""

    def __init__(self, sending: threading.Event, stopped: threading.Event) -> None:
        self.sending = sending
        self.stopped = stopped

    def handle(self, message: Message) -> None:
        self.sending.set()
        self.send("sink", ("pushed", message.payload))

    def on_stop(self) -> None:
        self.stopped.set()


def test_stop_reaches_an_actor_blocked_in_a_send_to_a_full_mailbox(
    system: ActorSystem, recorder: Recorder
) -> None:
    sink_entered, sink_release = threading.Event(), threading.Event()
    sink = system.spawn(lambda: Hold(sink_entered, sink_release, recorder), "sink", capacity=1)
    sending, stopped = threading.Event(), threading.Event()
    pusher = system.spawn(lambda: Pusher(sending, stopped), "pusher")
    try:
        sink.tell("s1")
        assert sink_entered.wait(WAIT)  # sink holds s1 ...
        sink.tell("s2")  # ... and its one slot is taken: the mailbox is full
        pusher.tell("go")
        assert sending.wait(WAIT)  # the pusher is (about to be) blocked in its send

        began = time.monotonic()
        pusher.stop(graceful=False, timeout=PROMPT)  # no StopTimeout
        assert time.monotonic() - began < PROMPT
        assert not sink_release.is_set()  # it ended while the sink was still held
        assert stopped.is_set()  # on_stop ran
        assert system.channel.depth("sink") == 1  # the blocked send put nothing in

        (letter,) = letters(system, "pusher")
        assert letter.message.payload == "go"
        assert letter.reason is DeadLetterReason.STOPPED  # a stop, not a failure
        (stats,) = pusher.stats()
        assert (stats.errors, stats.restarts) == (0, 0)
    finally:
        sink_release.set()
    assert sink.ask("sync", timeout=WAIT) == "sync"
    assert recorder.payloads() == ["s1", "s2", "sync"]  # never the pusher's message


class Asker(Actor):
    """Asks `mute` for each message it gets (mute never answers while held)."""

    def __init__(self, asking: threading.Event, stopped: threading.Event) -> None:
        self.asking = asking
        self.stopped = stopped

    def handle(self, message: Message) -> None:
        self.asking.set()
        self.ask("mute", message.payload, timeout=30.0)

    def on_stop(self) -> None:
        self.stopped.set()


def test_stop_reaches_an_actor_blocked_in_an_ask(system: ActorSystem) -> None:
    mute_entered, mute_release = threading.Event(), threading.Event()
    system.spawn(lambda: Hold(mute_entered, mute_release), "mute")
    asking, stopped = threading.Event(), threading.Event()
    asker = system.spawn(lambda: Asker(asking, stopped), "asker")
    try:
        asker.tell("question")
        assert asking.wait(WAIT)
        assert mute_entered.wait(WAIT)  # the request is in mute's hands: the ask waits

        began = time.monotonic()
        asker.stop(graceful=False, timeout=PROMPT)  # no StopTimeout
        assert time.monotonic() - began < PROMPT
        assert stopped.is_set()

        (letter,) = letters(system, "asker")
        assert letter.message.payload == "question"
        assert letter.reason is DeadLetterReason.STOPPED
        (stats,) = asker.stats()
        assert (stats.errors, stats.restarts) == (0, 0)
    finally:
        mute_release.set()


# -- 3: sends from on_stop once the channel has closed ----------------------------------


def test_sends_from_on_stop_after_the_channel_closed_become_dead_letters(
    system: ActorSystem, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # A request nobody answers: the channel's close fails it, which tells us the channel closed.
    system.channel.register("nobody")
    closed = threading.Event()
    unanswered = system.channel.request("nobody", "?", sender="$test")
    unanswered.add_done_callback(lambda _: closed.set())
    finished = threading.Event()

    class Farewell(Actor):
        def on_stop(self) -> None:
            closed.wait(WAIT)  # on_stop outlives the stop deadline: the channel closes
            self.send("peer", "goodbye")
            finished.set()

    system.spawn(Farewell, "farewell")
    system.spawn(lambda: RecordingActor(recorder), "peer")
    stop_error: StopTimeout | None = None
    try:
        system.stop(graceful=False, timeout=0.2)
    except StopTimeout as error:
        stop_error = error

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert closed.is_set()
    assert finished.is_set()  # the rest of on_stop ran
    (letter,) = letters(system, "peer")
    assert letter.message.payload == "goodbye"
    assert letter.reason is DeadLetterReason.STOPPED
    assert stop_error is None  # on_stop finished within the final join
    assert recorder.payloads() == []


# -- 4: no restart and no escalation once stopping ----------------------------------------


class FailsOnCue(Actor):
    """Holds its first message until `go`, then raises."""

    def __init__(self, entered: threading.Event, go: threading.Event, starts: Journal) -> None:
        self.entered = entered
        self.go = go
        self.starts = starts

    def on_start(self) -> None:
        self.starts.add(self.member)

    def handle(self, message: Message) -> None:
        self.entered.set()
        self.go.wait(WAIT)
        raise RuntimeError(f"{self.member} failed while the system stops")


class Cue(Actor):
    """Its on_stop sets `go`: the first thing a graceful system stop does (spawned last)."""

    def __init__(self, go: threading.Event) -> None:
        self.go = go

    def on_stop(self) -> None:
        self.go.set()


def test_a_failure_during_the_stop_neither_restarts_nor_escalates(system: ActorSystem) -> None:
    go = threading.Event()
    starts = Journal()
    stateful_entered, retrying_entered = threading.Event(), threading.Event()
    stateful = system.spawn(
        lambda: FailsOnCue(stateful_entered, go, starts),
        "stateful",
        policy=RestartPolicy(max_restarts=0),  # a STATEFUL-like policy: escalates at once
    )
    retrying = system.spawn(lambda: FailsOnCue(retrying_entered, go, starts), "retrying")
    system.spawn(lambda: Cue(go), "cue")
    try:
        stateful.tell("work")
        retrying.tell("work")
        assert stateful_entered.wait(WAIT)
        assert retrying_entered.wait(WAIT)
        system.stop(timeout=WAIT)  # cue stops first and lets both fail
    finally:
        go.set()

    assert system.escalations == []
    assert not system.escalated.is_set()
    assert [s.restarts for s in stateful.stats()] == [0]
    assert [s.restarts for s in retrying.stats()] == [0]
    assert sorted(starts.snapshot()) == [("retrying",), ("stateful",)]  # one instance each


# -- 5: an escalated actor ends like a stopped one -----------------------------------------


class Doomed(Actor):
    """Holds "fatal" until `release`, then raises; answers other requests."""

    def __init__(self, entered: threading.Event, release: threading.Event) -> None:
        self.entered = entered
        self.release = release

    def handle(self, message: Message) -> None:
        if message.payload == "fatal":
            self.entered.set()
            self.release.wait(WAIT)
            raise RuntimeError("fatal")
        if message.correlation_id is not None:
            self.reply(message, ("ok", message.payload))


def test_escalation_fails_queued_asks_at_once_and_frees_the_name(system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()
    doomed = system.spawn(
        lambda: Doomed(entered, release), "doomed", policy=RestartPolicy(max_restarts=0)
    )
    try:
        doomed.tell("fatal")
        assert entered.wait(WAIT)
        queued = doomed.ask_future("queued", timeout=30.0)
    finally:
        release.set()
    began = time.monotonic()
    error = queued.exception(timeout=WAIT)  # long before its own 30 s timeout
    assert isinstance(error, ActorDead), repr(error)
    assert time.monotonic() - began < WAIT
    assert [e.actor for e in system.escalations] == ["doomed"]

    assert "doomed" not in system.channel.names()  # the mailbox is gone ...
    with pytest.raises(UnknownActor):
        system.channel.depth("doomed")
    assert [s.mailbox_depth for s in doomed.stats()] == [0]
    (letter,) = [d for d in letters(system, "doomed") if d.message.payload == "queued"]
    assert letter.reason is DeadLetterReason.STOPPED

    again = system.spawn(lambda: Doomed(entered, release), "doomed")  # ... and the name free
    assert again.ask("hello", timeout=WAIT) == ("ok", "hello")


class _HoldOrFail(Actor):
    """A pool member: "hold" waits for `release`; "fatal" waits for `fail`, then raises."""

    def __init__(self, gates: dict[str, threading.Event]) -> None:
        self.gates = gates

    def handle(self, message: Message) -> None:
        if message.payload == "hold":
            self.gates["held"].set()
            self.gates["release"].wait()  # the test's `finally` always sets it
        elif message.payload == "fatal":
            self.gates["failing"].set()
            self.gates["fail"].wait(WAIT)
            raise RuntimeError("fatal")


def test_a_pool_that_escalates_ends_at_once_though_a_member_is_still_busy(
    system: ActorSystem,
) -> None:
    gates = {name: threading.Event() for name in ("held", "release", "failing", "fail")}
    pool = system.spawn_pool(
        lambda: _HoldOrFail(gates), "fragile", 2, policy=RestartPolicy(max_restarts=0)
    )
    try:
        pool.tell("hold")
        assert gates["held"].wait(WAIT)  # one member is busy until the end of the test
        pool.tell("fatal")
        assert gates["failing"].wait(WAIT)  # the other is about to fail: nobody is free
        queued = pool.ask_future("queued", timeout=30.0)
        gates["fail"].set()
        error = queued.exception(timeout=WAIT)
        # Failed at once, not when the busy member returns: it has not returned yet.
        assert isinstance(error, ActorDead), repr(error)
        assert not gates["release"].is_set()
        assert "fragile" not in system.channel.names()
        again = system.spawn(lambda: RecordingActor(Recorder()), "fragile")  # the name is free
        assert again.alive
    finally:
        gates["release"].set()


def test_a_graceful_stop_does_not_wait_out_a_restart_backoff() -> None:
    failed = threading.Event()

    class FailOnce(Actor):
        def handle(self, message: Message) -> None:
            failed.set()
            raise RuntimeError("boom")

    policy = RestartPolicy(backoff_initial=60.0, backoff_max=60.0)  # the real clock: 60 s
    system = ActorSystem("backoff")
    ref = system.spawn(FailOnce, "failing", policy=policy)
    ref.tell("x")
    assert failed.wait(WAIT)
    began = time.monotonic()
    system.stop(graceful=True, timeout=WAIT)
    assert time.monotonic() - began < WAIT  # not the 60 s backoff
    assert ref.stats()[0].restarts == 0


# -- 6: StopTimeout names only what is stuck, with what it holds ---------------------------


@dataclass(frozen=True)
class Wedge:
    """A payload type that the stuck actor holds."""

    n: int


def test_stop_timeout_names_only_the_stuck_actor_and_its_message_type(
    system: ActorSystem, recorder: Recorder
) -> None:
    idle = ["idle-a", "idle-b"]
    for name in idle:
        system.spawn(lambda: RecordingActor(recorder), name)
    pool = system.spawn_pool(lambda: RecordingActor(recorder), "idle-pool", 2)
    entered, release = threading.Event(), threading.Event()
    holder: list[threading.Thread] = []

    class Jammed(Actor):
        def handle(self, message: Message) -> None:
            holder.append(threading.current_thread())
            entered.set()
            release.wait(WAIT)

    jammed = system.spawn(Jammed, "jammed")
    for name in idle:
        assert system.lookup(name).ask("up?", timeout=WAIT) == "up?"
    assert pool.ask("up?", timeout=WAIT) == "up?"
    try:
        jammed.tell(Wedge(1))
        assert entered.wait(WAIT)
        with pytest.raises(StopTimeout) as info:
            system.stop(graceful=False, timeout=0.3)
    finally:
        release.set()
    (stuck,) = info.value.stuck
    assert stuck.startswith("jammed ")
    assert "Wedge" in stuck
    for name in [*idle, "idle-pool"]:
        assert name not in str(info.value)
    (thread,) = holder
    thread.join(WAIT)
    assert not thread.is_alive()


# -- 7: a restart reaches every pool member exactly once -----------------------------------


def test_restart_of_a_pool_restarts_each_member_once_a_busy_one_after_its_message(
    system: ActorSystem,
) -> None:
    journal = Journal()
    entered, release = threading.Event(), threading.Event()
    busy: list[str] = []

    class Member(Actor):
        def on_start(self) -> None:
            journal.add("start", self.member)

        def handle(self, message: Message) -> None:
            if message.payload == "hold":
                busy.append(self.member)
                entered.set()
                release.wait(WAIT)
            journal.add("handled", self.member, message.payload)
            if message.correlation_id is not None:
                self.reply(message, self.member)

    pool = system.spawn_pool(Member, "workers", 3)
    journal.wait_for(lambda items: len(items) == 3)
    try:
        pool.tell("hold")
        assert entered.wait(WAIT)
        assert system.restart("workers") == 3
        # Answered by a free member, which takes any control request before data: every
        # restart a free member could take has been taken by now.
        pool.ask("sync", timeout=WAIT)
    finally:
        release.set()

    def starts(items: list[tuple[Any, ...]]) -> int:
        return sum(1 for item in items if item[0] == "start")

    journal.wait_for(lambda items: starts(items) >= 6)
    members = sorted({s.name for s in pool.stats()})
    assert {s.name: s.restarts for s in pool.stats()} == dict.fromkeys(members, 1)
    items = journal.snapshot()
    assert starts(items) == 6
    (member,) = busy
    mine = [item for item in items if item[1] == member]
    assert mine == [("start", member), ("handled", member, "hold"), ("start", member)]


# -- 8: publish counts only the subscribers whose mailbox got it ---------------------------


def test_publish_counts_only_deliveries(system: ActorSystem, recorder: Recorder) -> None:
    system.spawn(lambda: RecordingActor(recorder), "listener")
    entered, release = threading.Event(), threading.Event()
    closing = system.spawn(lambda: Hold(entered, release), "closing")
    try:
        closing.tell("busy")
        assert entered.wait(WAIT)
        closing.stop(wait=False)  # stopping: its mailbox is closed, its name still routed
        for subscriber in ["listener", "closing", "ghost"]:
            system.channel.subscribe("news", subscriber)

        assert system.channel.publish("news", "headline") == 1

        recorder.wait_count(1)
        assert recorder.payloads() == ["headline"]
        (stopped,) = letters(system, "closing")
        assert (stopped.message.payload, stopped.reason) == ("headline", DeadLetterReason.STOPPED)
        (unknown,) = letters(system, "ghost")
        assert unknown.reason is DeadLetterReason.UNKNOWN_RECIPIENT
    finally:
        release.set()


# -- 9: the system's stop joins an actor that was already stopping -------------------------


def test_system_stop_joins_or_names_an_actor_that_was_already_stopping(
    system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actord.runtime.system, "_KILL_GRACE", 0.1)
    entered, release = threading.Event(), threading.Event()
    lingering = system.spawn(lambda: Hold(entered, release), "lingering")
    try:
        lingering.tell("slow")
        assert entered.wait(WAIT)
        lingering.stop(graceful=False, wait=False)
        with pytest.raises(StopTimeout) as info:
            system.stop(graceful=False, timeout=0.2)
        assert "lingering" in str(info.value)
    finally:
        release.set()
    for thread in actor_threads("lingering"):
        thread.join(WAIT)
    assert actor_threads("lingering") == []


# -- 10: no spawn once the system's stop has begun -----------------------------------------


def test_spawn_after_the_stop_began_raises_actor_stopping(system: ActorSystem) -> None:
    late_started = threading.Event()
    outcome: list[object] = []

    class Late(Actor):
        def on_start(self) -> None:
            late_started.set()

    class Spawner(Actor):
        def on_stop(self) -> None:
            try:
                outcome.append(system.spawn(Late, "late"))
            except Exception as error:
                outcome.append(error)

    system.spawn(Spawner, "spawner")
    system.stop(timeout=WAIT)

    (result,) = outcome
    assert isinstance(result, Exception), f"spawn during the stop returned {result!r}"
    assert isinstance(result, actord_errors.ActorStopping), repr(result)
    assert not late_started.is_set()
    assert actor_threads("late") == []
    assert "late" not in system.channel.names()


# -- 11: a mailbox full for the whole ask is an AskTimeout -------------------------------


def test_ask_to_a_mailbox_full_for_the_whole_timeout_is_ask_timeout(system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()
    clogged = system.spawn(lambda: Hold(entered, release), "clogged", capacity=1)
    try:
        clogged.tell("held")
        assert entered.wait(WAIT)
        clogged.tell("fills the one slot")

        with pytest.raises(AskTimeout) as info:
            clogged.ask("question", timeout=0.1)
        assert not isinstance(info.value, MailboxFull)

        future = clogged.ask_future("question", timeout=0.1)
        error = future.exception(timeout=WAIT)
        assert isinstance(error, AskTimeout), repr(error)
        assert not isinstance(error, MailboxFull)

        assert system.channel.pending_requests() == 0
        assert system.channel.depth("clogged") == 1
    finally:
        release.set()


# -- 12: a cell stuck past a timed-out stop keeps to its own (old) mailbox -----------------


def test_a_cell_stuck_past_its_stop_never_touches_the_mailbox_of_its_successor(
    system: ActorSystem,
) -> None:
    journal = Journal()
    instances = itertools.count(1)
    go, entered, release = threading.Event(), threading.Event(), threading.Event()
    old_thread: list[threading.Thread] = []

    class Tagged(Actor):
        def __init__(self) -> None:
            self.instance = next(instances)

        def on_start(self) -> None:
            go.wait(WAIT)  # the first instance takes m1..m3 as one batch

        def handle(self, message: Message) -> None:
            journal.add(self.instance, message.payload)
            if message.payload == "m1":
                old_thread.append(threading.current_thread())
                entered.set()
                release.wait(WAIT)
            if message.correlation_id is not None:
                self.reply(message, self.instance)

    first = system.spawn(Tagged, "tagged")
    try:
        for payload in ["m1", "m2", "m3"]:
            first.tell(payload)
        go.set()
        assert entered.wait(WAIT)  # holding m1, with m2 and m3 in hand
        with pytest.raises(StopTimeout):
            first.stop(graceful=False, timeout=0.05)

        second = system.spawn(Tagged, "tagged")
        for payload in ["n1", "n2", "n3"]:
            second.tell(payload)
        journal.wait_for(lambda items: len(items) == 4)  # m1, then n1..n3
    finally:
        release.set()
    (thread,) = old_thread
    thread.join(WAIT)  # the old cell let go of m1 and put m2 and m3 back: where?
    assert not thread.is_alive()
    assert second.ask("sync", timeout=WAIT) == 2

    assert journal.snapshot() == [(1, "m1"), (2, "n1"), (2, "n2"), (2, "n3"), (2, "sync")]
    put_back = [d for d in letters(system, "tagged") if d.message.payload in ("m2", "m3")]
    assert [(d.message.payload, d.reason) for d in put_back] == [
        ("m2", DeadLetterReason.STOPPED),
        ("m3", DeadLetterReason.STOPPED),
    ]


# -- 13: a control message for one member --------------------------------------------------


def test_a_control_message_for_one_member_is_taken_only_by_that_member() -> None:
    box = Mailbox("box", 4)
    restart = Message(MessageType.CONTROL, "$system", "box", Control(ControlKind.RESTART))
    work = Message(MessageType.DATA, "tester", "box", "work")

    other = Call(lambda: box.take(1, WAIT, member="y"))
    other.start()
    box.put_control(restart, member="x")
    other.join(0.05)
    assert other.is_alive()  # woken, perhaps, but it is not y's: y still waits
    box.put(work)
    other.finish()
    assert other.error is None
    assert other.result == [work]

    with pytest.raises(TimeoutError):
        box.take(1, 0.05, member="y")
    with pytest.raises(TimeoutError):
        box.take(1, 0.05)  # nor anyone's who takes as no member
    assert box.take(1, 0, member="x") == [restart]
    with pytest.raises(TimeoutError):
        box.take(1, 0, member="x")


# -- review fixes --------------------------------------------------------------------------


def test_an_immediate_stop_takes_over_from_a_graceful_one_under_way(
    system: ActorSystem,
) -> None:
    entered = threading.Event()

    class Patient(Actor):
        def handle(self, message: Message) -> None:
            entered.set()
            while not self.stop_requested:  # a long handler that checks, as it should
                threading.Event().wait(0.01)

    ref = system.spawn(Patient, "patient")
    ref.tell("work")
    assert entered.wait(WAIT)
    ref.stop(graceful=True, timeout=60.0, wait=False)  # a graceful stop, still draining
    began = time.monotonic()
    ref.stop(graceful=False, timeout=WAIT)  # must not wait for the graceful one's 60 s
    assert time.monotonic() - began < WAIT
    assert not ref.alive


def test_timers_of_an_instance_end_with_it(system: ActorSystem) -> None:
    seen: list[str] = []
    done = threading.Event()

    class Ticking(Actor):
        def on_start(self) -> None:
            self.schedule(0.0, "tick", interval=0.01)

        def handle(self, message: Message) -> None:
            seen.append(("old", message.payload))

    class Successor(Actor):
        def on_start(self) -> None:
            self.schedule(0.1, "marker")  # ten of the old timer's intervals later

        def handle(self, message: Message) -> None:
            seen.append(("new", message.payload))
            done.set()

    old = system.spawn(Ticking, "ticking")
    old.stop(timeout=WAIT)
    system.spawn(Successor, "ticking")  # the same name
    assert done.wait(WAIT)
    # A timer that outlived its instance would have fired about ten times meanwhile.
    assert [s for s in seen if s[0] == "new"] == [("new", "marker")]


def test_an_immediate_system_stop_keeps_its_own_deadline(system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()

    class Stuck(Actor):
        def handle(self, message: Message) -> None:
            entered.set()
            release.wait()  # the test's `finally` sets it

    system.spawn(Stuck, "stuck").tell("x")
    assert entered.wait(WAIT)
    began = time.monotonic()
    try:
        with pytest.raises(StopTimeout) as stuck:
            system.stop(graceful=False, timeout=0.2)
        took = time.monotonic() - began
    finally:
        release.set()
    assert stuck.value.stuck and "stuck" in stuck.value.stuck[0]
    assert took < 0.2 + 0.8  # not the old extra second of grace after the deadline
