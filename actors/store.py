"""The job store: the actor that owns the journal and is the front door for jobs.

Every job a client submits is committed to the journal here before the client hears back.
The store hands jobs to the jobs actor (at most `max_jobs` at a time), listens to its
`Progress` events and records each job's end; only then does it publish the end to watchers
and answer waiters, so a client told "done" is told what the journal says. On the first start
it re-queues what a crash left unfinished, after removing the temp files the crash left.

It also journals each job's output before the output appears: a writer asks (`Publishing`)
and renames its files only once the store has committed them. That commit is the point of no
return: a cancel that comes after it is too late (the job ends done), a stop leaves the job
to be finished at the next start, and a start after a crash completes the renames (or finds
them done) and records the job done, instead of running it again and replacing its output.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from actord import Actor, InvalidArgument, Message, UnknownActor
from actord.control.protocol import ProtocolError
from actord.runtime.errors import ErrorCode
from actors.journal import Journal, JournaledJob
from actors.paths import confine, confine_pair

from .model import (
    Cancel,
    FFTSummary,
    GetJob,
    JobInfo,
    JobKind,
    JobSpec,
    JobState,
    ListJobs,
    LogSummary,
    Progress,
    Rejected,
    Submit,
    WaitJob,
)
from .wire import pack, spec_from_wire, spec_to_wire, summary_from_wire, summary_to_wire, unpack
from .writer import REJECTS_SUFFIX, Publishing, Recorded, complete_publication, remove_temps

__all__ = [
    "Accept",
    "Drain",
    "Drained",
    "GetJobMetrics",
    "JobCounts",
    "JobMetrics",
    "JobStore",
    "Release",
    "Released",
    "SetMaxJobs",
    "StoreStatus",
]

_log: Final = logging.getLogger("actors.store")
_ENDED_CACHE: Final = 4096  # ended jobs kept in memory for `job` and `watch`


@dataclass(frozen=True, slots=True)
class Accept:
    """Journal a new job (or find the one with this idempotency key): replied with its
    `JobInfo` once committed, or `Rejected`."""

    spec: JobSpec
    idempotency_key: str | None = None


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
class SetMaxJobs:
    """A reload: the job limit and the allowed roots (inputs, outputs)."""

    max_jobs: int
    roots: tuple[tuple[str, ...], tuple[str, ...]] | None = None


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """Replied with `JobCounts`."""


@dataclass(frozen=True, slots=True)
class GetJobMetrics:
    """Replied with `JobMetrics` (for the Prometheus collector, at scrape time)."""


DURATION_BOUNDS: Final = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0)


@dataclass(frozen=True, slots=True)
class JobMetrics:
    jobs: tuple[tuple[str, str, int], ...]  # (kind, state, count), every job in the journal
    durations: tuple[tuple[str, tuple[int, ...], float], ...]  # (kind, cumulative, sum)
    units: tuple[tuple[str, int], ...]  # blocks or chunks written, by kind (since start)
    bytes: tuple[tuple[str, int], ...]  # input bytes processed, by kind (since start)
    lines: int  # log lines in log jobs that ended (since start)


@dataclass(frozen=True, slots=True)
class JobCounts:
    queued: int
    running: int
    done: int
    failed: int
    cancelled: int


class _Live:
    """The store's record of an unfinished job (never leaves the actor)."""

    def __init__(self, info: JobInfo, spec: JobSpec) -> None:
        self.info = info
        self.spec = spec
        self.cancelled = False  # journaled as cancelled while the jobs actor still runs it
        self.started = 0.0  # monotonic time it was handed to the jobs actor
        self.counted = (0, 0)  # units and bytes already added to the metrics
        self.publishing = False  # its output is journaled: it can only end done now


