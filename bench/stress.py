"""Stress workload: producers, restarts, resizes, stops and ask storms, with every message
accounted for. Also imported by tests/test_stress.py (a short run per seed).

    python bench/stress.py [--seconds 60] [--seed 1] [--round 5]

Runs rounds of `--round` seconds (each a fresh system, stopped at its end) until `--seconds`
have passed, prints the counts and exits 1 if any invariant was violated.

The topology (capacities are tiny, so mailboxes fill and senders block):

    producers --> work (pool, resized and restarted)   sink (slow)   fragile (pool, escalates)
              --> relay  --forwards a new message--> work | sink | ghost (never exists)
              --> asker  --asks--> work
              --> pub    --publishes an Event--> work, sink
    controller: resize/restart work, restart sink/relay, stop (graceful or not) and re-spawn
                sink/relay/asker/pub under the same name, re-spawn fragile once its escalated
                pool has ended (joined, or stopped first)

Every message carries a unique id; its key is (id, recipient). "Handled" means the handler
returned normally: it records the key as its very last step, after its reply, forward or
publish went through. A handler that raised did not handle its message: a crash payload is a
FAILED dead letter, a send/ask/publish cut short by a stop puts the message back (a STOPPED
dead letter, or the next pool member handles it). A send that raised was not sent: its
message must be neither handled nor dead-lettered.

Invariants checked (`Ledger.check`): a message whose send returned is handled XOR
dead-lettered, exactly once; one whose send raised is neither; an ask that timed out (its
request may never have gone in) at most once; nothing unknown shows up, nothing twice; crash
payloads are never handled and nothing else ever FAILED. Asks end within timeout + SLACK; a
result means handled, the handler's error means FAILED, ActorDead means dead-lettered and not
handled; a late reply exists exactly for a handled ask that had ended (timed out, or its
asking actor was stopped). publish's count lies between what its subscribers handled and that
plus what became STOPPED. Only `fragile` escalates; no restart or escalation follows a crash
that saw its actor or the system stopping. system.stop joins every runtime thread, no spawn is
accepted once it began, and the dead-letter counts match the ring.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import logging
import random
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from actord import (
    Actor,
    ActorDead,
    ActordError,
    ActorRef,
    ActorSystem,
    AskTimeout,
    DeadLetter,
    DeadLetterReason,
    Escalation,
    Message,
    RestartPolicy,
    StopTimeout,
    UnknownActor,
)
from actord.runtime.errors import ActorStopping

SLACK = 2.0  # an ask ends within its timeout plus this
STOP_TIMEOUT = 5.0  # for every stop; a stop that needs it is a violation (StopTimeout)
JOIN = 10.0  # ceiling for joining the workload's own threads
LENIENT = RestartPolicy(max_restarts=1_000_000, backoff_initial=0.0005, backoff_max=0.002)
FRAGILE = RestartPolicy(max_restarts=3, period=60.0, backoff_initial=0.0, backoff_max=0.0)
ASK_TIMEOUTS = (0.0005, 0.002, 0.01, 0.05, 0.3)

Key = tuple[int, str]  # (message id, recipient name)
MUST, MAYBE, NEVER = "must", "maybe", "never"  # how many times a key may be accounted: 1, <=1, 0
STOPPED, FAILED = DeadLetterReason.STOPPED, DeadLetterReason.FAILED


@dataclass(frozen=True, slots=True)
class Job:
    """A message payload: `crash` makes every handler raise; `to` is where a relay forwards."""

    id: int
    crash: bool = False
    to: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """What `pub` publishes for each Job it handles (one message per subscriber, same id)."""

    id: int
    crash: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    id: int  # the request's id


class Crash(Exception):
    """What a handler raises on a crash payload."""


@dataclass(frozen=True, slots=True)
class AskEnd:
    key: Key
    crash: bool
    outcome: str  # result | error | dead | timeout | stopping
    elapsed: float
    timeout: float
    by_actor: bool


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "result"
    for kind, name in ((AskTimeout, "timeout"), (ActorDead, "dead"), (Crash, "error")):
        if isinstance(error, kind):
            return name
    return "stopping" if isinstance(error, ActorStopping) else f"unexpected {error!r}"


class Ledger:
    """What was sent, handled and asked, thread-safely; `check` judges it after the stop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards every field below
        self._ids = itertools.count(1)
        self.sent: dict[Key, str] = {}
        self.crash: set[Key] = set()
        self.handled: Counter[Key] = Counter()
        self.events: dict[int, int | None] = {}  # event id -> publish's count (None: cut short)
        self.asks: list[AskEnd] = []
        self.violations: list[str] = []
        self.counts: Counter[str] = Counter()  # for the report
        self.late: Counter[int] = Counter()  # set by check: late replies by request id
        self.dead_by_reason: Counter[str] = Counter()  # set by check: our messages only

    def new_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def mark(self, key: Key, how: str, crash: bool) -> None:
        with self._lock:
            if key in self.sent:
                self.violations.append(f"{key} sent twice")
            self.sent[key] = how
            if crash:
                self.crash.add(key)

    def handle(self, key: Key) -> None:
        with self._lock:
            self.handled[key] += 1

    def published(self, event: int, delivered: int | None) -> None:
        with self._lock:
            self.events[event] = delivered

    def asked(self, end: AskEnd) -> None:
        with self._lock:
            self.asks.append(end)
            self.sent[end.key] = MUST if end.outcome in ("result", "error", "dead") else MAYBE
            if end.crash:
                self.crash.add(end.key)

    def check(self, letters: tuple[DeadLetter, ...], counts: dict[DeadLetterReason, int]) -> None:
        v = self.violations
        if Counter(d.reason for d in letters) != Counter(counts):
            v.append(f"dead-letter ring ({len(letters)}) does not match the counts {counts}")
        dead: dict[Key, list[DeadLetterReason]] = defaultdict(list)
        late: Counter[int] = Counter()
        for letter in letters:
            payload = letter.message.payload
            if isinstance(payload, Reply):
                late[payload.id] += 1
            elif isinstance(payload, Job | Event):
                dead[(payload.id, letter.message.recipient)].append(letter.reason)
            else:
                self.counts["other dead letters (pings)"] += 1
        self.late = late
        self.dead_by_reason = Counter(r.value for rs in dead.values() for r in rs)
        by_event: dict[int, list[Key]] = defaultdict(list)
        for key in set(self.sent) | set(self.handled) | set(dead):
            handled, reasons = self.handled[key], dead.get(key, [])
            n, how = handled + len(reasons), self.sent.get(key)
            if how is None and key[0] in self.events:
                by_event[key[0]].append(key)
                how = MAYBE
            ok = {MUST: n == 1, MAYBE: n <= 1, NEVER: n == 0}.get(how or "", False)
            if not ok:
                v.append(f"{key} ({how or 'never sent'}): handled {handled}x, dead {reasons}")
            if key in self.crash and handled:
                v.append(f"{key} is a crash payload, yet handled")
            if key not in self.crash and FAILED in reasons:
                v.append(f"{key} FAILED but is no crash payload")
        for event, delivered in self.events.items():
            keys = by_event.get(event, [])
            got = sum(self.handled[k] for k in keys)
            stopped = sum(dead[k].count(STOPPED) for k in keys)
            if delivered is not None and not got <= delivered <= got + stopped:
                v.append(
                    f"event {event}: publish said {delivered}, handled {got}, stopped {stopped}"
                )
        asks = {a.key[0]: a for a in self.asks}
        for a in self.asks:
            handled, reasons = self.handled[a.key], dead.get(a.key, [])
            wrong = (
                a.elapsed > a.timeout + SLACK
                or a.outcome.startswith("unexpected")
                or (a.outcome == "result" and (handled != 1 or a.crash))
                or (a.outcome == "error" and (FAILED not in reasons or not a.crash))
                or (a.outcome == "dead" and (handled or not reasons or FAILED in reasons))
                or (a.outcome == "stopping" and not a.by_actor)
                or late[a.key[0]] != (handled == 1 and a.outcome in ("timeout", "stopping"))
            )
            if wrong:
                v.append(f"ask {a}: handled {handled}x, dead {reasons}, late {late[a.key[0]]}")
        v.extend(f"late reply to {i} ({n}x), no such ask" for i, n in late.items() if i not in asks)


