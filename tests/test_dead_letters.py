"""Dead letters: a healthy daemon has none, and a job that has ended sends nothing more.

A dead letter is counted in `actord_dead_letters_total`, which an operator's alert watches:
a job that ends done must leave none, and a job's actors must not keep writing to each other
once the store has ended the job (the messages would be lost, and counted as if something
had gone wrong).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import actors.parser as parser_module
import actors.reader as reader_module
from actord import Actor, ActorRef, ActorSystem, DeadLetterReason, Message, MessageType
from actors.demo import write_sample_log
from actors.fft import FFTWorker
from actors.formats import BUILTIN_FORMATS
from actors.launcher import JobSystemConfig, start_job_system
from actors.model import (
    BlockFailed,
    Executor,
    FFTChunk,
    FFTOptions,
    JobEnded,
    JobKind,
    JobSpec,
    JobState,
    LogBlock,
    LogOptions,
    OutputLayout,
    ParsedBlock,
    ReadDone,
    Transform,
    UnitsWritten,
    WriterDone,
    WriterStopped,
)
from actors.parser import Parser
from actors.reader import ArrayReader, LogReader
from actors.writer import ArrayWriter, LogWriter, Publishing, Recorded

from .conftest import WAIT, Recorder, RecordingActor

PATTERN = BUILTIN_FORMATS["seed"]  # a built-in pattern: parsed on the member's own thread
LINE = b"2026-11-25 12:00:00 [INFO] hello\n"
_SYNC = "sync"


def _letters(system: ActorSystem) -> list[tuple[str, str, str, str]]:
    """Each dead letter as (reason, sender, recipient, payload type): what a failure shows."""
    return [
        (d.reason.value, d.message.sender, d.message.recipient, type(d.message.payload).__name__)
        for d in system.channel.dead_letters()
    ]


def test_healthy_log_and_fft_jobs_leave_no_dead_letter(
    system: ActorSystem, journal: str, tmp_path: Path
) -> None:
    # The daemon's own set-up: parse workers in processes, jobs running side by side, and
    # small blocks, so that the log reader pauses on its window and is paced by the writer.
    client = start_job_system(system, journal, JobSystemConfig(parser_executor=Executor.PROCESS))
    source = tmp_path / "app.log"
    write_sample_log(str(source), 20_000)
    stack = tmp_path / "stack.npy"  # an FFT input read from a file, and a generated one
    np.save(stack, np.random.default_rng(1).random((24, 32, 32)))
    specs = [
        JobSpec(
            JobKind.LOG, str(tmp_path / "app.jsonl"), str(source), LogOptions(block_bytes=4096)
        ),
        JobSpec(JobKind.FFT, str(tmp_path / "gen.npy"), None, FFTOptions(synthetic=(40, 64, 64))),
        JobSpec(JobKind.FFT, str(tmp_path / "file.npy"), str(stack), FFTOptions()),
    ]
    jobs = [client.submit(spec) for spec in specs]
    for job in jobs:
        final = client.wait(job.id, WAIT * 3)
        assert final.state is JobState.DONE, final.error
    log = client.get(jobs[0].id)
    assert log.done > 32  # more blocks than its window: the writer's notes paced the reader
    system.stop(timeout=WAIT)  # an idle daemon stops without one either
    assert _letters(system) == []
    assert system.channel.dead_letter_counts() == {}


def test_notes_still_queued_for_the_reader_of_a_done_job_are_not_dead_letters(
    system: ActorSystem, journal: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer paces its reader with a note per unit until the reader's `ReadDone` reaches
    # it. On a busy machine the reader may not have run since those notes came: they are
    # still queued when the job is done and the store stops the reader. Here the reader is
    # held in the handle that sends its last chunk, until the notes of all the others are
    # queued behind it, and again after its `ReadDone`, until the job is done.
    chunks = 6
    noted, job_done = threading.Event(), threading.Event()
    handle, progress = ArrayReader.handle, ArrayWriter._progress

    def held_handle(self: ArrayReader, message: Message) -> None:
        if message.payload is not reader_module._NEXT or self._index != chunks - 1:
            handle(self, message)
            return
        assert noted.wait(WAIT)  # every other chunk's note is queued behind this handle
        handle(self, message)
        assert self._index == chunks  # it sent the last chunk, then ReadDone
        assert job_done.wait(WAIT)

    def noting_progress(self: ArrayWriter) -> None:
        progress(self)
        if self.total is None and self.done == chunks - 1:
            noted.set()

    monkeypatch.setattr(ArrayReader, "handle", held_handle)
    monkeypatch.setattr(ArrayWriter, "_progress", noting_progress)
    # A window wider than the job: the reader never pauses, so it reads none of the notes.
    client = start_job_system(system, journal, JobSystemConfig(window=chunks * 2))
    spec = JobSpec(JobKind.FFT, str(tmp_path / "f.npy"), None, FFTOptions(synthetic=(chunks, 8, 8)))
    job = client.submit(spec)
    assert client.wait(job.id, WAIT).state is JobState.DONE
    job_done.set()
    system.stop(timeout=WAIT)
    assert _letters(system) == []
    assert system.channel.dead_letter_counts() == {}


# -- the writer -----------------------------------------------------------------------------


class _Store(Actor):
    """Stands in for the job store: answers every publication `Recorded`, records all."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def handle(self, message: Message) -> None:
        if isinstance(message.payload, Publishing):
            self.reply(message, Recorded(message.payload.job))
        self.recorder.add(self.member, message)


