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


def _ask(server: MetricsServer, method: str, path: str) -> tuple[str, dict[str, str], bytes]:
    """One raw request: the status line, the headers (lower-case names), the body."""
    with _connect(server) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head, _, body = _answer(sock).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


class _Probe:
    """What a probe says: None (all well) or why not; changed by the test."""

    def __init__(self) -> None:
        self.why: str | None = None

    def __call__(self) -> str | None:
        return self.why


def test_metrics_healthz_readyz_and_404_are_separate_paths(registry: CollectorRegistry) -> None:
    healthy, ready = _Probe(), _Probe()
    server = MetricsServer(registry, "127.0.0.1", 0, healthy=healthy, ready=ready)
    server.start()
    try:
        status, _, body = _ask(server, "GET", "/metrics")
        assert status == "HTTP/1.1 200 OK" and b"scraped_things_total 1.0" in body
        for path in ("/healthz", "/readyz"):
            status, headers, body = _ask(server, "GET", path)
            assert (status, body) == ("HTTP/1.1 200 OK", b"ok\n")
            assert headers["content-type"].startswith("text/plain")
        healthy.why = "unhealthy: stuck on one message: parser#1"
        ready.why = "draining: actord is stopping and takes no new jobs"
        status, _, body = _ask(server, "GET", "/healthz")
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert body == b"unhealthy: stuck on one message: parser#1\n"
        status, _, body = _ask(server, "GET", "/readyz?verbose")
        assert status == "HTTP/1.1 503 Service Unavailable" and body.startswith(b"draining")
        for path in ("/", "/healthz/x", "/metrics/", "/favicon.ico"):
            status, _, body = _ask(server, "GET", path)
            assert status == "HTTP/1.1 404 Not Found", path
            assert b"scraped_things" not in body
    finally:
        server.stop()


def test_head_answers_as_get_without_a_body_and_other_methods_get_405(
    small: MetricsServer,
) -> None:
    for path in ("/metrics", "/healthz", "/readyz", "/nope"):
        got = _ask(small, "GET", path)
        status, headers, body = _ask(small, "HEAD", path)
        assert (status, body) == (got[0], b""), path
        assert headers.keys() == got[1].keys()
        assert headers["content-length"] == str(len(got[2])), path
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, headers, body = _ask(small, method, "/metrics")
        assert status == "HTTP/1.1 405 Method Not Allowed", method
        assert headers["allow"] == "GET, HEAD" and b"scraped_things" not in body
