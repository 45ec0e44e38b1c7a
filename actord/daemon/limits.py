"""Descriptors: the daemon's soft limit, raised at start, and what the connection caps may
take of it.

Connections are the one thing a local user can multiply at will; jobs need descriptors too
(inputs, outputs, temporary files, a parse worker's pipes). So the control socket's and the
metrics endpoint's caps together take at most a quarter of the soft limit, and the rest stays
for the jobs: a flood of connections is refused at the caps, never paid for by a job.
"""

from __future__ import annotations

import logging
import resource
from typing import Final

__all__ = ["CONNECTION_SHARE", "connection_caps", "raise_nofile"]

_log: Final = logging.getLogger("actord.daemon")
CONNECTION_SHARE: Final = 4  # the caps together take at most 1/CONNECTION_SHARE of the limit


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (systemd's unit sets both with
    LimitNOFILE=; a shell's `ulimit -n` may leave room); returns the soft limit in force.
    A sandbox that forbids it (SystemCallFilter=~@resources) leaves the limit as it is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as error:
            _log.debug("could not raise the descriptor limit from %d to %d: %s", soft, hard, error)
        else:
            soft = hard
    return soft


def connection_caps(soft: int, control: int, metrics: int) -> tuple[int, int]:
    """The control socket's and the metrics endpoint's connection caps under a soft limit
    of `soft` descriptors: as configured when they fit in its share, else both lowered in
    proportion (logged, naming the keys)."""
    budget = max(2, soft // CONNECTION_SHARE)
    if control + metrics <= budget:
        return control, metrics
    scaled_control = max(1, control * budget // (control + metrics))
    scaled_metrics = max(1, budget - scaled_control)
    _log.warning(
        "the descriptor limit is %d: connections capped at %d on the control socket "
        "(daemon.max_connections %d) and %d on the metrics endpoint (metrics.max_connections "
        "%d); raise LimitNOFILE= for more",
        soft,
        scaled_control,
        control,
        scaled_metrics,
        metrics,
    )
    return scaled_control, scaled_metrics
