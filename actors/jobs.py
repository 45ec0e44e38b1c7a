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
from typing import Any, Final

import numpy as np

from actord import Actor, ActorRef, ActorSystem, InvalidArgument, Message, RestartPolicy
from actord.runtime.errors import ErrorCode

from .formats import resolve_format
from .model import (
    FFT_MAX_CHUNK_ELEMENTS,
    FFT_MAX_CHUNKS,
    FFT_MAX_ELEMENTS,
    FFT_MAX_SIDE,
    LOG_MAX_BLOCK_BYTES,
    LOG_MAX_LINE_BYTES,
    LOG_MAX_PATTERN,
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
    Transform,
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
                missing = Rejected(ErrorCode.NOT_FOUND, f"no job {payload.job!r}")
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
            return Rejected(ErrorCode.CONFLICT, f"job {given_id!r} already exists")
        job_id = given_id or f"{spec.kind.value}-{next(self.ids)}"
        try:
            pattern = validate_spec(spec)
        except InvalidArgument as error:
            if given_id is not None:  # the store hears of it as the job's end
                failed = Progress(job_id, spec.kind, JobState.FAILED, 0, 0, 0, error=str(error))
                self.publish(failed, timeout=0)
            return Rejected(ErrorCode.BAD_REQUEST, str(error))
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
        log = spec.options
        if not 1 <= log.block_bytes <= LOG_MAX_BLOCK_BYTES:
            raise InvalidArgument(
                f"block_bytes must be between 1 and {LOG_MAX_BLOCK_BYTES}, got {log.block_bytes}"
            )
        if not 1 <= log.max_line_bytes <= LOG_MAX_LINE_BYTES:
            raise InvalidArgument(
                f"max_line_bytes must be between 1 and {LOG_MAX_LINE_BYTES}, "
                f"got {log.max_line_bytes}"
            )
        if log.pattern is not None and len(log.pattern) > LOG_MAX_PATTERN:
            raise InvalidArgument(
                f"pattern: at most {LOG_MAX_PATTERN} characters, got {len(log.pattern)}"
            )
        return resolve_format(log.format, log.pattern).pattern
    if not isinstance(spec.options, FFTOptions):
        raise InvalidArgument("an FFT job takes FFTOptions")
    options = spec.options
    if (spec.input is None) == (options.synthetic is None):
        raise InvalidArgument("an FFT job needs either an input .npy or a synthetic shape")
    if options.dtype not in _FINAL_DTYPES:
        raise InvalidArgument(f"dtype must be one of {_FINAL_DTYPES}")
    if not isinstance(options.transform, Transform):
        raise InvalidArgument(f"transform must be one of {[t.value for t in Transform]}")
    if spec.input is not None:
        _check_npy_input(spec.input, options.transform)
        return None
    shape = options.synthetic
    if (
        not isinstance(shape, tuple)
        or len(shape) != 3
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
    ):
        raise InvalidArgument(f"synthetic must be an (N, H, W) shape of integers, got {shape!r}")
    if min(shape) < 1:
        raise InvalidArgument(f"synthetic dimensions must be positive, got {shape}")
    _check_fft_limits(shape, "the synthetic shape")
    return None


def _check_fft_limits(shape: tuple[int, ...], what: str) -> None:
    """Refuse an (N, H, W) stack over the limits documented in the model (FFT_MAX_*)."""
    n, h, w = shape
    if n > FFT_MAX_CHUNKS:
        raise InvalidArgument(f"{what} {shape} is too big: at most {FFT_MAX_CHUNKS} chunks")
    if max(h, w) > FFT_MAX_SIDE:
        raise InvalidArgument(f"{what} {shape} is too big: at most {FFT_MAX_SIDE} per side")
    if h * w > FFT_MAX_CHUNK_ELEMENTS:
        raise InvalidArgument(
            f"{what} {shape} is too big: at most {FFT_MAX_CHUNK_ELEMENTS} elements per chunk"
        )
    if n * h * w > FFT_MAX_ELEMENTS:
        raise InvalidArgument(
            f"{what} {shape} is too big: at most {FFT_MAX_ELEMENTS} elements in all"
        )


def _check_npy_input(path: str, transform: Transform) -> None:
    """Refuse an FFT input that is not a numeric (N, H, W) `.npy` stack within the limits.

    Only the header is read (a few hundred bytes), never the array: an input may be tens of
    GiB, and a submit must answer at once. A stack of no chunks is accepted (its output is an
    empty stack); a chunk with a zero side has no transform.
    """
    try:
        with open(path, "rb") as file:
            header = _read_npy_header(path, file)
            data_offset = file.tell()
            size = os.fstat(file.fileno()).st_size
    except OSError as error:
        raise InvalidArgument(f"cannot read the input {path}: {error.strerror or error}") from None
    shape, dtype = header
    if dtype.hasobject:
        raise InvalidArgument(
            f"{path} holds Python objects (dtype {dtype}): an FFT input must be numeric"
        )
    if dtype.fields is not None or not np.issubdtype(dtype, np.number):
        raise InvalidArgument(
            f"{path}: an FFT input must be numeric (integer, real or complex), not {dtype}"
        )
    if len(shape) != 3:
        raise InvalidArgument(f"{path}: an FFT input must be an (N, H, W) stack, got shape {shape}")
    if 0 in shape[1:]:
        raise InvalidArgument(f"{path}: an FFT input needs chunks with no zero side, got {shape}")
    _check_fft_limits(shape, f"the input {path}")
    if transform is Transform.RFFT2 and np.issubdtype(dtype, np.complexfloating):
        raise InvalidArgument(
            f"{path}: rfft2 needs a real input, and this one is {dtype}: use fft2 for a complex"
            " input"
        )
    needed = data_offset + shape[0] * shape[1] * shape[2] * dtype.itemsize
    if size < needed:
        raise InvalidArgument(f"{path} is truncated: {size} bytes, its header says {needed}")


def _read_npy_header(path: str, file: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype in a `.npy` header; the file is left at the start of the data."""
    try:
        version = np.lib.format.read_magic(file)
    except ValueError:
        raise InvalidArgument(f"{path} is not a .npy file (it does not start as one)") from None
    read_header = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }.get(version)
    if read_header is None:
        # 3.0 only differs by UTF-8 field names, which only a structured (non-numeric) dtype has.
        raise InvalidArgument(f"{path}: .npy format {version[0]}.{version[1]} is not supported")
    try:
        shape, _, dtype = read_header(file)
    except OSError:
        raise  # the disk, not the header: the caller says so
    except Exception as error:  # noqa: BLE001 - any parse failure is a refusal
        # numpy parses the header as a Python literal: a malformed one raises ValueError,
        # SyntaxError or tokenize.TokenError, by numpy version. Whatever the file holds, the
        # answer is a refusal: validation also runs in the jobs actor, which must not raise.
        raise InvalidArgument(f"{path} has a malformed .npy header: {error}") from None
    if any(n < 0 for n in shape):  # numpy takes any integers: a negative one is corrupt
        raise InvalidArgument(f"{path} has a malformed .npy header: shape {shape}")
    return tuple(int(n) for n in shape), dtype


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
