"""The parser pool: turns blocks of raw lines into JSON Lines records and rejects.

`parse_block` is a pure function shared by both executors. With ``executor="thread"`` a pool
member runs it on its own thread; with ``executor="process"`` each member owns a worker
process (``python -m actors._parse_worker``) and ships it the block over a pipe (msgpack
frames, no pickle), so parsing uses more than one core despite the GIL. Either way the pool
looks the same from outside: LogBlock in, ParsedBlock out.

A user's pattern always runs in a worker process, whatever the executor: Python's regex
engine backtracks, so a pattern such as ``(a+)+b`` can take exponential time on one line and,
in a thread, hold the GIL all along, freezing the whole daemon. In a process it is killed
when its job ends (a cancel is heard within `_POLL`), when the member stops, or after the
block timeout. Only the built-in formats' patterns (written to match in linear time) run
in threads.

The pool is fair (see `actord.runtime.fair`): it serves the running jobs' blocks in turn.
A block that a worker has run for `_YIELD_AFTER` seconds gives its member back when its job
holds more members than its share while another job's blocks wait (a job that had the pool
to itself when the other came, with slow blocks: a catastrophic pattern's hold the member
for the block timeout). Its worker is killed and the block is queued again, first of its
job's: it loses at most the work done on it, and runs again on its job's share.
"""

from __future__ import annotations

import contextlib
import re
import select
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import IO, Any

import orjson

from actord import Actor, Message

from .formats import BUILTIN_FORMATS
from .frames import read_frame, widen_pipe, write_frame
from .model import BlockFailed, Executor, LogBlock, ParsedBlock

__all__ = ["Parser", "parse_block"]

_POLL = 0.25  # how often a member waiting on its worker checks for a stop or a job's end
_YIELD_AFTER = 1.0  # seconds a block runs before its member may be given to another job
_TRUSTED = frozenset(BUILTIN_FORMATS.values())  # patterns that may run in a thread
_WARM_UP = BUILTIN_FORMATS["seed"]  # what a new worker parses (no line) to say it is up
# How long a new worker may take to start (an interpreter and its imports: seconds on a busy
# machine), whatever the block timeout, which bounds a block's parsing, not a start.
_START_TIMEOUT = 60.0


