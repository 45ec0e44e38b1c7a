"""The job model and every payload the job actors exchange (frozen dataclasses only)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from actord.runtime.errors import ErrorCode, Refused
from actors.journal import JournalState

__all__ = [
    "FFT_MAX_CHUNKS",
    "FFT_MAX_CHUNK_ELEMENTS",
    "FFT_MAX_ELEMENTS",
    "FFT_MAX_SEED",
    "FFT_MAX_SIDE",
    "IN_FLIGHT_BYTES",
    "LOG_MAX_BLOCK_BYTES",
    "LOG_MAX_DECOMPRESSED_BYTES",
    "LOG_MAX_LINE_BYTES",
    "LOG_MAX_PATTERN",
    "LOG_MAX_RATIO",
    "LOG_RATIO_GRACE",
    "Accept",
    "ArrayPlan",
    "BlockFailed",
    "Cancel",
    "ChunkWritten",
    "Engine",
    "Executor",
    "FFTChunk",
    "FFTOptions",
    "FFTSummary",
    "GetJob",
    "InputSized",
    "InputSlice",
    "JobEnded",
    "JobError",
    "JobInfo",
    "JobKind",
    "JobRejected",
    "JobSpec",
    "JobState",
    "ListJobs",
    "LogBlock",
    "LogOptions",
    "LogSummary",
    "OutputLayout",
    "ParsedBlock",
    "Progress",
    "ReadDone",
    "Rejected",
    "Resubmit",
    "SyntheticSource",
    "Transform",
    "UnitsWritten",
    "WaitJob",
    "WriterDone",
    "WriterStopped",
    "WrittenProgress",
]


class JobKind(StrEnum):
    LOG = "log"
    FFT = "fft"


# A job's states are the journal's: one definition for the runtime's store and the jobs.
JobState = JournalState


class Executor(StrEnum):
    THREAD = "thread"
    PROCESS = "process"  # parsers only: a worker process per member
    RAY = "ray"  # a Ray actor per member, on the cluster the [ray] section names


class Transform(StrEnum):
    FFT2 = "fft2"
    RFFT2 = "rfft2"


class Engine(StrEnum):
    """The library an FFT pool computes with (the pool's, not a job's: `fft.engine`)."""

    SCIPY = "scipy"  # scipy.fft: about 2-3x numpy's fft2 here (a real transform inside)
    NUMPY = "numpy"


@dataclass(frozen=True, slots=True)
class LogOptions:
    format: str | None = None  # a built-in format name (default "seed"), or
    pattern: str | None = None  # a user regex with named groups
    block_bytes: int = 256 * 1024  # read size: blocks are whole lines of about this size
    max_line_bytes: int = 1 << 20  # longer lines are cut here (counted as too_long)
    # A gzip input: the job fails past this many decompressed bytes, or once it has
    # decompressed more than `max_ratio` times the compressed bytes read (past
    # LOG_RATIO_GRACE: a small file of one repeated line compresses well and is no bomb).
    max_decompressed_bytes: int = 16 << 30
    max_ratio: int = 200


# Upper limits of an FFT job's (N, H, W) stack, input or synthetic, checked at submit. They
# bound what one job may ask of the daemon: a worker holds a chunk's input and its transform
# (at complex128, 16 bytes an element: 1 GiB a chunk at the chunk limit, per worker), and the
# output file is N * H * W elements (16 GiB at complex128 at the total limit).
FFT_MAX_CHUNKS = 1 << 16  # N: chunks in a stack
FFT_MAX_SIDE = 1 << 14  # H and W: a chunk's side
FFT_MAX_CHUNK_ELEMENTS = 1 << 26  # H * W: binds before FFT_MAX_SIDE ** 2 does
FFT_MAX_ELEMENTS = 1 << 30  # N * H * W
FFT_MAX_SEED = 1 << 63  # the synthetic generator's seed: 0 to 2**63 - 1

# Upper limits of a log job's options, checked at submit. A reader keeps up to its window of
# blocks in flight, each up to `block_bytes` plus one cut line (its window shrinks for big
# units: see IN_FLIGHT_BYTES). A pattern is a regex the worker compiles: 4096 characters is
# ample.
LOG_MAX_BLOCK_BYTES = 16 << 20
LOG_MAX_LINE_BYTES = 16 << 20
LOG_MAX_PATTERN = 4096
LOG_MAX_DECOMPRESSED_BYTES = 1 << 40  # the largest max_decompressed_bytes a job may ask
LOG_MAX_RATIO = 1 << 16  # the largest max_ratio (zeros compress about 1000:1)
LOG_RATIO_GRACE = 16 << 20  # decompressed bytes before max_ratio applies

# Input a job's reader keeps in flight, at most (but always 2 units): its window of units
# shrinks for big blocks or chunks, so that no job holds more than about this much memory.
IN_FLIGHT_BYTES = 64 << 20

REJECTS_SUFFIX = ".rejects"  # a log job's rejected lines, in a file beside its output


@dataclass(frozen=True, slots=True)
class FFTOptions:
    transform: Transform = Transform.FFT2
    dtype: str = "complex128"  # or "complex64"
    synthetic: tuple[int, int, int] | None = None  # (N, H, W) generated instead of an input
    seed: int = 0  # for the synthetic generator: chunk i uses seed + i


@dataclass(frozen=True, slots=True)
class JobSpec:
    kind: JobKind
    output: str
    input: str | None = None
    options: LogOptions | FFTOptions = field(default_factory=LogOptions)
    overwrite: bool = False  # replace an output (and rejects file) that already exists


@dataclass(frozen=True, slots=True)
class LogSummary:
    lines: int
    matched: int
    rejected: int
    blank: int
    invalid_utf8: int
    too_long: int
    levels: tuple[tuple[str, int], ...]
    bytes: int  # read from the input (after gzip decompression), over-long lines included
    seconds: float
    output: str
    rejects: str


@dataclass(frozen=True, slots=True)
class FFTSummary:
    chunks: int
    shape: tuple[int, ...]
    dtype: str
    transform: str
    bytes: int
    seconds: float
    output: str


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A snapshot of one job, as the job store sees it."""

    id: str
    kind: JobKind
    state: JobState
    input: str | None
    output: str
    done: int = 0  # blocks or chunks written
    total: int = 0  # 0 until the reader has seen the end of the input
    bytes: int = 0  # input bytes written through
    input_bytes: int = 0  # what `bytes` will reach (a plain log's size); 0 if not known
    error: str | None = None
    summary: LogSummary | FFTSummary | None = None
    crash_retries: int = 0  # times the daemon died while this job ran (from the journal)
    # Wall-clock times (epoch seconds): accepted, last started running, ended; None if not yet.
    created: float | None = None
    started: float | None = None
    ended: float | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """EVENT published by the job store as a job starts and advances, and once when it has
    ended (as journaled, after a failed or cancelled job's temporary files are gone)."""

    job: str
    kind: JobKind
    state: JobState
    done: int
    total: int
    bytes: int
    error: str | None = None
    summary: LogSummary | FFTSummary | None = None

    @classmethod
    def of(cls, info: JobInfo) -> Progress:
        """The event that says where `info`'s job stands."""
        return cls(
            info.id,
            info.kind,
            info.state,
            info.done,
            info.total,
            info.bytes,
            error=info.error,
            summary=info.summary,
        )


