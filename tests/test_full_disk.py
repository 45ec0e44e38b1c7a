"""A full or read-only state directory refuses, never kills (issue 21, item 4): a real daemon
whose state directory is a tiny tmpfs (filled with a real file) or an ext4 image the kernel
turns read-only under it. Root only: the tests mount file systems."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actord.control.client import Client, RemoteError

from ._daemon import DaemonProcess
from ._logjobs import BACKTRACKING, log_job, seed_lines

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting file systems needs root")

_LINES = seed_lines(200)


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount ({' '.join(args)}): {result.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=False, timeout=30)


def _fill(directory: Path) -> Path:
    """A file that takes every free byte of `directory`'s file system."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    try:
        while True:
            os.write(fd, b"\0" * 512)  # the last crumbs
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def _submit(client: Client, daemon: DaemonProcess, name: str) -> dict[str, object]:
    accepted: dict[str, object] = client.call("submit", log_job(daemon, "in", name))
    return accepted


def _refused(client: Client, daemon: DaemonProcess, name: str) -> RemoteError:
    with pytest.raises(RemoteError) as refused:
        _submit(client, daemon, name)
    return refused.value


def _stops_cleanly(daemon: DaemonProcess) -> None:
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    log = daemon.log.read_text(errors="replace")
    assert log.count("Traceback") <= 1, daemon.tail(60)
    assert "keeps failing" not in log