def _sync(ref: ActorRef) -> None:
    """Return once `ref` (a RecordingActor) has recorded everything sent to it before."""
    assert ref.ask(_SYNC, timeout=WAIT) == _SYNC


def _received(recorder: Recorder) -> list[Any]:
    """What was sent to a recording actor, less the test's own `_sync` requests."""
    return [payload for payload in recorder.payloads() if payload != _SYNC]


def _notes(recorder: Recorder, kind: type) -> list[Any]:
    return [payload for payload in _received(recorder) if isinstance(payload, kind)]


def _parsed(job: str, index: int) -> ParsedBlock:
    return ParsedBlock(job, index, 1, 1, 0, 0, 0, b"{}\n", b"", (("INFO", 1),), len(LINE))


@pytest.fixture
def store_notes() -> Recorder:
    return Recorder()


@pytest.fixture
def writer_parts(system: ActorSystem, store_notes: Recorder) -> tuple[ActorRef, Recorder]:
    """A fake store ("store") and a recording reader ("reader"); returns the reader's ref
    and its recorder."""
    system.spawn(lambda: _Store(store_notes), "store")
    reader_notes = Recorder()
    return system.spawn(lambda: RecordingActor(reader_notes), "reader"), reader_notes


def test_a_writer_paces_its_reader_only_until_the_reader_is_done(
    system: ActorSystem,
    tmp_path: Path,
    store_notes: Recorder,
    writer_parts: tuple[ActorRef, Recorder],
) -> None:
    reader, reader_notes = writer_parts
    output = str(tmp_path / "out.jsonl")
    writer = system.spawn(lambda: LogWriter("log-1", output, "store", "reader"), "writer")
    writer.tell(_parsed("log-1", 0))
    writer.tell(ReadDone("log-1", 2, 2 * len(LINE)))  # the reader has sent its last block
    writer.tell(_parsed("log-1", 1))
    store_notes.wait_for(lambda: bool(_notes(store_notes, WriterDone)))  # published
    _sync(reader)
    # A note sent after the reader is done could still be queued when the store stops the
    # reader at the job's end: a dead letter after a healthy job.
    assert _notes(reader_notes, UnitsWritten) == [UnitsWritten("log-1", 1)]
    assert Path(output).exists()


