"""asyncio benchmark: awaiting actors from a loop, and coroutine actors, in one run.

    python bench/aio_bench.py [--asks 10000] [--messages 100000] [--repeat 5]

- asks: ASKS concurrent round trips from one event loop, answered by one thread actor:
  `ref.ask_async` against `loop.run_in_executor(None, ref.ask)` (the default executor)
  and against an `asyncio.Queue` pair inside the loop (a server task answering each request's
  future: the limit, with no thread hop at all). Round trips/s, threads the asks added, and
  the memory each pending ask holds (tracemalloc, with the answerer held). One more row:
  ask_async answered by a pool of 4 thread actors (the tests' set-up).
- one-way: MESSAGES through a -> b -> sink (3 stages fed by the main thread), with
  `AsyncActor`s, with thread actors (`bench/channel.py`'s pipeline) and with Pykka.
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard module it benchmarks: its folder must not shadow it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

from actord import Actor, ActorRef, ActorSystem, AsyncActor, Message  # noqa: E402

sys.path.append(_HERE)  # asyncio is imported: now bench/channel.py's pipelines can be
from channel import actord_pipeline, pykka_pipeline  # noqa: E402

POOL = 4


class _Double(Actor):
    def handle(self, message: Message) -> None:
        self.reply(message, 2 * message.payload)


class _Held(Actor):
    """Answers once `release` is set: asks pile up pending meanwhile (for the memory)."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def handle(self, message: Message) -> None:
        self.release.wait(600)
        self.reply(message, 2 * message.payload)


# -- one way of asking per row ---------------------------------------------------------------

Asker = Callable[[ActorRef, int], Awaitable[Any]]


def _ask_async(ref: ActorRef, n: int) -> Awaitable[Any]:
    return ref.ask_async(n, timeout=600)


def _executor(ref: ActorRef, n: int) -> Awaitable[Any]:
    return asyncio.get_running_loop().run_in_executor(None, lambda: ref.ask(n, timeout=600))


