"""One job cannot starve the others (issue 21, item 7), on a real daemon.

A log job with a catastrophic pattern holds a parse worker for the block timeout (60 s) per
block, and it has both workers of a pool of 2 to itself before the next job comes. The pool
is fair: the next job's blocks take the member its share owes it (the hostile job's second
worker gives it back) and that job is done in seconds, with either executor (a user's
pattern runs in a worker process with both).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from actors.demo import write_sample_log

from ._daemon import DaemonProcess

EVIL = r"(?P<a>(a+)+)b"  # backtracks exponentially on a line of a's with no b
NORMAL_WITHIN = 5.0  # seconds: the bound for the normal job while the bad one runs
WAIT = 60.0


def _job(daemon: DaemonProcess, id_: str) -> dict[str, Any]:
    result: dict[str, Any] = daemon.call("job", id_)
    return result


def _until(daemon: DaemonProcess, id_: str, held: int) -> dict[str, Any]:
    # The daemon's own figure, read until it says so (what an operator would watch): the
    # bad job holds `held` pool members. Bounded; each read is a real round trip.
    deadline = time.monotonic() + WAIT
    while True:
        job = _job(daemon, id_)
        if job.get("members") == held:
            return job
        assert time.monotonic() < deadline, f"{id_} never held {held} members: {job}"
        time.sleep(0.05)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_hostile_pattern_cannot_starve_a_normal_job(daemons: Any, executor: str) -> None:
    daemon = daemons("--parsers", "2", "--parser-executor", executor, "--max-jobs", "4").start()
    bad_input = daemon.inputs / "bad.log"
    bad_input.write_text(("a" * 27 + "!\n") * 200)  # a block per line, seconds of backtracking
    bad = daemon.call(
        "submit",
        {
            "kind": "log",
            "input": str(bad_input),
            "output": str(daemon.outputs / "bad.jsonl"),
            "options": {"pattern": EVIL, "block_bytes": 28},
        },
    )
    try:
        # The bad job alone: it takes both members (a job alone uses every member).
        running = _until(daemon, bad["id"], 2)
        assert running["state"] == "running"
        listed = {job["id"]: job for job in daemon.call("jobs")}
        assert listed[bad["id"]]["members"] == 2
        good_input = daemon.inputs / "good.log"
        write_sample_log(str(good_input), 2_000)
        submitted = time.monotonic()
        good = daemon.call(
            "submit",
            {
                "kind": "log",
                "input": str(good_input),
                "output": str(daemon.outputs / "good.jsonl"),
                "options": {},
            },
        )
        with daemon.client(timeout=WAIT) as client:
            final = client.stream(
                "watch", good["id"], on_notification=lambda *_: None, timeout=WAIT
            )
        took = time.monotonic() - submitted
        assert final["state"] == "done", final
        assert final["summary"]["lines"] == 2_000
        assert took < NORMAL_WITHIN, f"the normal job took {took:.1f}s behind the hostile one"
        assert _job(daemon, bad["id"])["state"] == "running"  # on its share meanwhile
    finally:  # the bad job would run for minutes: the daemon's stop would wait on it
        cancelled = daemon.call("cancel", bad["id"])
    assert cancelled["state"] == "cancelled"
