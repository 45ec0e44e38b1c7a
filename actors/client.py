"""`JobClient`: blocking, in-process access to the job store (the demo, benches, tests)."""

from __future__ import annotations

from actord import ActorRef

from .model import (
    Accept,
    Cancel,
    GetJob,
    JobInfo,
    JobRejected,
    JobSpec,
    ListJobs,
    Rejected,
    WaitJob,
)
from .validate import Roots, check_spec

__all__ = ["JobClient"]


class JobClient:
    """Submits, looks up, cancels and waits for jobs, from any thread but an actor's own.

    A submit is validated here, on the caller's thread, as the control socket's submit is:
    the store only journals what passed. A refusal raises `JobRejected` (its `code` is the
    one the control socket would answer with)."""

    def __init__(self, store: ActorRef, *, roots: Roots | None = None, timeout: float = 30.0):
        self.store = store
        self.roots = roots
        self.timeout = timeout

    def _ask(self, request: object, timeout: float | None = None) -> object:
        answer = self.store.ask(request, timeout=timeout or self.timeout)
        if isinstance(answer, Rejected):
            raise JobRejected(answer)
        return answer

    def submit(self, spec: JobSpec, idempotency_key: str | None = None) -> JobInfo:
        info = self._ask(Accept(check_spec(spec, self.roots), idempotency_key))
        assert isinstance(info, JobInfo)
        return info

    def get(self, job: str) -> JobInfo:
        info = self._ask(GetJob(job))
        assert isinstance(info, JobInfo)
        return info

    def cancel(self, job: str) -> JobInfo:
        info = self._ask(Cancel(job))
        assert isinstance(info, JobInfo)
        return info

    def list(self, limit: int = 1000) -> tuple[JobInfo, ...]:
        infos = self._ask(ListJobs(limit))
        assert isinstance(infos, tuple)
        return infos

    def wait(self, job: str, timeout: float = 300.0) -> JobInfo:
        """Block until the job has ended; its final JobInfo (as journaled)."""
        info = self._ask(WaitJob(job), timeout)
        assert isinstance(info, JobInfo)
        return info
