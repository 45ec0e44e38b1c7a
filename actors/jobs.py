"""The jobs actor and the job system it belongs to.

The jobs actor keeps the job table. For each job it spawns a writer and then a reader (both
per job) in front of the shared pools (parsers or FFT workers): several jobs run at once on
the same pools. It never blocks: replies and events never wait for room, and it stops a
job's actors without joining them, so no cycle of full mailboxes can ever wait on it.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from actord import Actor, ActorRef, ActorSystem, InvalidArgument, Message, RestartPolicy

from .formats import resolve_format
from .model import (
    Cancel,
    Executor,
    FFTOptions,
    FFTSummary,
    GetJob,
    JobEnded,
    JobError,
    JobInfo,
    JobKind,
    JobRejected,
    JobSpec,
    JobState,
    ListJobs,
    LogOptions,
    LogSummary,
    Progress,
    Rejected,
    Submit,
    WaitJob,
    WriterDone,
    WriterStopped,
    WrittenProgress,
)
from .parser import Parser
from .reader import ArrayReader, LogReader, reader_capacity
from .writer import REJECTS_SUFFIX, ArrayWriter, LogWriter

__all__ = [
    "JOBS",
    "JobClient",
    "JobSystemConfig",
    "JobsActor",
    "start_job_system",
    "validate_spec",
]

JOBS = "jobs"
_ROLES: Final = ("reader", "writer")  # each job's own actors, counted under kind.role
_ENDED_KEPT: Final = 1024  # settled jobs the jobs actor still answers about
STATEFUL: Final = RestartPolicy(max_restarts=0)  # for actors whose state a restart would lose
PARSERS = "parser"
FFT_WORKERS = "fft"
_FINAL_DTYPES = ("complex128", "complex64")


@dataclass(frozen=True, slots=True)
class JobSystemConfig:
    parsers: int = 2
    parser_executor: Executor = Executor.PROCESS
    fft_workers: int = 2
    pool_capacity: int = 8  # units queued per pool: bounds the memory held in flight
    writer_capacity: int = 16  # units a writer may have queued (each up to a block's records)
    window: int = 32  # units a job may have sent and not yet written
    block_timeout: float = 60.0  # a parse worker busy longer on one block is killed


class _Job:
    """The jobs actor's own record of a job (never leaves the actor)."""

    def __init__(self, info: JobInfo) -> None:
        self.info = info
        self.reader: ActorRef | None = None
        self.writer: ActorRef | None = None
        self.writer_stopped = False  # its temp files are gone: a failed job may be reported
        self.waiters: list[Message] = []
        self.ended = JobEnded(info.id)  # set at its end: parsers drop its blocks


