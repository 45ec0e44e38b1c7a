"""The job store: the one job table, and the journal's owner.

Every job a client submits is committed to the journal here before the client hears back.
The store starts queued jobs (at most `max_jobs` at a time) through its launcher, which
spawns each job's writer and reader in front of the shared pools. Their notes (progress, a
failed unit, the writer's end) come here: the store alone decides how a job ends, journals
it, and only then publishes the end and answers waiters, so a client told "done" is told what
the journal says. On its start it re-queues what a crash left unfinished, after removing the
temporary files the crash left.

A job's output is journaled before it appears: a writer asks (`Publishing`) and renames its
files only once the store has committed them. That commit decides the race between a cancel
and the job's end, here and nowhere else: a cancel before it wins (the writer is refused and
removes its files), a cancel after it is too late (the job ends done). A stop leaves a
publishing job to be finished at the next start, and a start after a crash completes the
renames (or finds them done) and records the job done, instead of running it again and
replacing its output.

The store never blocks: it spawns and stops a job's actors without waiting, publishes without
waiting for room, and only replies to the writers' requests, so no cycle of full mailboxes
can ever wait on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Final

from actord import (
    Actor,
    ActordError,
    ActorRef,
    ActorStopping,
    InvalidArgument,
    Message,
    Timer,
)
from actord.runtime.errors import ErrorCode
from actors.journal import Journal, JournaledJob, JournalState, JournalUnavailable, UnknownJob

from .job_stats import GetJobMetrics, JobStats
from .model import (
    Accept,
    Cancel,
    FFTSummary,
    GetJob,
    InputSized,
    JobEnded,
    JobError,
    JobInfo,
    JobKind,
    JobSpec,
    JobState,
    ListJobs,
    LogSummary,
    Progress,
    Rejected,
    Resubmit,
    WaitJob,
    WriterDone,
    WriterStopped,
    WrittenProgress,
)
from .validate import Roots, written_paths
from .wire import pack, spec_from_wire, spec_to_wire, summary_from_wire, summary_to_wire, unpack
from .writer import (
    Publishing,
    Recorded,
    complete_publication,
    discard,
    remove_temps,
    temp_target,
    temps_in,
    temps_of,
)

__all__ = [
    "Drain",
    "Drained",
    "JobCounts",
    "JobStore",
    "Launch",
    "Prune",
    "Release",
    "Released",
    "Retention",
    "SetMaxJobs",
    "StoreStatus",
]

_log: Final = logging.getLogger("actors.store")
_ENDED_CACHE: Final = 4096  # ended jobs kept in memory for `job` and `watch`
SWEEP_EVERY: Final = 5.0  # seconds between tries at temp files a failed job could not remove


@dataclass(frozen=True, slots=True)
class _Sweep:
    """The store's own timer: try again to remove what ended jobs left."""


_SWEEP: Final = _Sweep()
# Seconds between tries of journal writes kept waiting (the state directory full, say):
# often enough to catch up soon after space is back, rare enough to cost nothing meanwhile.
_JOURNAL_RETRY: Final = 1.0
_PRUNE_EVERY: Final = 3600.0  # seconds between two applications of the retention

# Spawns a job's actors: (job id, spec, its end flag, the allowed roots now) -> (reader,
# writer). See `Launcher`. The reader and writer open the job's files beneath the roots.
Launch = Callable[[str, JobSpec, JobEnded, Roots | None], tuple[ActorRef, ActorRef]]


@dataclass(frozen=True, slots=True)
class Drain:
    """Take no new jobs; replied with `Drained` once no job is running."""


@dataclass(frozen=True, slots=True)
class Drained:
    queued: int  # left journaled for the next start


@dataclass(frozen=True, slots=True)
class Release:
    """The daemon is stopping: running jobs go back to the queue in the journal; later ends
    other than done are not recorded. Replied with `Released` (the jobs put back: not those
    publishing their output, which end done now or at the next start).

    `crashed`: the daemon is going down because of a fault (an escalation), not asked to
    stop. Each released job then counts a crash retry, as if the daemon had been killed
    under it: a job that takes the daemon down is counted from its first death, so
    `max_crash_retries` caps the restarts it can cause."""

    crashed: bool = False


@dataclass(frozen=True, slots=True)
class Released:
    jobs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Retention:
    """Which ended jobs leave the journal (their outputs stay): those that ended more than
    `days` ago, and those beyond the newest `jobs` ended ones; 0 is no limit."""

    days: float = 0.0
    jobs: int = 0

    @property
    def active(self) -> bool:
        return self.days > 0 or self.jobs > 0


@dataclass(frozen=True, slots=True)
class Prune:
    """Apply the retention now (at start, hourly, after a reload); replied with the number
    of jobs removed from the journal."""