@lru_cache(maxsize=32)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def parse_block(data: bytes, first_line: int, pattern: str) -> dict[str, Any]:
    """Parse whole lines. Returns the ParsedBlock fields (less job and index) as plain types,
    so the result can cross a process boundary as msgpack.

    Blank lines are counted and skipped; a line that is not valid UTF-8 or does not match is
    rejected with its raw bytes, never dropped. CRLF endings are accepted.
    """
    match = _compiled(pattern).fullmatch
    dumps = orjson.dumps
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the block ends with a newline (all but possibly the input's last line)
    # One growing buffer each: every encoded record is freed as soon as it is copied in
    # (a list of small bytes objects would hold each one's whole allocation until the end).
    records = bytearray()
    rejects = bytearray()
    matched = 0
    levels_seen: list[str] = []
    blank = invalid = 0
    number = first_line - 1
    for raw in lines:
        number += 1
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line.strip():
            blank += 1
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            invalid += 1
            rejects += b"%d\t%s\n" % (number, line)
            continue
        found = match(text)
        if found is None:
            rejects += b"%d\t%s\n" % (number, line)
            continue
        fields = found.groupdict()
        level = fields.get("level")
        if level is not None:
            levels_seen.append(level)
        records += dumps({"line": number, **fields})
        records += b"\n"
        matched += 1
    return {
        "lines": len(lines),
        "matched": matched,
        "rejected": len(lines) - matched - blank,
        "blank": blank,
        "invalid_utf8": invalid,
        "records": bytes(records),
        "rejects": bytes(rejects),
        "levels": sorted(Counter(levels_seen).items()),
    }


class _Stopped(Exception):
    """The member is stopping: its worker was killed mid-block (not a failure)."""


class _Worker:
    """A parse worker process and the pipe to it (owned by one pool member's thread)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "actors._parse_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin: IO[bytes] = self.process.stdin
        self._stdout: IO[bytes] = self.process.stdout
        widen_pipe(self._stdin.fileno())
        widen_pipe(self._stdout.fileno())

    def parse(
        self,
        data: bytes,
        first_line: int,
        pattern: str,
        *,
        timeout: float = 60.0,
        cancelled: Callable[[], bool] = lambda: False,
        yielded: Callable[[float], bool] = lambda _: False,
    ) -> dict[str, Any]:
        """Parse a block in the worker. A worker that takes longer than `timeout` (a runaway
        user regex, say) or is still busy when `cancelled()` turns true is killed, and this
        raises: the block fails and is retried once, the member gets a fresh worker. So is
        one still busy when `yielded(seconds it has run)` turns true (raising `_Stopped`)."""
        write_frame(self._stdin, [data, first_line, pattern])
        self._await_reply(time.monotonic(), timeout, cancelled, yielded)
        try:
            reply = read_frame(self._stdout)  # the reply has begun: it is computed
        except EOFError:
            raise RuntimeError(f"parse worker {self.process.pid} exited") from None
        if isinstance(reply, str):
            raise RuntimeError(f"parse worker failed: {reply}")
        result: dict[str, Any] = reply
        return result

    def _await_reply(
        self,
        start: float,
        timeout: float,
        cancelled: Callable[[], bool],
        yielded: Callable[[float], bool],
    ) -> None:
        # Wait for the reply's first byte in short slices, so a stop is noticed quickly.
        # poll(), not select(): the pipe's descriptor may be past select's 1024.
        ready = select.poll()
        ready.register(self._stdout.fileno(), select.POLLIN | select.POLLHUP)
        while not ready.poll(_POLL * 1000):
            if cancelled():
                self.kill()
                raise _Stopped("parse worker stopped: the actor is stopping")
            ran = time.monotonic() - start
            if ran >= timeout:
                self.kill()
                raise TimeoutError(f"parse worker {self.process.pid} took too long; killed")
            if yielded(ran):
                self.kill()
                raise _Stopped("parse worker stopped: its member went to another job")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=5)

    def close(self) -> None:
        """End the worker at once (it holds nothing worth a graceful exit: a block in flight
        is abandoned either way); never raises on a dead worker, and always reaps it and
        closes both pipes. At once, because a stop waits for this: a worker still starting
        on a busy machine would read its end of input only seconds later."""
        # Closing flushes into the pipe; if the worker died, there is nothing left to tell it.
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self.kill()
        finally:
            self._stdout.close()


class Parser(Actor):
    """Parser pool member. LogBlock in; ParsedBlock to the block's writer.

    A block whose parsing raises is reported to its reader (`on_failure`), which retries it
    once; the member itself is restarted by the supervisor (with a fresh worker process).
    A block of a job that has ended is dropped; one being parsed when its job ends is
    abandoned (its worker is killed and replaced), and so is its result or its failure: the
    job's reader and writer are stopped, and anything sent to them would be a dead letter.
    """

    def __init__(self, executor: Executor = Executor.THREAD, block_timeout: float = 60.0) -> None:
        self.executor = executor
        self.block_timeout = block_timeout  # a worker busy longer on one block is killed
        self._worker: _Worker | None = None

    def on_start(self) -> None:
        """Actor thread: start the worker process when this pool runs in processes, and wait
        until it answers (an empty block): the member counts as started only once its worker
        is, so that a pool grown in steps (`PoolScaler`) never has more workers starting at
        once than a step."""
        if self.executor is Executor.PROCESS:
            try:
                self._worker = self._start_worker(self._stopping)
            except _Stopped:
                return  # stopped while its worker started: nothing to serve

    def _start_worker(self, cancelled: Callable[[], bool]) -> _Worker:
        """A new worker process, once it has answered (an empty block): its start is bounded
        by `_START_TIMEOUT`, never by the block timeout, which bounds a block's parsing."""
        worker = _Worker()
        try:
            worker.parse(
                b"",
                1,
                _WARM_UP,
                timeout=max(self.block_timeout, _START_TIMEOUT),
                cancelled=cancelled,
            )
        except BaseException:
            worker.close()
            raise
        return worker

    def _stopping(self) -> bool:
        return self.stop_requested

    def handle(self, message: Message) -> None:
        """Actor thread: parse one block."""
        block: LogBlock = message.payload
        ended = block.ended
        if ended:
            return  # its job is over (cancelled, failed): nobody waits for this block
        if self.executor is Executor.PROCESS or block.pattern not in _TRUSTED:

            def stopped() -> bool:
                return self.stop_requested or bool(ended)

            try:
                if self._worker is None:  # after a kill, or a first user pattern in a thread
                    self._worker = self._start_worker(stopped)
                fields = self._worker.parse(
                    block.data,
                    block.first_line,
                    block.pattern,
                    timeout=self.block_timeout,
                    cancelled=stopped,
                    yielded=lambda ran: ran >= _YIELD_AFTER and self.yield_turn(message),
                )
            except _Stopped:
                # Killed: the block's job is over, we are stopping, or the block was queued
                # again for its job's turn (another job was owed this member).
                self._close_worker()
                return
            except (TimeoutError, RuntimeError) as error:
                # The block's pattern ran past the block timeout, or the worker failed on the
                # block: the job's doing, not the pool's. The block fails (its reader retries
                # it once, then fails the job) and this member goes on with a fresh worker,
                # counting no restart: a user's pattern cannot escalate the pool.
                self._close_worker()
                if not ended:
                    self.send(block.reader, BlockFailed(block, f"{type(error).__name__}: {error}"))
                return
        else:
            fields = parse_block(block.data, block.first_line, block.pattern)
        if ended:
            return  # the job ended while this block was parsed: its writer is gone
        fields["levels"] = tuple((str(k), int(v)) for k, v in fields["levels"])
        self.send(
            block.writer,
            ParsedBlock(job=block.job, index=block.index, nbytes=len(block.data), **fields),
        )

    def on_failure(self, error: Exception, message: Message | None) -> None:
        """Actor thread: hand the failed block back to its reader, which retries it once."""
        block = None if message is None else message.payload
        if isinstance(block, LogBlock) and not block.ended:  # an ended job's reader is gone
            self.send(block.reader, BlockFailed(block, repr(error)))
        self._close_worker()

    def on_stop(self) -> None:
        self._close_worker()

    def _close_worker(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
