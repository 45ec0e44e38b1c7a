"""Shared fixtures: systems that always stop, a fake clock, and a recording actor.

Tests synchronise on events, futures and joins with timeouts, never on sleeps.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from actord import Actor, ActorSystem, Message, RestartPolicy, ThreadChannel

from ._daemon import DaemonProcess
from ._prometheus import Observed, require
from ._ray import RayCluster

WAIT = 10.0  # generous ceiling for an event that should happen at once


class FakeClock:
    """A clock whose time moves only when a test (or a backoff sleep) moves it.

    `sleep` records the requested delay and returns at once, advancing time by it, so
    supervision can be tested without real waiting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards now and sleeps
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float, interrupt: threading.Event) -> bool:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds
        return interrupt.is_set()


class Call(threading.Thread):
    """Runs `fn` on its own thread and keeps its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as error:
            self.error = error

    def finish(self) -> None:
        self.join(WAIT)
        assert not self.is_alive(), "call did not return in time"


@dataclass
class Recorder:
    """Thread-safe record of what actors handled, with a condition to wait on."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    handled: list[tuple[str, Message]] = field(default_factory=list)

    def add(self, member: str, message: Message) -> None:
        with self.cond:
            self.handled.append((member, message))
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"condition not met within {timeout}s")

    def wait_count(self, n: int, timeout: float = WAIT) -> None:
        self.wait_for(lambda: len(self.handled) >= n, timeout)

    def payloads(self) -> list[Any]:
        with self.cond:
            return [m.payload for _, m in self.handled]


class Gate(Actor):
    """Blocks in handle until `release` is set; records entry."""

    def __init__(self, entered: threading.Event, release: threading.Event) -> None:
        self.entered = entered
        self.release = release

    def handle(self, message: Message) -> None:
        self.entered.set()
        assert self.release.wait(WAIT)
        if message.correlation_id is not None:
            self.reply(message, message.payload)


class RecordingActor(Actor):
    """Records each message; a payload equal to "boom" raises; replies to requests."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def handle(self, message: Message) -> None:
        if message.payload == "boom":
            raise RuntimeError("boom")
        self.recorder.add(self.member, message)
        if message.correlation_id is not None:
            self.reply(message, message.payload)


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Make the interpreter switch threads far more often, to widen race windows."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def system(fake_clock: FakeClock) -> Iterator[ActorSystem]:
    """A system with a fake clock (restarts do not wait) that is always stopped."""
    sys_ = ActorSystem(
        "test",
        clock=fake_clock,
        default_policy=RestartPolicy(max_restarts=100, period=60.0),
    )
    try:
        yield sys_
    finally:
        sys_.stop(timeout=WAIT)


@pytest.fixture
def journal(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh journal path for `start_job_system`, outside the test's own tmp_path (whose
    files some tests list)."""
    return str(tmp_path_factory.mktemp("state") / "journal.sqlite3")


@pytest.fixture
def channel() -> Iterator[ThreadChannel]:
    ch = ThreadChannel()
    try:
        yield ch
    finally:
        ch.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Make `actord run` subprocesses on `tmp_path`; every one is stopped at the end."""
    made: list[DaemonProcess] = []

    def make(*extra: str, base: Path | None = None, engine: str | None = "numpy") -> DaemonProcess:
        daemon = DaemonProcess(base or tmp_path, *extra, engine=engine)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.stop()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A real 2-node Ray cluster on this machine, shared by the Ray tests; a test that
    kills a node or stops the cluster starts it again before it ends. Stopped at the end:
    exactly the processes it started."""
    cluster = RayCluster()
    try:
        yield cluster.start()
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """A daemon that has run real jobs, scraped every second by a real Prometheus.

    Shared by the Prometheus and Grafana tests: Prometheus needs several seconds before its
    first scrape lands, which each test should not pay again.
    """
    require("prometheus")
    stack = Observed(tmp_path_factory.mktemp("observed"))
    try:
        assert stack.prometheus.ready.wait(60), "Prometheus never became ready"
        stack.prometheus.until('up{job="actord"}', lambda v: list(v.values()) == [1.0], 60)
        _workload(stack.daemon)
        # Wait until Prometheus has scraped the daemon twice after the last job ended (rates
        # need two samples of the final counts).
        final = stack.daemon.call("status")["jobs_done"]
        stack.prometheus.until(
            'sum(actord_jobs{state="done"})', lambda v: list(v.values()) == [float(final)], 60
        )
        scrapes = 'count_over_time(up{job="actord"}[1h])'
        (seen,) = stack.prometheus.values(scrapes).values()
        stack.prometheus.until(scrapes, lambda v: max(v.values(), default=0) >= seen + 2, 60)
        yield stack
    finally:
        stack.stop()


def _workload(daemon: DaemonProcess) -> None:
    from actors.demo import write_sample_log

    source = daemon.inputs / "app.log"
    write_sample_log(str(source), 200_000)
    with daemon.client(timeout=120) as client:
        ids = [
            client.call(
                "submit",
                {"kind": "log", "input": str(source), "output": str(daemon.outputs / "app.jsonl")},
            )["id"],
            client.call(
                "submit",
                {
                    "kind": "fft",
                    "output": str(daemon.outputs / "f.npy"),
                    "options": {"synthetic": [48, 256, 256]},
                },
            )["id"],
        ]
        for job in ids:
            final = client.stream("watch", job, on_notification=None, timeout=120)
            assert final["state"] == "done", final


_CTRL_C_ABLE = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def ctrl_c_able(argv: list[str]) -> list[str]:
    """`argv` run with SIGINT back to its default, for a child a test interrupts as Ctrl-C
    would: a test run started in the background by a non-interactive shell inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler in the child. (An exec
    shim rather than `preexec_fn`, which is unsafe in a process with threads.)"""
    return [sys.executable, "-c", _CTRL_C_ABLE, *argv]


def join_job_actors(job_id: str) -> None:
    """Wait for a job's reader and writer threads to exit (a stop does not wait for them)."""
    names = {f"actord:{job_id}.reader", f"actord:{job_id}.writer"}
    for thread in [t for t in threading.enumerate() if t.name in names]:
        thread.join(WAIT)
        assert not thread.is_alive(), f"{thread.name} did not exit"


class UnitGate:
    """Units wait in the pools (the thread parser's `parse_block`, the FFT workers'
    `transform_chunk`) until the gate opens: their job stays running meanwhile."""

    def __init__(self) -> None:
        self.entered = threading.Event()  # a unit reached a pool: the job's actors run
        self.opened = threading.Event()

    def wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def wait_then(*args: Any) -> Any:
            self.entered.set()
            assert self.opened.wait(WAIT)
            return original(*args)

        return wait_then


@pytest.fixture
def unit_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnitGate]:
    import actors.fft as fft_module
    import actors.parser as parser_module

    made = UnitGate()
    monkeypatch.setattr(parser_module, "parse_block", made.wrap(parser_module.parse_block))
    monkeypatch.setattr(fft_module, "transform_chunk", made.wrap(fft_module.transform_chunk))
    try:
        yield made
    finally:
        made.opened.set()