@dataclass(frozen=True, slots=True)
class SetMaxJobs:
    """A reload: the job limit, the allowed roots (inputs, outputs) and the retention."""

    max_jobs: int
    roots: Roots | None = None
    retention: Retention | None = None


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """Replied with `JobCounts`."""


@dataclass(frozen=True, slots=True)
class JobCounts:
    queued: int
    running: int
    done: int
    failed: int
    cancelled: int
    unjournaled: int = 0  # journal writes waiting for the state directory to take them


@dataclass(frozen=True, slots=True)
class _RetryJournal:
    """Timer tick to the store itself: try the journal writes kept waiting."""


class _Live:
    """The store's record of an unfinished job (never leaves the actor)."""

    def __init__(self, info: JobInfo, spec: JobSpec) -> None:
        self.info = info
        self.spec = spec
        self.reader: ActorRef | None = None
        self.writer: ActorRef | None = None
        self.ended = JobEnded(info.id)  # set at its end: parsers drop its blocks
        self.started = 0.0  # monotonic time it started running
        self.counted = (0, 0)  # units and bytes already added to the metrics
        self.publishing = False  # its output is journaled: it can only end done now
        self.closing = False  # its end is decided: waiting for its writer to remove its files
        self.released = False  # put back in the journal's queue by a stop: no failure recorded
        self.silent = False  # stopped by the shutdown: it stays queued, nobody is told
        self.writer_stopped = False  # its writer has stopped (and told whether temps are left)
        self.temps_left = False  # its writer could not remove its temporary files: swept


def _by_directory(outputs: dict[str, str]) -> dict[str, dict[str, str]]:
    """{directory: {file name: output path}} of `outputs`."""
    found: dict[str, dict[str, str]] = {}
    for output in outputs:
        directory, name = os.path.split(os.path.abspath(output))
        found.setdefault(directory, {})[name] = output
    return found


