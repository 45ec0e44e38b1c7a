"""The main loop's queue: signals from any thread, and other threads' requests, wake it."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from actord.daemon.signals import SignalQueue, StartInterrupted

LONG = 30.0  # a wait that only a missed wake-up would run out


@pytest.fixture
def signals() -> Iterator[SignalQueue]:
    installed = SignalQueue().install()
    try:
        yield installed
    finally:
        installed.restore()


def _sender(signum: int) -> threading.Thread:
    # The kernel may hand a process signal to any thread: here, surely not the main one.
    return threading.Thread(target=lambda: signal.pthread_kill(threading.get_ident(), signum))


def _from_another_thread(signum: int) -> threading.Thread:
    thread = _sender(signum)
    thread.start()
    return thread


def test_a_sigterm_taken_by_another_thread_wakes_the_waiting_main_loop(
    signals: SignalQueue,
) -> None:
    began = time.monotonic()
    sender = _from_another_thread(signal.SIGTERM)
    event = signals.get(LONG)
    sender.join()
    assert event == signal.SIGTERM
    assert time.monotonic() - began < LONG / 2  # woken by the signal, not by the timeout
    assert signals.stop_requested


def test_a_sighup_is_queued_but_is_no_stop(signals: SignalQueue) -> None:
    _from_another_thread(signal.SIGHUP).join()
    assert signals.get(LONG) == signal.SIGHUP
    assert not signals.stop_requested


def test_put_from_another_thread_wakes_the_loop_and_order_is_kept(signals: SignalQueue) -> None:
    putter = threading.Thread(target=lambda: [signals.put(n) for n in ("a", "b")])
    putter.start()
    assert [signals.get(LONG), signals.get(LONG)] == ["a", "b"]
    putter.join()
    with pytest.raises(queue.Empty):
        signals.get(0.01)


def test_restore_puts_the_previous_handlers_back() -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    installed = SignalQueue().install()
    assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    installed.restore()
    assert {signum: signal.getsignal(signum) for signum in before} == before
    assert signal.set_wakeup_fd(-1) == -1  # no wake-up fd left behind


def test_while_interrupting_a_stop_raises_in_the_main_thread_even_in_a_wait() -> None:
    # As during the start's imports: the main thread is somewhere else than the loop.
    installed = SignalQueue().install(interrupting=True)
    try:
        never = threading.Event()
        sender = _sender(signal.SIGTERM)
        with pytest.raises(StartInterrupted):
            sender.start()  # (its start may already be interrupted)
            never.wait(LONG)  # a blocking wait: ended by the handler's exception
        sender.join()
        assert installed.stop_requested
        assert not installed.interrupting  # once: the cleanup it starts runs to its end
        assert installed.get(LONG) == signal.SIGTERM  # and still queued for the main loop
    finally:
        installed.restore()


def test_once_things_started_a_stop_is_only_queued(signals: SignalQueue) -> None:
    signals.install(interrupting=True)
    signals.interrupting = False  # the daemon starts its actors: not cut in the middle
    _from_another_thread(signal.SIGTERM).join()
    assert signals.get(LONG) == signal.SIGTERM
    assert signals.stop_requested


def test_a_stop_before_an_interrupted_step_ends_it_at_once(signals: SignalQueue) -> None:
    _from_another_thread(signal.SIGINT).join()
    assert signals.get(LONG) == signal.SIGINT
    entered = False
    with pytest.raises(StartInterrupted), signals.interrupted():
        entered = True
    assert not entered
    assert not signals.interrupting


def test_a_stop_inside_an_interrupted_step_ends_it(signals: SignalQueue) -> None:
    never = threading.Event()
    sender = _sender(signal.SIGTERM)
    with pytest.raises(StartInterrupted), signals.interrupted():
        sender.start()
        never.wait(LONG)
    sender.join()
    assert not signals.interrupting
