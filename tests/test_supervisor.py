"""Supervision: backoff, the restart-intensity window, escalation, and how the receive loop
carries the supervisor's decisions out inside a real `ActorSystem`.

Every system here runs on a `FakeClock`, so a backoff is recorded instead of waited out.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actord import (
    ActorRef,
    ActorState,
    ActorSystem,
    DeadLetter,
    DeadLetterReason,
    Decision,
    Escalation,
    InvalidArgument,
    Message,
    MessageType,
    RestartPolicy,
    Supervisor,
)
from tests.conftest import WAIT, FakeClock, Recorder, RecordingActor

# A policy whose backoff sequence is easy to read: 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, ...
POLICY = RestartPolicy(
    max_restarts=3, period=60.0, backoff_initial=0.1, backoff_max=1.0, backoff_factor=2.0
)


def supervisor(policy: RestartPolicy = POLICY) -> tuple[Supervisor, FakeClock]:
    clock = FakeClock()
    return Supervisor(policy, clock), clock


def expected_delay(policy: RestartPolicy, n: int) -> float:
    """The documented delay before the restart that follows the n-th failure in the window."""
    return min(policy.backoff_max, policy.backoff_initial * policy.backoff_factor ** (n - 1))


# -- Supervisor on its own -------------------------------------------------------------------


def test_backoff_doubles_from_initial_and_is_capped_at_max() -> None:
    policy = RestartPolicy(
        max_restarts=10, period=1000.0, backoff_initial=0.1, backoff_max=1.0, backoff_factor=2.0
    )
    sup, _ = supervisor(policy)
    decisions = [sup.record_failure() for _ in range(8)]
    assert not any(d.escalate for d in decisions)
    assert [d.failures_in_period for d in decisions] == list(range(1, 9))
    assert [d.delay for d in decisions] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("initial", "factor", "cap", "expected"),
    [
        (0.05, 3.0, 10.0, [0.05, 0.15, 0.45, 1.35, 4.05, 10.0]),
        (0.5, 1.0, 5.0, [0.5] * 6),  # factor 1: constant backoff
        (0.0, 2.0, 1.0, [0.0] * 6),  # no backoff at all
        (2.0, 2.0, 2.0, [2.0] * 6),  # initial == max: capped from the start
    ],
)
def test_backoff_sequence_for_other_policies(
    initial: float, factor: float, cap: float, expected: list[float]
) -> None:
    policy = RestartPolicy(
        max_restarts=100,
        period=1000.0,
        backoff_initial=initial,
        backoff_max=cap,
        backoff_factor=factor,
    )
    sup, _ = supervisor(policy)
    assert [sup.record_failure().delay for _ in expected] == pytest.approx(expected)


def test_the_failure_after_max_restarts_in_the_window_escalates() -> None:
    sup, clock = supervisor()  # max_restarts=3 within 60 s
    first = [sup.record_failure() for _ in range(3)]
    clock.advance(59.0)  # the first three are still inside the window
    fourth = sup.record_failure()
    assert [d.escalate for d in first] == [False, False, False]
    assert fourth == Decision(escalate=True, delay=0.0, failures_in_period=4)
    assert sup.record_failure().escalate  # and it stays escalated while the window is full


def test_zero_max_restarts_escalates_on_the_first_failure() -> None:
    sup, _ = supervisor(RestartPolicy(max_restarts=0, period=10.0))
    decision = sup.record_failure()
    assert decision.escalate
    assert decision.failures_in_period == 1
    assert sup.restarts == 0


def test_failures_older_than_period_leave_the_window() -> None:
    policy = RestartPolicy(
        max_restarts=2, period=10.0, backoff_initial=0.1, backoff_max=1.0, backoff_factor=2.0
    )
    sup, clock = supervisor(policy)
    assert sup.record_failure().delay == pytest.approx(0.1)  # t=0
    clock.advance(5.0)
    assert sup.record_failure().delay == pytest.approx(0.2)  # t=5: two in the window
    clock.advance(6.0)  # t=11: the failure at t=0 is now 11 s old and falls out
    third = sup.record_failure()
    assert not third.escalate  # would have been the 3rd in the window without the expiry
    assert third.failures_in_period == 2
    assert third.delay == pytest.approx(0.2)
    clock.advance(10.5)  # t=21.5: every earlier failure is older than the period
    fresh = sup.record_failure()
    assert fresh == Decision(escalate=False, delay=pytest.approx(0.1), failures_in_period=1)


def test_intensity_resets_after_a_quiet_period() -> None:
    sup, clock = supervisor()  # max_restarts=3 within 60 s
    for _ in range(3):
        assert not sup.record_failure().escalate
    clock.advance(60.5)
    decisions = [sup.record_failure() for _ in range(3)]
    assert [d.escalate for d in decisions] == [False, False, False]
    assert [d.failures_in_period for d in decisions] == [1, 2, 3]
    assert [d.delay for d in decisions] == pytest.approx([0.1, 0.2, 0.4])
    assert sup.record_failure().escalate


def test_restarts_counts_granted_restarts_only() -> None:
    sup, _ = supervisor()  # max_restarts=3
    assert sup.restarts == 0
    for expected in (1, 2, 3):
        sup.record_failure()
        assert sup.restarts == expected
    assert sup.record_failure().escalate
    assert sup.record_failure().escalate
    assert sup.restarts == 3


def test_record_failure_is_thread_safe() -> None:
    # Pool members fail on their own threads and share one supervisor.
    threads, per_thread = 8, 2000
    total = threads * per_thread
    # factor 1: the delay stays put, this test is about the lock only
    sup, _ = supervisor(RestartPolicy(max_restarts=total, period=60.0, backoff_factor=1.0))
    seen: list[int] = []
    seen_lock = threading.Lock()
    start = threading.Barrier(threads)

    def fail_many() -> None:
        start.wait(WAIT)
        counts = [sup.record_failure().failures_in_period for _ in range(per_thread)]
        with seen_lock:
            seen.extend(counts)

    workers = [threading.Thread(target=fail_many) for _ in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that a missing lock shows
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT)
    finally:
        sys.setswitchinterval(interval)
    assert not any(worker.is_alive() for worker in workers)
    assert sup.restarts == total
    assert sorted(seen) == list(range(1, total + 1))  # each count handed out exactly once


@pytest.mark.parametrize("factor", [2.0, 10.0])
def test_backoff_stays_capped_however_many_failures_are_in_the_window(factor: float) -> None:
    # factor ** (n - 1) overflows a float after ~1024 doublings (~308 for factor 10): the
    # delay must stay at backoff_max instead of raising OverflowError.
    policy = RestartPolicy(
        max_restarts=5000, period=1e9, backoff_initial=0.1, backoff_max=1.0, backoff_factor=factor
    )
    sup, _ = supervisor(policy)
    delays = [sup.record_failure().delay for _ in range(1500)]
    assert delays[-1] == 1.0
    assert max(delays) == 1.0
    assert sup.restarts == 1500


def test_zero_initial_backoff_stays_zero_however_many_failures() -> None:
    policy = RestartPolicy(max_restarts=5000, period=1e9, backoff_initial=0.0, backoff_max=1.0)
    sup, _ = supervisor(policy)
    assert {sup.record_failure().delay for _ in range(1500)} == {0.0}


@settings(max_examples=200, deadline=None)
@given(
    max_restarts=st.integers(0, 6),
    period=st.floats(0.5, 30.0),
    initial=st.floats(0.0, 1.0),
    factor=st.floats(1.0, 4.0),
    extra=st.floats(0.0, 3.0),
    gaps=st.lists(st.floats(0.0, 20.0), max_size=40),
)
def test_decisions_match_a_sliding_window_model(
    max_restarts: int, period: float, initial: float, factor: float, extra: float, gaps: list[float]
) -> None:
    policy = RestartPolicy(
        max_restarts=max_restarts,
        period=period,
        backoff_initial=initial,
        backoff_max=initial + extra,
        backoff_factor=factor,
    )
    sup, clock = supervisor(policy)
    window: list[float] = []
    granted = 0
    for gap in gaps:
        clock.advance(gap)
        now = clock.monotonic()
        window = [t for t in window if t > now - period] + [now]
        decision = sup.record_failure()
        assert decision.failures_in_period == len(window)
        assert decision.escalate == (len(window) > max_restarts)
        if not decision.escalate:
            granted += 1
            assert decision.delay == pytest.approx(expected_delay(policy, len(window)))
            assert decision.delay <= policy.backoff_max
    assert sup.restarts == granted


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_restarts": -1},
        {"period": 0.0},
        {"period": -5.0},
        {"backoff_initial": -0.1},
        {"backoff_initial": 2.0, "backoff_max": 1.0},
        {"backoff_max": -1.0},
        {"backoff_factor": 0.5},
        {"backoff_factor": 0.0},
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument):
        RestartPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"period": math.nan},
        {"backoff_initial": math.nan},
        {"backoff_max": math.nan},
        {"backoff_factor": math.nan},
    ],
)
def test_policy_rejects_nan(kwargs: dict[str, float]) -> None:
    # NaN compares false with everything, so a `x <= 0` style check lets it through: a NaN
    # period never expires a failure, a NaN backoff silently becomes backoff_max or no wait.
    with pytest.raises(InvalidArgument):
        RestartPolicy(**kwargs)


def test_policy_accepts_boundary_values_and_they_behave() -> None:
    # At the boundaries the policy is valid and means what it says: no restart at all ...
    strict = Supervisor(RestartPolicy(max_restarts=0, period=0.001, backoff_initial=0.0))
    assert strict.record_failure().escalate
    # ... and a flat backoff: factor 1 keeps every delay at the initial one.
    flat = Supervisor(RestartPolicy(backoff_factor=1.0, backoff_initial=1.0, backoff_max=1.0))
    assert [flat.record_failure().delay for _ in range(3)] == [1.0, 1.0, 1.0]


def test_invalid_argument_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_restarts"):
        RestartPolicy(max_restarts=-3)


# -- supervision inside an ActorSystem -------------------------------------------------------


@dataclass
class Supervised:
    """A system on a fake clock whose escalations are recorded."""

    system: ActorSystem
    clock: FakeClock
    escalations: list[Escalation] = field(default_factory=list)

    def dead_letters(self, recipient: str) -> list[DeadLetter]:
        return [d for d in self.system.channel.dead_letters() if d.message.recipient == recipient]

    def stats(self, ref: ActorRef) -> tuple[int, int, ActorState]:
        (snapshot,) = ref.stats()
        return snapshot.errors, snapshot.restarts, snapshot.state


@pytest.fixture
def make_supervised() -> Iterator[Callable[[RestartPolicy], Supervised]]:
    made: list[Supervised] = []

    def make(policy: RestartPolicy) -> Supervised:
        clock = FakeClock()
        escalations: list[Escalation] = []
        system = ActorSystem(
            "sup-test",
            clock=clock,
            default_policy=policy,
            on_escalate=escalations.append,
            dead_letter_capacity=10_000,
        )
        harness = Supervised(system, clock, escalations)
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in made:
            harness.system.stop(timeout=WAIT)


class HoldingActor(RecordingActor):
    """A RecordingActor that blocks on a "hold" payload until the test opens `release`, so
    that the test can queue messages behind it deterministically."""

    def __init__(self, recorder: Recorder, entered: threading.Event, release: threading.Event):
        super().__init__(recorder)
        self.entered = entered
        self.release = release

    def handle(self, message: Message) -> None:
        if message.payload == "hold":
            self.entered.set()
            if not self.release.wait(WAIT):
                raise TimeoutError("the test never released the hold")
        super().handle(message)


@dataclass
class Held:
    ref: ActorRef
    entered: threading.Event
    release: threading.Event


def spawn_held(harness: Supervised, recorder: Recorder, name: str = "worker") -> Held:
    """Spawn a HoldingActor and park it inside a "hold" message."""
    entered, release = threading.Event(), threading.Event()
    ref = harness.system.spawn(lambda: HoldingActor(recorder, entered, release), name)
    ref.tell("hold")
    assert entered.wait(WAIT), "the actor never started handling"
    return Held(ref, entered, release)


def test_restart_keeps_the_mailbox_and_loses_nothing_queued_behind_the_failure(
    make_supervised: Callable[[RestartPolicy], Supervised], recorder: Recorder
) -> None:
    harness = make_supervised(POLICY)
    held = spawn_held(harness, recorder)
    channel = harness.system.channel
    sent = [
        channel.send("worker", payload, sender="test", timeout=WAIT)
        for payload in (1, "boom", 2, 3, "boom", 4, "boom", 5, 6)
    ]
    assert channel.depth("worker") == len(sent)  # all queued behind the held message
    held.release.set()
    recorder.wait_count(7)  # "hold" and the six good payloads

    assert recorder.payloads() == ["hold", 1, 2, 3, 4, 5, 6]  # same order, nothing lost
    failed = harness.dead_letters("worker")
    assert [d.message.id for d in failed] == [m.id for m in sent if m.payload == "boom"]
    assert all(d.reason is DeadLetterReason.FAILED for d in failed)
    assert all(d.error is not None and "RuntimeError" in d.error for d in failed)
    assert all(d.error is not None and "boom" in d.error for d in failed)
    assert harness.system.channel.dead_letter_counts() == {DeadLetterReason.FAILED: 3}

    held.ref.ping(timeout=WAIT)  # answered between batches: the last batch is fully counted
    errors, restarts, state = harness.stats(held.ref)
    assert (errors, restarts, state) == (3, 3, ActorState.RUNNING)
    (snapshot,) = held.ref.stats()
    assert snapshot.processed[MessageType.DATA] == 7  # failed messages are not "processed"
    assert snapshot.mailbox_depth == 0
    assert harness.clock.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert harness.escalations == []
    assert not harness.system.escalated.is_set()
    assert held.ref.alive


def test_an_actor_survives_more_than_a_thousand_restarts_in_one_window(
    make_supervised: Callable[[RestartPolicy], Supervised], recorder: Recorder
) -> None:
    # A generous policy (many restarts in a long window) must not kill the receive loop
    # when the backoff exponent grows past what a float can hold.
    failures = 1100
    harness = make_supervised(
        RestartPolicy(max_restarts=10_000, period=1e9, backoff_initial=0.001, backoff_max=0.01)
    )
    ref = harness.system.spawn(lambda: RecordingActor(recorder), "worker")
    for _ in range(failures):
        ref.tell("boom", timeout=WAIT)
    ref.tell("after", timeout=WAIT)
    recorder.wait_for(lambda: any(m.payload == "after" for _, m in recorder.handled))
    assert harness.stats(ref) == (failures, failures, ActorState.RUNNING)
    assert recorder.payloads() == ["after"]
    assert max(harness.clock.sleeps) == pytest.approx(0.01)


def test_restarted_actor_keeps_serving_later_messages(
    make_supervised: Callable[[RestartPolicy], Supervised], recorder: Recorder
) -> None:
    harness = make_supervised(POLICY)
    ref = harness.system.spawn(lambda: RecordingActor(recorder), "worker")
    ref.tell("boom")
    ref.tell("after")
    recorder.wait_count(1)
    assert ref.ask("question", timeout=WAIT) == "question"
    assert recorder.payloads() == ["after", "question"]
    assert harness.stats(ref) == (1, 1, ActorState.RUNNING)
    assert harness.clock.sleeps == pytest.approx([0.1])


def test_exceeding_intensity_escalates_once_and_fails_the_actor(
    make_supervised: Callable[[RestartPolicy], Supervised], recorder: Recorder
) -> None:
    harness = make_supervised(POLICY)  # max_restarts=3: the 4th failure escalates
    held = spawn_held(harness, recorder)
    channel = harness.system.channel
    booms = [channel.send("worker", "boom", sender="test", timeout=WAIT) for _ in range(4)]
    behind = [channel.send("worker", n, sender="test", timeout=WAIT) for n in (7, 8)]
    held.release.set()
    assert harness.system.escalated.wait(WAIT), "the actor never escalated"

    (escalation,) = harness.escalations
    assert escalation.actor == "worker"
    assert isinstance(escalation.error, RuntimeError)
    assert str(escalation.error) == "boom"
    assert escalation.failures_in_period == 4
    assert escalation.period == 60.0
    assert harness.system.escalations == [escalation]
    assert harness.clock.sleeps == pytest.approx([0.1, 0.2, 0.4])  # no backoff before escalating

    held.ref.stop(timeout=WAIT)  # joins the failed actor's thread (it is already ending)
    (snapshot,) = held.ref.stats()
    assert snapshot.state is ActorState.FAILED
    assert snapshot.errors == 4
    assert snapshot.restarts == 3
    assert not held.ref.alive
    assert recorder.payloads() == ["hold"]  # nothing after the booms was handled

    # The failed actor ended as a stopped one: what was queued behind the fatal message is
    # dead-lettered at once (not kept until the system stops), and the name is free.
    letters = [(d.message.id, d.reason) for d in harness.dead_letters("worker")]
    assert letters == [(m.id, DeadLetterReason.FAILED) for m in booms] + [
        (m.id, DeadLetterReason.STOPPED) for m in behind
    ]
    assert "worker" not in harness.system.names()

    # Later messages to the failed actor are dead letters, never silently dropped.
    late = channel.send("worker", 9, sender="test", timeout=WAIT)
    harness.system.stop(timeout=WAIT)
    late_letters = {d.message.id: d.reason for d in harness.dead_letters("worker")}
    assert late_letters[late.id] is DeadLetterReason.STOPPED  # a name that was, not a typo
    assert len(harness.escalations) == 1  # once, even after the stop


def test_escalation_without_a_callback_still_sets_the_event(fake_clock: FakeClock) -> None:
    system = ActorSystem(
        "no-callback", clock=fake_clock, default_policy=RestartPolicy(max_restarts=0)
    )
    try:
        ref = system.spawn(lambda: RecordingActor(Recorder()), "worker")
        ref.tell("boom")
        assert system.escalated.wait(WAIT)
        assert [e.actor for e in system.escalations] == ["worker"]
        assert fake_clock.sleeps == []
    finally:
        system.stop(timeout=WAIT)


def test_ask_whose_handler_raises_reraises_in_the_asker(
    make_supervised: Callable[[RestartPolicy], Supervised], recorder: Recorder
) -> None:
    harness = make_supervised(POLICY)
    ref = harness.system.spawn(lambda: RecordingActor(recorder), "worker")
    with pytest.raises(RuntimeError, match=r"^boom$"):
        ref.ask("boom", timeout=WAIT)
    (letter,) = harness.dead_letters("worker")
    assert letter.reason is DeadLetterReason.FAILED
    assert letter.message.payload == "boom"
    assert letter.message.correlation_id is not None
    assert harness.system.channel.pending_requests() == 0
    # The actor was restarted and answers the next request.
    assert ref.ask("again", timeout=WAIT) == "again"
    assert harness.stats(ref) == (1, 1, ActorState.RUNNING)


class FlakyStart(RecordingActor):
    """on_start raises for the first `failures` instances built by one factory."""

    def __init__(self, recorder: Recorder, instance: int, failures: int) -> None:
        super().__init__(recorder)
        self.instance = instance
        self.failures = failures

    def on_start(self) -> None:
        if self.instance < self.failures:
            raise OSError(f"cannot start instance {self.instance}")


def flaky_factory(recorder: Recorder, failures: int) -> Callable[[], FlakyStart]:
    counter = itertools.count()
    return lambda: FlakyStart(recorder, next(counter), failures)


def test_on_start_failure_is_supervised_like_a_handler_failure(
    make_supervised: Callable[[RestartPolicy], Supervised], recorder: Recorder
) -> None:
    harness = make_supervised(POLICY)
    ref = harness.system.spawn(flaky_factory(recorder, failures=2), "worker")
    ref.tell(1)
    ref.tell(2)
    recorder.wait_count(2)
    assert recorder.payloads() == [1, 2]  # queued while it was restarting: nothing lost
    assert harness.clock.sleeps == pytest.approx([0.1, 0.2])
    assert harness.stats(ref) == (2, 2, ActorState.RUNNING)
    assert harness.dead_letters("worker") == []  # no message was in hand
    assert harness.escalations == []


def test_on_start_failing_beyond_intensity_escalates(
    make_supervised: Callable[[RestartPolicy], Supervised], recorder: Recorder
) -> None:
    harness = make_supervised(POLICY)
    ref = harness.system.spawn(flaky_factory(recorder, failures=1_000), "worker")
    assert harness.system.escalated.wait(WAIT)
    (escalation,) = harness.escalations
    assert escalation.actor == "worker"
    assert isinstance(escalation.error, OSError)
    assert escalation.failures_in_period == 4
    assert harness.clock.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert harness.stats(ref) == (4, 3, ActorState.FAILED)
    assert not ref.alive


@dataclass
class HookLog:
    lock: threading.Lock = field(default_factory=threading.Lock)
    failures: list[tuple[int, Exception, Message | None]] = field(default_factory=list)
    stops: list[int] = field(default_factory=list)


class HookedActor(RecordingActor):
    """Records on_failure and on_stop calls with the instance number that received them."""

    def __init__(self, recorder: Recorder, log: HookLog, instance: int, fail_start: bool) -> None:
        super().__init__(recorder)
        self.log = log
        self.instance = instance
        self.fail_start = fail_start

    def on_start(self) -> None:
        if self.fail_start:
            raise OSError("cannot start")

    def handle(self, message: Message) -> None:
        super().handle(message)
        # Record the instance that handled it, in the payload log via a second entry.
        self.recorder.add(f"instance-{self.instance}", message)

    def on_failure(self, error: Exception, message: Message | None) -> None:
        with self.log.lock:
            self.log.failures.append((self.instance, error, message))

    def on_stop(self) -> None:
        with self.log.lock:
            self.log.stops.append(self.instance)


def test_on_failure_gets_the_error_and_the_message_then_a_fresh_instance_takes_over(
    make_supervised: Callable[[RestartPolicy], Supervised], recorder: Recorder
) -> None:
    harness = make_supervised(POLICY)
    log = HookLog()
    counter = itertools.count()
    ref = harness.system.spawn(
        lambda: HookedActor(recorder, log, next(counter), fail_start=False), "worker"
    )
    boom = harness.system.channel.send("worker", "boom", sender="test", timeout=WAIT)
    ref.tell("next")
    recorder.wait_count(2)  # "next" recorded by RecordingActor and by HookedActor

    with log.lock:
        ((instance, error, message),) = log.failures
        stops = list(log.stops)
    assert instance == 0
    assert isinstance(error, RuntimeError)
    assert str(error) == "boom"
    assert message is not None
    assert message.id == boom.id
    assert message.payload == "boom"
    assert stops == []  # on_stop is not called after a crash
    members = [member for member, _ in recorder.handled]
    assert members == ["worker", "instance-1"]  # handled by the replacement instance

    harness.system.stop(timeout=WAIT)
    with log.lock:
        assert log.stops == [1]  # the live instance is stopped once, the crashed one never


def test_on_failure_is_called_with_none_when_on_start_raises(
    make_supervised: Callable[[RestartPolicy], Supervised], recorder: Recorder
) -> None:
    # Actor.on_failure documents: "this instance raised `error` (on `message`, or in
    # `on_start` when None)".
    harness = make_supervised(RestartPolicy(max_restarts=0, period=60.0))
    log = HookLog()
    counter = itertools.count()
    harness.system.spawn(
        lambda: HookedActor(recorder, log, next(counter), fail_start=True), "worker"
    )
    assert harness.system.escalated.wait(WAIT)
    with log.lock:
        failures = list(log.failures)
    assert len(failures) == 1
    instance, error, message = failures[0]
    assert instance == 0
    assert isinstance(error, OSError)
    assert message is None


def test_on_failure_raising_is_counted_and_does_not_stop_the_restart(
    make_supervised: Callable[[RestartPolicy], Supervised], recorder: Recorder
) -> None:
    class BadHook(RecordingActor):
        def on_failure(self, error: Exception, message: Message | None) -> None:
            raise ValueError("hook broke")

    harness = make_supervised(POLICY)
    ref = harness.system.spawn(lambda: BadHook(recorder), "worker")
    ref.tell("boom")
    ref.tell("after")
    recorder.wait_count(1)
    assert recorder.payloads() == ["after"]
    assert harness.stats(ref) == (2, 1, ActorState.RUNNING)  # handler error + hook error


def test_pool_members_share_one_restart_budget(
    make_supervised: Callable[[RestartPolicy], Supervised], recorder: Recorder
) -> None:
    harness = make_supervised(POLICY)  # 3 restarts for the whole pool, not per member
    ref = harness.system.spawn_pool(lambda: RecordingActor(recorder), "pool", 3)
    for _ in range(4):
        ref.tell("boom")
    assert harness.system.escalated.wait(WAIT)
    # Another member may still be on its way into its (fake) backoff: join them all first.
    harness.system.stop(timeout=WAIT)
    (escalation,) = harness.escalations
    assert escalation.actor == "pool"
    assert escalation.failures_in_period == 4
    assert sorted(harness.clock.sleeps) == pytest.approx([0.1, 0.2, 0.4])
    assert not ref.alive
    snapshots = ref.stats()
    assert sum(s.errors for s in snapshots) == 4
    # A member still returning from its (fake) backoff when the pool is stopped may not
    # count its restart, so only an upper bound holds here.
    assert sum(s.restarts for s in snapshots) <= 3