class JobStore(Actor):
    """Requests: Accept, Cancel, GetJob, ListJobs, WaitJob, Drain, Release, SetMaxJobs,
    StoreStatus, GetJobMetrics, and the writers' Publishing. Notes from readers and writers:
    WrittenProgress, JobError, WriterDone, WriterStopped. Events out: `Progress` as a job
    starts and advances, and once it has ended (as journaled)."""

    def __init__(
        self,
        path: str,
        launch: Launch,
        max_jobs: int,
        *,
        roots: Roots | None = None,
        max_crash_retries: int = 5,
        new_journal: bool = False,
        sweep_every: float = SWEEP_EVERY,
        retention: Retention | None = None,
    ) -> None:
        self.path = path
        self.retention = retention or Retention()
        self.new_journal = new_journal  # a missing journal where one was kept: begin anew
        # Outputs of ended (failed, cancelled) jobs whose temp files could not be removed (a
        # directory made read-only under the job): their job, tried again every sweep_every.
        self.leftovers: dict[str, str] = {}
        self.sweep_every = sweep_every
        self._sweeping: Timer | None = None
        self.launch = launch
        self.max_jobs = max_jobs
        # (input roots, output roots): a job's reader and writer open its files beneath them
        self.roots = roots
        self.max_crash_retries = max_crash_retries
        self.journal: Journal | None = None
        self.live: dict[str, _Live] = {}  # every unfinished job: queued, running or closing
        self.queue: deque[str] = deque()  # queued jobs, in order
        self.running: set[str] = set()  # jobs holding a slot (closing ones too)
        self.outputs: dict[str, str] = {}  # each file an unfinished job will write: its job
        self.waiters: dict[str, list[Message]] = {}
        self.drain_waiters: list[Message] = []
        self.pumping = False  # _pump is on the stack: a job settled by it does not re-enter
        self.draining = False
        self.ended_infos: OrderedDict[str, JobInfo] = OrderedDict()  # newest last, bounded
        self.stats = JobStats(Counter())
        # Journal writes the state directory could not take (full, read-only), in order,
        # tried again before every write and on a timer: a job's start or end is kept here,
        # never lost while the daemon runs. With the ended jobs whose end waits in it.
        self.deferred: deque[tuple[str, Callable[[Journal], object]]] = deque()
        self.unjournaled: dict[str, JobInfo] = {}
        self.retry_armed = False  # a _RetryJournal tick is scheduled
        self.journal_down = False  # the last write failed (logged once per episode)
        self.write_error: JournalUnavailable | None = None  # why, the last time

    # -- hooks -----------------------------------------------------------------------------

    def on_start(self) -> None:
        """Actor thread: open the journal and re-queue what a crash left unfinished."""
        journal = self.journal = Journal(self.path, new_journal=self.new_journal)
        try:
            found = journal.recover()
        except JournalUnavailable as error:
            # The state directory is full (or read-only): start all the same, or systemd
            # would restart us into the same wall. What was running is re-queued here now,
            # and in the journal once it takes the write (first of those waiting).
            self.deferred.append(("", _recover))
            self._unavailable(error)
            found = [_recovered(job) for job in journal.jobs(unfinished=True)]
        self.stats = JobStats(
            Counter({key: n for key, n in journal.counts_by_kind().items() if key[1].finished})
        )
        # Publications first, before any temp file is removed: their temp files are outputs
        # already journaled, which another job's cleanup must not take.
        unfinished = []
        for job in found:
            recovered = self._recover_publication(job) if job.publication else job
            if recovered is not None:
                unfinished.append(recovered)
        for job in unfinished:
            try:
                spec = spec_from_wire(unpack(job.spec))
            except (InvalidArgument, ValueError) as error:
                self._finish(job.id, job.kind, JobState.FAILED, error=f"unreadable spec: {error}")
                continue
            for temp in remove_temps(spec.output, self._output_roots):
                _log.info("removed %s, left by an interrupted run of %s", temp, job.id)
            if job.crash_retries > self.max_crash_retries:
                # A job that keeps taking the daemon down with it must not crash-loop it.
                died = f"the daemon died {job.crash_retries} times while this job ran"
                _log.error("job %s failed: %s", job.id, died)
                self._finish(job.id, job.kind, JobState.FAILED, error=died)
                continue
            self._enqueue(_Live(self._info(job, spec), spec))
            if job.started is not None:  # it ran before this start
                _log.info(
                    "job %s re-queued: it was running when the daemon stopped (crash retries %d)",
                    job.id,
                    job.crash_retries,
                )
        if self.queue:
            _log.warning("re-queued %d unfinished jobs from the journal", len(self.queue))
        # What ended jobs left behind (their writers could not remove it, or the daemon died
        # first): no job runs yet, and the queued ones' outputs were cleaned up above.
        ended: dict[str, str] = {}  # each output once (its last ended job)
        for job_id, packed in journal.specs((JobState.FAILED, JobState.CANCELLED)):
            with contextlib.suppress(InvalidArgument, ValueError):
                ended[spec_from_wire(unpack(packed)).output] = job_id
        for directory, names in _by_directory(ended).items():
            # One listing a directory, opened beneath the output roots.
            try:
                temps = temps_in(directory, names, self._output_roots)
            except OSError as error:  # gone, out of the roots, not ours to read
                _log.warning("cannot look for temporary files in %s: %s", directory, error)
                continue
            for temp, output in temps:
                if discard(temp, self._output_roots):
                    _log.info("removed %s, left by job %s", temp, ended[output])
                else:
                    self._sweep(output, ended[output])  # tried again every sweep_every
        self._prune()
        self.schedule(_PRUNE_EVERY, Prune(), interval=_PRUNE_EVERY)  # a timer, not a thread
        self._pump()

    def _recover_publication(self, job: JournaledJob) -> JournaledJob | None:
        """A job the daemon died under while it published its output: done once its files
        are in place (None: nothing left to run); if they never got there, back in the queue
        (the job, released as a crash)."""
        try:
            published = complete_publication(job.publication, self._output_roots)
        except OSError as error:
            failed = f"its output could not be put in place after a restart: {error}"
            _log.error("job %s failed: %s", job.id, failed)
            for temp, _, _ in job.publication:
                discard(temp, self._output_roots)
            self._finish(job.id, job.kind, JobState.FAILED, error=failed)
            return None
        if published:
            _log.info("job %s: its output, journaled before a crash, is in place: done", job.id)
            self._finish(job.id, job.kind, JobState.DONE, error=None, result=job.result)
            return None
        _log.warning("job %s: its output was lost before it was published: it runs again", job.id)
        self._write(job.id, partial(_release, job_id=job.id, crashed=True))
        return _recovered(replace(job, publication=()))

    @property
    def _output_roots(self) -> tuple[str, ...] | None:
        return None if self.roots is None else self.roots[1]

    def on_stop(self) -> None:
        """Actor thread."""
        if self.journal is not None:
            if self.deferred and not self._flush():
                _log.error(
                    "stopping with %d journal writes the state directory did not take (jobs "
                    "%s): those jobs run again at the next start",
                    len(self.deferred),
                    ", ".join(sorted({job for job, _ in self.deferred})),
                )
            self.journal.close()

    def handle(self, message: Message) -> None:
        """Actor thread."""
        payload = message.payload
        if isinstance(payload, WrittenProgress):
            self._advance(payload)
        elif isinstance(payload, InputSized):
            self._sized(payload)
        elif isinstance(payload, WriterStopped):
            self._writer_stopped(payload)
        elif payload is _SWEEP:
            self._sweep_leftovers()
        elif isinstance(payload, JobError):
            self._failed(message.sender, payload)
        elif isinstance(payload, WriterDone):
            self._done(payload.job, payload.summary)
        elif isinstance(payload, Publishing):
            self._answer(message, self._publishing(payload))
        elif isinstance(payload, Accept):
            self._answer(message, self._accept(payload))
        elif isinstance(payload, Resubmit):
            self._answer(message, self._resubmit(payload))
        elif isinstance(payload, GetJob):
            self._answer(message, self._lookup(payload.job))
        elif isinstance(payload, ListJobs):
            self._answer(message, self._list(payload.limit, payload.state))
        elif isinstance(payload, Cancel):
            self._answer(message, self._cancel(payload.job))
        elif isinstance(payload, WaitJob):
            self._wait(message, payload)
        elif isinstance(payload, Drain):
            self._drain(message)
        elif isinstance(payload, Release):
            self._answer(message, self._release(payload.crashed))
        elif isinstance(payload, SetMaxJobs):
            self._answer(message, self._set_max_jobs(payload))
        elif isinstance(payload, Prune):
            self._answer(message, self._prune())
        elif isinstance(payload, StoreStatus):
            self._answer(message, self._counts())
        elif isinstance(payload, _RetryJournal):
            self.retry_armed = False
            self._flush()
        elif isinstance(payload, GetJobMetrics):
            unfinished = Counter(
                (live.spec.kind.value, live.info.state.value)
                for live in self.live.values()
                if not live.closing
            )
            self._answer(message, self.stats.snapshot(unfinished))

    def _wait(self, message: Message, request: WaitJob) -> None:
        if request.job not in self.live:
            self._answer(message, self._lookup(request.job))
        elif message.correlation_id is not None:  # live until its files are gone
            self.waiters.setdefault(request.job, []).append(message)

    def _drain(self, message: Message) -> None:
        self.draining = True
        if message.correlation_id is not None:
            self.drain_waiters.append(message)
        self._check_drained()

    def _set_max_jobs(self, request: SetMaxJobs) -> JobCounts:
        self.max_jobs = request.max_jobs
        self.roots = request.roots or self.roots
        if request.retention is not None and request.retention != self.retention:
            self.retention = request.retention
            self._prune()
        self._pump()
        return self._counts()

    def _answer(self, request: Message, answer: object) -> None:
        # A request told rather than asked has nobody to answer: what it asked for is done.
        if request.correlation_id is not None:
            self.reply(request, answer)

    # -- requests --------------------------------------------------------------------------

    @property
    def _journal(self) -> Journal:
        assert self.journal is not None, "the journal opens in on_start"
        return self.journal

    def _accept(self, request: Accept) -> JobInfo | Rejected:
        spec = request.spec
        try:
            packed = pack(spec_to_wire(spec))
        except (ValueError, TypeError, OverflowError) as error:  # not a spec check_spec passed
            return Rejected(ErrorCode.BAD_REQUEST, f"the job cannot be journaled: {error}")
        key = request.idempotency_key
        known = None if key is None else self._by_key(key, packed)
        if known is not None:  # a retried submit: the job it made, whatever its state
            return known
        if self.draining:
            return Rejected(ErrorCode.BUSY, "actord is shutting down and takes no new jobs")
        if request.taken is not None:
            return Rejected(ErrorCode.CONFLICT, request.taken)
        for path in written_paths(spec):
            other = self.outputs.get(path)
            if other is not None:
                return Rejected(ErrorCode.CONFLICT, f"{path} is already written by job {other}")
        try:
            if not self._flush():
                raise self._write_error()
            job, _ = self._journal.submit(spec.kind.value, packed, idempotency_key=key)
        except JournalUnavailable as error:
            self._unavailable(error)
            return Rejected(ErrorCode.UNAVAILABLE, f"the job was not accepted: {error}")
        _log.info(
            "job %s submitted: %s %s -> %s", job.id, spec.kind.value, _source(spec), spec.output
        )
        self._enqueue(_Live(self._info(job, spec), spec))
        self._pump()
        return self._lookup(job.id)  # running, queued, or already failed by the pump

    def _resubmit(self, request: Resubmit) -> JobInfo | Rejected:
        key = request.idempotency_key
        try:
            packed: bytes | None = pack(spec_to_wire(request.spec))
        except (ValueError, TypeError, OverflowError):
            packed = None  # not a spec any key was journaled with
        known = self._by_key(key, packed)
        if known is None:
            return Rejected(ErrorCode.NOT_FOUND, f"no job has the idempotency key {key!r}")
        return known

    def _by_key(self, key: str, packed: bytes | None) -> JobInfo | Rejected | None:
        """The job `key` made, if `packed` is its spec as journaled; a conflict if it made
        another; None for a key the journal does not know."""
        known = self._journal.find_key(key)
        if known is None:
            return None
        if known.spec != packed:
            return Rejected(
                ErrorCode.CONFLICT, f"idempotency key {key!r} was used for another job ({known.id})"
            )
        return self._lookup(known.id)

    def _lookup(self, job_id: str) -> JobInfo | Rejected:
        live = self.live.get(job_id)
        if live is not None:
            return live.info
        info = self.ended_infos.get(job_id)
        if info is not None:
            self.ended_infos.move_to_end(job_id)
            return info
        try:
            job = self._journal.get(job_id)
        except UnknownJob:
            return Rejected(ErrorCode.NOT_FOUND, f"no job {job_id!r}")
        info = self._info(job)
        self._remember(info)
        return info

    def _remember(self, info: JobInfo) -> None:
        # An ended job never changes again: keep the newest ones out of the journal's way.
        self.ended_infos[info.id] = info
        if len(self.ended_infos) > _ENDED_CACHE:
            self.ended_infos.popitem(last=False)

    def _list(self, limit: int, state: JobState | None = None) -> tuple[JobInfo, ...]:
        infos = []
        for job in self._journal.jobs(limit=limit, state=state):
            live = self.live.get(job.id)
            # As `job` shows it: the live record, else an end the journal does not have yet,
            # else the ended one kept, else the journal's.
            known = live.info if live else self.unjournaled.get(job.id)
            infos.append(known or self.ended_infos.get(job.id) or self._info(job))
        return tuple(infos)

    def _prune(self) -> int:
        """Apply the retention: ended jobs out of the journal (their outputs untouched)."""
        retention = self.retention
        if not retention.active:
            return 0
        try:
            removed = self._journal.prune(
                ended_before=time.time() - retention.days * 86400 if retention.days else None,
                keep=retention.jobs or None,
            )
        except JournalUnavailable as error:  # the state directory is full: next time
            self._unavailable(error)
            return 0
        for job_id, kind, state in removed:
            self.ended_infos.pop(job_id, None)
            if self.stats.ended[(kind, state)] > 0:
                self.stats.ended[(kind, state)] -= 1
            self.stats.pruned += 1
        if removed:
            _log.info(
                "retention: %d ended jobs left the journal (retention_days %g, retention_jobs "
                "%d; their outputs stay)",
                len(removed),
                retention.days,
                retention.jobs,
            )
        return len(removed)

    def _publishing(self, request: Publishing) -> Recorded | Rejected:
        # The writer renames its files only after this commit: a job cancelled, failed or
        # released before it is refused (its writer removes its files), and once it is in,
        # the job's output is the journal's to finish, whatever happens to the daemon.
        job_id = request.job
        live = self.live.get(job_id)
        if live is None or live.closing or job_id not in self.running:
            return Rejected(ErrorCode.CONFLICT, f"job {job_id!r} is not running")
        result = _packed_result(
            request.done, request.total, request.bytes, request.summary, live.info.input_bytes
        )
        try:
            if not self._flush():  # its start first: the journal must say it runs
                raise self._write_error()
            # The journal refuses a job that is not running there (released, or asking twice).
            self._journal.record_publication(job_id, request.files, result=result)
        except InvalidArgument as error:
            return Rejected(ErrorCode.CONFLICT, str(error))
        except JournalUnavailable as error:
            self._unavailable(error)
            return Rejected(ErrorCode.UNAVAILABLE, str(error))
        live.publishing = True
        return Recorded(job_id)

    def _cancel(self, job_id: str) -> JobInfo | Rejected:
        live = self.live.get(job_id)
        if live is None or live.closing or live.publishing:
            # Ended, ending, or its output journaled: too late (a published job ends done),
            # and the answer says where it stands.
            return self._lookup(job_id)
        if job_id in self.running:
            self._close(job_id, JobState.CANCELLED, "cancelled")
            return live.info
        # Queued: the journal first, so that once the client hears "cancelled", no restart
        # runs the job again.
        self._finish(job_id, live.spec.kind.value, JobState.CANCELLED, error="cancelled")
        live.info = replace(live.info, state=JobState.CANCELLED, error="cancelled")
        self.queue.remove(job_id)
        self._settle(live)
        return live.info

    def _enqueue(self, live: _Live) -> None:
        job_id = live.info.id
        self.live[job_id] = live
        self.queue.append(job_id)
        for path in written_paths(live.spec):
            self.outputs.setdefault(path, job_id)

    def _release(self, crashed: bool) -> Released:
        self.draining = True
        released = []
        for job_id in sorted(self.running):
            live = self.live[job_id]
            # A publishing job stays running in the journal with its publication: it ends
            # done, now if its writer gets there, else at the next start. An ending one has
            # its end journaled already.
            if not live.closing and not live.publishing:
                self._write(job_id, partial(_release, job_id=job_id, crashed=crashed))
                live.released = True
                released.append(job_id)
                _log.info(
                    "job %s re-queued: the daemon %s (%d of %s units done)",
                    job_id,
                    "fails" if crashed else "stops",
                    live.info.done,
                    live.info.total or "?",
                )
        return Released(tuple(released))

    def _finish(
        self,
        job_id: str,
        kind: str,
        state: JobState,
        *,
        error: str | None,
        result: bytes | None = None,
    ) -> None:
        self._write(
            job_id, lambda journal: journal.finish(job_id, state, error=error, result=result)
        )
        self.stats.ended[(kind, state)] += 1

    def _write(self, job_id: str, write: Callable[[Journal], object]) -> None:
        """A journal write that may wait (a job's start, end or release): done now, after
        those waiting, or kept in order and tried again before the next write and on a
        timer. The job goes on in memory meanwhile."""
        self.deferred.append((job_id, write))
        self._flush()

    def _flush(self) -> bool:
        """Try the journal writes kept waiting, oldest first; True once none is left."""
        while self.deferred:
            job_id, write = self.deferred[0]
            try:
                write(self._journal)
            except JournalUnavailable as error:
                self._unavailable(error)
                return False
            except InvalidArgument as error:  # it no longer applies (an end is final)
                _log.warning("job %s: a journal write kept waiting was dropped: %s", job_id, error)
            self.deferred.popleft()
            if not any(job == job_id for job, _ in self.deferred):
                self.unjournaled.pop(job_id, None)
        if self.journal_down:
            self.journal_down = False
            _log.warning("the journal takes writes again: every waiting write is done")
        return True

    def _write_error(self) -> JournalUnavailable:
        assert self.write_error is not None, "set by the write that failed"
        return self.write_error

    def _unavailable(self, error: JournalUnavailable) -> None:
        # A write failed: logged once per episode; the waiting ones are tried on a timer.
        self.write_error = error
        if not self.journal_down:
            self.journal_down = True
            _log.error("%s; submits are refused, job ends wait in memory", error)
        if self.deferred and not self.retry_armed:
            self.retry_armed = True
            self.schedule(_JOURNAL_RETRY, _RetryJournal())

    def _counts(self) -> JobCounts:
        # Kept in memory: `status` is asked often and must not query the journal each time.
        ended: Counter[JobState] = Counter()
        for (_, state), n in self.stats.ended.items():
            ended[state] += n
        return JobCounts(
            queued=len(self.queue),
            running=sum(not self.live[job].closing for job in self.running),
            done=ended[JobState.DONE],
            failed=ended[JobState.FAILED],
            cancelled=ended[JobState.CANCELLED],
            unjournaled=len(self.deferred),
        )

    # -- a running job's notes, and its end --------------------------------------------------

    def _advance(self, note: WrittenProgress) -> None:
        live = self.live.get(note.job)
        if live is None or live.closing:
            return
        units, nbytes = live.counted
        self.stats.advanced(live.spec.kind, note.done - units, note.bytes - nbytes)
        live.counted = (max(units, note.done), max(nbytes, note.bytes))
        total = note.total or live.info.total  # the reader's count, once it has seen the end
        live.info = replace(live.info, done=note.done, total=total, bytes=note.bytes)
        self._publish(live.info)

    def _sized(self, note: InputSized) -> None:
        live = self.live.get(note.job)
        if live is None or live.closing:
            return
        live.info = replace(
            live.info, input_bytes=note.input_bytes, total=live.info.total or note.units
        )
        self._publish(live.info)

    def _done(self, job_id: str, summary: LogSummary | FFTSummary) -> None:
        # The writer has renamed what the journal recorded (`_publishing`): the job is done.
        live = self.live.get(job_id)
        if live is None or live.closing or not live.publishing:
            _log.error("job %s: a writer's end arrived for a job not publishing", job_id)
            return
        info = live.info = replace(
            live.info,
            state=JobState.DONE,
            error=None,
            summary=summary,
            total=live.info.total or live.info.done,
        )
        result = _packed_result(info.done, info.total, info.bytes, summary, info.input_bytes)
        self._finish(job_id, info.kind.value, JobState.DONE, error=None, result=result)
        self._stop_actors(live, done=True)
        self._settle(live)

    def _failed(self, sender: str, note: JobError) -> None:
        live = self.live.get(note.job)
        writer = None if live is None or not live.publishing else live.writer
        if writer is not None and sender != writer.name:
            # Its output is journaled: only its writer (whose renames failed) can still fail
            # it; a late note from anyone else cannot take the output back.
            _log.warning("job %s: ignored after its publication: %s", note.job, note.error)
            return
        self._close(note.job, JobState.FAILED, note.error)

    def _close(self, job_id: str, state: JobState, error: str) -> None:
        # A running job ends failed or cancelled: journaled now, its actors stopped, and
        # settled once its writer has removed its temporary files.
        live = self.live.get(job_id)
        if live is None or live.closing or job_id not in self.running:
            return  # ended, ending, or not started (notes come only from a job's actors)
        live.closing = True
        self._release_outputs(live)
        if live.released and state is JobState.FAILED:
            # Stopped by the shutdown (its actors fail as the pools stop): it stays queued in
            # the journal, and nobody is told. A cancel, though, is the client's: journaled.
            live.silent = True
            self._stop_actors(live)
            return
        if state is JobState.FAILED:
            _log.error("job %s failed: %s", job_id, error)
        self._finish(job_id, live.spec.kind.value, state, error=error)
        live.info = replace(live.info, state=state, error=error)
        self._stop_actors(live)
        if live.writer is None or live.writer_stopped:
            self._settle(live)

    def _stop_actors(self, live: _Live, *, done: bool = False) -> None:
        live.ended.set()  # a parser busy with one of its blocks gives up within a poll
        # Stop without joining: the writer's on_stop removes the temp files of a job that did
        # not finish (and says so: WriterStopped); units still in the pools for it become dead
        # letters. The reader of a done job has sent everything, but its writer's pacing
        # notes may still be queued (a reader that has not run since they came, on a busy
        # machine): it reads them before it stops, so that a healthy job leaves no dead letter.
        if live.reader is not None:
            live.reader.stop(graceful=done, wait=False)
        if live.writer is not None:  # stopping is idempotent; a failed actor must go too
            live.writer.stop(graceful=False, wait=False)

    def _writer_stopped(self, stopped: WriterStopped) -> None:
        live = self.live.get(stopped.job)
        if live is None:
            return
        live.writer_stopped = True
        live.temps_left = stopped.left
        if live.closing and not live.silent:
            self._settle(live)

    def _settle(self, live: _Live) -> None:
        # Once per job, its end journaled: watchers and waiters hear of it, its slot frees.
        job_id = live.info.id
        del self.live[job_id]
        self.running.discard(job_id)
        self._release_outputs(live)
        if live.temps_left:  # what its writer could not remove (it says so)
            self._sweep(live.spec.output, job_id)
        seconds = time.monotonic() - live.started if live.started else 0.0
        if live.started:
            self.stats.ran(live.spec.kind, seconds, live.info.summary)
        info = live.info = replace(live.info, ended=time.time())
        level = logging.INFO if info.state is JobState.DONE else logging.WARNING
        _log.log(
            level,
            "job %s %s after %.1fs: %s, %d of %s units%s",
            job_id,
            info.state.value,
            seconds,
            info.kind.value,
            info.done,
            info.total or "?",
            f": {info.error}" if info.error and info.state is JobState.FAILED else "",
        )
        self._remember(info)
        if any(job == job_id for job, _ in self.deferred):
            self.unjournaled[job_id] = info  # `jobs` shows it as it ended, not as journaled
        self._publish(info)
        for waiter in self.waiters.pop(job_id, []):
            self.reply(waiter, info)
        self._pump()
        self._check_drained()

    def _sweep(self, output: str, job_id: str) -> None:
        """Remove the temp files an ended job left beside `output`, unless an unfinished job
        writes that output now (they would be its own); what cannot be removed yet is tried
        again every `sweep_every` seconds, and at the next start."""
        if self.outputs.get(output) not in (None, job_id):
            self.leftovers[output] = job_id  # after that job
        elif self._remove_left(output, job_id):
            self.leftovers.pop(output, None)
            return
        else:
            self.leftovers[output] = job_id
        if self._sweeping is None:
            self._sweeping = self.schedule(self.sweep_every, _SWEEP, interval=self.sweep_every)

    def _remove_left(self, output: str, job_id: str) -> bool:
        """Remove the temp files beside `output` that its ended job left; True once none is
        left. A temp file of a path another unfinished job writes is that job's own (an
        output named like this one's rejects file): never touched."""
        roots = self._output_roots
        try:
            found = temps_of(output, roots)
        except FileNotFoundError:  # its directory is gone, and its temp files with it
            return True
        except OSError as error:  # not listable now (unreadable, not a directory): later
            _log.warning("cannot look for temporary files of %s: %s", output, error)
            return False
        gone = True
        for temp in found:
            if self.outputs.get(temp_target(temp)) not in (None, job_id):
                continue
            if discard(temp, roots):
                _log.info("removed %s, left by job %s", temp, job_id)
            else:
                gone = False
        return gone

    def _sweep_leftovers(self) -> None:
        for output, job_id in list(self.leftovers.items()):
            self._sweep(output, job_id)
        if not self.leftovers and self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None

    def _publish(self, info: JobInfo) -> None:
        self.publish(Progress.of(info), timeout=0)

    def _release_outputs(self, live: _Live) -> None:
        for path in written_paths(live.spec):
            if self.outputs.get(path) == live.info.id:
                del self.outputs[path]

    def _pump(self) -> None:
        # Start queued jobs while there is room (never while draining). A job that fails to
        # start settles, and settling pumps: the flag keeps that a loop here, not a recursion
        # as deep as the queue.
        if self.pumping:
            return
        self.pumping = True
        try:
            while self.queue and len(self.running) < self.max_jobs and not self.draining:
                self._start(self.live[self.queue.popleft()])
        finally:
            self.pumping = False

    def _start(self, live: _Live) -> None:
        job_id, spec = live.info.id, live.spec
        # Paths were checked when the job was accepted; it may start much later (queued, or
        # after a restart): its writer and reader open its files beneath the current roots
        # as they start, and fail it if they cannot. Never here: a user's file (a FIFO, a
        # symlink swapped in) must not be able to hold up the store.
        refused = None
        try:
            live.reader, live.writer = self.launch(job_id, spec, live.ended, self.roots)
        except ActorStopping:
            # The system is stopping under us (an in-process user that stopped without a
            # drain): not the job's fault. It stays queued, for the next start.
            self.queue.appendleft(job_id)
            self.draining = True
            return
        except ActordError as error:
            refused = f"its actors could not start: {error}"
        if refused is None:
            self._write(job_id, lambda journal: journal.mark_running(job_id))
        else:
            _log.error("job %s failed: %s", job_id, refused)
            self._finish(job_id, spec.kind.value, JobState.FAILED, error=refused)
            live.info = replace(live.info, state=JobState.FAILED, error=refused)
            self._settle(live)
            return
        live.info = replace(live.info, state=JobState.RUNNING, started=time.time())
        live.started = time.monotonic()
        self.running.add(job_id)
        _log.info(
            "job %s started: %s %s -> %s", job_id, spec.kind.value, _source(spec), spec.output
        )
        self._publish(live.info)

    def _check_drained(self) -> None:
        if self.draining and not self.running and self.drain_waiters:
            for waiter in self.drain_waiters:
                self.reply(waiter, Drained(queued=len(self.queue)))
            self.drain_waiters.clear()

    @staticmethod
    def _info(job: JournaledJob, spec: JobSpec | None = None) -> JobInfo:
        """The job as clients see it, from its journal row (and its spec, if decoded). A row
        this release cannot read (a spec or result from another release, a damaged file) is
        shown with what can be read, never raised: it must not take the store down."""
        try:
            spec = spec_from_wire(unpack(job.spec)) if spec is None else spec
        except (InvalidArgument, ValueError, TypeError):
            spec = None
        try:
            result = {} if job.result is None else dict(unpack(job.result))
            summary = summary_from_wire(result.get("summary"))
        except (ValueError, TypeError):
            result, summary = {}, None
        kind = spec.kind if spec is not None else _kind(job.kind)
        return JobInfo(
            job.id,
            kind,
            job.state,
            None if spec is None else spec.input,
            "?" if spec is None else spec.output,
            done=result.get("done", 0),
            total=result.get("total", 0),
            bytes=result.get("bytes", 0),
            input_bytes=result.get("input_bytes", 0),
            error=job.error if spec is not None else (job.error or "its spec cannot be read"),
            summary=summary,
            crash_retries=job.crash_retries,
            created=job.created,
            started=job.started,
            ended=job.ended,
        )


