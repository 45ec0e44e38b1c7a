"""The Prometheus collector and its HTTP endpoint, scraped for real."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actord import Actor, ActorSystem, Message
from actord.daemon.metrics import DaemonCollector, MetricsServer, RuntimeCollector

from .conftest import WAIT


class Burner(Actor):
    def handle(self, message: Message) -> None:
        deadline = time.thread_time() + message.payload
        while time.thread_time() < deadline:
            pass
        if message.correlation_id is not None:
            self.reply(message, threading.get_native_id())


@pytest.fixture
def registry(system: ActorSystem) -> CollectorRegistry:
    registry = CollectorRegistry()  # each test its own
    registry.register(RuntimeCollector(system.stats, system.channel))
    return registry


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_per_actor_samples_come_from_the_runtime(
    system: ActorSystem, registry: CollectorRegistry
) -> None:
    ref = system.spawn(Burner, "burner")
    for _ in range(5):
        ref.tell(0.0)
    ref.ask(0.2, timeout=WAIT)
    system.channel.send("nobody", "lost", sender="test")  # one dead letter
    samples = _samples(generate_latest(registry).decode())

    def k(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted({"actor": "burner", "pool": "burner", **labels}.items()))

    assert samples[k("actord_actor_messages_total", type="data")] == 5
    assert samples[k("actord_actor_up")] == 1.0
    assert samples[k("actord_actor_mailbox_capacity")] == 1024
    user = samples[k("actord_actor_cpu_seconds_total", mode="user")]
    system_time = samples[k("actord_actor_cpu_seconds_total", mode="system")]
    assert user + system_time >= 0.15  # its own thread's 0.2 s burn, by native thread id
    assert samples[k("actord_actor_handle_seconds_count")] >= 5
    inf = samples[k("actord_actor_handle_seconds_bucket", le="+Inf")]
    assert inf == samples[k("actord_actor_handle_seconds_count")]
    assert samples[("actord_dead_letters_total", (("reason", "unknown_recipient"),))] == 1


def test_buckets_are_cumulative_and_bounded(
    system: ActorSystem, registry: CollectorRegistry
) -> None:
    ref = system.spawn(Burner, "b")
    ref.ask(0.0, timeout=WAIT)
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    buckets = [
        s for s in families["actord_actor_queue_wait_seconds"].samples if s.name.endswith("_bucket")
    ]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)  # cumulative
    assert len(buckets) == 14  # 13 bounds and +Inf: a bounded label set


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    srv = MetricsServer(registry, port=0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_real_http_scrape_on_loopback(system: ActorSystem, server: MetricsServer) -> None:
    system.spawn(Burner, "scraped").ask(0.0, timeout=WAIT)
    assert server.host == "127.0.0.1"
    with urllib.request.urlopen(server.url, timeout=WAIT) as response:
        body = response.read().decode()
        assert response.status == 200
    assert 'actord_actor_up{actor="scraped",pool="scraped"} 1.0' in body


def test_stop_joins_the_server_thread(registry: CollectorRegistry) -> None:
    srv = MetricsServer(registry, port=0)
    srv.start()
    srv.stop()
    assert not [t for t in threading.enumerate() if t.name == "actord-metrics"]


def test_an_idle_client_holds_up_neither_scrapes_nor_stop(registry: CollectorRegistry) -> None:
    server = MetricsServer(registry, "127.0.0.1", 0)
    server.start()
    idle = socket.create_connection((server.host, server.port))  # connects, sends nothing
    try:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert b"actord_actor_up" in response.read()
    finally:
        started = time.monotonic()
        server.stop(timeout=1.0)
        idle.close()
    # Within the stop's own timeout: the idle connection is shut down, not waited out (5 s).
    assert time.monotonic() - started < 1.0
    assert not [t for t in threading.enumerate() if t.name.startswith("actord-metrics")]


def test_worker_process_cpu_never_goes_down() -> None:
    workers: list[psutil.Process] = []  # only this test's child (others may be running)
    collector = DaemonCollector("test", lambda: 1, dict, lambda: 0, children=lambda: workers)

    def cpu() -> float:
        families = {f.name: f for f in collector.collect()}
        return sum(s.value for s in families["actord_worker_process_cpu_seconds"].samples)

    before = cpu()
    burn = (
        "import sys, time\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\n"
        "print('burnt', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    workers.append(psutil.Process(child.pid))
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"burnt\n"  # it has used 0.3 s of CPU and lives on
        seen = cpu()
        assert seen >= before + 0.25
    finally:
        child.communicate(b"", timeout=30)  # now it exits (and is reaped: gone from psutil)
    assert cpu() >= seen  # the counter keeps what the exited worker used


def test_short_lived_actors_count_under_their_role_and_never_go_down(
    system: ActorSystem,
) -> None:
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(system.stats, system.channel, retired=system.retired))

    def reader_messages() -> float:
        samples = _samples(generate_latest(registry).decode())
        key = (
            "actord_actor_messages_total",
            (("actor", "job.reader"), ("pool", "job.reader"), ("type", "data")),
        )
        assert not any("log-" in str(k) for k in samples), "a job's own name leaked into labels"
        return samples[key]

    seen = []
    for job in (1, 2):
        ref = system.spawn(Burner, f"log-{job}.reader", role="job.reader")
        for _ in range(3):
            ref.tell(0.0)
        ref.ask(0.05, timeout=WAIT)  # 50 ms of CPU: above the kernel's accounting tick
        seen.append(reader_messages())  # while it runs
        ref.stop(timeout=WAIT)
        seen.append(reader_messages())  # after it is gone: kept
    assert seen == [3, 3, 6, 6]  # data messages (the ask is a command)
    samples = _samples(generate_latest(registry).decode())
    cpu = sum(
        samples[
            (
                "actord_actor_cpu_seconds_total",
                (("actor", "job.reader"), ("mode", mode), ("pool", "job.reader")),
            )
        ]
        for mode in ("user", "system")
    )
    assert cpu >= 0.05  # two stopped threads' own CPU (50 ms each), taken as they exited
