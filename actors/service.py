"""The job service: what `actord run` hosts by default (``daemon.app``).

It spawns the job system (the parser and FFT pools, and the job store, which owns the
journal and the one job table); the daemon adds its own monitor. It adds the job methods to
the control socket: ``submit``, ``jobs``, ``job``, ``cancel`` and ``watch``. Each method
checks its params (a submit through `validate.check_spec`, with the configured roots) and
then asks the store with a typed message.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from prometheus_client.registry import Collector

from actord import (
    ActordError,
    ActorSystem,
    AskTimeout,
    InvalidArgument,
    MailboxClosed,
    UnknownActor,
)
from actord.control.methods import param
from actord.control.server import Call, Hangup
from actord.daemon.app import Method
from actord.daemon.config import Config
from actord.runtime.errors import ErrorCode, Refused

from .client import JobClient, submit_job
from .jobs_metrics import JobsCollector
from .launcher import FFT_WORKERS, PARSERS, STORE, JobSystemConfig, start_job_system
from .model import (
    Cancel,
    Engine,
    Executor,
    GetJob,
    JobInfo,
    JobState,
    ListJobs,
    Progress,
    Rejected,
    WaitJob,
)
from .ray_metrics import RayCollector
from .store import Drain, Drained, JobCounts, Release, Retention, SetMaxJobs, StoreStatus
from .wire import info_to_wire, spec_from_wire

__all__ = ["JobService"]

_log: Final = logging.getLogger("actors.service")
_ASK: Final = 30.0  # seconds a method waits for the store (a journal commit is milliseconds)
_COUNTS_FRESH: Final = 0.1  # seconds `status` reuses the store's job counts
_WATCH_CHECK: Final = 1.0  # a quiet watch checks its client and re-reads the job this often
# Progress a watcher may leave unread (bytes queued on its socket) before the next state
# waits: a slow reader has some in hand, and a notification never blocks the watch (the
# socket's buffer is ~200 KiB), so the watch keeps draining the store's events.
_WATCH_UNREAD: Final = 64 << 10


_STATE_ALIASES: Final = {"queued": "accepted"}  # as `status` counts them


def _retention(config: Config) -> Retention:
    return Retention(config.daemon.retention_days, config.daemon.retention_jobs)


def _answer(answer: object) -> Any:
    if isinstance(answer, Rejected):
        raise Refused(answer.code, answer.message)
    return answer


class JobService:
    """The `App` that `actord run` loads by default (see `actord.daemon.app`)."""

    def __init__(self, system: ActorSystem, config: Config) -> None:
        self.system = system
        self.config = config
        # Replaced whole by a reload (main thread), read by connection threads: one tuple.
        self.roots = (config.paths.input_roots, config.paths.output_roots)
        self._watchers = itertools.count(1)
        # _lock guards _inboxes: the mailboxes of the watches in progress.
        self._lock = threading.Lock()
        self._inboxes: set[str] = set()
        # _counts_lock serialises the writers of _counts_cache: the store's last job counts
        # (as `status` shows them; never mutated once built) and when they were asked, a
        # tuple replaced whole, so that a reader needs no lock.
        self._counts_lock = threading.Lock()
        self._counts_cache: tuple[dict[str, int] | None, float] = (None, 0.0)
        self._client: JobClient | None = None  # set by start (main thread), then only read

    # -- App ---------------------------------------------------------------------------------

    def start(self) -> None:
        config = self.config
        state = Path(config.daemon.state_dir)
        for root in (*config.paths.input_roots, *config.paths.output_roots):
            if Path(root).parent == state:  # the default roots: ours to create
                Path(root).mkdir(mode=0o750, exist_ok=True)
            elif not Path(root).is_dir():
                _log.warning("allowed root %s does not exist (yet)", root)
        self._client = start_job_system(
            self.system,
            str(state / "journal.sqlite3"),
            JobSystemConfig(
                parsers=config.parser.size,
                parser_executor=Executor(config.parser.executor),
                fft_workers=config.fft.size,
                fft_executor=Executor(config.fft.executor),
                fft_engine=Engine(config.fft.engine) if config.fft.engine else None,
                pool_capacity=config.parser.capacity,
                max_jobs=config.daemon.max_jobs,
                roots=self.roots,
                ray_address=config.ray.address,
                ray_namespace=config.ray.namespace,
                ray_cpus=config.ray.cpus_per_worker,
                shared_roots=config.ray.shared_roots,
                new_journal=config.daemon.new_journal,
                retention=_retention(config),
            ),
        )

    def collectors(self) -> list[Collector]:
        collectors: list[Collector] = [
            JobsCollector(lambda request, timeout: self._ask(request, timeout=timeout))
        ]
        if self._client is not None and self._client.link is not None:
            collectors.append(RayCollector(self._client.link))
        return collectors

    def methods(self) -> Mapping[str, Method]:
        return {
            "submit": self.submit,
            "jobs": self.jobs,
            "job": self.job,
            "cancel": self.cancel,
            "watch": self.watch,
        }

    def status(self) -> dict[str, Any]:
        figures: dict[str, Any]
        try:
            figures = self._counts()  # shared: never changed here (copied to add ray)
        except AskTimeout:
            figures = {"jobs": "unavailable"}
        link = None if self._client is None else self._client.link
        if link is not None:
            state, nodes, workers = link.status()
            pools = [p for p in ("parser", "fft") if getattr(self.config, p).executor == "ray"]
            members = sum(getattr(self.config, p).size for p in pools)
            ray = {"address": link.address, "state": state.value, "nodes": nodes}
            figures = {**figures, "ray": {**ray, "up": workers, "members": members}}
        return figures

    def _counts(self) -> dict[str, int]:
        # `status` is polled (by people, scripts, health checks): the store's answer is kept
        # for _COUNTS_FRESH seconds, so a burst of polls costs one round trip to the store
        # (and its figures are built once). A submit or cancel through this service makes the
        # next poll ask again.
        cached, asked = self._counts_cache  # a tuple replaced whole: one read, no lock
        if cached is not None and time.monotonic() - asked <= _COUNTS_FRESH:
            return cached  # the common case takes no lock: 16 pollers contended on it
        with self._counts_lock:  # one refresh at a time; the others wait for its answer
            cached, asked = self._counts_cache
            if cached is None or time.monotonic() - asked > _COUNTS_FRESH:
                counts = self._ask(StoreStatus(), timeout=2.0)
                assert isinstance(counts, JobCounts)
                cached = {
                    "jobs_queued": counts.queued,
                    "jobs_running": counts.running,
                    "jobs_done": counts.done,
                    "jobs_failed": counts.failed,
                    "jobs_cancelled": counts.cancelled,
                }
                if counts.unjournaled:  # the state directory is full or read-only
                    cached["journal_writes_waiting"] = counts.unjournaled
                self._counts_cache = (cached, time.monotonic())
            return cached

    def _stale_counts(self) -> None:
        with self._counts_lock:
            self._counts_cache = (None, 0.0)

    def reconfigure(self, config: Config) -> list[str]:
        old, pending = self.config, []
        if config.parser.size != old.parser.size:
            self.system.resize("parser", config.parser.size)
        if config.fft.size != old.fft.size:
            self.system.resize("fft", config.fft.size)
        self.roots = (config.paths.input_roots, config.paths.output_roots)
        self._ask(SetMaxJobs(config.daemon.max_jobs, self.roots, _retention(config)))
        for key in (
            "parser.executor",
            "parser.capacity",
            "fft.executor",
            "fft.capacity",
            "fft.engine",
            "mailbox_capacity",
            "ray",
        ):
            section, _, name = key.partition(".")
            if name:
                before, after = getattr(old, section), getattr(config, section)
            else:
                before, after, name = old, config, section
            if getattr(before, name) != getattr(after, name):
                pending.append(key)
        self.config = config
        return pending

    def drain(self, timeout: float) -> int | None:
        try:
            drained = self._ask(Drain(), timeout=max(timeout, 0.001))
        except AskTimeout:
            return None  # the deadline came first: nothing more is asked, time is short
        assert isinstance(drained, Drained)
        return drained.queued

    def release(self, *, crashed: bool = False) -> None:
        # The work stops first: a thread parser holds the GIL for a whole block, and with
        # the cores busy every hand-off to the store would wait for one. What the pools hold
        # becomes dead letters; the store then puts the running jobs back in the queue.
        for pool in (PARSERS, FFT_WORKERS):
            with contextlib.suppress(UnknownActor):
                self.system.lookup(pool).stop(graceful=False, wait=False)
        self._ask(Release(crashed=crashed), timeout=5.0)
        if self._client is not None and self._client.link is not None:
            self._client.link.shut()  # the bridge exits while the actors stop
        with self._lock:
            inboxes = list(self._inboxes)
        for inbox in inboxes:  # wake every watch now: the daemon is going
            with contextlib.suppress(UnknownActor):  # that watch has just ended
                self.system.channel.close_mailbox(inbox)

    # -- control methods (connection threads) ----------------------------------------------

    def _ask(self, request: object, timeout: float = _ASK) -> Any:
        return self.system.lookup(STORE).ask(request, timeout=timeout, sender="$control")

    def submit(self, call: Call) -> dict[str, Any]:
        """``submit({kind, input, output, options, idempotency_key})`` -> the job."""
        data = dict(param(call, 0, dict, "job"))
        key = data.pop("idempotency_key", None)
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
            raise InvalidArgument("idempotency_key: must be a string of 1 to 200 characters")
        gate = None if self._client is None else self._client.gate
        info = _answer(submit_job(self._ask, spec_from_wire(data), key, self.roots, gate))
        self._stale_counts()
        return info_to_wire(info)

    def jobs(self, call: Call) -> list[dict[str, Any]]:
        """``jobs([limit, [state]])`` -> the newest jobs (in `state` only), oldest first."""
        limit = param(call, 0, int, "limit", 1000)
        if not 1 <= limit <= 10_000:
            raise InvalidArgument("limit: must be between 1 and 10000")
        state = param(call, 1, str, "state", None)
        try:
            wanted = None if state is None else JobState(_STATE_ALIASES.get(state, state))
        except ValueError:
            known = ", ".join([*(s.value for s in JobState), *_STATE_ALIASES])
            raise InvalidArgument(f"state: must be one of {known}, got {state!r}") from None
        infos = self._ask(ListJobs(limit, wanted))
        members = self._members()
        return [self._to_wire(info, members) for info in infos]

    def job(self, call: Call) -> dict[str, Any]:
        info = _answer(self._ask(GetJob(param(call, 0, str, "job"))))
        return self._to_wire(info, self._members())

    def _members(self) -> dict[str, int]:
        # How many pool members each job holds now: the fair pools' holdings by job id.
        channel = self.system.channel
        members: dict[str, int] = {}
        for pool in (PARSERS, FFT_WORKERS):
            share = channel.fair_share(pool)
            for key, count in share.held.items() if share is not None else ():
                if isinstance(key, str):
                    members[key] = members.get(key, 0) + count
        return members

    @staticmethod
    def _to_wire(info: JobInfo, members: Mapping[str, int]) -> dict[str, Any]:
        wire = info_to_wire(info)
        if info.state is JobState.RUNNING:
            wire["members"] = members.get(info.id, 0)  # running jobs only: a figure of now
        return wire

    def cancel(self, call: Call) -> dict[str, Any]:
        """The job as the cancel left it; ``already_ended``: it had ended before (a cancel
        of a cancelled job cancels nothing)."""
        job_id = param(call, 0, str, "job")
        before = _answer(self._ask(GetJob(job_id)))
        info = before if before.state.finished else _answer(self._ask(Cancel(job_id)))
        self._stale_counts()
        return {**info_to_wire(info), "already_ended": before.state.finished}

    def watch(self, call: Call) -> dict[str, Any]:
        """``watch(job)``: a ``progress`` notification as the job advances; the result is the
        job once it has ended (as journaled).

        Progress is a state, not a stream: the store's events are drained as they come and
        only the latest state is sent, once the client has read what it was sent (at most
        _WATCH_UNREAD bytes of it wait unread). A client that reads nothing for
        ``daemon.watch_timeout`` while there is news is told why and disconnected."""
        job_id = param(call, 0, str, "job")
        channel = self.system.channel
        inbox = f"control.watch-{next(self._watchers)}-{uuid.uuid4().hex[:8]}"
        channel.register(inbox, 1024)
        with self._lock:
            self._inboxes.add(inbox)
        try:
            channel.subscribe(STORE, inbox)
            info = self._current(job_id)  # after subscribing: no end is missed
            sent: JobInfo | None = None
            stalled = 0.0  # when the client stopped reading (monotonic; 0: it reads)
            while not info.state.finished:
                if info != sent:
                    if call.unread() <= _WATCH_UNREAD:
                        call.notify("progress", [info_to_wire(info)])
                        sent, stalled = info, 0.0
                    else:
                        stalled = stalled or time.monotonic()
                        self._check_reader(job_id, stalled)
                info = self._next(call, inbox, info)
            return info_to_wire(info)
        finally:
            with self._lock:
                self._inboxes.discard(inbox)
            channel.unsubscribe(STORE, inbox)
            self._close_inbox(inbox)

    def _check_reader(self, job_id: str, stalled: float) -> None:
        bound = self.config.daemon.watch_timeout
        if time.monotonic() - stalled > bound:
            _log.warning("watch of %s: no read for %gs: disconnected", job_id, bound)
            raise Hangup(
                ErrorCode.BUSY,
                f"watch of {job_id} ended: the client read nothing for {bound:g}s "
                "(daemon.watch_timeout); the job goes on",
            )

    def _close_inbox(self, inbox: str) -> None:
        # The store may still be publishing to the inbox, from a subscriber list read before
        # the unsubscribe: once it has answered a request sent after it, it no longer is. What
        # the inbox then holds is this watch's alone (other jobs' progress), moot now: taken
        # out, not left to become dead letters when it is removed.
        channel = self.system.channel
        with contextlib.suppress(ActordError):  # the store is stopping: so is the watch
            self._ask(StoreStatus(), timeout=2.0)
        with contextlib.suppress(TimeoutError, MailboxClosed):
            while channel.receive(inbox, 1024, timeout=0):
                pass
        channel.unregister(inbox)

    def _current(self, job_id: str) -> JobInfo:
        # The job as the store has it now; once its end is decided, as it ended: its files
        # gone (a failed job's temp files), as a `progress` event of its end says.
        info: JobInfo = _answer(self._ask(GetJob(job_id)))
        if info.state.finished:
            ended: JobInfo = _answer(self._ask(WaitJob(job_id)))
            return ended
        return info

    def _next(self, call: Call, inbox: str, info: JobInfo) -> JobInfo:
        # The next state of the job: from the store's events, or asked for after a quiet spell
        # (when the client may also have gone: then the watch ends and frees its connection).
        try:
            messages = self.system.channel.receive(inbox, 256, timeout=_WATCH_CHECK)
        except TimeoutError:
            if call.peer_gone():
                raise ConnectionAbortedError("the watching client went away") from None
            return self._current(info.id)
        except MailboxClosed:
            raise Refused(ErrorCode.BUSY, "actord is stopping; watch again later") from None
        latest = info
        for message in messages:
            event = message.payload
            if isinstance(event, Progress) and event.job == info.id:
                if event.state.finished:
                    return _answer(self._ask(GetJob(info.id)))  # type: ignore[no-any-return]
                latest = replace(
                    info, state=event.state, done=event.done, total=event.total, bytes=event.bytes
                )
        return latest
