"""`JobClient`: blocking, in-process access to the job store (the demo, benches, tests), and
`submit_job`, the one way a submit reaches the store (the control socket's too)."""

from __future__ import annotations

from collections.abc import Callable

from actord import ActordError, ActorRef
from actord.runtime.errors import ErrorCode

from .model import (
    Accept,
    Cancel,
    GetJob,
    JobInfo,
    JobKind,
    JobRejected,
    JobSpec,
    ListJobs,
    Rejected,
    Resubmit,
    WaitJob,
)
from .ray_link import RayLink
from .validate import Roots, check_spec, output_taken, resolve

__all__ = ["JobClient", "submit_job"]


def submit_job(
    ask: Callable[[object], object],
    spec: JobSpec,
    key: str | None,
    roots: Roots | None,
    gate: Callable[[JobKind], None] | None = None,
) -> object:
    """Validate `spec` on the caller's thread (`check_spec`), then have the store accept it:
    the store's answer (`JobInfo` or `Rejected`). A retry with a known idempotency key gets
    its job back even when the spec no longer passes (its input was deleted since, say);
    otherwise a failed check raises."""
    try:
        checked = check_spec(spec, roots)
    except ActordError:
        if key is None:
            raise
        known = ask(Resubmit(resolve(spec, roots), key))
        if isinstance(known, Rejected) and known.code is ErrorCode.NOT_FOUND:
            raise  # not a retry: the check's own refusal
        return known
    if gate is not None:
        gate(checked.kind)  # the pool the job needs can take it (a Ray cluster is up)
    # Whether its output exists is looked at here too: the store never opens a user's file.
    return ask(Accept(checked, key, output_taken(checked, roots)))


class JobClient:
    """Submits, looks up, cancels and waits for jobs, from any thread but an actor's own.

    A submit is validated here, on the caller's thread, as the control socket's submit is:
    the store only journals what passed. A refusal raises `JobRejected` (its `code` is the
    one the control socket would answer with)."""

    def __init__(
        self,
        store: ActorRef,
        *,
        roots: Roots | None = None,
        timeout: float = 30.0,
        gate: Callable[[JobKind], None] | None = None,
        link: RayLink | None = None,
    ):
        self.store = store
        self.link = link  # the Ray pools' link, if any (its status, metrics)
        self.roots = roots
        self.gate = gate  # raises if the pool a job of this kind needs is unavailable
        self.timeout = timeout

    def _ask(self, request: object, timeout: float | None = None) -> object:
        answer = self.store.ask(request, timeout=timeout or self.timeout)
        if isinstance(answer, Rejected):
            raise JobRejected(answer)
        return answer

    def submit(self, spec: JobSpec, idempotency_key: str | None = None) -> JobInfo:
        answer = submit_job(self.store_ask, spec, idempotency_key, self.roots, self.gate)
        if isinstance(answer, Rejected):
            raise JobRejected(answer)
        assert isinstance(answer, JobInfo)
        return answer

    def store_ask(self, request: object) -> object:
        return self.store.ask(request, timeout=self.timeout)

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
