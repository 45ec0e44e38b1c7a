"""Metrics endpoint under a flood of idle connections: scrape latency, ours vs the peer.

    python bench/metrics_flood.py [--scrapes 300] [--idle 2000] [--repeat 3]

Two servers, each in its own process, serve the same registry (the runtime's collector over
24 live actors, as a small daemon has): actord's `MetricsServer` (one selector thread, two
render threads, at most 128 connections) and prometheus_client's own `start_http_server`
(a thread per connection, no cap: the peer, and what actord used before). This process
scrapes each one `--scrapes` times in a row over a fresh connection (a raw HTTP GET read to
the end, as Prometheus does), first with no other connection, then with `--idle`
connections opened just before and left silent. The table gives the median over `--repeat`
runs of each figure: scrape latency p50 and p99, and the scrapes answered 200 (the rest:
503 at the cap, or errors).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import socket
import statistics
import time
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from actord import Actor, ActorSystem, Message
from actord.daemon.metrics import MetricsServer, RuntimeCollector

_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n"


class _Idle(Actor):
    def handle(self, message: Message) -> None:
        """Nothing: the actors are there to be reported."""


def _serve(kind: str, ready: Any, stop: Any) -> None:
    system = ActorSystem()
    for i in range(8):
        system.spawn(_Idle, f"single-{i}")
    system.spawn_pool(_Idle, "pool", 16)
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(system.stats, system.channel, census=system.census))
    if kind == "actord":
        server = MetricsServer(registry, "127.0.0.1", 0)
        server.start()
        ready.send(server.port)
        stop.wait()
        server.stop()
    else:
        peer, thread = start_http_server(0, "127.0.0.1", registry)
        ready.send(peer.server_port)
        stop.wait()
        peer.shutdown()
        peer.server_close()
        thread.join(5)
    system.stop(timeout=5)


def _scrape(port: int) -> tuple[float, bool]:
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(_REQUEST)
            head = sock.recv(65536)
            while sock.recv(65536):
                pass
    except OSError:
        return time.perf_counter() - started, False
    return time.perf_counter() - started, head.startswith(b"HTTP/1.1 200") or head.startswith(
        b"HTTP/1.0 200"
    )


def _run(kind: str, scrapes: int, idle: int) -> tuple[float, float, int]:
    ready_recv, ready_send = mp.Pipe(duplex=False)
    stop = mp.Event()
    server = mp.Process(target=_serve, args=(kind, ready_send, stop))
    server.start()
    port = ready_recv.recv()
    held: list[socket.socket] = []
    try:
        for _ in range(3):
            _scrape(port)  # warm: the first scrape builds caches
        for _ in range(idle):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        results = [_scrape(port) for _ in range(scrapes)]
    finally:
        for sock in held:
            sock.close()
        stop.set()
        server.join(30)
    times = sorted(t for t, _ in results)
    p50 = times[len(times) // 2]
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return p50, p99, sum(ok for _, ok in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.idle + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mp.set_start_method("fork")
    rows: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
    for _ in range(args.repeat):  # interleaved runs
        for idle in (0, args.idle):
            for kind in ("actord", "prometheus_client"):
                rows.setdefault((kind, idle), []).append(_run(kind, args.scrapes, idle))
    print(f"scrapes: {args.scrapes} per run, median of {args.repeat} runs")
    print(f"{'server':<18} {'idle conns':>10} {'p50 ms':>8} {'p99 ms':>8} {'200 OK':>8}")
    for (kind, idle), runs in rows.items():
        p50 = statistics.median(r[0] for r in runs) * 1e3
        p99 = statistics.median(r[1] for r in runs) * 1e3
        ok = statistics.median(r[2] for r in runs)
        print(f"{kind:<18} {idle:>10} {p50:>8.2f} {p99:>8.2f} {ok:>8.0f}")
    for idle in (0, args.idle):
        ours = statistics.median(r[1] for r in rows[("actord", idle)])
        peer = statistics.median(r[1] for r in rows[("prometheus_client", idle)])
        print(f"p99 ratio actord / prometheus_client at {idle} idle: {ours / peer:.2f}x")


if __name__ == "__main__":
    main()
