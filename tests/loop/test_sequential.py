"""The A/B statistics: the papers' closed forms, and error rates under peeking measured on seeded simulations.

Scaled-down versions of bench/ab_sim.py (1,000 experiments each there): small enough for the suite, large enough that
a broken test (a fixed-horizon p-value read at every step, say) fails them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from clawtune.loop.sequential import (
    Unit,
    asymptotic_sample_size,
    asymptotic_sequence,
    best_rho2,
    betting_log_capital,
    betting_sample_size,
    betting_sequence,
    fixed_horizon_test,
    fixed_sample_size,
    lambert_w_minus1,
    margin,
    mixture_p_value,
)


def binary_experiments(rate_a: float, rate_b: float, n: int, count: int, seed: int, share_b: float = 0.5):
    rng = np.random.default_rng(seed)
    z = (rng.random((count, n)) < share_b).astype(float)
    y = (rng.random((count, n)) < np.where(z == 1, rate_b, rate_a)).astype(float)
    return z, y, np.full_like(z, share_b)


def upper_binomial(rate: float, count: int) -> float:
    """The 99.9% upper bound of an observed share when the truth is `rate` (normal approximation)."""
    return rate + 3.1 * math.sqrt(rate * (1 - rate) / count)


def test_lambert_w_lower_branch() -> None:
    assert lambert_w_minus1(-0.1) == pytest.approx(-3.577152063957297, rel=1e-12)
    for x in (-1 / math.e + 1e-9, -0.3, -1e-3, -1e-30):
        w = lambert_w_minus1(x)
        assert w <= -1
        assert w * math.exp(w) == pytest.approx(x, rel=1e-9)
    with pytest.raises(ValueError):
        lambert_w_minus1(0.1)


def test_rho2_is_the_papers_optimum_and_close_to_its_approximation() -> None:
    alpha, t_opt = 0.05, 500
    rho2 = best_rho2(t_opt, alpha)
    assert margin(t_opt, rho2, alpha) < margin(t_opt, rho2 * 1.1, alpha)
    assert margin(t_opt, rho2, alpha) < margin(t_opt, rho2 * 0.9, alpha)
    approx = (2 * math.log(1 / alpha) + math.log(1 + 2 * math.log(1 / alpha))) / t_opt
    assert rho2 == pytest.approx(approx, rel=0.1)


def test_mixture_p_value_inverts_the_margin() -> None:
    rho2 = best_rho2(200, 0.05)
    for t in (50, 200, 5000):
        edge = 2.0 * margin(t, rho2, 0.05)  # a mean exactly on the boundary for sd 2
        assert mixture_p_value(t, edge, 2.0, rho2) == pytest.approx(0.05, rel=1e-9)
        assert mixture_p_value(t, edge * 1.01, 2.0, rho2) < 0.05 < mixture_p_value(t, edge * 0.99, 2.0, rho2)


def test_betting_a_a_watched_at_every_session_stays_under_alpha() -> None:
    count, n = 400, 800
    capital = betting_log_capital(*binary_experiments(0.6, 0.6, n, count, seed=1), np.zeros(1), 0.0, 1.0)
    false_positives = float(np.mean(capital.first_crossing[:, 0] <= n))
    assert false_positives <= upper_binomial(0.05, count)


def test_betting_stays_valid_for_rare_events_on_a_small_canary() -> None:
    """The case where a normal approximation fails: 3% error rates, 10% of traffic on B."""
    count, n = 400, 2000
    capital = betting_log_capital(*binary_experiments(0.03, 0.03, n, count, 2, share_b=0.1), np.zeros(1), 0.0, 1.0)
    assert float(np.mean(capital.first_crossing[:, 0] <= n)) <= upper_binomial(0.05, count)


def test_betting_reaches_the_power_it_predicts() -> None:
    rate_a, effect = 0.5, 0.2
    n = betting_sample_size(rate_a, effect, simulations=200, seed=3)
    assert 50 < n < 1000
    count = 400
    capital = betting_log_capital(*binary_experiments(rate_a, rate_a + effect, n, count, 4), np.zeros(1), 0.0, 1.0)
    called_b = (capital.first_crossing[:, 0] <= n) & (capital.sign_at_crossing[:, 0] > 0)
    assert float(np.mean(called_b)) >= 0.8 - 3.1 * math.sqrt(0.16 / count)


def test_betting_sequence_covers_the_truth_and_says_which_arm() -> None:
    rng = np.random.default_rng(5)
    missed = 0
    for _ in range(40):
        arms = rng.random(300) < 0.5
        values = rng.random(300) < np.where(arms, 0.7, 0.5)
        units = [Unit("B" if b else "A", float(v)) for b, v in zip(arms, values, strict=True)]
        state = betting_sequence(units)
        missed += not state.lower <= 0.2 <= state.upper
    assert missed <= 6  # 5% of 40 is 2; the sequence is conservative
    units = [Unit("B" if i % 2 else "A", float(i % 2 or i % 3 == 0)) for i in range(400)]
    state = betting_sequence(units)
    assert state.n_a == state.n_b == 200
    assert state.mean_b == 1.0
    assert state.estimate > 0.5 and state.lower > 0 and state.p_value < 1e-6
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        betting_sequence([Unit("A", 2.0)])


def test_a_canary_ramp_keeps_the_estimate_unbiased() -> None:
    """B's share moves 10% -> 50% while its outcomes are the same as A's: AIPW weights by the share at assignment."""
    rng = np.random.default_rng(6)
    estimates = []
    for _ in range(200):
        shares = np.repeat([0.1, 0.5], 300)
        arms = rng.random(600) < shares
        values = rng.random(600) < 0.4
        units = [Unit("B" if b else "A", float(v), float(s)) for b, v, s in zip(arms, values, shares, strict=True)]
        estimates.append(asymptotic_sequence(units).estimate)
    assert abs(float(np.mean(estimates))) < 0.01


def test_asymptotic_a_a_for_latency_stays_under_alpha() -> None:
    rng = np.random.default_rng(7)
    count, n = 200, 600
    rejected = 0
    for _ in range(count):
        arms = rng.random(n) < 0.5
        latency = rng.lognormal(6.0, 0.5, n)
        rejected += (
            asymptotic_sequence([Unit("B" if b else "A", float(v)) for b, v in zip(arms, latency, strict=True)]).p_value
            < 0.05
        )
    assert rejected / count <= upper_binomial(0.05, count)


def test_sample_sizes_fixed_and_sequential() -> None:
    # The textbook two-proportion figure: 60% vs 70%, alpha 0.05, power 0.8: about 354 per arm.
    sd_a, sd_b = math.sqrt(0.24), math.sqrt(0.21)
    assert fixed_sample_size(0.1, sd_a, sd_b) == 707
    sequential = asymptotic_sample_size(0.1, sd_a, sd_b)
    assert 707 < sequential < 3 * 707  # the price of looking at any time
    assert asymptotic_sample_size(0.05, sd_a, sd_b) > 3 * sequential
    with pytest.raises(ValueError):
        asymptotic_sample_size(0.0, sd_a, sd_b)


def test_fixed_horizon_test() -> None:
    estimate, lower, upper, p = fixed_horizon_test([0.0, 1.0] * 50, [1.0, 1.0, 0.0] * 50)
    assert estimate == pytest.approx(2 / 3 - 0.5)
    assert lower < estimate < upper
    assert 0 < p < 0.05
    assert fixed_horizon_test([1.0], [0.0, 1.0])[3] == 1.0
