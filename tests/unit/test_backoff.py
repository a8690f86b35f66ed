"""Restart backoff: capped exponential ceiling, full jitter below it."""

from __future__ import annotations

import random

from gateway.supervisor import Backoff


def test_ceiling_doubles_from_initial_and_stops_at_the_cap() -> None:
    backoff = Backoff(initial=0.5, cap=4.0)
    assert [backoff.ceiling(n) for n in range(0, 7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_ceiling_does_not_overflow_after_many_failures() -> None:
    assert Backoff(initial=1.0, cap=30.0).ceiling(100_000) == 30.0


def test_delay_is_full_jitter_between_zero_and_the_ceiling() -> None:
    backoff = Backoff(initial=1.0, cap=8.0, rng=random.Random(7))
    delays = [backoff.delay(4) for _ in range(2000)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    # Spread over the whole range, not clustered at the ceiling (that would be no jitter).
    assert min(delays) < 0.5 and max(delays) > 7.5
    assert 3.5 < sum(delays) / len(delays) < 4.5
