"""The control client for asyncio programs: the blocking `Client`'s calls, awaited.

``async with Client(path) as client: await client.call("status")``; `watch` is an async
iterator of a job's progress events, the last being the job as it ended. The framing and
its limits are the blocking client's (`protocol.FrameDecoder`, `encode_request`), and so are
the errors: `NotRunning` when no daemon listens, `RemoteError` with the daemon's stable code,
`ConnectionResetError` ("actord closed the connection") when the daemon goes away mid-call.
One call at a time per connection (a lock orders them); open one client per task that calls
concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from .client import REPLY_LIMIT, NotRunning, RemoteError, answer, refusal
from .protocol import FrameDecoder, Notification, ProtocolError, Response, encode_request

__all__ = ["Client", "NotRunning", "RemoteError"]

_READ = 1 << 16


class Client:
    """One connection to actord's control socket, for a running event loop."""

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = FrameDecoder(REPLY_LIMIT)
        self._pending: deque[Response | Notification] = deque()
        self._lock = asyncio.Lock()  # one call at a time: guards the stream and _pending

    async def connect(self) -> Client:
        """Open the connection (once). Raises `NotRunning` if no daemon listens at `path`."""
        if self._writer is not None:
            return self
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path), self.timeout
            )
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise NotRunning(f"actord is not running at {self.path} ({error.strerror})") from None
        return self

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):  # closed by the peer already: nothing to flush
                await writer.wait_closed()

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- calls -----------------------------------------------------------------------------

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        return await self.stream(method, *params, on_notification=None, timeout=timeout)

    async def stream(
        self,
        method: str,
        *params: Any,
        on_notification: Callable[[str, tuple[Any, ...]], object] | None,
        timeout: float | None = None,
    ) -> Any:
        """Call `method`; each notification before the response goes to `on_notification`.
        `timeout` bounds each wait for data (None: the client's)."""
        async with self._lock:
            msgid = await self._send(method, params)
            while True:
                message = await self._next(timeout)
                if isinstance(message, Notification):
                    if on_notification is not None:
                        on_notification(message.method, message.params)
                    continue
                if message.msgid in (msgid, 0):  # 0: the server refused the connection
                    return answer(message)

    async def watch(
        self, job_id: str, *, timeout: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The job as it advances (each ``progress`` event), then as it ended (the last
        item). `timeout` bounds each wait for an event (None: for as long as the job runs).
        Leaving the loop early closes the connection (the daemon then ends the watch)."""
        async with self._lock:
            msgid = await self._send("watch", (job_id,))
            try:
                while True:
                    message = await self._next(timeout, forever=timeout is None)
                    if isinstance(message, Notification):
                        if message.method == "progress" and message.params:
                            yield message.params[0]
                        continue
                    if message.msgid in (msgid, 0):
                        yield answer(message)
                        return
            except GeneratorExit:
                await self.close()  # the watch's frames are still coming: drop them
                raise

    # The control methods every daemon with the job app serves (the blocking client's
    # ``call(name, ...)``, by name).

    async def submit(self, job: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("submit", job)
        return result

    async def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("job", job_id)
        return result

    async def jobs(self, limit: int = 1000) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.call("jobs", limit)
        return result

    async def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("cancel", job_id)
        return result

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("status")
        return result

    async def ping(self) -> str:
        result: str = await self.call("ping")
        return result

    # -- the connection --------------------------------------------------------------------

    async def _send(self, method: str, params: tuple[Any, ...]) -> int:
        await self.connect()
        assert self._writer is not None
        msgid = next(self._ids)
        try:
            self._writer.write(encode_request(msgid, method, params))
            await self._writer.drain()
        except (BrokenPipeError, ConnectionResetError) as error:
            # As the blocking client: a refused peer's answer may be waiting to be read.
            refused = await self._refusal()
            if refused is None:
                raise
            raise refused from error
        return msgid

    async def _refusal(self) -> RemoteError | None:
        while True:
            try:
                message = await self._next(self.timeout)
            except (OSError, ProtocolError, TimeoutError):
                return None
            refused = refusal(message)
            if refused is not None:
                return refused

    async def _next(
        self, timeout: float | None, *, forever: bool = False
    ) -> Response | Notification:
        reader = self._reader
        if reader is None:
            raise ConnectionResetError("the connection to actord is closed")
        limit = None if forever else (self.timeout if timeout is None else timeout)
        while not self._pending:
            data = await asyncio.wait_for(reader.read(_READ), limit)
            if not data:
                raise ConnectionResetError("actord closed the connection")
            self._decoder.feed(data)
            for message in self._decoder:
                if isinstance(message, Response | Notification):
                    self._pending.append(message)
        return self._pending.popleft()