class JobStore(Actor):
    """Requests: Accept, Cancel, GetJob, ListJobs, WaitJob, Drain, Release, SetMaxJobs,
    StoreStatus. Events in: the jobs actor's `Progress`. Events out: `Progress`, after the
    journal has recorded a job's end."""

    def __init__(
        self,
        path: str,
        jobs: str,
        max_jobs: int,
        *,
        recover: bool,
        roots: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
        max_crash_retries: int = 5,
    ) -> None:
        self.path = path
        self.jobs_actor = jobs
        self.max_jobs = max_jobs
        self.recover = recover
        self.roots = roots  # (input roots, output roots): paths are checked again at hand-out
        self.max_crash_retries = max_crash_retries
        self.journal: Journal | None = None
        self.live: dict[str, _Live] = {}
        self.queue: deque[str] = deque()
        self.running: set[str] = set()
        self.waiters: dict[str, list[Message]] = {}
        self.drain_waiters: list[Message] = []
        self.draining = False
        self.released = False
        self.ended_infos: OrderedDict[str, JobInfo] = OrderedDict()  # newest last, bounded
        self.by_kind: Counter[tuple[str, JobState]] = Counter()  # ended jobs by kind, state
        # kind: (duration buckets, [sum of seconds]), every kind from the start
        self.durations: dict[str, tuple[list[int], list[float]]] = {
            kind.value: ([0] * (len(DURATION_BOUNDS) + 1), [0.0]) for kind in JobKind
        }
        self.units: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.lines = 0

    # -- hooks -----------------------------------------------------------------------------

    def on_start(self) -> None:
        """Actor thread: open the journal; on the first start, re-queue what a crash left."""
        journal = self.journal = Journal(self.path)
        found = journal.recover() if self.recover else journal.jobs(unfinished=True)
        self.by_kind = Counter(
            {key: n for key, n in journal.counts_by_kind().items() if key[1].finished}
        )
        if self.recover:
            # Publications first, before any temp file is removed: their temp files are
            # outputs already journaled, which another job's cleanup must not take.
            unfinished = []
            for job in found:
                recovered = self._recover_publication(job) if job.publication else job
                if recovered is not None:
                    unfinished.append(recovered)
            found = unfinished
        for job in found:
            try:
                spec = spec_from_wire(unpack(job.spec))
            except (InvalidArgument, ValueError) as error:
                self._finish(job.id, job.kind, JobState.FAILED, error=f"unreadable spec: {error}")
                continue
            if job.state is JobState.RUNNING:  # a restart of this actor: still running
                live = self.live[job.id] = _Live(self._info(job, spec), spec)
                live.publishing = bool(job.publication)
                self.running.add(job.id)
                continue
            if self.recover:
                for temp in remove_temps(spec.output):
                    _log.info("removed %s, left by an interrupted run of %s", temp, job.id)
                if job.crash_retries > self.max_crash_retries:
                    # A job that keeps taking the daemon down with it must not crash-loop it.
                    died = f"the daemon died {job.crash_retries} times while this job ran"
                    _log.error("job %s failed: %s", job.id, died)
                    self._finish(job.id, job.kind, JobState.FAILED, error=died)
                    continue
            self.live[job.id] = _Live(self._info(job, spec), spec)
            self.queue.append(job.id)
            if self.recover and job.started is not None:  # it ran before this start
                _log.info(
                    "job %s re-queued: it was running when the daemon stopped (crash retries %d)",
                    job.id,
                    job.crash_retries,
                )
        if self.recover and self.queue:
            _log.warning("re-queued %d unfinished jobs from the journal", len(self.queue))
        self._pump()

    def _recover_publication(self, job: JournaledJob) -> JournaledJob | None:
        """A job the daemon died under while it published its output: done once its files
        are in place (None: nothing left to run); if they never got there, back in the queue
        (the job, released as a crash)."""
        try:
            published = complete_publication(job.publication)
        except OSError as error:
            failed = f"its output could not be put in place after a restart: {error}"
            _log.error("job %s failed: %s", job.id, failed)
            for temp, _ in job.publication:
                Path(temp).unlink(missing_ok=True)
            self._finish(job.id, job.kind, JobState.FAILED, error=failed)
            return None
        if published:
            _log.info("job %s: its output, journaled before a crash, is in place: done", job.id)
            self._finish(job.id, job.kind, JobState.DONE, error=None, result=job.result)
            return None
        _log.warning("job %s: its output was lost before it was published: it runs again", job.id)
        return self._journal.release(job.id, crashed=True)

    def on_stop(self) -> None:
        """Actor thread."""
        if self.journal is not None:
            self.journal.close()

    def handle(self, message: Message) -> None:
        """Actor thread."""
        payload = message.payload
        if isinstance(payload, Progress):
            self._progress(payload)
        elif isinstance(payload, Accept):
            self.reply(message, self._accept(payload))
        elif isinstance(payload, Publishing):
            self.reply(message, self._publishing(payload))
        elif isinstance(payload, GetJob):
            self.reply(message, self._lookup(payload.job))
        elif isinstance(payload, ListJobs):
            self.reply(message, self._list(payload.limit))
        elif isinstance(payload, Cancel):
            self._cancel(message, payload.job)
        elif isinstance(payload, WaitJob):
            found = self._lookup(payload.job)
            if payload.job in self.live:  # a cancelled one is live until its files are gone
                self.waiters.setdefault(payload.job, []).append(message)
            else:
                self.reply(message, found)
        elif isinstance(payload, Drain):
            self.draining = True
            self.drain_waiters.append(message)
            self._check_drained()
        elif isinstance(payload, Release):
            self.reply(message, self._release(payload.crashed))
        elif isinstance(payload, SetMaxJobs):
            self.max_jobs = payload.max_jobs
            self.roots = payload.roots or self.roots
            self._pump()
            self.reply(message, self._counts())
        elif isinstance(payload, StoreStatus):
            self.reply(message, self._counts())
        elif isinstance(payload, GetJobMetrics):
            self.reply(message, self._metrics())

    # -- requests --------------------------------------------------------------------------

    @property
    def _journal(self) -> Journal:
        assert self.journal is not None, "the journal opens in on_start"
        return self.journal

    def _accept(self, request: Accept) -> JobInfo | Rejected:
        spec = request.spec
        packed = pack(spec_to_wire(spec))
        key = request.idempotency_key
        known = None if key is None else self._journal.find_key(key)
        if known is None and self.draining:
            return Rejected(ErrorCode.BUSY, "actord is shutting down and takes no new jobs")
        if known is None:
            known, created = self._journal.submit(spec.kind.value, packed, idempotency_key=key)
        else:
            created = False
        if not created:
            if known.spec != packed:
                return Rejected(
                    ErrorCode.CONFLICT,
                    f"idempotency key {key!r} was used for another job ({known.id})",
                )
            return self._lookup(known.id)
        job = known
        info = self._info(job, spec)
        _log.info(
            "job %s submitted: %s %s -> %s", job.id, spec.kind.value, _source(spec), spec.output
        )
        self.live[job.id] = _Live(info, spec)
        self.queue.append(job.id)
        self._pump()
        return self._lookup(job.id)  # running, queued, or already failed by the pump

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
        except UnknownActor:
            return Rejected(ErrorCode.NOT_FOUND, f"no job {job_id!r}")
        info = self._info(job)
        self._remember(info)
        return info

    def _remember(self, info: JobInfo) -> None:
        # An ended job never changes again: keep the newest ones out of the journal's way.
        self.ended_infos[info.id] = info
        if len(self.ended_infos) > _ENDED_CACHE:
            self.ended_infos.popitem(last=False)

    def _list(self, limit: int) -> tuple[JobInfo, ...]:
        infos = []
        for job in self._journal.jobs(limit=limit):
            live = self.live.get(job.id)
            infos.append(live.info if live else self._info(job))
        return tuple(infos)

    def _publishing(self, request: Publishing) -> Recorded | Rejected:
        # The writer renames its files only after this commit: a job cancelled or released
        # before it is refused (its writer removes its files), and once it is in, the job's
        # output is the journal's to finish, whatever happens to the daemon.
        job_id = request.job
        live = self.live.get(job_id)
        if live is None:
            return Rejected(ErrorCode.NOT_FOUND, f"job {job_id!r} is not running here")
        result = _packed_result(request.done, request.total, request.bytes, request.summary)
        try:
            # The journal refuses a job that is not running there: one cancelled or released
            # (put back in the queue) before it asked, or one that asks twice.
            self._journal.record_publication(job_id, request.files, result=result)
        except InvalidArgument as error:
            return Rejected(ErrorCode.CONFLICT, str(error))
        live.publishing = True
        return Recorded(job_id)

    def _cancel(self, message: Message, job_id: str) -> None:
        live = self.live.get(job_id)
        if live is None or live.cancelled or live.publishing:
            # Ended, being cancelled, or its output journaled: too late (a published job
            # ends done), and the answer says where it stands.
            self.reply(message, self._lookup(job_id))
            return
        # The journal first: once the client hears "cancelled", no restart runs the job again.
        self._finish(job_id, live.spec.kind.value, JobState.CANCELLED, error="cancelled")
        live.info = replace(live.info, state=JobState.CANCELLED, error="cancelled")
        if job_id in self.running:
            live.cancelled = True  # its slot frees when the jobs actor reports the end
            # A tell, not a forward: the answer is the journal's, even if the jobs actor has
            # just finished it (then its output is removed when its end arrives: cancel wins).
            self.send(self.jobs_actor, Cancel(job_id))
            self.reply(message, live.info)
            return
        self.queue.remove(job_id)
        self._ended(job_id, live)
        self.reply(message, live.info)

    def _release(self, crashed: bool) -> Released:
        self.released = True
        self.draining = True
        released = []
        for job_id in sorted(self.running):
            live = self.live[job_id]
            # A publishing job stays running in the journal with its publication: it ends
            # done, now if its writer gets there, else at the next start.
            if not live.cancelled and not live.publishing:
                self._journal.release(job_id, crashed=crashed)
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
        self._journal.finish(job_id, state, error=error, result=result)
        self.by_kind[(kind, state)] += 1

    def _metrics(self) -> JobMetrics:
        # Every kind (and state) from the start, zeros included: a series that appears only
        # with its first job would hide that job from rate() and increase().
        kinds = [kind.value for kind in JobKind]
        jobs = Counter({(kind, state.value): 0 for kind in kinds for state in JobState})
        jobs.update({(kind, state.value): n for (kind, state), n in self.by_kind.items()})
        for live in self.live.values():
            if not live.cancelled:
                jobs[(live.spec.kind.value, live.info.state.value)] += 1
        durations = tuple(
            (kind, tuple(itertools.accumulate(buckets)), total[0])
            for kind, (buckets, total) in self.durations.items()
        )
        return JobMetrics(
            jobs=tuple((kind, state, n) for (kind, state), n in sorted(jobs.items())),
            durations=durations,
            units=tuple((kind, self.units[kind]) for kind in kinds),
            bytes=tuple((kind, self.bytes[kind]) for kind in kinds),
            lines=self.lines,
        )

    def _count_progress(self, live: _Live, progress: Progress) -> None:
        units, nbytes = live.counted
        kind = live.spec.kind.value
        self.units[kind] += max(0, progress.done - units)
        self.bytes[kind] += max(0, progress.bytes - nbytes)
        live.counted = (max(units, progress.done), max(nbytes, progress.bytes))

    def _count_end(self, live: _Live, progress: Progress) -> None:
        kind = live.spec.kind.value
        buckets, total = self.durations[kind]
        seconds = time.monotonic() - live.started if live.started else 0.0
        buckets[bisect.bisect_left(DURATION_BOUNDS, seconds)] += 1
        total[0] += seconds
        if isinstance(progress.summary, LogSummary):
            self.lines += progress.summary.lines

    def _counts(self) -> JobCounts:
        # Kept in memory: `status` is asked often and must not query the journal each time.
        ended: Counter[JobState] = Counter()
        for (_, state), n in self.by_kind.items():
            ended[state] += n
        return JobCounts(
            queued=len(self.queue),
            running=len(self.running),
            done=ended[JobState.DONE],
            failed=ended[JobState.FAILED],
            cancelled=ended[JobState.CANCELLED],
        )

    # -- the jobs actor's events -----------------------------------------------------------

    def _progress(self, progress: Progress) -> None:
        live = self.live.get(progress.job)
        if live is None:
            return
        self._count_progress(live, progress)
        if not progress.state.finished:
            if not live.cancelled:
                live.info = replace(
                    live.info, done=progress.done, total=progress.total, bytes=progress.bytes
                )
                self.publish(progress, timeout=0)
            return
        self.running.discard(progress.job)
        self._count_end(live, progress)
        if live.cancelled:
            if progress.state is JobState.DONE:  # it finished before the cancel arrived
                for path in (live.spec.output, live.spec.output + REJECTS_SUFFIX):
                    Path(path).unlink(missing_ok=True)
        elif self.released and progress.state is not JobState.DONE:
            return  # stopped by the shutdown: it stays queued in the journal
        else:
            info = live.info = replace(
                live.info,
                state=progress.state,
                done=progress.done,
                total=progress.total,
                bytes=progress.bytes,
                error=progress.error,
                summary=progress.summary,
            )
            result = _packed_result(info.done, info.total, info.bytes, info.summary)
            self._finish(info.id, info.kind.value, info.state, error=info.error, result=result)
        self._ended(progress.job, live)
        self._pump()
        self._check_drained()

    def _ended(self, job_id: str, live: _Live) -> None:
        # Recorded in the journal: now watchers and waiters may hear of it.
        del self.live[job_id]
        info = live.info = replace(live.info, ended=time.time())
        seconds = time.monotonic() - live.started if live.started else 0.0
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
        self.publish(Progress.of(info), timeout=0)
        for waiter in self.waiters.pop(job_id, []):
            self.reply(waiter, info)

    def _pump(self) -> None:
        # Hand queued jobs to the jobs actor while there is room (never while draining).
        while self.queue and len(self.running) < self.max_jobs and not self.draining:
            job_id = self.queue.popleft()
            live = self.live[job_id]
            refused = self._still_confined(live.spec)
            if refused is not None:  # a symlink swapped in since it was accepted
                _log.error("job %s failed: %s", job_id, refused)
                self._finish(job_id, live.spec.kind.value, JobState.FAILED, error=refused)
                live.info = replace(live.info, state=JobState.FAILED, error=refused)
                self._ended(job_id, live)
                continue
            self._journal.mark_running(job_id)
            live.info = replace(live.info, state=JobState.RUNNING, started=time.time())
            live.started = time.monotonic()
            _log.info(
                "job %s started: %s %s -> %s",
                job_id,
                live.spec.kind.value,
                _source(live.spec),
                live.spec.output,
            )
            self.running.add(job_id)
            self.send(self.jobs_actor, Submit(live.spec, job_id))

    def _still_confined(self, spec: JobSpec) -> str | None:
        # Paths were confined when the job was accepted; a job may run much later (queued, or
        # after a restart), so they are resolved again now, against the current roots.
        if self.roots is None:
            return None
        inputs, outputs = self.roots
        try:
            if spec.input is None:
                confine(spec.output, outputs, what="output")
            else:
                confine_pair(spec.input, spec.output, inputs, outputs)
            confine(spec.output + REJECTS_SUFFIX, outputs, what="rejects file")
        except ProtocolError as error:
            return f"invalid_path: {error}"
        return None

    def _check_drained(self) -> None:
        if self.draining and not self.running and self.drain_waiters:
            for waiter in self.drain_waiters:
                self.reply(waiter, Drained(queued=len(self.queue)))
            self.drain_waiters.clear()

    @staticmethod
    def _info(job: JournaledJob, spec: JobSpec | None = None) -> JobInfo:
        """The job as clients see it, from its journal row (and its spec, if decoded)."""
        spec = spec_from_wire(unpack(job.spec)) if spec is None else spec
        result = {} if job.result is None else unpack(job.result)
        return JobInfo(
            job.id,
            spec.kind,
            job.state,
            spec.input,
            spec.output,
            done=result.get("done", 0),
            total=result.get("total", 0),
            bytes=result.get("bytes", 0),
            error=job.error,
            summary=summary_from_wire(result.get("summary")),
            crash_retries=job.crash_retries,
            created=job.created,
            started=job.started,
            ended=job.ended,
        )


def _source(spec: JobSpec) -> str:
    """What a job reads, for the log: its input, or its synthetic shape."""
    if spec.input is not None:
        return spec.input
    options = spec.options
    shape = getattr(options, "synthetic", None)
    return f"synthetic {'x'.join(map(str, shape))}" if shape else "-"


def _packed_result(
    done: int, total: int, nbytes: int, summary: LogSummary | FFTSummary | None
) -> bytes:
    """A job's result as the journal keeps it (read back by `JobStore._info`)."""
    return pack(
        {"done": done, "total": total, "bytes": nbytes, "summary": summary_to_wire(summary)}
    )
