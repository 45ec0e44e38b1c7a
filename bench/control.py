"""Control-socket benchmark: a real `actord run` against a bare msgpack echo server.

    python bench/control.py [--requests 3000] [--repeat 5]

Both servers run in their own process on a Unix stream socket with a thread per connection;
the echo server decodes each request with msgpack and answers ``[1, msgid, nil, params]``:
the limit for Python here. The same client processes (one per client, each one request at a
time) measure requests/s and per-request latency for ``ping`` and ``status`` with 1 and 16
clients. Runs are interleaved; the table gives medians over runs and the ratios to echo.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parent.parent


# -- the baseline: a bare msgpack echo server -------------------------------------------------


def _echo_serve(conn: socket.socket) -> None:
    unpacker = msgpack.Unpacker(raw=False)
    with conn:
        while data := conn.recv(65536):
            unpacker.feed(data)
            for _kind, msgid, _method, params in unpacker:
                conn.sendall(msgpack.packb([1, msgid, None, params]))


def echo_server(path: str, ready: Any) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(128)
    ready.set()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_echo_serve, args=(conn,), daemon=True).start()


# -- clients --------------------------------------------------------------------------------


PARAMS = {"job": ["fft-1"]}  # `job` always asks the store: one round trip through an actor


def client(path: str, method: str, count: int, start: Any, out: Any) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    unpacker = msgpack.Unpacker(raw=False)
    latencies: list[float] = []
    errors = 0
    start.wait()
    for msgid in range(1, count + 1):
        began = time.perf_counter()
        sock.sendall(msgpack.packb([0, msgid, method, PARAMS.get(method, [])]))
        reply = None
        while reply is None:
            unpacker.feed(sock.recv(65536))
            reply = next(unpacker, None)
        latencies.append(time.perf_counter() - began)
        errors += reply[1] != msgid or reply[2] is not None
    sock.close()
    out.put((latencies, errors))


def load(path: str, method: str, clients: int, requests: int) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, errors) for `clients` processes sharing `requests`."""
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    each = max(1, requests // clients)
    procs = [
        ctx.Process(target=client, args=(path, method, each, start, out)) for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    time.sleep(0.2)  # let every client connect before the clock starts (bench only)
    began = time.perf_counter()
    start.set()
    results = [out.get(timeout=300) for _ in procs]
    elapsed = time.perf_counter() - began
    for proc in procs:
        proc.join()
    latencies = sorted(x for lat, _ in results for x in lat)
    errors = sum(e for _, e in results)
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[int(len(latencies) * 0.99)] * 1e3
    return len(latencies) / elapsed, p50, p99, errors


# -- servers --------------------------------------------------------------------------------


def start_actord(base: Path) -> tuple[subprocess.Popen[bytes], str, socket.socket]:
    """The daemon, its control socket, and the notify socket it reports to: kept open until
    the daemon has exited (its STOPPING=1 would otherwise log a refused notify)."""
    sock = str(base / "actord.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(base / "notify"))
    notify.settimeout(60)
    env = {**os.environ, "NOTIFY_SOCKET": str(base / "notify"), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "actord", "run", "--socket", sock]
    args += ["--state-dir", str(base / "state"), "--metrics-address", "", "--log-level", "WARNING"]
    args += ["--max-connections", "64"]
    proc = subprocess.Popen(args, env=env)
    while b"READY=1" not in notify.recv(4096).split(b"\n"):
        pass
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:  # the job `job` reads
        conn.connect(sock)
        job = {"kind": "fft", "output": str(base / "state/outputs/f.npy")}
        conn.sendall(
            msgpack.packb([0, 1, "submit", [{**job, "options": {"synthetic": [1, 8, 8]}}]])
        )
        assert msgpack.unpackb(conn.recv(65536))[2] is None
    return proc, sock, notify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs (medians)")
    parser.add_argument(
        "--methods", default="ping,status,job", help="comma-separated (ping,status,job)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="actord-bench-") as tmp:
        base = Path(tmp)
        ctx = mp.get_context("fork")
        ready = ctx.Event()
        echo_path = str(base / "echo.sock")
        echo = ctx.Process(target=echo_server, args=(echo_path, ready), daemon=True)
        echo.start()
        ready.wait(10)
        daemon, actord_path, notify = start_actord(base)
        rows: dict[tuple[str, str, int], list[tuple[float, float, float, int]]] = {}
        try:
            for _ in range(args.repeat):
                for method in args.methods.split(","):
                    for clients in (1, 16):
                        for name, path in (("echo", echo_path), ("actord", actord_path)):
                            result = load(path, method, clients, args.requests)
                            rows.setdefault((name, method, clients), []).append(result)
        finally:
            daemon.terminate()
            daemon.wait(30)
            notify.close()
            echo.terminate()
    _table(rows)


def _table(rows: dict[tuple[str, str, int], list[tuple[float, float, float, int]]]) -> None:
    def median(key: tuple[str, str, int], i: int) -> float:
        return statistics.median(r[i] for r in rows[key])

    print(
        f"{'server':<8} {'method':<7} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'errors':>6} {'vs echo':>8}"
    )
    for (name, method, clients), runs in sorted(
        rows.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0] != "echo")
    ):
        key = (name, method, clients)
        rate, p50, p99 = median(key, 0), median(key, 1), median(key, 2)
        echo_rate = median(("echo", method, clients), 0)
        errors = sum(r[3] for r in runs)
        print(
            f"{name:<8} {method:<7} {clients:>7} {rate:>9,.0f} {p50:>8.3f} {p99:>8.3f}"
            f" {errors:>6} {rate / echo_rate:>7.2f}x"
        )


if __name__ == "__main__":
    main()