def _recover(journal: Journal) -> None:
    journal.recover()


def _recovered(job: JournaledJob) -> JournaledJob:
    """`job` as `Journal.recover` will leave it: one that was running (and not publishing)
    back in the queue, with one more crash retry."""
    if job.state is not JournalState.RUNNING or job.publication:
        return job
    return replace(job, state=JournalState.ACCEPTED, crash_retries=job.crash_retries + 1)


def _release(journal: Journal, *, job_id: str, crashed: bool) -> None:
    journal.release(job_id, crashed=crashed)


def _kind(value: str) -> JobKind:
    """A journal row's kind (one this release does not know reads as a log job)."""
    try:
        return JobKind(value)
    except ValueError:
        return JobKind.LOG


def _source(spec: JobSpec) -> str:
    """What a job reads, for the log: its input, or its synthetic shape."""
    if spec.input is not None:
        return spec.input
    options = spec.options
    shape = getattr(options, "synthetic", None)
    return f"synthetic {'x'.join(map(str, shape))}" if shape else "-"


def _packed_result(
    done: int,
    total: int,
    nbytes: int,
    summary: LogSummary | FFTSummary | None,
    input_bytes: int = 0,
) -> bytes:
    """A job's result as the journal keeps it (read back by `JobStore._info`)."""
    return pack(
        {
            "done": done,
            "total": total,
            "bytes": nbytes,
            "input_bytes": input_bytes,
            "summary": summary_to_wire(summary),
        }
    )