class Worker(Actor):
    """Handles Jobs and Events (work, sink, fragile): replies to requests, crashes on crash jobs."""

    def __init__(self, w: Workload, pause: float) -> None:
        self.w = w
        self.pause = pause

    def on_start(self) -> None:
        self.w.started(self)

    def handle(self, message: Message) -> None:
        payload = message.payload
        self.w.maybe_crash(self, payload)
        if self.pause and self.w.jitter.random() < 0.3:
            time.sleep(self.w.jitter.random() * self.pause)
        if message.correlation_id is not None:
            self.reply(message, Reply(payload.id))
        self.w.ledger.handle((payload.id, self.name))


class Relay(Worker):
    """Forwards each Job as a new message to `job.to` (blocks while that mailbox is full)."""

    def handle(self, message: Message) -> None:
        job = message.payload
        self.w.maybe_crash(self, job)
        out = Job(self.w.ledger.new_id(), crash=job.id % 11 == 0)
        self.w.deliver((out.id, job.to), out.crash, lambda: self.send(job.to, out))
        self.w.ledger.handle((job.id, self.name))


class Asker(Worker):
    """Asks `work` for each Job it gets (blocks until the reply or the timeout)."""

    def handle(self, message: Message) -> None:
        job = message.payload
        self.w.maybe_crash(self, job)
        timeout = self.w.jitter.choice(ASK_TIMEOUTS[:4])
        crash = job.id % 13 == 0
        self.w.ask("work", timeout, crash, asker=self)
        self.w.ledger.handle((job.id, self.name))