# -- requests to the job store (replies are JobInfo, a tuple of them, or Rejected) ------------


@dataclass(frozen=True, slots=True)
class Accept:
    """Journal a new job (or find the one with this idempotency key): replied with its
    `JobInfo` once committed, or `Rejected`. The spec has passed `validate.check_spec`."""

    spec: JobSpec
    idempotency_key: str | None = None
    # Why its output may not be written (it exists and `overwrite` is not set), as the
    # submitting thread found it (`validate.output_taken`): the store never looks at a
    # user's files itself. Refused after the key is looked up (a retry finds its job).
    taken: str | None = None


@dataclass(frozen=True, slots=True)
class Resubmit:
    """A retried submit whose spec no longer passes the checks (its input is gone, say): the
    job its key made, if it was made from this spec (resolved); `Rejected` not_found if the
    key is unknown, conflict if it made another job."""

    spec: JobSpec
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class Cancel:
    job: str


@dataclass(frozen=True, slots=True)
class GetJob:
    job: str


@dataclass(frozen=True, slots=True)
class ListJobs:
    limit: int = 1000  # the newest jobs only: a daemon that runs for months has many
    state: JobState | None = None  # only the jobs in this state


@dataclass(frozen=True, slots=True)
class WaitJob:
    """Replied to when the job has finished (done, failed or cancelled)."""

    job: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """The store's answer to a request it refuses: a stable code (the control socket answers
    with it as is) and a message for people."""

    code: ErrorCode
    message: str


class JobRejected(Refused):
    """A job request was refused (unknown job, a conflict, a store that is stopping, ...),
    with the code the control socket answers with."""

    def __init__(self, rejected: Rejected) -> None:
        super().__init__(rejected.code, rejected.message)


# -- the pipelines -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogBlock:
    """Whole input lines: `data` holds lines `first_line`, `first_line + 1`, ..."""

    job: str
    index: int
    first_line: int
    data: bytes
    pattern: str
    reader: str  # where a failure is reported (it retries once)
    writer: str  # where the parsed block goes
    attempt: int = 0
    ended: JobEnded | None = None  # set once the job has ended: its blocks are not worth parsing

    @property
    def fair_key(self) -> str:
        """Its job: the parser pool serves the running jobs' blocks in turn (`FairKeyed`)."""
        return self.job


