"""A small in-process pipeline for `actord demo`: lines -> parser pool -> counter.

It exercises the runtime end to end (pool, backpressure, batching, supervision, stats) on
generated seed-format log lines, malformed ones included. The jobs issue replaces it with the
real log and FFT jobs.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass

from actord import Actor, ActorSystem, Batch, Message

_SEED_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) \[(\w+)\] (.*)$")
_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARNING", "ERROR")


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a parser hands the counter for one block of lines."""

    matched: int
    rejected: int
    levels: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Summary:
    lines: int
    matched: int
    rejected: int
    levels: tuple[tuple[str, int], ...]


class Parser(Actor):
    """Pool member: parses a block of lines, sends the counts on."""

    def handle(self, message: Message) -> None:
        block: Batch = message.payload
        levels: Counter[str] = Counter()
        matched = 0
        for line in block.items:
            found = _SEED_LINE.match(line)
            if found:
                matched += 1
                levels[found.group(2)] += 1
        rejected = len(block.items) - matched
        self.send("counter", Parsed(matched, rejected, tuple(sorted(levels.items()))))


class CountingSink(Actor):
    """Adds up what the parsers found; sets `done` after `blocks` blocks."""

    def __init__(self, blocks: int, done: threading.Event, result: list[Summary]) -> None:
        self.blocks = blocks
        self.done = done
        self.result = result
        self.seen = 0
        self.matched = 0
        self.rejected = 0
        self.levels: Counter[str] = Counter()

    def handle(self, message: Message) -> None:
        parsed: Parsed = message.payload
        self.seen += 1
        self.matched += parsed.matched
        self.rejected += parsed.rejected
        self.levels.update(dict(parsed.levels))
        if self.seen == self.blocks:
            lines = self.matched + self.rejected
            levels = tuple(sorted(self.levels.items()))
            self.result.append(Summary(lines, self.matched, self.rejected, levels))
            self.done.set()


def sample_lines(n: int, seed: int = 7) -> list[str]:
    """`n` seed-format log lines; about one in fifty is malformed."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    lines = []
    for i in range(n):
        if rng.random() < 0.02:
            lines.append(f"garbage line {i} without a timestamp")
        else:
            level = rng.choice(_LEVELS)
            lines.append(f"2026-11-25 12:{i // 60 % 60:02d}:{i % 60:02d} [{level}] event {i}")
    return lines


def main(lines: int = 200_000, block: int = 1000, parsers: int = 2) -> int:
    """Run the pipeline and print a summary and a per-actor table (the CLI's UI)."""
    data = sample_lines(lines)
    blocks = [tuple(data[i : i + block]) for i in range(0, len(data), block)]
    done = threading.Event()
    result: list[Summary] = []
    with ActorSystem("demo") as system:
        system.spawn(lambda: CountingSink(len(blocks), done, result), "counter")
        pool = system.spawn_pool(Parser, "parser", parsers, capacity=64)
        start = time.perf_counter()
        for i, items in enumerate(blocks, 1):
            pool.tell(Batch(items), sender="demo")
            if i % max(1, len(blocks) // 10) == 0:
                print(f"\rsent {i}/{len(blocks)} blocks", end="", flush=True)
        if not done.wait(120):
            print("\nthe pipeline did not finish within 120 s")
            return 1
        elapsed = time.perf_counter() - start
        stats = system.stats()
        dead = system.channel.dead_letter_counts()
    summary = result[0]
    rate = summary.lines / elapsed
    print(f"\rparsed {summary.lines:,} lines in {elapsed:.2f} s ({rate:,.0f} lines/s)")
    print(f"matched {summary.matched:,}, rejected {summary.rejected:,}")
    print("levels: " + ", ".join(f"{k}={v:,}" for k, v in summary.levels))
    print(f"dead letters: {sum(dead.values())}")
    print()
    print(
        f"{'actor':<12} {'thread':>8} {'messages':>9} {'errors':>6} {'restarts':>8} "
        f"{'p50 handle':>11} {'p99 wait':>10}"
    )
    for s in stats:
        print(
            f"{s.name:<12} {s.native_thread_id:>8} {s.processed_total:>9,} {s.errors:>6} "
            f"{s.restarts:>8} {s.handle_time.quantile(0.5) * 1e3:>9.3f}ms "
            f"{s.queue_wait.quantile(0.99) * 1e3:>8.3f}ms"
        )
    print("\nmetrics: a Prometheus endpoint arrives with the observability issue")
    return 0
