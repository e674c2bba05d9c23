"""The toolkit's one definition of percentiles, medians and a run's spread; every report and benchmark uses it.

Percentiles interpolate linearly between order statistics: the q-th percentile of a sorted sample ``x`` of
size ``n`` sits at position ``(n - 1) * q / 100``. This is numpy's default ``method="linear"`` (Hyndman & Fan
1996, definition 7; R's default type 7, Excel's PERCENTILE.INC), so p50 of an even-sized sample is the midpoint
of the two middle values and equals :func:`statistics.median`.

Standard library only: :mod:`toolkit.engine.offline` imports this module inside ``.venv-vllm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """``q``-th percentile (0..100) with linear interpolation between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def spread(runs: Sequence[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "runs"}`` of repeated measurements: the form every throughput figure takes."""
    xs = list(runs)
    return {"median": median(xs), "min": min(xs), "max": max(xs), "runs": xs}


# --- Repeats: mean, 95% confidence interval and coefficient of variation -------------------------------
# AIPerf's convention: a figure measured over N repeats is reported as its mean with a two-sided confidence
# interval from Student's t distribution (N - 1 degrees of freedom) and its coefficient of variation (sample
# standard deviation / mean). A figure whose CV exceeds UNSTABLE_CV is flagged unstable.

UNSTABLE_CV = 0.10


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (Lentz's method, Numerical Recipes 6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t cumulative distribution function."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Inverse of :func:`t_cdf` by bisection (p in (0, 1))."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """``{"mean", "ci_low", "ci_high", "cv", "n", "values"}`` of repeated measurements; the interval is the
    t-based confidence interval of the mean (None with fewer than two values, as is the CV)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    n = len(xs)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "cv": None, "n": 0, "values": []}
    mean = sum(xs) / n
    if n < 2:
        return {"mean": mean, "ci_low": None, "ci_high": None, "cv": None, "n": 1, "values": xs}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half,
            "cv": sd / abs(mean) if mean else None, "n": n, "values": xs}


def bootstrap_ci(sample_a: Sequence[float], sample_b: Sequence[float], stat=median, confidence: float = 0.95,
                 resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Percentile-bootstrap interval of ``stat(b) / stat(a) - 1`` (relative change of B against A) from two
    independent samples of per-request values: ``(estimate, low, high)``. Seeded, so a report re-renders the
    same. Used when a comparison has one run per variant: the per-request spread stands in for repeats."""
    import random

    a, b = list(sample_a), list(sample_b)
    if not a or not b:
        raise ValueError("bootstrap_ci needs two non-empty samples")
    rng = random.Random(seed)
    est = stat(b) / stat(a) - 1.0
    reps = sorted(stat(rng.choices(b, k=len(b))) / stat(rng.choices(a, k=len(a))) - 1.0 for _ in range(resamples))
    tail = (1.0 - confidence) / 2
    return est, percentile(reps, 100 * tail), percentile(reps, 100 * (1 - tail))


def bootstrap_mean_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Percentile-bootstrap interval of the mean: ``(mean, low, high)``. Applied to per-question differences
    it is the paired bootstrap of a mean difference. Seeded, so a report re-renders the same."""
    xs = list(values)
    if not xs:
        raise ValueError("bootstrap_mean_ci needs at least one value")
    import random

    rng, n = random.Random(seed), len(xs)
    reps = sorted(sum(rng.choices(xs, k=n)) / n for _ in range(resamples))
    tail = (1.0 - confidence) / 2
    return sum(xs) / n, percentile(reps, 100 * tail), percentile(reps, 100 * (1 - tail))