class JobEnded:
    """Set once, by the job store, when a job ends (done, failed or cancelled): a parser
    busy with one of its blocks stops within a poll, and its queued blocks are skipped.

    The one object a job's messages share: a write-once flag, like a Future's state."""

    __slots__ = ("_event", "job")

    def __init__(self, job: str) -> None:
        self.job = job
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True, slots=True)
class ParsedBlock:
    job: str
    index: int
    lines: int
    matched: int
    rejected: int
    blank: int
    invalid_utf8: int
    records: bytes  # JSON Lines
    rejects: bytes  # "line_number<TAB>raw line" per line, the raw bytes kept as they were
    levels: tuple[tuple[str, int], ...]
    nbytes: int  # input bytes of the block


@dataclass(frozen=True, slots=True)
class ReadDone:
    """The reader reached the end: the writer now knows how many units to wait for."""

    job: str
    units: int
    bytes: int
    too_long: int = 0


@dataclass(frozen=True, slots=True)
class BlockFailed:
    """A pool member raised on a unit twice or once: the reader decides (retry once)."""

    unit: LogBlock | FFTChunk
    error: str


@dataclass(frozen=True, slots=True)
class UnitsWritten:
    """Writer to reader: how many units are written, so the reader keeps at most a window of
    units in flight (the writer's reorder buffer stays bounded however slow one unit is)."""

    job: str
    done: int


@dataclass(frozen=True, slots=True)
class JobError:
    job: str
    error: str


@dataclass(frozen=True, slots=True)
class InputSized:
    """Reader to job store, once it has opened the input: what the job will go through, where
    known (for progress: a plain log's bytes, an FFT stack's chunks; 0 if not known)."""

    job: str
    input_bytes: int
    units: int


@dataclass(frozen=True, slots=True)
class WrittenProgress:
    job: str
    done: int
    total: int
    bytes: int


@dataclass(frozen=True, slots=True)
class WriterStopped:
    """A writer's last word: it has stopped and removed whatever it did not publish, or
    could not remove all of it (`left`: a directory made read-only under the job), which
    the store then sweeps."""

    job: str
    left: bool = False


@dataclass(frozen=True, slots=True)
class WriterDone:
    job: str
    summary: LogSummary | FFTSummary


@dataclass(frozen=True, slots=True)
class ArrayPlan:
    """Sent by the FFT reader before any chunk: the output's shape and type."""

    job: str
    shape: tuple[int, int, int]
    dtype: str
    transform: str


@dataclass(frozen=True, slots=True)
class SyntheticSource:
    """A recipe for one generated chunk: the FFT worker makes it, so generation runs in
    parallel on the pool instead of on the reader's one thread."""

    seed: int
    index: int
    shape: tuple[int, int]


@dataclass(frozen=True, slots=True)
class InputSlice:
    """Where one chunk lies in the input file, for a worker that reads it itself: a Ray
    worker on another node, when the input lies under a root every node mounts."""

    path: str
    offset: int
    dtype: str  # numpy's dtype string, byte order included ("<f8")
    shape: tuple[int, int]
    roots: tuple[str, ...] | None = None  # the input roots it is opened beneath (None: any)


@dataclass(frozen=True, slots=True)
class OutputLayout:
    """The writer's answer to an ArrayPlan: where chunk i goes in its temporary file."""

    path: str  # the temporary file (renamed into place once every chunk is in)
    offset: int  # byte offset of chunk 0, after the .npy header
    chunk_bytes: int
    roots: tuple[str, ...] | None = None  # the output roots it is opened beneath (None: any)

    def position(self, index: int) -> int:
        """The byte offset of chunk `index` in the temporary file."""
        return self.offset + index * self.chunk_bytes


@dataclass(frozen=True, slots=True)
class FFTChunk:
    """One chunk to transform and write at `layout.position(index)`.

    Workers write disjoint byte ranges of the writer's temporary file in parallel: they share
    a path and an offset, never an object. The writer counts, syncs and publishes the file.
    """

    job: str
    index: int
    data: Any  # a read-only numpy array, a SyntheticSource or an InputSlice
    transform: Transform
    dtype: str
    layout: OutputLayout
    reader: str
    writer: str
    attempt: int = 0
    ended: JobEnded | None = None  # set once the job has ended: its chunks are not worth doing
    remote_output: bool = False  # the output lies under a shared root: a Ray worker writes it

    @property
    def fair_key(self) -> str:
        """Its job: the FFT pool serves the running jobs' chunks in turn (`FairKeyed`)."""
        return self.job


@dataclass(frozen=True, slots=True)
class ChunkWritten:
    job: str
    index: int
    nbytes: int
