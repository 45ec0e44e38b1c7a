"""ActorSystem: spawn, lookup, pools and resizing, graceful and immediate stop, statistics."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from actord import (
    Actor,
    ActorDead,
    ActorState,
    ActorSystem,
    DeadLetterReason,
    InvalidArgument,
    Message,
    MessageType,
    NameTaken,
    StopTimeout,
    UnknownActor,
)

from .conftest import WAIT, Gate, Recorder, RecordingActor


class GatedRecorder(Actor):
    """Records each message once the shared gate lets it through."""

    def __init__(self, recorder: Recorder, gate: threading.Event) -> None:
        self.recorder = recorder
        self.gate = gate

    def handle(self, message: Message) -> None:
        assert self.gate.wait(WAIT)
        self.recorder.add(self.member, message)


def _actord_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("actord:")]


def test_spawn_lookup_and_duplicate_names(system: ActorSystem, recorder: Recorder) -> None:
    ref = system.spawn(lambda: RecordingActor(recorder), "one")
    assert system.lookup("one") is ref
    with pytest.raises(NameTaken):
        system.spawn(lambda: RecordingActor(recorder), "one")
    with pytest.raises(UnknownActor):
        system.lookup("two")
    assert system.names() == ("one",)


def test_pool_balances_work_to_whoever_is_free(system: ActorSystem) -> None:
    stuck_entered, stuck_release = threading.Event(), threading.Event()
    handled: Counter[str] = Counter()
    done = threading.Event()
    stuck_member: list[str] = []

    class Member(Actor):
        def handle(self, message: Message) -> None:
            if message.payload == "stuck":
                stuck_member.append(self.member)
                stuck_entered.set()
                assert stuck_release.wait(WAIT)
                return
            handled[self.member] += 1
            if sum(handled.values()) == 50:
                done.set()

    pool = system.spawn_pool(Member, "pool", 3)
    pool.tell("stuck")
    assert stuck_entered.wait(WAIT)
    for i in range(50):
        pool.tell(i)
    assert done.wait(WAIT)  # the other members did everything while one was stuck
    stuck_release.set()
    assert sum(handled.values()) == 50
    assert stuck_member[0] not in handled
    assert {s.name for s in pool.stats()} == {"pool#0", "pool#1", "pool#2"}


def test_pool_resize_while_running_loses_nothing(system: ActorSystem, recorder: Recorder) -> None:
    pool = system.spawn_pool(lambda: RecordingActor(recorder), "resizable", 2, capacity=64)
    system.resize("resizable", 4)
    assert len(pool.stats()) == 4  # grown members are started before resize returns
    sizes = [1, 3, 1, 2]
    total = 2000
    for i in range(total):
        pool.tell(i)
        if i % 500 == 499:
            system.resize("resizable", sizes[i // 500])
    recorder.wait_count(total)
    assert sorted(recorder.payloads()) == list(range(total))  # each exactly once
    pool.stop(timeout=WAIT)  # joins every member, retiring ones included
    assert len(pool.stats()) == 2  # the last size: everyone else retired


def test_resize_rules(system: ActorSystem, recorder: Recorder) -> None:
    system.spawn(lambda: RecordingActor(recorder), "single")
    with pytest.raises(InvalidArgument):
        system.resize("single", 3)
    system.spawn_pool(lambda: RecordingActor(recorder), "p", 1)
    with pytest.raises(InvalidArgument):
        system.resize("p", 0)
    with pytest.raises(UnknownActor):
        system.resize("nope", 2)


def test_graceful_stop_drains_what_is_queued(system: ActorSystem, recorder: Recorder) -> None:
    gate = threading.Event()
    ref = system.spawn(lambda: GatedRecorder(recorder, gate), "drainer")
    for i in range(20):
        ref.tell(i)
    stopper = threading.Thread(target=lambda: ref.stop(graceful=True, timeout=WAIT))
    stopper.start()
    gate.set()
    stopper.join(WAIT)
    assert recorder.payloads() == list(range(20))
    assert not system.channel.dead_letters()
    ref.tell("after")  # unknown now: a dead letter, never a silent drop
    assert system.channel.dead_letters()[-1].message.payload == "after"


def test_immediate_stop_dead_letters_the_queue_and_fails_asks(
    system: ActorSystem, recorder: Recorder
) -> None:
    gate = threading.Event()
    ref = system.spawn(lambda: GatedRecorder(recorder, gate), "abrupt")
    for i in range(10):
        ref.tell(i)
    pending = ref.ask_future("question")
    stopper = threading.Thread(target=lambda: ref.stop(graceful=False, timeout=WAIT))
    stopper.start()
    gate.set()
    stopper.join(WAIT)
    with pytest.raises(ActorDead):
        pending.result(WAIT)
    handled = recorder.payloads()
    dead = [
        d.message.payload
        for d in system.channel.dead_letters()
        if d.reason is DeadLetterReason.STOPPED
    ]
    assert len(handled) < 11  # stopped before the end of the queue
    # Every message was either handled or dead-lettered, exactly once.
    assert sorted(handled + dead, key=str) == sorted([*range(10), "question"], key=str)


def test_graceful_stop_falls_back_to_immediate_after_the_deadline(system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()
    ref = system.spawn(lambda: Gate(entered, release), "slow")
    ref.tell(0)
    ref.tell(1)
    assert entered.wait(WAIT)
    # The handler finishes after the drain deadline but within the immediate-stop grace.
    timer = threading.Timer(0.2, release.set)
    timer.start()
    ref.stop(graceful=True, timeout=0.05)
    timer.join(WAIT)
    dead = [d for d in system.channel.dead_letters() if d.reason is DeadLetterReason.STOPPED]
    assert [d.message.payload for d in dead] == [1]  # not drained: the deadline had passed


def test_stop_timeout_names_an_actor_stuck_in_handle(
    system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    import actord.runtime.system

    monkeypatch.setattr(actord.runtime.system, "_KILL_GRACE", 0.05)
    entered, release = threading.Event(), threading.Event()
    ref = system.spawn(lambda: Gate(entered, release), "stuck")
    ref.tell(0)
    assert entered.wait(WAIT)
    try:
        with pytest.raises(StopTimeout, match="stuck"):
            ref.stop(graceful=True, timeout=0.05)
    finally:
        release.set()


def test_stop_is_reverse_start_order_and_joins_every_thread(fake_clock: object) -> None:
    order: list[str] = []

    class Named(Actor):
        def handle(self, message: Message) -> None:
            """Nothing to do."""

        def on_stop(self) -> None:
            order.append(self.member)

    system = ActorSystem("order")
    system.spawn(Named, "first")
    system.spawn_pool(Named, "second", 2)
    system.spawn(Named, "third")
    threads = _actord_threads()
    assert {t.name for t in threads} >= {"actord:first", "actord:second#0", "actord:third"}
    assert all(not t.daemon for t in threads)
    system.stop(timeout=WAIT)
    assert order[0] == "third"
    assert sorted(order[1:3]) == ["second#0", "second#1"]
    assert order[3] == "first"
    assert not any(t.is_alive() for t in threads)
    assert not [t for t in threading.enumerate() if t.name == "order-timers"]


def test_stats_snapshot_while_busy(system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()
    thread_ids: list[int] = []

    class Busy(Actor):
        def handle(self, message: Message) -> None:
            thread_ids.append(threading.get_native_id())
            if message.payload == "wait":
                entered.set()
                assert release.wait(WAIT)

    ref = system.spawn(Busy, "busy", capacity=16)
    ref.tell(1)
    ref.tell(2, mtype=MessageType.COMMAND)
    ref.tell("wait")
    assert entered.wait(WAIT)
    ref.tell(3)
    snap = ref.stats()[0]
    assert snap.state is ActorState.RUNNING
    assert snap.busy_seconds > 0
    assert snap.mailbox_depth == 1
    assert snap.mailbox_capacity == 16
    assert snap.native_thread_id == thread_ids[0]
    release.set()
    ref.ping(timeout=WAIT)  # served after message 3
    ref.stop(timeout=WAIT)
    final = ref.stats()[0]
    assert final.processed[MessageType.DATA] == 3
    assert final.processed[MessageType.COMMAND] == 1
    assert final.handle_time.count == 4
    assert final.queue_wait.count == 4
    assert final.handle_time.sum > 0
    assert final.state is ActorState.STOPPED


def test_escalation_stops_the_whole_pool_and_calls_back(fake_clock: object) -> None:
    from actord import RestartPolicy

    escalated = threading.Event()
    calls = []

    def on_escalate(e: object) -> None:
        calls.append(e)
        escalated.set()

    class Crash(Actor):
        def handle(self, message: Message) -> None:
            raise ValueError("always")

    system = ActorSystem(
        "esc",
        clock=fake_clock,  # type: ignore[arg-type]
        default_policy=RestartPolicy(max_restarts=2, period=60),
        on_escalate=on_escalate,
    )
    try:
        pool = system.spawn_pool(Crash, "crashers", 2)
        for i in range(5):
            pool.tell(i)
        assert escalated.wait(WAIT)
        assert len(calls) == 1
        assert not pool.alive
    finally:
        system.stop(timeout=WAIT)
    dead = Counter(d.reason for d in system.channel.dead_letters())
    # The third failure escalates; a member may already hold a fourth message by then.
    assert dead[DeadLetterReason.FAILED] >= 3
    assert dead[DeadLetterReason.FAILED] + dead[DeadLetterReason.STOPPED] == 5


def test_stop_without_waiting_releases_the_name_when_the_last_thread_exits(
    system: ActorSystem, recorder: Recorder
) -> None:
    gate = threading.Event()
    ref = system.spawn(lambda: GatedRecorder(recorder, gate), "transient")
    ref.tell(1)
    ref.tell(2)
    ref.stop(graceful=False, wait=False)  # returns at once: the handler is still gated
    assert "transient" in system.names()
    gate.set()
    thread = next(t for t in threading.enumerate() if t.name == "actord:transient")
    thread.join(WAIT)
    assert "transient" not in system.names()
    assert "transient" not in system.channel
    again = system.spawn(lambda: RecordingActor(recorder), "transient")  # the name is free
    assert again.ask("hi", timeout=WAIT) == "hi"


class _SaysWhenItStops(Actor):
    def __init__(self, stopped: list[str], event: threading.Event) -> None:
        self.stopped = stopped
        self.event = event

    def handle(self, message: Message) -> None:
        if message.correlation_id is not None:
            self.reply(message, self.member)

    def on_stop(self) -> None:
        self.stopped.append(self.member)
        self.event.set()


def test_a_member_that_left_the_pool_answers_to_its_name_no_more(system: ActorSystem) -> None:
    stopped: list[str] = []
    event = threading.Event()
    system.spawn_pool(lambda: _SaysWhenItStops(stopped, event), "pool", 2)
    for member in ("pool#0", "pool#1"):
        assert system.ping(member, timeout=WAIT).actor == member
    threads = {t.name: t for t in _actord_threads()}
    system.resize("pool", 1)
    assert event.wait(WAIT)
    (gone,) = stopped
    (left,) = {"pool#0", "pool#1"} - {gone}
    threads[f"actord:{gone}"].join(WAIT)
    for call in (
        lambda: system.ping(gone, timeout=WAIT),
        lambda: system.tell(gone, "x"),
        lambda: system.restart(gone),
        lambda: system.commands(gone, timeout=WAIT),
    ):
        with pytest.raises(UnknownActor, match=f"members: {left}"):
            call()
    assert system.ping(left, timeout=WAIT).actor == left
    assert system.restart(left) == 1
    assert system.channel.dead_letters() == ()


def test_a_shrink_retires_the_highest_numbers_and_a_growth_reuses_the_lowest(
    system: ActorSystem,
) -> None:
    stopped: list[str] = []
    event = threading.Event()
    pool = system.spawn_pool(lambda: _SaysWhenItStops(stopped, event), "pool", 4)
    system.resize("pool", 9)
    assert {s.name for s in pool.stats()} == {f"pool#{i}" for i in range(9)}
    threads = {t.name: t for t in _actord_threads()}
    system.resize("pool", 2)
    for i in range(2, 9):
        threads[f"actord:pool#{i}"].join(WAIT)
        assert not threads[f"actord:pool#{i}"].is_alive()
    assert sorted(stopped) == sorted(f"pool#{i}" for i in range(2, 9))
    assert {s.name for s in pool.stats()} == {"pool#0", "pool#1"}
    assert system.ping("pool#0", timeout=WAIT).actor == "pool#0"
    system.resize("pool", 4)  # the numbers the shrink freed, not pool#9 on
    assert {s.name for s in pool.stats()} == {f"pool#{i}" for i in range(4)}
    assert system.ping("pool#3", timeout=WAIT).actor == "pool#3"


def test_stats_take_no_lock_a_resize_holds(system: ActorSystem) -> None:
    # The SIGUSR1 dump asks for stats in a signal handler on the main thread, which may be
    # inside `resize` (holding the system's and the pool's locks, starting a thread).
    class Idle(Actor):
        def handle(self, message: Message) -> None:
            pass

    system.spawn_pool(Idle, "idle", size=2)
    group = system._order[-1]
    answered: list[int] = []
    with system._lock, group._lock:
        asker = threading.Thread(target=lambda: answered.append(len(system.stats())))
        asker.start()
        asker.join(WAIT)
        still_waiting = asker.is_alive()
    asker.join(WAIT)
    assert not still_waiting, "stats() waited for a lock a resize holds"
    assert answered and answered[0] >= 2
