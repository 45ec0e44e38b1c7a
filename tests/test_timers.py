"""TimerService: one thread, a heap of deadlines, one-shot and repeating timers, closing."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator

import pytest

from actord import ChannelClosed, InvalidArgument, TimerService

from .conftest import WAIT

_names = itertools.count()


@pytest.fixture
def timer_name() -> str:
    """A thread name no other test's timer service uses."""
    return f"test-timers-{next(_names)}"


@pytest.fixture
def timers(timer_name: str) -> Iterator[TimerService]:
    service = TimerService(name=timer_name)
    try:
        yield service
    finally:
        service.close()


def threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def set_after(timers: TimerService, delay: float) -> threading.Event:
    """Schedule a one-shot marker; the event is set when it fires."""
    fired = threading.Event()
    timers.call_later(delay, fired.set)
    return fired


def counter() -> tuple[list[int], Callable[[], None]]:
    calls: list[int] = []
    return calls, lambda: calls.append(1)


def test_call_later_fires_once(timers: TimerService) -> None:
    calls, tick = counter()
    timers.call_later(0.01, tick)
    assert set_after(timers, 0.05).wait(WAIT)  # fires after the timer under test
    assert len(calls) == 1


def test_call_later_runs_the_callback(timers: TimerService) -> None:
    fired = threading.Event()
    timers.call_later(0.01, fired.set)
    assert fired.wait(WAIT)


def test_repeating_timer_fires_several_times(timers: TimerService) -> None:
    enough = threading.Event()
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        if len(calls) == 3:
            enough.set()

    timer = timers.call_later(0.0, tick, interval=0.01)
    assert enough.wait(WAIT)
    timer.cancel()
    assert not timer.active


def test_repeating_timer_stops_after_cancel(timers: TimerService) -> None:
    started = threading.Event()
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        started.set()

    timer = timers.call_later(0.0, tick, interval=0.01)
    assert started.wait(WAIT)
    timer.cancel()
    # Timers run on one thread: once this marker fires, no tick is still running.
    settled: list[int] = []
    timers.call_later(0.0, lambda: settled.append(len(calls)))
    # Several intervals later, the count must not have moved.
    assert set_after(timers, 0.05).wait(WAIT)
    assert settled == [len(calls)]


@pytest.mark.parametrize("delay", [-0.001, -1.0])
def test_negative_delay_raises_invalid_argument(timers: TimerService, delay: float) -> None:
    with pytest.raises(InvalidArgument):
        timers.call_later(delay, lambda: None)
    assert timers.pending() == 0


@pytest.mark.parametrize("interval", [0.0, -0.01])
def test_non_positive_interval_raises_invalid_argument(
    timers: TimerService, interval: float
) -> None:
    with pytest.raises(InvalidArgument):
        timers.call_later(0.01, lambda: None, interval=interval)
    assert timers.pending() == 0


def test_timers_fire_in_deadline_order(timers: TimerService) -> None:
    order: list[str] = []
    both = threading.Event()

    def record(label: str) -> Callable[[], None]:
        def fire() -> None:
            order.append(label)
            if len(order) == 2:
                both.set()

        return fire

    timers.call_later(0.05, record("late"))  # scheduled first, due last
    timers.call_later(0.01, record("early"))
    assert both.wait(WAIT)
    assert order == ["early", "late"]


def test_close_cancels_pending_timers_and_joins_the_thread(timer_name: str) -> None:
    timers = TimerService(name=timer_name)
    calls, tick = counter()
    timer = timers.call_later(WAIT, tick)
    [thread] = threads_named(timer_name)
    timers.close()
    assert not thread.is_alive()
    assert not timer.active
    assert timers.pending() == 0
    assert calls == []


def test_one_thread_serves_every_timer(timers: TimerService, timer_name: str) -> None:
    for _ in range(20):
        timers.call_later(WAIT, lambda: None)
    timers.call_later(0.01, lambda: None, interval=0.01)
    assert set_after(timers, 0.02).wait(WAIT)
    assert len(threads_named(timer_name)) == 1


def test_no_thread_until_the_first_timer(timer_name: str) -> None:
    timers = TimerService(name=timer_name)
    try:
        assert threads_named(timer_name) == []
    finally:
        timers.close()


def test_call_later_after_close_raises_channel_closed(timers: TimerService) -> None:
    timers.close()
    with pytest.raises(ChannelClosed):
        timers.call_later(0.01, lambda: None)


def test_a_raising_callback_does_not_stop_later_timers(timers: TimerService) -> None:
    def explode() -> None:
        raise RuntimeError("callback failed")

    timers.call_later(0.0, explode)
    assert set_after(timers, 0.01).wait(1.0)
