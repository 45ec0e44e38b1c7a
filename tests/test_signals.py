"""The main loop's queue: signals from any thread, and other threads' requests, wake it."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from actord.daemon.signals import SignalQueue

LONG = 30.0  # a wait that only a missed wake-up would run out


@pytest.fixture
def signals() -> Iterator[SignalQueue]:
    installed = SignalQueue().install()
    try:
        yield installed
    finally:
        installed.restore()


def _from_another_thread(signum: int) -> threading.Thread:
    # The kernel may hand a process signal to any thread: here, surely not the main one.
    thread = threading.Thread(target=lambda: signal.pthread_kill(threading.get_ident(), signum))
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
