"""Descriptors: the soft limit raised at start, and the connection caps kept within a share
of it (`actord.daemon.limits`)."""

from __future__ import annotations

import logging
import resource

import pytest

from actord.daemon.limits import CONNECTION_SHARE, connection_caps, raise_nofile


def test_caps_that_fit_are_kept() -> None:
    assert connection_caps(65536, 64, 128) == (64, 128)
    assert connection_caps(1024, 64, 128) == (64, 128)  # 192 <= 1024 / 4


def test_caps_past_their_share_are_lowered_in_proportion(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="actord.daemon"):
        control, metrics = connection_caps(256, 64, 128)
    assert control + metrics <= 256 // CONNECTION_SHARE
    assert (control, metrics) == (21, 43)  # one to two, as configured
    message = caplog.records[-1].getMessage()
    assert "daemon.max_connections" in message and "metrics.max_connections" in message
    assert connection_caps(4, 64, 128) == (1, 1)  # never none


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        assert raise_nofile() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
