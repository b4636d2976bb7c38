"""The statistics of the evaluation and the A/B reports (evaluate/stats.py): exact McNemar, a seeded bootstrap,
Wilson intervals, percentiles. Needs no torch."""

from __future__ import annotations

import math

import pytest

from clawtune.evaluate.stats import bootstrap_ci, mcnemar_exact, percentile, wilson


def test_statistics() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)  # exact binomial, two-sided
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(20, 3) < 0.001
    low, high = bootstrap_ci([1.0] * 30 + [0.0] * 70)
    assert 0.2 < low < 0.3 < high < 0.4
    assert bootstrap_ci([1.0] * 30 + [0.0] * 70) == (low, high)  # seeded
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    wl, wh = wilson(30, 100)
    assert wl == pytest.approx(0.2189, abs=1e-3) and wh == pytest.approx(0.3958, abs=1e-3)
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 95) == 5