class _QueuePair:
    """Requests on an asyncio.Queue, answered by a server task through each one's future."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue()
        self.held = asyncio.Event()
        self.held.set()
        self.server = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        while True:
            n, future = await self.requests.get()
            if not self.held.is_set():
                await self.held.wait()
            future.set_result(2 * n)

    def ask(self, n: int) -> Awaitable[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.requests.put_nowait((n, future))
        return future


def _threads() -> int:
    return threading.active_count()


async def _round_trips(kind: str, ref: ActorRef, asks: int) -> tuple[float, int]:
    """(round trips/s, threads added while they were in flight)."""
    pair = _QueuePair() if kind == "queue" else None
    before = _threads()
    start = time.perf_counter()
    if pair is not None:
        futures = [pair.ask(i) for i in range(asks)]
    else:
        ask = _ask_async if kind == "ask_async" else _executor
        futures = [asyncio.ensure_future(ask(ref, i)) for i in range(asks)]
    await asyncio.sleep(0)
    during = _threads()
    results = await asyncio.gather(*futures)
    elapsed = time.perf_counter() - start
    if results[-1] != 2 * (asks - 1):
        raise RuntimeError(f"{kind}: a reply went to the wrong awaiter")
    if pair is not None:
        pair.server.cancel()
    return asks / elapsed, max(0, during - before)


async def _pending_bytes(kind: str, ref: ActorRef, release: threading.Event, asks: int) -> float:
    """Bytes allocated (and held) per ask while every ask is pending, its answerer held."""
    pair = _QueuePair() if kind == "queue" else None
    if pair is not None:
        pair.held.clear()
    release.clear()
    await asyncio.sleep(0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    if pair is not None:
        futures: list[Any] = [asyncio.ensure_future(pair.ask(i)) for i in range(asks)]
    else:
        ask = _ask_async if kind == "ask_async" else _executor
        futures = [asyncio.ensure_future(ask(ref, i)) for i in range(asks)]
    for _ in range(3):
        await asyncio.sleep(0)  # every ask sent, every task at its first wait
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    release.set()
    if pair is not None:
        pair.held.set()
    await asyncio.gather(*futures)
    if pair is not None:
        pair.server.cancel()
    return held / asks


def ask_rows(asks: int, repeat: int) -> dict[str, tuple[float, int, float]]:
    """kind -> (median round trips/s, most threads added, bytes per pending ask)."""
    kinds = ("ask_async", "executor", "queue", "ask_async pool")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    threads: dict[str, int] = dict.fromkeys(kinds, 0)
    memory: dict[str, float] = {}
    release = threading.Event()
    with ActorSystem("bench-aio", default_capacity=asks + 16) as system:
        # One thread actor answers, as one server task answers the Queue pair; the pool
        # row is the tests' set-up: four members taking one message at a time.
        one = system.spawn(_Double, "double")
        pool = system.spawn_pool(_Double, "pool", POOL)
        held = system.spawn(lambda: _Held(release), "held")
        one.ask(0, timeout=10)
        pool.ask(0, timeout=10)
        for _ in range(repeat):  # interleaved rounds: a slow spell weighs on every row alike
            for kind in kinds:
                ref = pool if kind == "ask_async pool" else one
                how = "ask_async" if kind == "ask_async pool" else kind
                rate, added = asyncio.run(_round_trips(how, ref, asks))
                rates[kind].append(rate)
                threads[kind] = max(threads[kind], added)
        for kind in kinds[:3]:
            memory[kind] = asyncio.run(_pending_bytes(kind, held, release, asks))
        memory["ask_async pool"] = memory["ask_async"]
        release.set()
    return {k: (statistics.median(rates[k]), threads[k], memory[k]) for k in kinds}


# -- one-way pipelines -----------------------------------------------------------------------


class _AsyncForward(AsyncActor):
    def __init__(self, target: str) -> None:
        self.target = target

    async def handle(self, message: Message) -> None:
        await self.send_async(self.target, message.payload)


class _AsyncSink(AsyncActor):
    def __init__(self, expected: int, done: threading.Event) -> None:
        self.expected = expected
        self.seen = 0
        self.done = done

    async def handle(self, message: Message) -> None:
        self.seen += 1
        if self.seen >= self.expected:
            self.done.set()


def async_pipeline(n: int) -> float:
    import functools  # noqa: PLC0415

    done = threading.Event()
    with ActorSystem("bench-async") as system:
        system.spawn(functools.partial(_AsyncSink, n, done), "sink")
        system.spawn(functools.partial(_AsyncForward, "sink"), "b")
        a = system.spawn(functools.partial(_AsyncForward, "b"), "a")
        start = time.perf_counter()
        tell = a.tell
        for i in range(n):
            tell(i)
        if not done.wait(600):
            raise RuntimeError("async pipeline did not finish")
        return n / (time.perf_counter() - start)


def pipeline_rows(n: int, repeat: int) -> dict[str, float]:
    try:
        import pykka  # noqa: F401, PLC0415

        cases = {"async": async_pipeline, "thread": actord_pipeline, "pykka": pykka_pipeline}
    except ImportError:
        print("pykka not installed: its row is skipped (pip install -e '.[bench]')")
        cases = {"async": async_pipeline, "thread": actord_pipeline}
    runs: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            runs[name].append(fn(n))
    return {k: statistics.median(v) for k, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--asks", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    asks = ask_rows(args.asks, args.repeat)
    pipes = pipeline_rows(args.messages, args.repeat)

    print(f"\nmedians of {args.repeat} interleaved runs; {args.asks:,} concurrent asks from one")
    print(f"loop (one thread actor answers); {args.messages:,} one-way messages")
    print(f"through 3 stages; Python {sys.version.split()[0]}")
    head = ("asks from one loop", "round trips/s", "threads", "B/pending")
    print(f"| {head[0]:<28} | {head[1]:>13} | {head[2]:>7} | {head[3]:>9} |")
    print(f"|{'-' * 30}|{'-' * 15}|{'-' * 9}|{'-' * 11}|")
    labels = {
        "ask_async": "await ref.ask_async",
        "executor": "run_in_executor(ref.ask)",
        "queue": "asyncio.Queue pair (in-loop)",
        "ask_async pool": f"ask_async, pool of {POOL}",
    }
    for kind, (rate, threads, per) in asks.items():
        print(f"| {labels[kind]:<28} | {rate:>13,.0f} | {threads:>7} | {per:>9,.0f} |")
    print()
    print(f"| {'one-way, 3 stages':<28} | {'msgs/s':>13} |")
    print(f"|{'-' * 30}|{'-' * 15}|")
    names = {"async": "AsyncActor", "thread": "thread Actor", "pykka": "pykka"}
    for name, rate in pipes.items():
        print(f"| {names[name]:<28} | {rate:>13,.0f} |")
    print()

    def ratio(a: float, b: float | None) -> str:
        return "n/a" if not b else f"{a / b:.2f}x"

    print(f"| {'ratio':<40} | {'value':>9} | {'goal':>9} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 11}|")
    rows = (
        ("ask_async / run_in_executor", ratio(asks["ask_async"][0], asks["executor"][0]), ">= 5x"),
        (
            "ask_async / asyncio.Queue pair",
            ratio(asks["ask_async"][0], asks["queue"][0]),
            ">= 0.3x",
        ),
        ("ask_async bytes per pending ask", f"{asks['ask_async'][2]:,.0f}", "<= 2048"),
        ("ask_async threads added", str(asks["ask_async"][1]), "0"),
        ("AsyncActor / thread Actor, one-way", ratio(pipes["async"], pipes["thread"]), ">= 1x"),
        ("AsyncActor / pykka, one-way", ratio(pipes["async"], pipes.get("pykka")), ""),
    )
    for label, value, goal in rows:
        print(f"| {label:<40} | {value:>9} | {goal:>9} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
