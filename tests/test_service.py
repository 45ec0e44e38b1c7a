"""`JobService.status`: the store's job counts are kept for a moment and refreshed by one
poller at a time; a submit or cancel makes the next poll ask again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from actord import ActorSystem
from actord.daemon.config import Config
from actors import service as service_module
from actors.service import JobService
from actors.store import JobCounts, StoreStatus


class _Store:
    """Answers `StoreStatus` as the store would, counting the asks; `hold` keeps an ask
    waiting (a refresh in flight) until it is set."""

    def __init__(self) -> None:
        self.asked = 0
        self.queued = 0
        self.entered = threading.Event()
        self.hold: threading.Event | None = None

    def ask(self, request: object, timeout: float = 30.0) -> JobCounts:
        assert isinstance(request, StoreStatus)
        self.asked += 1
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(10)
        return JobCounts(queued=self.queued, running=0, done=0, failed=0, cancelled=0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(service_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


@pytest.fixture
def service(clock: list[float]) -> Iterator[tuple[JobService, _Store]]:
    store = _Store()
    with ActorSystem("service-test") as system:
        jobs = JobService(system, Config())
        jobs._ask = lambda request, timeout=30.0: store.ask(request, timeout)  # type: ignore[method-assign]
        yield jobs, store


def test_a_burst_of_polls_asks_the_store_once_until_the_counts_are_old(
    service: tuple[JobService, _Store], clock: list[float]
) -> None:
    jobs, store = service
    store.queued = 2
    answers = [jobs.status() for _ in range(50)]
    assert store.asked == 1
    assert all(a["jobs_queued"] == 2 for a in answers)
    store.queued = 5
    clock[0] += service_module._COUNTS_FRESH / 2
    assert jobs.status()["jobs_queued"] == 2 and store.asked == 1  # still fresh
    clock[0] += service_module._COUNTS_FRESH
    assert jobs.status()["jobs_queued"] == 5 and store.asked == 2  # old: asked again


def test_a_submit_or_cancel_makes_the_next_poll_ask_again(
    service: tuple[JobService, _Store],
) -> None:
    jobs, store = service
    assert jobs.status()["jobs_queued"] == 0
    store.queued = 1
    jobs._stale_counts()  # what submit and cancel do once the store has answered them
    assert jobs.status()["jobs_queued"] == 1 and store.asked == 2


def test_pollers_racing_one_refresh_ask_the_store_once(
    service: tuple[JobService, _Store],
) -> None:
    jobs, store = service
    store.hold = threading.Event()
    store.queued = 7
    started = threading.Barrier(9)
    answers: list[dict[str, Any]] = []

    def poll() -> None:
        started.wait(10)
        answers.append(jobs.status())

    threads = [threading.Thread(target=poll, name=f"poller-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    started.wait(10)
    assert store.entered.wait(10)  # one poller is refreshing; the others find it under way
    store.hold.set()
    for thread in threads:
        thread.join(10)
    assert len(answers) == 8 and all(a["jobs_queued"] == 7 for a in answers)
    assert store.asked == 1
