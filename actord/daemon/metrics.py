"""Prometheus metrics: a custom collector that builds every sample at scrape time.

Per actor (labels `actor` — the member — and `pool` — the mailbox it serves): messages handled
by type, errors, restarts, up, mailbox depth and capacity, handle-time and queue-wait
histograms, and CPU seconds by mode from psutil's per-thread times matched by native thread id
(each actor's own CPU, not the process's). Per fair pool (label `pool` only): busy members,
keys (jobs) sharing it, turns given back. Daemon-wide (`DaemonCollector`): dead letters by
reason, control requests by method and code, open connections, worker-process CPU. Served over
HTTP on loopback by `scrape_http.ScrapeServer`: named, non-daemon threads that
`MetricsServer.stop` joins, none per connection. The same server answers `/healthz` and
`/readyz` (200, or 503 with why); any other path is 404.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

import psutil
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..runtime.channel import ThreadChannel
from ..runtime.message import DeadLetterReason, MessageType
from ..runtime.stats import ActorState, ActorStats
from .health import thread_cpu_times
from .scrape_http import ScrapeServer, WsgiApp

__all__ = [
    "HISTOGRAM_BOUNDS",
    "Check",
    "DaemonCollector",
    "MetricsServer",
    "RuntimeCollector",
    "parse_address",
]

# Every other power of two nanoseconds from ~1 us to ~17 s: exact on the runtime's log2 buckets.
HISTOGRAM_BOUNDS: Final = tuple(2.0**k / 1e9 for k in range(10, 35, 2))
_BACKLOG: Final = 512  # connects the kernel queues for us: a flood waits there, not in us
_TEXT: Final = [("Content-Type", "text/plain; charset=utf-8")]

# A probe (`/healthz`, `/readyz`): None when all is well, else a short text saying why not.
Check = Callable[[], str | None]


def _ok() -> str | None:
    return None


def _routes(metrics: WsgiApp, checks: Mapping[str, Check]) -> WsgiApp:
    """`/metrics` to `metrics`; each probe path to its check (200 ``ok``, or 503 and why);
    404 for any other path."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        check = checks.get(path)
        if check is None:
            start_response("404 Not Found", _TEXT)
            paths = ", ".join(["/metrics", *checks])
            return [f"not found: {path} (this server answers {paths})\n".encode()]
        why = check()
        if why is None:
            start_response("200 OK", _TEXT)
            return [b"ok\n"]
        start_response("503 Service Unavailable", _TEXT)
        return [f"{why}\n".encode()]

    return app


class _Row:
    """One `actor` label's figures: an actor, a pool member, or every actor of a role."""

    def __init__(self) -> None:
        self.by_type: dict[MessageType, int] = dict.fromkeys(MessageType, 0)
        self.errors = self.restarts = self.depth = self.capacity = 0
        self.up: float | None = None  # not exported for roles: their actors come and go
        self.cpu = [0.0, 0.0]
        self.handle = [0] * (len(HISTOGRAM_BOUNDS) + 1)  # cumulative, then the count
        self.wait = [0] * (len(HISTOGRAM_BOUNDS) + 1)
        self.handle_sum = self.wait_sum = 0.0

    def add(self, s: ActorStats, cpu: tuple[float, float]) -> None:
        for mtype, n in s.processed.items():
            self.by_type[mtype] += n
        self.errors += s.errors
        self.restarts += s.restarts
        self.depth += s.mailbox_depth
        self.capacity += s.mailbox_capacity
        self.cpu[0] += cpu[0]
        self.cpu[1] += cpu[1]
        for row, histogram in ((self.handle, s.handle_time), (self.wait, s.queue_wait)):
            for i, n in enumerate((*histogram.cumulative(HISTOGRAM_BOUNDS), histogram.count)):
                row[i] += n
        self.handle_sum += s.handle_time.sum
        self.wait_sum += s.queue_wait.sum