def test_a_writer_being_stopped_sends_no_progress(
    system: ActorSystem,
    tmp_path: Path,
    store_notes: Recorder,
    writer_parts: tuple[ActorRef, Recorder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader, reader_notes = writer_parts
    entered, release = threading.Event(), threading.Event()
    write = LogWriter._write

    def held(self: LogWriter, block: ParsedBlock) -> None:
        entered.set()
        assert release.wait(WAIT)
        write(self, block)

    monkeypatch.setattr(LogWriter, "_write", held)
    writer = system.spawn(
        lambda: LogWriter("log-1", str(tmp_path / "out.jsonl"), "store", "reader"), "writer"
    )
    writer.tell(_parsed("log-1", 0))
    assert entered.wait(WAIT)
    # The job ends while the block is being written: the store stops the reader, then the
    # writer, which finishes the block in hand.
    reader.stop(graceful=False, wait=False)
    writer.stop(graceful=False, wait=False)
    release.set()
    store_notes.wait_for(lambda: bool(_notes(store_notes, WriterStopped)))
    assert _notes(store_notes, object) == [WriterStopped("log-1")]
    assert _received(reader_notes) == []
    assert _letters(system) == []


# -- the parser pool ------------------------------------------------------------------------


@pytest.fixture
def parser_parts(system: ActorSystem) -> tuple[ActorRef, Recorder, ActorRef, Recorder]:
    """One parser (thread executor), a recording writer ("writer") and reader ("reader")."""
    system.spawn_pool(lambda: Parser(Executor.THREAD), "parser", 1)
    written, read = Recorder(), Recorder()
    writer = system.spawn(lambda: RecordingActor(written), "writer")
    reader = system.spawn(lambda: RecordingActor(read), "reader")
    return writer, written, reader, read


def _block(job: str, data: bytes, ended: JobEnded | None = None) -> LogBlock:
    return LogBlock(job, 0, 1, data, PATTERN, "reader", "writer", ended=ended)


def _parse_that_ends_its_job(
    monkeypatch: pytest.MonkeyPatch, marker: bytes, ended: JobEnded, *, then_raise: bool
) -> None:
    """The job of the block holding `marker` ends while it is parsed (and the parse then
    raises, with `then_raise`)."""
    parse = parser_module.parse_block

    def parse_block(data: bytes, first_line: int, pattern: str) -> dict[str, Any]:
        if marker in data:
            ended.set()
            if then_raise:
                raise RuntimeError("parsing failed as its job ended")
        return parse(data, first_line, pattern)

    monkeypatch.setattr(parser_module, "parse_block", parse_block)


@pytest.mark.parametrize("then_raise", [False, True], ids=["parsed", "raised"])
def test_a_block_whose_job_ends_while_it_is_parsed_goes_nowhere(
    system: ActorSystem,
    parser_parts: tuple[ActorRef, Recorder, ActorRef, Recorder],
    monkeypatch: pytest.MonkeyPatch,
    then_raise: bool,
) -> None:
    writer, written, reader, read = parser_parts
    ended = JobEnded("log-1")
    _parse_that_ends_its_job(monkeypatch, b"ends", ended, then_raise=then_raise)
    parser = system.lookup("parser")
    parser.tell(_block("log-1", b"ends " + LINE, ended))
    parser.tell(_block("log-2", LINE))  # another job's block, taken after it: one member
    written.wait_count(1)
    _sync(writer)
    _sync(reader)
    # Its writer and reader are stopped by then (here they are not, to see what reaches
    # them): neither its result nor its failure is sent.
    assert [p.job for p in written.payloads() if isinstance(p, ParsedBlock)] == ["log-2"]
    assert _notes(read, BlockFailed) == []
    failed = [DeadLetterReason.FAILED.value] if then_raise else []  # the raise itself
    assert [letter[0] for letter in _letters(system)] == failed


# -- the reader -----------------------------------------------------------------------------


def test_a_reader_whose_job_has_ended_sends_nothing(
    system: ActorSystem, tmp_path: Path, recorder: Recorder
) -> None:
    source = tmp_path / "in.log"
    source.write_bytes(LINE * 100)
    ended = JobEnded("log-1")
    ended.set()  # the store ended the job; its stop is on the way
    pool = system.spawn(lambda: RecordingActor(recorder), "pool")

    def reader() -> LogReader:
        return LogReader(
            "log-1",
            str(source),
            LogOptions(),
            PATTERN,
            pool="pool",
            writer="writer",
            store="pool",
            ended=ended,
        )

    ref = system.spawn(reader, "log-1.reader")
    # A failed block of the ended job: not retried.
    ref.tell(BlockFailed(_block("log-1", LINE, ended), "RuntimeError: boom"))
    ref.stop(graceful=True, timeout=WAIT)  # it handles what is queued first
    _sync(pool)
    assert _received(recorder) == []  # no block, no retry, no note to the store
    (stats,) = ref.stats()
    # It handled the failed block alone: no note to itself (`_Next`) was queued, which an
    # immediate stop would have turned into a dead letter.
    assert stats.processed[MessageType.DATA] == 1
    assert _letters(system) == []


# -- the FFT pool ---------------------------------------------------------------------------


def test_a_chunk_of_an_ended_fft_job_is_not_done_and_goes_nowhere(
    system: ActorSystem, tmp_path: Path
) -> None:
    # A cancelled or failed FFT job's chunks still queued in the pool: not transformed, not
    # written (its writer removed the file), no note to its stopped reader or writer.
    written, read = Recorder(), Recorder()
    writer = system.spawn(lambda: RecordingActor(written), "writer")
    reader = system.spawn(lambda: RecordingActor(read), "reader")
    system.spawn_pool(FFTWorker, "fft", 1)
    out = tmp_path / "out.bin"
    out.write_bytes(b"\0" * 2 * 16 * 16)  # room for one complex128 4x4 chunk (256 bytes) each
    layout = OutputLayout(str(out), 0, 256)
    ended = JobEnded("fft-1")
    ended.set()

    def chunk(job: str, index: int, job_ended: JobEnded | None) -> FFTChunk:
        data = np.ones((4, 4))
        data.flags.writeable = False
        return FFTChunk(
            job,
            index,
            data,
            Transform.FFT2,
            "complex128",
            layout,
            "reader",
            "writer",
            ended=job_ended,
        )

    pool = system.lookup("fft")
    pool.tell(chunk("fft-1", 0, ended))
    pool.tell(chunk("fft-2", 1, None))  # another job's, taken after it: one member
    written.wait_count(1)
    _sync(writer)
    _sync(reader)
    assert [(p.job, p.index) for p in _received(written)] == [("fft-2", 1)]
    assert _received(read) == []
    assert out.read_bytes()[:256] == b"\0" * 256  # chunk 0 was never written
    assert _letters(system) == []
