"""Stress: producers, resizes, restarts, stops and ask storms against one system, with every
message accounted for (handled XOR dead-lettered, exactly once), every ask ended in time, and
every runtime thread joined by system.stop. The workload and its invariants are in
bench/stress.py, which runs the same thing for longer (``python bench/stress.py --seconds 60``).
"""

from __future__ import annotations

import pytest

from bench.stress import run


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [1, 2, 3, 4])  # odd seeds stop the system at once, even drain
def test_every_message_is_handled_or_dead_lettered_exactly_once(seed: int) -> None:
    report = run(seed, seconds=0.5)
    assert not report.violations, "\n".join(report.violations[:20])
    assert report.counts["handled"] > 0
    assert report.counts["dead letters: failed"] > 0
