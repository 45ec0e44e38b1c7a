"""Channel benchmark: actord against plain threads + queues and against Pykka, in one run.

    python bench/channel.py [--messages 200000] [--round-trips 20000] [--repeat 5]

Prints one table of medians (and the ratios the runtime-core issue sets goals for):
- one-way: N small messages through source -> a -> b -> sink (3 hand-offs, 4 threads);
- batched: the same items through the same pipeline, BATCH items per hand-off;
- round trips: request/reply between two actors (or two bare threads).
Pykka comes from the `bench` extra (`pip install -e '.[bench]'`); without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actord import Actor, ActorSystem, Message

BATCH = 256
_STOP = object()


@dataclass(frozen=True, slots=True)
class Batch:
    """Many payloads in one message: what an application sends to amortise the hand-off."""

    items: tuple[Any, ...]


# -- actord ---------------------------------------------------------------------------------


class _Forward(Actor):
    def __init__(self, target: str) -> None:
        self.target = target

    def handle(self, message: Message) -> None:
        self.send(self.target, message.payload)


class _Sink(Actor):
    def __init__(self, expected: int, done: threading.Event) -> None:
        self.expected = expected
        self.seen = 0
        self.done = done

    def handle(self, message: Message) -> None:
        payload = message.payload
        self.seen += len(payload.items) if type(payload) is Batch else 1
        if self.seen >= self.expected:
            self.done.set()


def actord_pipeline(n: int, batch: int = 1) -> float:
    done = threading.Event()
    with ActorSystem("bench") as system:
        system.spawn(lambda: _Sink(n, done), "sink")
        system.spawn(lambda: _Forward("sink"), "b")
        a = system.spawn(lambda: _Forward("b"), "a")
        start = time.perf_counter()
        if batch == 1:
            tell = a.tell
            for i in range(n):
                tell(i)
        else:
            for base in range(0, n, batch):
                a.tell(Batch(tuple(range(base, min(base + batch, n)))))
        if not done.wait(300):
            raise RuntimeError("actord pipeline did not finish")
        return n / (time.perf_counter() - start)


class _Echo(Actor):
    def handle(self, message: Message) -> None:
        self.reply(message, message.payload)


class _Asker(Actor):
    def handle(self, message: Message) -> None:
        for i in range(message.payload):
            self.ask("echo", i, timeout=10.0)
        self.reply(message, message.payload)


def actord_round_trips(n: int) -> float:
    with ActorSystem("bench") as system:
        system.spawn(_Echo, "echo")
        asker = system.spawn(_Asker, "asker")
        start = time.perf_counter()
        asker.ask(n, timeout=300)
        return n / (time.perf_counter() - start)


# -- plain threads + queues -----------------------------------------------------------------


def queue_pipeline(n: int, make: Callable[[], Any]) -> float:
    queues = [make() for _ in range(3)]

    def stage(inbox: Any, outbox: Any) -> None:
        get, put = inbox.get, outbox.put
        while (item := get()) is not _STOP:
            put(item)
        put(_STOP)

    def sink(inbox: Any) -> None:
        get = inbox.get
        while get() is not _STOP:
            pass

    threads = [
        threading.Thread(target=stage, args=(queues[0], queues[1])),
        threading.Thread(target=stage, args=(queues[1], queues[2])),
        threading.Thread(target=sink, args=(queues[2],)),
    ]
    for t in threads:
        t.start()
    start = time.perf_counter()
    put = queues[0].put
    for i in range(n):
        put(i)
    put(_STOP)
    for t in threads:
        t.join()
    return n / (time.perf_counter() - start)


@dataclass(frozen=True, slots=True)
class _Msg:
    sender: str
    recipient: str
    payload: Any
    sent_ns: int


def simplequeue_message_pipeline(n: int) -> float:
    """The floor for a typed runtime: a frozen slotted message built and timed per hand-off."""
    queues: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(3)]
    now = time.monotonic_ns

    def stage(inbox: Any, outbox: Any, name: str) -> None:
        get, put = inbox.get, outbox.put
        waited = 0
        while (item := get()) is not _STOP:
            waited += now() - item.sent_ns
            put(_Msg(name, "next", item.payload, now()))
        put(_STOP)

    def sink(inbox: Any) -> None:
        get = inbox.get
        waited = 0
        while (item := get()) is not _STOP:
            waited += now() - item.sent_ns

    threads = [
        threading.Thread(target=stage, args=(queues[0], queues[1], "a")),
        threading.Thread(target=stage, args=(queues[1], queues[2], "b")),
        threading.Thread(target=sink, args=(queues[2],)),
    ]
    for t in threads:
        t.start()
    start = time.perf_counter()
    put = queues[0].put
    for i in range(n):
        put(_Msg("source", "a", i, now()))
    put(_STOP)
    for t in threads:
        t.join()
    return n / (time.perf_counter() - start)


def simplequeue_round_trips(n: int) -> float:
    requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
    replies: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def echo() -> None:
        while (item := requests.get()) is not _STOP:
            replies.put(item)

    t = threading.Thread(target=echo)
    t.start()
    start = time.perf_counter()
    for i in range(n):
        requests.put(i)
        replies.get()
    elapsed = time.perf_counter() - start
    requests.put(_STOP)
    t.join()
    return n / elapsed


# -- Pykka ----------------------------------------------------------------------------------


def pykka_pipeline(n: int) -> float:
    import pykka  # noqa: PLC0415 - optional peer

    done = threading.Event()

    class Forward(pykka.ThreadingActor):  # type: ignore[misc]
        def __init__(self, target: Any) -> None:
            super().__init__()
            self.target = target

        def on_receive(self, message: Any) -> None:
            self.target.tell(message)

    class Sink(pykka.ThreadingActor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.seen = 0

        def on_receive(self, message: Any) -> None:
            self.seen += 1
            if self.seen >= n:
                done.set()

    sink = Sink.start()
    b = Forward.start(sink)
    a = Forward.start(b)
    start = time.perf_counter()
    for i in range(n):
        a.tell(i)
    done.wait(600)
    rate = n / (time.perf_counter() - start)
    pykka.ActorRegistry.stop_all()
    return rate


def pykka_round_trips(n: int) -> float:
    import pykka  # noqa: PLC0415 - optional peer

    class Echo(pykka.ThreadingActor):  # type: ignore[misc]
        def on_receive(self, message: Any) -> Any:
            return message

    class Asker(pykka.ThreadingActor):  # type: ignore[misc]
        def __init__(self, echo: Any) -> None:
            super().__init__()
            self.echo = echo

        def on_receive(self, message: Any) -> Any:
            for i in range(message):
                self.echo.ask(i)
            return message

    asker = Asker.start(Echo.start())
    start = time.perf_counter()
    asker.ask(n)
    rate = n / (time.perf_counter() - start)
    pykka.ActorRegistry.stop_all()
    return rate


# -- the table ------------------------------------------------------------------------------


def _medians(
    cases: list[tuple[str, str, Callable[[], float]]], repeat: int
) -> dict[str, tuple[str, float]]:
    """Median of `repeat` interleaved rounds (each round runs every case once, in order), so
    a slow spell of the machine weighs on every row alike."""
    runs: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(repeat):
        for name, _, fn in cases:
            runs[name].append(fn())
    return {name: (measure, statistics.median(runs[name])) for name, measure, _ in cases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--round-trips", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n, rt, rep = args.messages, args.round_trips, args.repeat
    try:
        import pykka  # noqa: F401, PLC0415

        have_pykka = True
    except ImportError:
        have_pykka = False
        print("pykka not installed: its rows are skipped (pip install -e '.[bench]')")

    cases: list[tuple[str, str, Callable[[], float]]] = [
        ("actord", "one-way msgs/s", lambda: actord_pipeline(n)),
        ("pykka", "one-way msgs/s", lambda: pykka_pipeline(n)),
        ("queue.Queue()", "one-way msgs/s", lambda: queue_pipeline(n, queue.Queue)),
        (
            "queue.Queue(1024)",
            "one-way msgs/s",
            lambda: queue_pipeline(n, lambda: queue.Queue(1024)),
        ),
        ("SimpleQueue + frozen msg", "one-way msgs/s", lambda: simplequeue_message_pipeline(n)),
        ("SimpleQueue (bare)", "one-way msgs/s", lambda: queue_pipeline(n, queue.SimpleQueue)),
        (f"actord batched x{BATCH}", "one-way items/s", lambda: actord_pipeline(n * 5, BATCH)),
        ("actord ask", "round trips/s", lambda: actord_round_trips(rt)),
        ("pykka ask", "round trips/s", lambda: pykka_round_trips(rt)),
        ("SimpleQueue pair", "round trips/s", lambda: simplequeue_round_trips(rt)),
    ]
    if not have_pykka:
        cases = [case for case in cases if not case[0].startswith("pykka")]
    rows = _medians(cases, rep)

    def ratio(a: str, b: str) -> str:
        return f"{rows[a][1] / rows[b][1]:.2f}x" if a in rows and b in rows else "n/a"

    version = sys.version.split()[0]
    print(f"\nmedians of {rep} interleaved runs; {n:,} messages, {rt:,} round trips", end="")
    print(f"; Python {version}")
    print(f"| {'implementation':<26} | {'measure':<16} | {'median':>12} |")
    print(f"|{'-' * 28}|{'-' * 18}|{'-' * 14}|")
    for name, (measure, value) in rows.items():
        print(f"| {name:<26} | {measure:<16} | {value:>12,.0f} |")
    print()
    print(f"| {'ratio':<46} | {'value':>7} | {'goal':>7} |")
    print(f"|{'-' * 48}|{'-' * 9}|{'-' * 9}|")
    for label, value, goal in (
        ("actord / pykka, one-way", ratio("actord", "pykka"), ">= 4"),
        (
            "actord / SimpleQueue + frozen msg, one-way",
            ratio("actord", "SimpleQueue + frozen msg"),
            "",
        ),
        ("actord / queue.Queue(1024), one-way", ratio("actord", "queue.Queue(1024)"), ""),
        ("actord ask / pykka ask", ratio("actord ask", "pykka ask"), ">= 1.3"),
        ("actord ask / SimpleQueue pair", ratio("actord ask", "SimpleQueue pair"), ">= 0.8"),
        (
            "actord batched / SimpleQueue (bare)",
            ratio(f"actord batched x{BATCH}", "SimpleQueue (bare)"),
            ">= 0.5",
        ),
    ):
        print(f"| {label:<46} | {value:>7} | {goal:>7} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