@pytest.fixture
def tiny_state(tmp_path: Path) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(tmp_path, "--parser-executor", "thread")
    daemon.state.mkdir()
    _mount("-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(daemon.state))
    try:
        (daemon.inputs / "in.log").write_text(_LINES)
        yield daemon
    finally:
        daemon.stop()
        _umount(daemon.state)


def test_a_full_state_directory_refuses_submits_and_takes_them_again(
    tiny_state: DaemonProcess,
) -> None:
    daemon = tiny_state.start()
    with daemon.client() as client:
        first = _submit(client, daemon, "before")
        assert client.stream("watch", first["id"], on_notification=None)["state"] == "done"
        filler = _fill(daemon.state)
        for attempt in range(3):  # each refused; none takes the daemon down
            refused = _refused(client, daemon, f"full-{attempt}")
            assert refused.code == "unavailable", refused
            assert str(daemon.state) in refused.message
            assert "full" in refused.message
        # Reads work, and no refused submit left a job behind.
        assert [job["id"] for job in client.call("jobs")] == [first["id"]]
        assert client.call("job", first["id"])["state"] == "done"
        assert client.call("status")["jobs_done"] == 1
        assert client.call("ping") == "pong"
        filler.unlink()  # space is back: jobs are taken again
        again = _submit(client, daemon, "after")
        assert client.stream("watch", again["id"], on_notification=None)["state"] == "done"
        assert [job["id"] for job in client.call("jobs")] == [first["id"], again["id"]]
    assert (daemon.outputs / "after.jsonl").read_text().count("\n") == 200
    assert daemon.proc is not None and daemon.proc.poll() is None
    _stops_cleanly(daemon)


def _start_with_a_slow_job(daemon: DaemonProcess) -> dict[str, Any]:
    """Start `daemon` with a job that stays running: a catastrophic pattern over lines it
    backtracks on for long."""
    (daemon.inputs / "slow.log").write_text(("a" * 27 + "!\n") * 4)
    daemon.start()
    slow: dict[str, Any] = daemon.call(
        "submit", log_job(daemon, "slow", pattern=BACKTRACKING, block_bytes=28)
    )
    assert slow["state"] == "running"
    return slow


def test_a_job_end_the_journal_cannot_take_waits_in_memory_until_it_can(
    tiny_state: DaemonProcess,
) -> None:
    daemon = tiny_state
    slow = _start_with_a_slow_job(daemon)
    with daemon.client() as client:
        filler = _fill(daemon.state)
        # Its end cannot be journaled: it is kept in memory, shown as it is, and said so.
        assert client.call("cancel", slow["id"])["state"] == "cancelled"
        final = client.stream("watch", slow["id"], on_notification=None)
        assert final["state"] == "cancelled"
        assert [job["state"] for job in client.call("jobs")] == ["cancelled"]
        assert client.call("status")["journal_writes_waiting"] == 1
        filler.unlink()
        # The next write journals the waiting end first.
        again = _submit(client, daemon, "after")
        assert client.stream("watch", again["id"], on_notification=None)["state"] == "done"
        assert "journal_writes_waiting" not in client.call("status")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    daemon.start()  # the journal says cancelled: the job does not run again
    with daemon.client() as client:
        assert client.call("job", slow["id"])["state"] == "cancelled"
        assert client.call("status")["jobs_running"] == 0
    _stops_cleanly(daemon)


def test_a_daemon_restarted_on_a_full_state_directory_starts_and_serves(
    tiny_state: DaemonProcess,
) -> None:
    daemon = tiny_state
    slow = _start_with_a_slow_job(daemon)
    daemon.kill()  # it dies under the running job, and the disk fills meanwhile
    filler = _fill(daemon.state)
    daemon.start()  # READY: re-queueing the job waits for the journal, the start does not
    with daemon.client() as client:
        assert client.call("job", slow["id"])["state"] in ("accepted", "running")
        assert client.call("status")["journal_writes_waiting"] >= 1
        assert _refused(client, daemon, "full").code == "unavailable"
        assert client.call("cancel", slow["id"])["state"] == "cancelled"  # kept in memory
        assert client.call("job", slow["id"])["crash_retries"] == 1
        filler.unlink()
        again = _submit(client, daemon, "after")  # the waiting writes go first
        assert client.stream("watch", again["id"], on_notification=None)["state"] == "done"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    daemon.start()
    with daemon.client() as client:  # the journal agrees with what the daemon said
        job = client.call("job", slow["id"])
        assert (job["state"], job["crash_retries"]) == ("cancelled", 1)
    _stops_cleanly(daemon)


@pytest.fixture
def ext4_state(tmp_path: Path) -> Iterator[DaemonProcess]:
    # `mount -o remount,ro` is refused (EBUSY) while the daemon holds its journal open for
    # writing; what does turn a state directory read-only under a running daemon is the
    # kernel itself after an I/O error (ext4's errors=remount-ro), triggered here for real.
    image = tmp_path / "state.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"no mkfs.ext4: {made.stderr!r}")
    daemon = DaemonProcess(tmp_path, "--parser-executor", "thread")
    daemon.state.mkdir()
    _mount("-o", "loop,errors=remount-ro", str(image), str(daemon.state))
    try:
        os.chmod(daemon.state, 0o700)
        (daemon.inputs / "in.log").write_text(_LINES)
        yield daemon
    finally:
        daemon.stop()
        _umount(daemon.state)


def _turn_read_only(mountpoint: Path) -> None:
    source = subprocess.run(
        ["findmnt", "-no", "SOURCE", str(mountpoint)], capture_output=True, text=True, check=True
    ).stdout.strip()
    trigger = Path("/sys/fs/ext4") / Path(source).name / "trigger_fs_error"
    if not trigger.exists():
        pytest.skip(f"this kernel has no {trigger}")
    trigger.write_text("test: the state directory goes read-only")
    with pytest.raises(OSError) as refused:
        (mountpoint / "probe").write_text("x")
    assert refused.value.errno == errno.EROFS


def test_a_state_directory_gone_read_only_refuses_submits_and_serves_reads(
    ext4_state: DaemonProcess,
) -> None:
    daemon = ext4_state.start()
    with daemon.client() as client:
        first = _submit(client, daemon, "before")
        assert client.stream("watch", first["id"], on_notification=None)["state"] == "done"
        _turn_read_only(daemon.state)
        for attempt in range(3):
            refused = _refused(client, daemon, f"ro-{attempt}")
            assert refused.code == "unavailable", refused
            assert str(daemon.state) in refused.message
        assert [job["id"] for job in client.call("jobs")] == [first["id"]]
        assert client.call("job", first["id"])["state"] == "done"
        assert client.call("ping") == "pong"
    assert daemon.proc is not None and daemon.proc.poll() is None
    _stops_cleanly(daemon)