class Pub(Worker):
    """Publishes an Event per Job to its subscribers (work, sink), waiting briefly for room."""

    def handle(self, message: Message) -> None:
        job = message.payload
        self.w.maybe_crash(self, job)
        event = Event(self.w.ledger.new_id())
        try:
            delivered = self.publish(event, timeout=0.002)
        except BaseException:
            self.w.ledger.published(event.id, None)  # cut short by a stop
            raise
        self.w.ledger.published(event.id, delivered)
        self.w.ledger.handle((job.id, self.name))


class Workload:
    """One system, its actors, and the threads that drive them for one round."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.ledger = Ledger()
        self.jitter = random.Random(seed)  # shared by the actors: only to vary interleavings
        self.local = threading.local()  # per actor thread: did its last crash see a stop?
        self.escalated = threading.Event()
        self.escalations: list[str] = []
        self.system = ActorSystem(
            f"stress-{seed}",
            on_escalate=self._on_escalate,
            default_policy=LENIENT,
            dead_letter_capacity=2_000_000,
        )
        self.refs: dict[str, ActorRef] = {}
        self._instances_lock = threading.Lock()
        self.instances: set[tuple[ActorRef, str]] = set()  # (group, member) started once
        self.done = threading.Event()
        self._futures = threading.Condition()  # guards open_futures; notified as one ends
        self.open_futures = 0

    # -- actors ----------------------------------------------------------------------------

    def spawn(self, name: str) -> None:
        s, w = self.system, self
        spawners: dict[str, Callable[[], ActorRef]] = {
            "work": lambda: s.spawn_pool(lambda: Worker(w, 0.0002), name, 3, capacity=4),
            "sink": lambda: s.spawn(lambda: Worker(w, 0.001), name, capacity=2),
            "fragile": lambda: s.spawn_pool(
                lambda: Worker(w, 0.0), name, 2, capacity=3, policy=FRAGILE
            ),
            "relay": lambda: s.spawn(lambda: Relay(w, 0.0), name, capacity=2),
            "asker": lambda: s.spawn(lambda: Asker(w, 0.0), name, capacity=2),
            "pub": lambda: s.spawn(lambda: Pub(w, 0.0), name, capacity=4),
        }
        self.refs[name] = spawners[name]()
        if name in ("pub", "sink"):  # a stopped actor leaves every subscription
            for subscriber in ("work", "sink"):
                s.channel.subscribe("pub", subscriber)

    def started(self, actor: Actor) -> None:
        member = (actor.ref, actor.member)
        if getattr(self.local, "crash_saw_stop", False):
            self.ledger.violation(f"{actor.member} restarted after a crash while stopping")
        with self._instances_lock:
            restart = member in self.instances
            self.instances.add(member)
        self.ledger.count("restarts (instances replaced)" if restart else "instances started")

    def maybe_crash(self, actor: Actor, payload: Job | Event) -> None:
        if payload.crash:
            # Read before raising: if it saw a stop, neither a restart nor an escalation follows.
            self.local.crash_saw_stop = self.system.stopping or not actor.ref.alive
            raise Crash(f"crash payload {payload.id}")

    def _on_escalate(self, escalation: Escalation) -> None:
        # The failing member's thread, right after the crash that made it escalate.
        if escalation.actor != "fragile":
            self.ledger.violation(f"{escalation.actor} escalated: {escalation.error!r}")
        if getattr(self.local, "crash_saw_stop", False):
            self.ledger.violation(f"{escalation.actor} escalated after a crash while stopping")
        self.escalations.append(escalation.actor)
        self.escalated.set()

    # -- sends and asks, with their accounting ---------------------------------------------

    def deliver(self, key: Key, crash: bool, send: Callable[[], object]) -> None:
        try:
            send()
        except BaseException:
            self.ledger.mark(key, NEVER, crash)
            raise
        self.ledger.mark(key, MUST, crash)

    def tell(self, name: str, job: Job) -> None:
        ref = self.refs[name]  # routes by name: a ref stays valid across a re-spawn
        self.deliver((job.id, name), job.crash, lambda: ref.tell(job))

    def ask(self, name: str, timeout: float, crash: bool, asker: Actor | None = None) -> None:
        """Ask `name` (from `asker`'s thread, or through its ref) and record how it ended."""
        job = Job(self.ledger.new_id(), crash)
        start = time.monotonic()
        error: BaseException | None = None
        try:
            if asker is None:
                reply = self.refs[name].ask(job, timeout=timeout)
            else:
                reply = asker.ask(name, job, timeout=timeout)
            if reply != Reply(job.id):
                self.ledger.violation(f"ask {job.id} got someone else's reply")
        except BaseException as caught:
            error = caught
        end = AskEnd(
            (job.id, name), crash, _outcome(error), time.monotonic() - start, timeout, bool(asker)
        )
        self.ledger.asked(end)
        if error is not None and (end.outcome == "stopping" or "unexpected" in end.outcome):
            raise error  # an actor's loop must see its stop

    def ask_future(self, name: str, timeout: float, crash: bool) -> None:
        job = Job(self.ledger.new_id(), crash)
        start = time.monotonic()

        def ended(future: Future[Any]) -> None:  # on whichever thread resolves it
            error = future.exception()
            if error is None and future.result() != Reply(job.id):
                self.ledger.violation(f"ask_future {job.id} got someone else's reply")
            elapsed = time.monotonic() - start
            self.ledger.asked(
                AskEnd((job.id, name), crash, _outcome(error), elapsed, timeout, False)
            )
            with self._futures:
                self.open_futures -= 1
                self._futures.notify_all()

        with self._futures:
            self.open_futures += 1
        self.refs[name].ask_future(job, timeout=timeout).add_done_callback(ended)

    # -- the threads -----------------------------------------------------------------------

    def guarded(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException:
                self.ledger.violation(
                    f"{threading.current_thread().name}: {traceback.format_exc()}"
                )

        return run

    def produce(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-producer-{index}")
        new = self.ledger.new_id
        while not self.done.is_set():
            op = rng.random()
            if op < 0.28:
                self.tell("work", Job(new(), crash=rng.random() < 0.05))
            elif op < 0.38:
                self.tell("sink", Job(new(), crash=rng.random() < 0.05))
            elif op < 0.50:
                to = rng.choice(("work", "sink", "ghost"))
                self.tell("relay", Job(new(), crash=rng.random() < 0.03, to=to))
            elif op < 0.58:
                self.tell("fragile", Job(new(), crash=rng.random() < 0.3))
            elif op < 0.65:
                self.tell("pub", Job(new(), crash=rng.random() < 0.03))
            elif op < 0.71:
                self.tell("asker", Job(new(), crash=rng.random() < 0.03))
            elif op < 0.86:
                name, t = rng.choice(("work", "sink", "fragile")), rng.choice(ASK_TIMEOUTS)
                self.ask(name, t, rng.random() < 0.1)
            elif op < 0.97:
                name, t = rng.choice(("work", "sink", "fragile")), rng.choice(ASK_TIMEOUTS)
                self.ask_future(name, t, rng.random() < 0.1)
            else:
                self.ping(rng.choice(tuple(self.refs)))
            if rng.random() < 0.05:
                time.sleep(rng.random() * 0.001)  # vary the interleavings

    def ping(self, name: str) -> None:
        try:
            self.refs[name].ping(timeout=0.05)
            self.ledger.count("pings answered")
        except (AskTimeout, ActorDead, UnknownActor) as error:
            self.ledger.count(f"pings: {type(error).__name__}")

    def control(self) -> None:
        rng = random.Random(f"{self.seed}-control")
        system, count = self.system, self.ledger.count
        while not self.done.is_set():
            if self.escalated.is_set():
                self.escalated.clear()
                self.respawn_escalated(join_only=rng.random() < 0.5)
            op = rng.random()
            if op < 0.3:
                system.resize("work", rng.randint(1, 4))
                count("resizes")
            elif op < 0.45:
                system.restart(rng.choice(("work", "sink", "relay")))
                count("restart requests")
            elif op < 0.8:
                name, graceful = rng.choice(("sink", "relay", "asker", "pub")), rng.random() < 0.3
                self.stop(name, graceful=graceful)
                count("graceful stops" if graceful else "immediate stops")
                time.sleep(rng.random() * 0.002)  # the name stays unknown for a while
                self.spawn(name)
            else:
                self.ping(rng.choice(tuple(self.refs)))
            time.sleep(rng.random() * 0.01)

    def respawn_escalated(self, *, join_only: bool) -> None:
        """The failed pool frees its name as its last member exits: wait for that by joining
        its threads (no other thread has those names now), or by stopping it (which joins)."""
        if join_only:
            for thread in threading.enumerate():
                if thread.name.startswith("actord:fragile#"):
                    thread.join(JOIN)
        else:
            self.stop("fragile", graceful=False)
        self.spawn("fragile")  # NameTaken here is a violation
        self.ledger.count("re-spawns after escalation")

    def stop(self, name: str, *, graceful: bool) -> None:
        try:
            self.refs[name].stop(graceful=graceful, timeout=STOP_TIMEOUT)
        except StopTimeout as error:  # the name is free all the same
            self.ledger.violation(f"stop of {name}: {error}")

    def spawn_during_stop(self, first: threading.Event) -> None:
        """Spawn (and tell) fresh actors until the system's stop refuses: ActorStopping."""
        for i in itertools.count():
            try:
                self.system.spawn(lambda: Worker(self, 0.0), f"late{i}", capacity=2)
            except ActorStopping:
                return
            self.ledger.count("spawns while the stop began")
            first.set()
            job = Job(self.ledger.new_id())
            with contextlib.suppress(ActordError):  # the stop got there first: not sent
                ref = self.system.lookup(f"late{i}")
                self.deliver((job.id, ref.name), False, functools.partial(ref.tell, job))


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, other: Report) -> None:
        self.violations += other.violations
        self.counts.update(other.counts)


def _runtime_threads(system: ActorSystem) -> set[threading.Thread]:
    timers = f"{system.name}-timers"
    return {t for t in threading.enumerate() if t.name.startswith("actord:") or t.name == timers}


def run(seed: int, seconds: float, producers: int = 3) -> Report:
    """One round: start the system, drive it for `seconds`, stop it, check the ledger."""
    w = Workload(seed)
    system, ledger = w.system, w.ledger
    before = _runtime_threads(system)
    for name in ("work", "sink", "fragile", "relay", "asker", "pub"):  # consumers first
        w.spawn(name)
    threads = [
        threading.Thread(target=w.guarded(functools.partial(w.produce, i)), name=f"stress-p{i}")
        for i in range(producers)
    ]
    threads.append(threading.Thread(target=w.guarded(w.control), name="stress-control"))
    for thread in threads:
        thread.daemon = True  # a stuck one is reported, and must not hang the interpreter
        thread.start()
    w.done.wait(seconds)  # the length of the run, not a synchronisation
    w.done.set()
    for thread in threads:
        thread.join(JOIN)
        if thread.is_alive():
            ledger.violation(f"{thread.name} still running {JOIN}s after the end")
    with w._futures:
        if not w._futures.wait_for(lambda: w.open_futures == 0, max(ASK_TIMEOUTS) + SLACK):
            ledger.violation(f"{w.open_futures} ask_future(s) never ended")

    first = threading.Event()
    spawner = threading.Thread(target=w.guarded(lambda: w.spawn_during_stop(first)), daemon=True)
    spawner.start()
    first.wait(JOIN)
    graceful = seed % 2 == 0
    try:
        system.stop(graceful=graceful, timeout=STOP_TIMEOUT)
    except StopTimeout as error:
        ledger.violation(f"system.stop(graceful={graceful}): {error}")
    spawner.join(JOIN)
    if spawner.is_alive():
        ledger.violation("spawns went on after the stop")
    try:
        system.spawn(lambda: Worker(w, 0.0), "after")
        ledger.violation("a spawn was accepted after the stop")
    except ActorStopping:
        pass
    left = _runtime_threads(system) - before
    if left:
        ledger.violation(f"threads alive after system.stop: {sorted(t.name for t in left)}")

    ledger.check(system.channel.dead_letters(), system.channel.dead_letter_counts())
    report = Report(list(ledger.violations), ledger.counts)
    c = report.counts
    c["messages sent"] += sum(1 for how in ledger.sent.values() if how != NEVER)
    c["sends refused (raised)"] += sum(1 for how in ledger.sent.values() if how == NEVER)
    c["events published"] += len(ledger.events)
    c["handled"] += sum(ledger.handled.values())
    for reason, n in ledger.dead_by_reason.items():
        c[f"dead letters: {reason}"] += n
    c["dead letters: late_reply"] += sum(ledger.late.values())
    for a in ledger.asks:
        c[f"asks{' (by an actor)' if a.by_actor else ''}: {a.outcome}"] += 1
    c["escalations"] += len(w.escalations)
    c[f"system stops ({'graceful' if graceful else 'immediate'})"] += 1
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--round", type=float, default=5.0, help="seconds per system")
    parser.add_argument("--verbose", action="store_true", help="show the runtime's log")
    args = parser.parse_args()
    if not args.verbose:  # thousands of crashes log thousands of tracebacks
        logging.getLogger("actord").setLevel(logging.CRITICAL + 1)
    total, deadline, rounds = Report(), time.monotonic() + args.seconds, 0
    while rounds == 0 or time.monotonic() < deadline:
        seconds = min(args.round, max(0.1, deadline - time.monotonic()))
        total.add(run(args.seed + rounds, seconds))
        rounds += 1
    print(f"{rounds} round(s), seeds {args.seed}..{args.seed + rounds - 1}")
    for what, n in sorted(total.counts.items()):
        print(f"  {what:<40} {n:>10}")
    for text in total.violations[:50]:
        print(f"VIOLATION: {text}")
    if total.violations:
        print(f"{len(total.violations)} violation(s)")
        return 1
    print("all invariants held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
