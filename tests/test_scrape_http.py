"""The metrics endpoint's HTTP server (`scrape_http`): real TCP on loopback, real HTTP, a real
descriptor limit. No thread per connection, a cap that answers 503, a read timeout, and an
accept loop that survives EMFILE."""

from __future__ import annotations

import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from actord.daemon.metrics import MetricsServer

from .conftest import WAIT
from .test_control_server import _Seen, no_free_descriptors

_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("scraped_things", "A counter", registry=registry).inc()
    return registry


def _server(registry: CollectorRegistry, **options: float) -> MetricsServer:
    server = MetricsServer(registry, "127.0.0.1", 0, **options)  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture
def small(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    server = _server(registry, max_connections=3, read_timeout=5.0)
    try:
        yield server
    finally:
        server.stop()


def _connect(server: MetricsServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=WAIT)
    sock.settimeout(WAIT)
    return sock


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        assert data, "reset before any answer"  # a request it never read: reset after it
    return data


def _scrape(server: MetricsServer) -> bytes:
    with _connect(server) as sock:
        sock.sendall(_REQUEST)
        return _answer(sock)


def _threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("actord-metrics"))


def test_a_scrape_is_served_and_idle_connections_cost_no_thread(small: MetricsServer) -> None:
    threads = _threads()
    idle = [_connect(small) for _ in range(2)]
    try:
        answer = _scrape(small)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Connection: close" in answer and b"scraped_things_total 1.0" in answer
        assert _threads() == threads  # the selector and its render threads: nothing more
    finally:
        for sock in idle:
            sock.close()


def test_at_the_cap_the_oldest_idle_connection_makes_room(small: MetricsServer) -> None:
    idle = [_connect(small) for _ in range(3)]  # the cap, all idle
    try:
        assert b"200 OK" in _scrape(small).split(b"\r\n", 1)[0]
        assert _answer(idle[0]).startswith(b"HTTP/1.1 503 ")  # the oldest made room
    finally:
        for sock in idle:
            sock.close()


def test_past_the_cap_with_every_slot_in_a_request_a_newcomer_gets_503(
    small: MetricsServer,
) -> None:
    started = [_connect(small) for _ in range(3)]
    try:
        for sock in started:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # a request begun, never ended
        # Accepted before the newcomer (the kernel queues in order); what they sent is
        # read before any of them could pass for idle.
        answer = _scrape(small)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer[:80]
        assert b"Retry-After: 1" in answer
        for sock in started:  # and those begun still get their answer when they end it
            sock.sendall(b"\r\n")
            assert _answer(sock).startswith(b"HTTP/1.1 200 OK")
    finally:
        for sock in started:
            sock.close()


def test_a_client_that_never_ends_its_request_is_closed_at_the_read_timeout(
    registry: CollectorRegistry,
) -> None:
    server = _server(registry, read_timeout=0.2)
    try:
        with _connect(server) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            assert _answer(sock) == b""  # closed without an answer
        assert b"200 OK" in _scrape(server)
    finally:
        server.stop()


def test_the_endpoint_survives_running_out_of_descriptors(registry: CollectorRegistry) -> None:
    seen = _Seen("cannot accept", "accepting connections again")
    logger = logging.getLogger("actord.metrics")
    logger.addHandler(seen)
    server = _server(registry)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # made before the limit
    client.settimeout(WAIT)
    try:
        with no_free_descriptors():
            client.connect((server.host, server.port))  # queued; accept() fails: EMFILE
            assert seen.events["cannot accept"].wait(WAIT)
            threading.Event().wait(0.3)  # an episode long enough for several retries
        assert seen.events["accepting connections again"].wait(WAIT)
        client.sendall(_REQUEST)
        assert _answer(client).startswith(b"HTTP/1.1 200 OK")  # served once it could be
        assert sum("cannot accept" in m for m in seen.messages) == 1  # once per episode
        with urllib.request.urlopen(server.url, timeout=WAIT) as response:
            assert response.status == 200
    finally:
        logger.removeHandler(seen)
        client.close()
        server.stop()


def test_a_bad_request_and_a_huge_one_get_an_error(small: MetricsServer) -> None:
    with _connect(small) as sock:
        sock.sendall(b"nonsense\r\n\r\n")
        assert _answer(sock).startswith(b"HTTP/1.1 400 ")
    with _connect(small) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20_000 + b"\r\n")
        assert _answer(sock).startswith(b"HTTP/1.1 431 ")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            urllib.request.Request(small.url, method="POST", data=b"x"), timeout=WAIT
        )
    assert refused.value.code == 405