class RuntimeCollector(Collector):
    """Reads `stats()` (and the channel's dead letters) each time Prometheus scrapes.

    Actors spawned with a `role` (a job's reader and writer) are counted under the role,
    live ones plus the totals of those gone (`retired`), so labels stay bounded and counters
    never go down.
    """

    def __init__(
        self,
        stats: Callable[[], Iterable[ActorStats]],
        channel: ThreadChannel | None = None,
        cpu: Callable[[], dict[int, tuple[float, float]]] = thread_cpu_times,
        retired: Callable[[], Iterable[ActorStats]] = tuple,
        census: Callable[[], tuple[Iterable[ActorStats], Iterable[ActorStats]]] | None = None,
    ) -> None:
        self._stats = stats
        self._channel = channel
        self._cpu = cpu
        self._retired = retired
        # Live and retired in one snapshot (`ActorSystem.census`): counters never dip as an
        # actor moves from one to the other. Without it, two separate reads.
        self._census = census or (lambda: (self._stats(), self._retired()))

    def _rows(self) -> dict[tuple[str, str], _Row]:
        times = self._cpu()
        rows: dict[tuple[str, str], _Row] = {}
        live, retired = self._census()
        for s in live:
            key = (s.role, s.role) if s.role else (s.name, s.pool)
            row = rows.setdefault(key, _Row())
            row.add(s, times.get(s.native_thread_id, (0.0, 0.0)))
            if not s.role:
                row.up = 1.0 if s.state is ActorState.RUNNING else 0.0
        for s in retired:
            role = s.role or s.name
            rows.setdefault((role, role), _Row()).add(s, s.cpu_at_exit)
        return rows

    def collect(self) -> Iterator[Metric]:
        labels = ["actor", "pool"]
        messages = CounterMetricFamily(
            "actord_actor_messages", "Messages handled, by message type", labels=[*labels, "type"]
        )
        errors = CounterMetricFamily("actord_actor_errors", "Handler failures", labels=labels)
        restarts = CounterMetricFamily("actord_actor_restarts", "Restarts", labels=labels)
        up = GaugeMetricFamily("actord_actor_up", "1 while the actor runs", labels=labels)
        depth = GaugeMetricFamily(
            "actord_actor_mailbox_depth", "Messages queued for the actor", labels=labels
        )
        capacity = GaugeMetricFamily(
            "actord_actor_mailbox_capacity", "Mailbox bound", labels=labels
        )
        cpu = CounterMetricFamily(
            "actord_actor_cpu_seconds", "CPU time of the actor's thread", labels=[*labels, "mode"]
        )
        handle = HistogramMetricFamily(
            "actord_actor_handle_seconds", "Time spent in handle() per message", labels=labels
        )
        wait = HistogramMetricFamily(
            "actord_actor_queue_wait_seconds", "Time a message waited in the mailbox", labels=labels
        )
        bounds = [repr(b) for b in HISTOGRAM_BOUNDS] + ["+Inf"]
        pools: set[str] = set()
        for (actor, pool), row in self._rows().items():
            key = [actor, pool]
            pools.add(pool)
            for mtype in MessageType:
                messages.add_metric([*key, mtype.name.lower()], row.by_type[mtype])
            errors.add_metric(key, row.errors)
            restarts.add_metric(key, row.restarts)
            if row.up is not None:
                up.add_metric(key, row.up)
            depth.add_metric(key, row.depth)
            capacity.add_metric(key, row.capacity)
            cpu.add_metric([*key, "user"], row.cpu[0])
            cpu.add_metric([*key, "system"], row.cpu[1])
            handle.add_metric(key, list(zip(bounds, row.handle, strict=True)), row.handle_sum)
            wait.add_metric(key, list(zip(bounds, row.wait, strict=True)), row.wait_sum)
        yield from (messages, errors, restarts, up, depth, capacity, cpu, handle, wait)
        if self._channel is not None:
            yield from self._fair_pools(self._channel, pools)
            dead = CounterMetricFamily(
                "actord_dead_letters", "Messages not handled, by reason", labels=["reason"]
            )
            counts = self._channel.dead_letter_counts()
            for reason in DeadLetterReason:  # every reason, zeros too: a bounded, stable set
                dead.add_metric([reason.value], counts.get(reason, 0))
            yield dead

    @staticmethod
    def _fair_pools(channel: ThreadChannel, pools: set[str]) -> Iterator[Metric]:
        # Fair pools (a FairMailbox): by pool only; never a key's own label (a job id is
        # unbounded): how many members are busy and how many keys share them.
        busy = GaugeMetricFamily(
            "actord_pool_busy_members",
            "Members of a fair pool holding a key's message now",
            labels=["pool"],
        )
        keys = GaugeMetricFamily(
            "actord_pool_sharing_keys",
            "Keys (jobs) holding a member of a fair pool or waiting for one",
            labels=["pool"],
        )
        yields = CounterMetricFamily(
            "actord_pool_yields",
            "Messages a member of a fair pool gave back for a key owed its turn",
            labels=["pool"],
        )
        for pool in sorted(pools):
            share = channel.fair_share(pool)
            if share is not None:
                busy.add_metric([pool], share.busy)
                keys.add_metric([pool], share.keys)
                yields.add_metric([pool], share.yields)
        yield from (busy, keys, yields)


