"""The asyncio control client against a real daemon: submit, watch to the end, the errors the
blocking client raises, and a daemon killed mid-watch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from actord.control import aio
from actord.control.client import Client as BlockingClient
from actord.control.client import NotRunning, RemoteError
from actors.demo import write_sample_log

from ._daemon import DaemonProcess

SLOW_PATTERN = r"(?P<a>(x+x+)+y)"  # catastrophic backtracking: ~0.1 s per line of 22 x's


@pytest.fixture
def daemon(daemons: Callable[..., DaemonProcess]) -> Iterator[DaemonProcess]:
    running: DaemonProcess = daemons().start()
    yield running


def _log_job(daemon: DaemonProcess, name: str, lines: int = 2_000) -> dict[str, Any]:
    source = daemon.inputs / f"{name}.log"
    write_sample_log(str(source), lines)
    return {"kind": "log", "input": str(source), "output": str(daemon.outputs / f"{name}.jsonl")}


def test_submit_and_watch_to_the_end(daemon: DaemonProcess) -> None:
    async def main() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], list[Any]]:
        async with aio.Client(daemon.socket) as client:
            await client.ping()
            job = await client.submit(_log_job(daemon, "one"))
            events = [event async for event in client.watch(job["id"])]
            again = await client.job(job["id"])  # the connection goes on after the watch
            listed = await client.jobs()
            return job, events, again, listed

    job, events, again, listed = asyncio.run(main())
    assert job["state"] in ("queued", "running")
    final = events[-1]
    assert final["id"] == job["id"]
    assert final["state"] == "done"
    assert all(e["id"] == job["id"] for e in events)
    assert all(e["state"] != "done" for e in events[:-1])  # progress, then the end
    assert again["state"] == "done"
    assert job["id"] in [j["id"] for j in listed]
    assert (daemon.outputs / "one.jsonl").exists()


def test_the_errors_are_the_blocking_client_s(daemon: DaemonProcess, tmp_path: Any) -> None:
    outside = {"kind": "log", "input": "/etc/hostname", "output": str(daemon.outputs / "x")}

    async def codes() -> list[str]:
        found = []
        async with aio.Client(daemon.socket) as client:
            for method, params in (("job", ("log-999",)), ("no_such", ()), ("submit", (outside,))):
                with pytest.raises(RemoteError) as refused:
                    await client.call(method, *params)
                found.append(refused.value.code)
            assert await client.status()  # still usable after the refusals
        return found

    blocking = []
    with BlockingClient(daemon.socket) as client:
        for method, params in (("job", ("log-999",)), ("no_such", ()), ("submit", (outside,))):
            with pytest.raises(RemoteError) as refused:
                client.call(method, *params)
            blocking.append(refused.value.code)
    assert asyncio.run(codes()) == blocking
    assert blocking[:2] == ["not_found", "unknown_method"]

    async def absent() -> None:
        with pytest.raises(NotRunning, match="not running"):
            await aio.Client(str(tmp_path / "none.sock")).connect()

    asyncio.run(absent())


def test_cancel_ends_the_watch(daemon: DaemonProcess) -> None:
    source = daemon.inputs / "slow.log"
    source.write_text(("x" * 22 + "\n") * 200)
    spec = {
        "kind": "log",
        "input": str(source),
        "output": str(daemon.outputs / "slow.jsonl"),
        "options": {"pattern": SLOW_PATTERN, "block_bytes": 64},
    }

    async def main() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with aio.Client(daemon.socket) as client, aio.Client(daemon.socket) as other:
            job = await client.submit(spec)
            events = []
            async for event in client.watch(job["id"]):
                events.append(event)
                if len(events) == 1:
                    await other.cancel(job["id"])
            return job, events

    job, events = asyncio.run(main())
    assert events[-1]["id"] == job["id"]
    assert events[-1]["state"] == "cancelled"


def test_a_daemon_killed_mid_watch_gives_a_clear_error(daemon: DaemonProcess) -> None:
    source = daemon.inputs / "slow.log"
    source.write_text(("x" * 22 + "\n") * 600)  # about a minute of parsing
    spec = {
        "kind": "log",
        "input": str(source),
        "output": str(daemon.outputs / "slow.jsonl"),
        "options": {"pattern": SLOW_PATTERN, "block_bytes": 64},
    }

    async def main() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with aio.Client(daemon.socket) as client:
            job = await client.submit(spec)
            with pytest.raises(ConnectionResetError, match="actord closed the connection"):
                async for event in client.watch(job["id"]):
                    events.append(event)
                    if len(events) == 1:
                        await asyncio.to_thread(daemon.kill)
        return events

    events = asyncio.run(main())
    assert events and events[0]["state"] in ("queued", "running")
