"""The A/B statistics on simulated streams: false positives under peeking, and power at the predicted sample size.

No gateway, simulated time: each experiment is a stream of sessions, randomised to A or B, and the test is read after
EVERY session (the harshest peeking there is). In the same run, the baseline every dashboard without sequential
statistics gives: a fixed-horizon z test read at every refresh (every 10 sessions).

    python bench/ab_sim.py                 # 1,000 experiments per scenario (about 2 minutes on 2 cores)
    python bench/ab_sim.py --experiments 200
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from clawtune.loop.sequential import (
    Unit,
    asymptotic_sequence,
    betting_log_capital,
    betting_sample_size,
)


def binary(rate_a: float, rate_b: float, n: int, count: int, seed: int, share_b: float = 0.5):
    rng = np.random.default_rng(seed)
    z = (rng.random((count, n)) < share_b).astype(float)
    y = (rng.random((count, n)) < np.where(z == 1, rate_b, rate_a)).astype(float)
    return z, y, np.full_like(z, share_b)


def interval(hits: int, count: int) -> str:
    """Wilson 95% interval of a share."""
    z = 1.959963984540054
    p = hits / count
    centre = (p + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return f"{100 * p:.1f}% [{100 * (centre - half):.1f}-{100 * (centre + half):.1f}]"


def naive_peeking(z: np.ndarray, y: np.ndarray, every: int = 10, min_per_arm: int = 20) -> np.ndarray:
    """The baseline: a two-sample z test at 5%, read every `every` sessions; True where it ever 'found' a difference."""
    found = np.zeros(z.shape[0], dtype=bool)
    for n in range(every, z.shape[1] + 1, every):
        zb, yb = z[:, :n], y[:, :n]
        n_b = zb.sum(1)
        n_a = n - n_b
        ok = (n_a >= min_per_arm) & (n_b >= min_per_arm)
        mean_b = (yb * zb).sum(1) / np.maximum(n_b, 1)
        mean_a = (yb * (1 - zb)).sum(1) / np.maximum(n_a, 1)
        var = mean_b * (1 - mean_b) / np.maximum(n_b, 1) + mean_a * (1 - mean_a) / np.maximum(n_a, 1)
        stat = np.abs(mean_b - mean_a) / np.sqrt(np.maximum(var, 1e-12))
        found |= ok & (stat > 1.959963984540054)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    args = parser.parse_args()
    count = args.experiments
    started = time.perf_counter()
    rows = []

    # Satisfaction (0/1 per session), the primary metric: 60% on A.
    rate, effect = 0.6, 0.1
    n = betting_sample_size(rate, effect, seed=0)
    z, y, pi = binary(rate, rate, n, count, seed=1)
    capital = betting_log_capital(z, y, pi, np.zeros(1), 0.0, 1.0)
    fp = int((capital.first_crossing[:, 0] <= n).sum())
    naive = int(naive_peeking(z, y).sum())
    rows.append(
        (f"A/A, satisfaction 60%, 50:50, {n} sessions", "false positives", interval(fp, count), interval(naive, count))
    )
    z, y, pi = binary(rate, rate + effect, n, count, seed=2)
    capital = betting_log_capital(z, y, pi, np.zeros(1), 0.0, 1.0)
    power = int(((capital.first_crossing[:, 0] <= n) & (capital.sign_at_crossing[:, 0] > 0)).sum())
    rows.append(
        (f"B better by 10 points, {n} sessions (the predicted size)", "B called better", interval(power, count), "-")
    )

    # A guardrail's rare event on a 10% canary.
    n_canary = 3000
    z, y, pi = binary(0.03, 0.03, n_canary, count, seed=3, share_b=0.1)
    capital = betting_log_capital(z, y, pi, np.zeros(1), 0.0, 1.0)
    fp = int((capital.first_crossing[:, 0] <= n_canary).sum())
    naive = int(naive_peeking(z, y).sum())
    rows.append(
        (
            f"A/A, error rate 3%, 90:10 canary, {n_canary} sessions",
            "false positives",
            interval(fp, count),
            interval(naive, count),
        )
    )

    # Latency (unbounded): the asymptotic sequence, read at every session after its burn-in.
    rng = np.random.default_rng(4)
    n_latency = 1000
    rejected = 0
    for _ in range(count):
        arms = rng.random(n_latency) < 0.5
        latency = rng.lognormal(6.0, 0.5, n_latency)
        units = [Unit("B" if b else "A", float(v)) for b, v in zip(arms, latency, strict=True)]
        rejected += asymptotic_sequence(units).p_value < 0.05
    rows.append(
        (f"A/A, latency lognormal, 50:50, {n_latency} sessions", "false positives", interval(rejected, count), "-")
    )

    # A guardrail's breach: B fails 5% of its sessions, A none, on a 10% canary. The breach is the always-valid
    # confidence sequence of B - A lying above the threshold (the worsening allowed), i.e. the test of B - A = threshold.
    n_breach = 8000
    z, y, pi = binary(0.0, 0.05, n_breach, count, seed=5, share_b=0.1)
    detection = []
    for threshold in (0.0, 0.01):
        capital = betting_log_capital(z, y, pi, np.array([threshold]), 0.0, 1.0)
        hit = (capital.first_crossing[:, 0] <= n_breach) & (capital.sign_at_crossing[:, 0] > 0)
        times = np.sort(np.where(hit, capital.first_crossing[:, 0], n_breach + 1))
        median, p90 = int(times[count // 2]), int(times[int(0.9 * count)])
        detection.append((threshold, median, p90, interval(int(hit.sum()), count)))

    print(f"{count} seeded experiments per row; every test read after every session (naive z test: every 10)\n")
    print("| scenario | measured | clawtune | naive z test, peeked |")
    print("|---|---|---|---|")
    for scenario, what, ours, theirs in rows:
        print(f"| {scenario} | {what} | {ours} | {theirs} |")
    print(
        f"\nGuardrail breach, B fails 5% of sessions and A 0%, 10% canary ({count} experiments, {n_breach} sessions):\n"
    )
    print("| threshold (worsening allowed) | sessions to the breach, median | 90th percentile | breached by the end |")
    print("|---|---|---|---|")
    for threshold, median, p90, share in detection:
        cap = lambda v: f"> {n_breach}" if v > n_breach else str(v)  # noqa: E731
        print(f"| {100 * threshold:.0f} points | {cap(median)} | {cap(p90)} | {share} |")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