class DaemonCollector(Collector):
    """Daemon-wide figures: build info, config generation, control requests by method and
    error code, open control connections, and the CPU of worker processes (the parse
    workers: their time is not in any thread of ours)."""

    def __init__(
        self,
        version: str,
        generation: Callable[[], int],
        requests: Callable[[], Mapping[tuple[str, str], int]],
        connections: Callable[[], int],
        children: Callable[[], list[psutil.Process]] = lambda: psutil.Process().children(True),
    ) -> None:
        self._children = children
        self._version = version
        self._generation = generation
        self._requests = requests
        self._connections = connections
        # _lock guards _live (worker pid -> CPU last seen) and _exited (CPU of those gone):
        # scrapes may run at once.
        self._lock = threading.Lock()
        self._live: dict[int, tuple[float, float]] = {}
        self._exited = (0.0, 0.0)

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("actord_build_info", "Always 1", labels=["version"])
        info.add_metric([self._version], 1)
        generation = GaugeMetricFamily(
            "actord_config_generation", "Config generation (bumped by each applied reload)"
        )
        generation.add_metric([], self._generation())
        requests = CounterMetricFamily(
            "actord_control_requests",
            'Control requests by method and error code ("ok" when answered)',
            labels=["method", "code"],
        )
        for (method, code), count in sorted(self._requests().items()):
            requests.add_metric([method, code or "ok"], count)
        connections = GaugeMetricFamily(
            "actord_control_connections", "Open control-socket connections"
        )
        connections.add_metric([], self._connections())
        workers = CounterMetricFamily(
            "actord_worker_process_cpu_seconds",
            "CPU time of the daemon's worker processes (as last seen, exited ones included)",
            labels=["mode"],
        )
        user, system = self._worker_cpu()
        workers.add_metric(["user"], user)
        workers.add_metric(["system"], system)
        yield from (info, generation, requests, connections, workers)

    def _worker_cpu(self) -> tuple[float, float]:
        # A counter must never go down: a worker that exited keeps the CPU it was last seen
        # with (what it used after the last scrape is not counted).
        seen: dict[int, tuple[float, float]] = {}
        for child in self._children():
            try:
                times = child.cpu_times()
            except psutil.Error:
                continue  # it exited while we looked
            seen[child.pid] = (times.user, times.system)
        with self._lock:
            for pid, times in self._live.items():
                if pid not in seen:
                    self._exited = (self._exited[0] + times[0], self._exited[1] + times[1])
            self._live = seen
            user = self._exited[0] + sum(t[0] for t in seen.values())
            system = self._exited[1] + sum(t[1] for t in seen.values())
        return user, system


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) as (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(_BACKLOG)
    except BaseException:
        listener.close()
        raise
    return listener


class MetricsServer:
    """Serves `registry` at http://host:port/metrics (loopback by default), or on a listening
    socket handed over by systemd: one selector thread and a few render threads, at most
    `max_connections` open (see `scrape_http`). `/healthz` and `/readyz` answer what
    `healthy` and `ready` say (called on a render thread at each request)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str = "127.0.0.1",
        port: int = 9464,
        *,
        listener: socket.socket | None = None,
        max_connections: int = 128,
        read_timeout: float = 5.0,
        healthy: Check = _ok,
        ready: Check = _ok,
    ):
        sock = _listen(host, port) if listener is None else listener
        address = sock.getsockname()
        self.host: str = str(address[0])
        self.port: int = int(address[1])
        self._server = ScrapeServer(
            sock,
            _routes(make_wsgi_app(registry), {"/healthz": healthy, "/readyz": ready}),
            max_connections=max_connections,
            read_timeout=read_timeout,
        )
        self._thread = threading.Thread(
            target=self._server.serve, name="actord-metrics", daemon=False
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @property
    def connections(self) -> int:
        """Connections open now (reading a request, or being answered)."""
        return self._server.connections

    def start(self) -> None:
        self._server.start_workers()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving within `timeout`: scrapes in flight are cut short."""
        self._server.close(self._thread, timeout)
