"""The monitor actor: per-thread CPU by native thread id, stuck detection, published samples."""

from __future__ import annotations

import threading
import time

from actord import Actor, ActorSystem, Message
from actord.daemon.health import (
    GetSample,
    Monitor,
    MonitorSample,
    SetStuckAfter,
    thread_cpu_times,
)

from .conftest import WAIT, Gate, Recorder, RecordingActor


class Burner(Actor):
    """Burns CPU on its own thread for the requested number of seconds, then replies."""

    def handle(self, message: Message) -> None:
        deadline = time.thread_time() + message.payload
        while time.thread_time() < deadline:
            pass
        self.reply(message, threading.get_native_id())


def test_cpu_is_the_actor_threads_own(system: ActorSystem) -> None:
    monitor = system.spawn(lambda: Monitor(system, interval=60.0), "monitor")
    burner = system.spawn(Burner, "burner")
    idle = system.spawn(Burner, "idle")
    native_id = burner.ask(0.3, timeout=WAIT)
    idle.ask(0.0, timeout=WAIT)
    sample: MonitorSample = monitor.ask(GetSample(), timeout=WAIT)
    by_name = {a.name: a for a in sample.actors}
    assert by_name["burner"].native_thread_id == native_id
    busy = by_name["burner"].cpu_user + by_name["burner"].cpu_system
    assert busy >= 0.25  # its own thread's time, not the process's
    assert by_name["idle"].cpu_user + by_name["idle"].cpu_system < 0.2
    assert native_id in thread_cpu_times()


def test_a_stuck_actor_is_flagged_and_the_sample_is_unhealthy(system: ActorSystem) -> None:
    # With a zero threshold an actor is stuck as soon as it is inside a handler: no waiting.
    monitor = system.spawn(lambda: Monitor(system, interval=60.0, stuck_after=0.0), "monitor")
    entered, release = threading.Event(), threading.Event()
    stuck = system.spawn(lambda: Gate(entered, release), "stuck")
    stuck.tell("hold")
    assert entered.wait(WAIT)
    try:
        sample: MonitorSample = monitor.ask(GetSample(), timeout=WAIT)
        assert sample.stuck == ("stuck",)  # and never the monitor itself, busy sampling
        assert not sample.healthy
    finally:
        release.set()
    stuck.ping(timeout=WAIT)  # served after the held message: the actor is idle again
    after: MonitorSample = monitor.ask(GetSample(), timeout=WAIT)
    assert after.stuck == ()
    assert after.healthy


def test_samples_are_published_on_the_interval(system: ActorSystem, recorder: Recorder) -> None:
    system.spawn(lambda: RecordingActor(recorder), "watcher")
    system.spawn(lambda: Monitor(system, interval=0.02), "monitor")
    system.channel.subscribe("monitor", "watcher")
    recorder.wait_count(3)
    samples = recorder.payloads()[:3]
    assert all(isinstance(s, MonitorSample) for s in samples)
    assert {a.name for a in samples[-1].actors} >= {"watcher", "monitor"}


def test_a_new_threshold_applies_from_the_next_sample(system: ActorSystem) -> None:
    monitor = system.spawn(lambda: Monitor(system, interval=60.0, stuck_after=60.0), "monitor")
    entered, release = threading.Event(), threading.Event()
    stuck = system.spawn(lambda: Gate(entered, release), "stuck")
    stuck.tell("hold")
    try:
        assert entered.wait(WAIT)
        assert monitor.ask(GetSample(), timeout=WAIT).stuck == ()  # under the old threshold
        assert monitor.ask(SetStuckAfter(0.0), timeout=WAIT) == 0.0
        assert monitor.ask(GetSample(), timeout=WAIT).stuck == ("stuck",)
    finally:
        release.set()
