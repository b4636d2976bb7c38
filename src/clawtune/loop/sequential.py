"""Always-valid A/B statistics: tests and confidence sequences that may be read after every session.

Each randomised unit is a session (the unit of assignment: requests of one conversation are not independent). A unit
contributes an augmented inverse-propensity-weighted (AIPW) term
    psi_i = (m_B - m_A) + Z_i / pi_i * (Y_i - m_B) - (1 - Z_i) / (1 - pi_i) * (Y_i - m_A),
with Z_i = 1 for arm B, pi_i the probability B had when the unit was assigned (a canary ramp changes it), and m_A, m_B
the arms' means over EARLIER units only. Because m_A and m_B are predictable and pi_i is known, E[psi_i | past] is the
true difference mean(B) - mean(A) at every step, whatever the split: the sequence of psi is what both methods test.

- Bounded outcomes (a proportion, a share of a session's requests): testing by betting (Waudby-Smith and Ramdas,
  "Estimating means of bounded random variables by betting", JRSS-B 2024). For each candidate difference d, a gambler
  bets on psi_i - d with a predictable stake (their aGRAPA rule, truncated at half the stake that could ruin him); the
  average of a bet up and a bet down is a nonnegative martingale when d is the truth, so by Ville's inequality its
  running maximum exceeds 1/alpha with probability at most alpha, however often anyone looks. The p-value is
  1 / (largest capital so far) at d = 0; the confidence sequence is every d whose capital never reached 1/alpha. Exact,
  not asymptotic: it holds for rare events on a 10% canary, where a normal approximation gives false alarms.
- Unbounded outcomes (latency, tokens, cost): the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha,
  Kennedy and Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences" (Annals of Statistics
  2024): the running mean of psi plus or minus its running standard deviation times the Robbins normal-mixture margin.

Why not a library: `confseq` (Howard et al.) has no wheel for this Python and its build needs Boost; `savvi` brings
cvxpy and covers Bernoulli processes and regressions, not AIPW differences under a changing split; `spotify-confidence`
brings pandas and statsmodels and its sequential mode is group-sequential, with a maximum sample size fixed up front;
`expectation` has no release for current Python. Each method here is a few lines, tested against the papers' closed
forms and by simulation (bench/ab_sim.py: false positives under peeking, power at the predicted size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

ARMS = ("A", "B")


@dataclass(frozen=True)
class Unit:
    """One randomised unit (a session): its arm, its outcome, and the probability that it would be sent to B."""

    arm: str
    value: float
    propensity_b: float = 0.5


def lambert_w_minus1(x: float) -> float:
    """The lower branch W_{-1}(x) of Lambert's W on [-1/e, 0), by Halley's iteration (no scipy for one function)."""
    if not -1 / math.e <= x < 0:
        raise ValueError(f"W_-1 is defined on [-1/e, 0), not at {x}")
    if x == -1 / math.e:
        return -1.0
    w = math.log(-x) - math.log(-math.log(-x)) if x > -0.25 else -1 - math.sqrt(2 * (1 + math.e * x))
    for _ in range(100):
        ew = math.exp(w)
        f = w * ew - x
        step = f / (ew * (w + 1) - (w + 2) * f / (2 * w + 2))
        w -= step
        if abs(step) <= 1e-15 * (1 + abs(w)):
            break
    return w


def best_rho2(t_opt: float, alpha: float) -> float:
    """The mixture variance that makes the boundary tightest at `t_opt` units (the paper's exact optimum)."""
    return (-lambert_w_minus1(-(alpha**2) * math.exp(alpha**2 - 1)) - 1) / t_opt


def margin(t: float, rho2: float, alpha: float) -> float:
    """Half-width of the two-sided boundary for unit variance after t units: sqrt(2(t r + 1)/(t^2 r) log(sqrt(t r + 1)/alpha))."""
    return math.sqrt(2 * (t * rho2 + 1) / (t * t * rho2) * math.log(math.sqrt(t * rho2 + 1) / alpha))


def mixture_p_value(t: float, mean: float, sd: float, rho2: float) -> float:
    """The smallest alpha at which the boundary after t units excludes 0 (the inverse of `margin`)."""
    if sd <= 0:
        return 1.0  # no spread seen yet: no evidence either way
    exponent = -(t * t * rho2 * mean * mean) / (2 * sd * sd * (t * rho2 + 1))
    return min(1.0, math.sqrt(t * rho2 + 1) * math.exp(exponent))


@dataclass(frozen=True)
class SequenceState:
    """Where an experiment stands after its units so far."""

    method: str  # "betting" (exact, bounded outcomes) or "asymptotic" (unbounded outcomes)
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    estimate: float  # mean(B) - mean(A), the running mean of the AIPW terms
    lower: float  # the confidence sequence at this moment (the intersection over every time so far)
    upper: float
    p_value: float  # always valid: 1 / the largest capital so far, or the running minimum of the mixture p-value
    sd: float  # standard deviation of the AIPW terms (the sample-size forecast uses it)

    @property
    def n(self) -> int:
        return self.n_a + self.n_b


def _arrays(units: Sequence[Unit]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = np.zeros(len(units))
    y = np.zeros(len(units))
    pi = np.zeros(len(units))
    for i, unit in enumerate(units):
        if unit.arm not in ARMS:
            raise ValueError(f"arm must be A or B, not {unit.arm!r}")
        if not 0 < unit.propensity_b < 1:
            raise ValueError(f"the probability of arm B must lie strictly between 0 and 1, not {unit.propensity_b}")
        z[i] = unit.arm == "B"
        y[i] = unit.value
        pi[i] = unit.propensity_b
    return z, y, pi


def aipw_terms(z: np.ndarray, y: np.ndarray, pi: np.ndarray, prior: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The AIPW terms psi for experiments laid out as rows (S, n), with the arms' predictable means m_A and m_B.

    m_A and m_B before each unit are the arms' means over earlier units (the pooled mean, or `prior`, for an arm with
    none yet).
    """
    count_b = np.cumsum(z, axis=1) - z
    count_a = np.cumsum(1 - z, axis=1) - (1 - z)
    sum_b = np.cumsum(y * z, axis=1) - y * z
    sum_a = np.cumsum(y * (1 - z), axis=1) - y * (1 - z)
    seen = count_a + count_b
    pooled = np.where(seen > 0, (sum_a + sum_b) / np.maximum(seen, 1), prior)
    m_a = np.where(count_a > 0, sum_a / np.maximum(count_a, 1), pooled)
    m_b = np.where(count_b > 0, sum_b / np.maximum(count_b, 1), pooled)
    psi = m_b - m_a + np.where(z == 1, (y - m_b) / pi, -(y - m_a) / (1 - pi))
    return psi, m_a, m_b


@dataclass(frozen=True)
class Capital:
    """The betting game's result per experiment and candidate difference: shapes (S, G)."""

    best: np.ndarray  # the largest log-capital reached
    first_crossing: np.ndarray  # the unit (1-based) at which the capital first reached 1/alpha; n + 1 if never
    sign_at_crossing: np.ndarray  # the sign of the running estimate (minus the difference) at that unit


def betting_log_capital(
    z: np.ndarray,
    y: np.ndarray,
    pi: np.ndarray,
    deltas: np.ndarray,
    lo: float,
    hi: float,
    alpha: float = 0.05,
    stake: float = 0.5,
) -> Capital:
    """Play the betting game per experiment (rows of z, y, pi: shape (S, n)) and candidate difference (deltas: (G,)).

    Outcomes must lie in [lo, hi].
    """
    psi, m_a, m_b = aipw_terms(z, y, pi, prior=(lo + hi) / 2)
    base = m_b - m_a
    # Before seeing the unit, psi - d lies in [low, high]: a stake above `stake`/|low| could lose everything.
    low = np.minimum(base + (lo - m_b) / pi, base - (hi - m_a) / (1 - pi))
    high = np.maximum(base + (hi - m_b) / pi, base - (lo - m_a) / (1 - pi))
    n_exp, n = psi.shape
    shape = (n_exp, len(deltas))
    sum_x = np.zeros(shape)
    sum_x2 = np.zeros(shape)
    log_up = np.zeros(shape)
    log_down = np.zeros(shape)
    best = np.zeros(shape)
    crossing = np.full(shape, n + 1)
    sign = np.zeros(shape)
    threshold = math.log(1 / alpha)
    prior_var = (hi - lo) ** 2 / 4
    for j in range(n):
        x = psi[:, j : j + 1] - deltas
        # aGRAPA: the growth-optimal stake for the running mean and variance, shrunk toward no bet early on.
        mean = sum_x / (j + 1)
        var = np.maximum((prior_var + sum_x2) / (j + 1) - mean * mean, 1e-12)
        lam = mean / (var + mean * mean)
        with np.errstate(divide="ignore"):  # a bound of 0 means that side cannot lose: no cap
            up = np.clip(lam, 0, stake / np.abs(low[:, j : j + 1] - deltas))
            down = np.clip(-lam, 0, stake / np.abs(high[:, j : j + 1] - deltas))
        log_up += np.log1p(up * x)
        log_down += np.log1p(-down * x)
        best = np.maximum(best, np.logaddexp(log_up, log_down) - math.log(2))
        sum_x += x
        sum_x2 += x * x
        new = (best >= threshold) & (crossing > n)
        crossing[new] = j + 1
        sign[new] = np.sign(sum_x[new])
    return Capital(best=best, first_crossing=crossing, sign_at_crossing=sign)


def betting_sequence(
    units: Sequence[Unit], lo: float = 0.0, hi: float = 1.0, alpha: float = 0.05, resolution: int = 400
) -> SequenceState:
    """Exact always-valid p-value and confidence sequence for mean(B) - mean(A) of outcomes bounded in [lo, hi]."""
    z, y, pi = _arrays(units)
    if ((y < lo) | (y > hi)).any():
        raise ValueError(f"outcomes must lie in [{lo}, {hi}] for the betting test")
    span = hi - lo
    deltas = np.concatenate([[0.0], np.linspace(-span, span, 2 * resolution + 1)])
    best = betting_log_capital(z[None], y[None], pi[None], deltas, lo, hi, alpha).best[0]
    kept = deltas[1:][best[1:] < math.log(1 / alpha)]
    psi, _, _ = aipw_terms(z[None], y[None], pi[None], prior=(lo + hi) / 2)
    return _state(
        "betting",
        z,
        y,
        psi[0],
        p_value=float(min(1.0, math.exp(-best[0]))),
        lower=float(kept.min()) if len(kept) else math.nan,
        upper=float(kept.max()) if len(kept) else math.nan,
    )


def asymptotic_sequence(
    units: Sequence[Unit], alpha: float = 0.05, t_opt: float = 200, min_per_arm: int = 30
) -> SequenceState:
    """Asymptotic confidence sequence for mean(B) - mean(A) of unbounded outcomes (latency, tokens, cost).

    The first `min_per_arm` units of each arm only open the sequence (the paper's burn-in): the running variance needs
    them before the normal approximation means anything.
    """
    z, y, pi = _arrays(units)
    psi, _, _ = aipw_terms(z[None], y[None], pi[None], prior=0.0)
    psi = psi[0]
    rho2 = best_rho2(t_opt, alpha)
    t = np.arange(1, len(psi) + 1)
    mean = np.cumsum(psi) / t
    var = np.maximum(np.cumsum(psi * psi) / t - mean * mean, 0.0)
    ready = (np.cumsum(z) >= min_per_arm) & (np.cumsum(1 - z) >= min_per_arm)
    p_value = 1.0
    lower, upper = -math.inf, math.inf
    for i in np.flatnonzero(ready):
        sd = math.sqrt(float(var[i]))
        p_value = min(p_value, mixture_p_value(float(t[i]), float(mean[i]), sd, rho2))
        half = sd * margin(float(t[i]), rho2, alpha)
        lower, upper = max(lower, float(mean[i]) - half), min(upper, float(mean[i]) + half)
    return _state("asymptotic", z, y, psi, p_value=p_value, lower=lower, upper=upper)


def _state(method: str, z: np.ndarray, y: np.ndarray, psi: np.ndarray, **figures: float) -> SequenceState:
    n_b = int(z.sum())
    n_a = len(z) - n_b
    return SequenceState(
        method=method,
        n_a=n_a,
        n_b=n_b,
        mean_a=float(y[z == 0].mean()) if n_a else math.nan,
        mean_b=float(y[z == 1].mean()) if n_b else math.nan,
        estimate=float(psi.mean()) if len(psi) else math.nan,
        sd=float(psi.std()) if len(psi) else math.nan,
        **figures,
    )


def aipw_sd(sd_a: float, sd_b: float, share_b: float) -> float:
    """Standard deviation of the AIPW terms for arms with these outcome spreads and B's traffic share.

    With the arms' true means, psi = d + Z/pi (Y - mu_B) - (1 - Z)/(1 - pi) (Y - mu_A), whose variance is
    sd_b^2 / pi + sd_a^2 / (1 - pi): the variance of a difference of two means, per unit.
    """
    return math.sqrt(sd_b**2 / share_b + sd_a**2 / (1 - share_b))


def asymptotic_sample_size(
    effect: float, sd_a: float, sd_b: float, share_b: float = 0.5, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Units (both arms) after which the asymptotic sequence, tuned for that size, excludes 0 with `power`.

    It counts only the last look, so earlier crossings make the real power at this size a little higher than asked.
    """
    if effect == 0:
        raise ValueError("a sample size needs an effect other than 0")
    sd = aipw_sd(sd_a, sd_b, share_b)
    z = NormalDist()

    def achieved(t: int) -> float:
        width = sd * margin(t, best_rho2(t, alpha), alpha)
        return z.cdf((abs(effect) - width) / (sd / math.sqrt(t)))

    low, high = 2, 2
    while achieved(high) < power:
        high *= 2
        if high > 10**9:
            raise ValueError("the effect is too small to detect with any practical number of sessions")
    while low < high:
        mid = (low + high) // 2
        if achieved(mid) >= power:
            high = mid
        else:
            low = mid + 1
    return high


def betting_sample_size(
    rate_a: float,
    effect: float,
    share_b: float = 0.5,
    alpha: float = 0.05,
    power: float = 0.8,
    simulations: int = 1000,
    seed: int = 0,
) -> int:
    """Units (both arms) by which the betting test calls the better arm with probability `power`, for 0/1 outcomes.

    Found by playing the test itself on `simulations` seeded experiments (there is no closed form for its power): the
    size by which that share of them had crossed on the right side, read at the upper 95% bound of that quantile so
    that the simulations' own noise does not promise more power than the test has.
    """
    rate_b = rate_a + effect
    if effect == 0 or not (0 <= rate_a <= 1 and 0 <= rate_b <= 1):
        raise ValueError(f"rates must lie in [0, 1] and differ: A {rate_a}, B {rate_b}")
    guess = asymptotic_sample_size(
        effect, math.sqrt(rate_a * (1 - rate_a)), math.sqrt(rate_b * (1 - rate_b)), share_b, alpha, power
    )
    rng = np.random.default_rng(seed)
    horizon = 2 * guess
    while True:
        z = (rng.random((simulations, horizon)) < share_b).astype(float)
        y = (rng.random((simulations, horizon)) < np.where(z == 1, rate_b, rate_a)).astype(float)
        pi = np.full_like(z, share_b)
        capital = betting_log_capital(z, y, pi, np.zeros(1), 0.0, 1.0, alpha)
        right = capital.sign_at_crossing[:, 0] == np.sign(effect)
        times = np.sort(np.where(right, capital.first_crossing[:, 0], horizon + 1))
        rank = math.ceil(power * simulations + 1.645 * math.sqrt(simulations * power * (1 - power)))
        needed = times[min(rank, simulations) - 1]
        if needed <= horizon:
            return int(needed)
        if horizon > 10**6:
            raise ValueError("the effect is too small to detect with any practical number of sessions")
        horizon *= 2


def fixed_sample_size(
    effect: float, sd_a: float, sd_b: float, share_b: float = 0.5, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Units (both arms) for a classic fixed-horizon two-sided z test, looked at once."""
    z = NormalDist()
    need = (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) ** 2 * aipw_sd(sd_a, sd_b, share_b) ** 2 / effect**2
    return math.ceil(need)


def fixed_horizon_test(values_a: Sequence[float], values_b: Sequence[float]) -> tuple[float, float, float, float]:
    """Welch's z test of mean(B) - mean(A), for the fixed-horizon mode: (estimate, lower, upper, two-sided p)."""
    n_a, n_b = len(values_a), len(values_b)
    if n_a < 2 or n_b < 2:
        return (math.nan, -math.inf, math.inf, 1.0)
    mean_a, mean_b = sum(values_a) / n_a, sum(values_b) / n_b
    var_a = sum((v - mean_a) ** 2 for v in values_a) / (n_a - 1)
    var_b = sum((v - mean_b) ** 2 for v in values_b) / (n_b - 1)
    se = math.sqrt(var_a / n_a + var_b / n_b)
    estimate = mean_b - mean_a
    if se == 0:
        return (estimate, estimate, estimate, 0.0 if estimate else 1.0)
    z = NormalDist()
    half = z.inv_cdf(0.975) * se
    return (estimate, estimate - half, estimate + half, 2 * (1 - z.cdf(abs(estimate) / se)))