class JobsActor(Actor):
    """Requests (each replied to): Submit, Cancel, GetJob, ListJobs, WaitJob (replied when
    the job ends). Notes from readers and writers: WrittenProgress, WriterDone, JobError.
    Publishes a `Progress` EVENT as each job advances and when it ends."""

    def __init__(self, system: ActorSystem, config: JobSystemConfig) -> None:
        self.system = system
        self.config = config
        self.jobs: dict[str, _Job] = {}  # jobs not yet settled
        self.ended: OrderedDict[str, JobInfo] = OrderedDict()  # the newest settled ones
        self.ids = itertools.count(1)

    def handle(self, message: Message) -> None:
        """Actor thread."""
        payload = message.payload
        if isinstance(payload, WrittenProgress):
            self._advance(payload)
        elif isinstance(payload, WriterDone):
            self._writer_done(payload)
        elif isinstance(payload, WriterStopped):
            self._writer_stopped(payload.job)
        elif isinstance(payload, JobError):
            self._end(payload.job, JobState.FAILED, error=payload.error)
        elif isinstance(payload, Submit):
            self._answer(message, self._submit(payload.spec, payload.job_id))
        elif isinstance(payload, ListJobs):
            infos = (*self.ended.values(), *(job.info for job in self.jobs.values()))
            self._answer(message, infos[-payload.limit :])
        elif isinstance(payload, GetJob | Cancel | WaitJob):
            job = self.jobs.get(payload.job)
            if job is None:
                ended = self.ended.get(payload.job)
                missing = Rejected("not_found", f"no job {payload.job!r}")
                self._answer(message, missing if ended is None else ended)
            elif isinstance(payload, Cancel):
                self._end(payload.job, JobState.CANCELLED, error="cancelled")
                self._answer(message, job.info)
            elif isinstance(payload, WaitJob) and not self._settled(job):
                job.waiters.append(message)  # answered when the job ends and is cleaned up
            else:
                self._answer(message, job.info)

    def _answer(self, request: Message, answer: object) -> None:
        if request.correlation_id is not None:
            self.reply(request, answer)

    def _submit(self, spec: JobSpec, given_id: str | None) -> JobInfo | Rejected:
        if given_id is not None and given_id in self.jobs:
            return Rejected("conflict", f"job {given_id!r} already exists")
        job_id = given_id or f"{spec.kind.value}-{next(self.ids)}"
        try:
            pattern = validate_spec(spec)
        except InvalidArgument as error:
            if given_id is not None:  # the store hears of it as the job's end
                failed = Progress(job_id, spec.kind, JobState.FAILED, 0, 0, 0, error=str(error))
                self.publish(failed, timeout=0)
            return Rejected("invalid", str(error))
        info = JobInfo(job_id, spec.kind, JobState.RUNNING, spec.input, spec.output)
        job = self.jobs[job_id] = _Job(info)
        writer, reader = f"{job_id}.writer", f"{job_id}.reader"
        config = self.config
        jobs = self.name
        make_writer: Callable[[], Actor]
        make_reader: Callable[[], Actor]
        if isinstance(spec.options, LogOptions):
            assert spec.input is not None and pattern is not None
            log_input, log_options = spec.input, spec.options
            make_writer = lambda: LogWriter(job_id, spec.output, jobs, reader)  # noqa: E731
            make_reader = lambda: LogReader(  # noqa: E731
                job_id,
                log_input,
                log_options,
                pattern,
                pool=PARSERS,
                writer=writer,
                jobs=jobs,
                window=config.window,
                ended=job.ended,
            )
        else:
            fft_options = spec.options
            make_writer = lambda: ArrayWriter(job_id, spec.output, jobs, reader)  # noqa: E731
            make_reader = lambda: ArrayReader(  # noqa: E731
                job_id,
                spec.input,
                fft_options,
                pool=FFT_WORKERS,
                writer=writer,
                jobs=jobs,
                window=config.window,
            )
        # The writer first: the reader's first unit needs somewhere to go.
        # Roles keep metrics labels bounded: these actors live only as long as their job.
        job.writer = self.system.spawn(
            make_writer, writer, capacity=config.writer_capacity, role=f"{spec.kind.value}.writer"
        )
        job.reader = self.system.spawn(
            make_reader,
            reader,
            capacity=reader_capacity(config.window),
            role=f"{spec.kind.value}.reader",
        )
        self._publish(job.info)
        return job.info

    def _advance(self, note: WrittenProgress) -> None:
        job = self.jobs.get(note.job)
        if job is None or job.info.state.finished:
            return
        job.info = replace(job.info, done=note.done, total=note.total, bytes=note.bytes)
        self._publish(job.info)

    def _writer_done(self, done: WriterDone) -> None:
        job = self.jobs.get(done.job)
        if job is not None and job.info.state is JobState.CANCELLED:
            # Cancelled while the writer was publishing: cancel wins, so nothing is left.
            for path in (done.summary.output, getattr(done.summary, "rejects", None)):
                if path:
                    Path(path).unlink(missing_ok=True)
            return
        self._end(done.job, JobState.DONE, summary=done.summary)

    def _end(
        self,
        job_id: str,
        state: JobState,
        *,
        error: str | None = None,
        summary: LogSummary | FFTSummary | None = None,
    ) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.info.state.finished:
            return
        info = replace(job.info, state=state, error=error)
        if summary is not None:
            info = replace(info, summary=summary, total=job.info.total or job.info.done)
        job.info = info
        job.ended.set()  # a parser busy with one of its blocks gives up within a poll
        # Stop without joining: the writer's on_stop removes the temp files of a job that
        # did not finish; units still in the pools for it become dead letters.
        for ref in (job.reader, job.writer):
            if ref is not None:  # stopping is idempotent; a failed actor must go too
                ref.stop(graceful=False, wait=False)
        if self._settled(job):
            self._settle(job)
        # Otherwise waiters and subscribers hear once the writer has removed its temp files.

    @staticmethod
    def _settled(job: _Job) -> bool:
        state = job.info.state
        return state is JobState.DONE or (state.finished and job.writer_stopped)

    def _writer_stopped(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        already = self._settled(job)
        job.writer_stopped = True
        if job.info.state.finished and not already:
            self._settle(job)

    def _settle(self, job: _Job) -> None:
        # Once per job: its end is published, its waiters answered, and its record (with the
        # refs to its actors) dropped; a bounded history answers later questions.
        self._publish(job.info)
        for waiter in job.waiters:
            self._answer(waiter, job.info)
        job.waiters.clear()
        del self.jobs[job.info.id]
        self.ended[job.info.id] = job.info
        if len(self.ended) > _ENDED_KEPT:
            self.ended.popitem(last=False)

    def _publish(self, info: JobInfo) -> None:
        self.publish(Progress.of(info), timeout=0)


def validate_spec(spec: JobSpec) -> str | None:
    """Check a job before accepting it; returns the log pattern. Raises InvalidArgument."""
    out_dir = os.path.dirname(os.path.abspath(spec.output)) or "."
    if not os.path.isdir(out_dir):
        raise InvalidArgument(f"output directory {out_dir} does not exist")
    for path in (spec.output, spec.output + REJECTS_SUFFIX):
        if os.path.isdir(path):
            raise InvalidArgument(f"{path} is a directory")
    if spec.input is not None:
        if not os.path.isfile(spec.input):
            raise InvalidArgument(f"input {spec.input} does not exist or is not a file")
        source = os.path.realpath(spec.input)
        written = [spec.output, spec.output + REJECTS_SUFFIX]
        if any(os.path.realpath(path) == source for path in written):
            raise InvalidArgument("the output (or its rejects file) would overwrite the input")
    if spec.kind is JobKind.LOG:
        if not isinstance(spec.options, LogOptions):
            raise InvalidArgument("a log job takes LogOptions")
        if spec.input is None:
            raise InvalidArgument("a log job needs an input file")
        if spec.options.block_bytes < 1 or spec.options.max_line_bytes < 1:
            raise InvalidArgument("block_bytes and max_line_bytes must be positive")
        return resolve_format(spec.options.format, spec.options.pattern).pattern
    if not isinstance(spec.options, FFTOptions):
        raise InvalidArgument("an FFT job takes FFTOptions")
    if (spec.input is None) == (spec.options.synthetic is None):
        raise InvalidArgument("an FFT job needs either an input .npy or a synthetic shape")
    if spec.options.synthetic is not None and min(spec.options.synthetic) < 1:
        raise InvalidArgument("synthetic dimensions must be positive")
    if spec.options.dtype not in _FINAL_DTYPES:
        raise InvalidArgument(f"dtype must be one of {_FINAL_DTYPES}")
    return None


class JobClient:
    """Blocking, in-process access to the jobs actor (any thread but an actor's own)."""

    def __init__(self, jobs: ActorRef, *, timeout: float = 30.0) -> None:
        self.jobs = jobs
        self.timeout = timeout

    def _ask(self, request: object, timeout: float | None = None) -> object:
        answer = self.jobs.ask(request, timeout=timeout or self.timeout)
        if isinstance(answer, Rejected):
            raise JobRejected(answer)
        return answer

    def submit(self, spec: JobSpec) -> JobInfo:
        info = self._ask(Submit(spec))
        assert isinstance(info, JobInfo)
        return info

    def get(self, job: str) -> JobInfo:
        info = self._ask(GetJob(job))
        assert isinstance(info, JobInfo)
        return info

    def cancel(self, job: str) -> JobInfo:
        info = self._ask(Cancel(job))
        assert isinstance(info, JobInfo)
        return info

    def list(self) -> tuple[JobInfo, ...]:
        infos = self._ask(ListJobs())
        assert isinstance(infos, tuple)
        return infos

    def wait(self, job: str, timeout: float = 300.0) -> JobInfo:
        """Block until the job has ended; its final JobInfo."""
        info = self._ask(WaitJob(job), timeout)
        assert isinstance(info, JobInfo)
        return info


def start_job_system(system: ActorSystem, config: JobSystemConfig | None = None) -> JobClient:
    """Spawn the pools and the jobs actor on `system`; return a client for submitting jobs."""
    from .fft import FFTWorker  # noqa: PLC0415 - keeps numpy out of imports that need none

    config = config or JobSystemConfig()
    system.declare_roles(*(f"{kind.value}.{part}" for kind in JobKind for part in _ROLES))
    # The job table cannot be rebuilt by a fresh instance: a crash escalates (the daemon exits
    # non-zero; systemd restarts it and the journal re-runs what was unfinished).
    jobs = system.spawn(lambda: JobsActor(system, config), JOBS, capacity=4096, policy=STATEFUL)
    executor, block_timeout = config.parser_executor, config.block_timeout
    system.spawn_pool(
        lambda: Parser(executor, block_timeout),
        PARSERS,
        config.parsers,
        capacity=config.pool_capacity,
    )
    system.spawn_pool(FFTWorker, FFT_WORKERS, config.fft_workers, capacity=config.pool_capacity)
    return JobClient(jobs)
