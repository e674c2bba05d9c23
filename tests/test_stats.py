"""toolkit.stats: the one percentile definition (numpy's "linear"), checked against hand-computed values."""

import math
import statistics

import pytest

from toolkit.stats import median, percentile, spread


def test_percentile_interpolates_linearly_between_order_statistics():
    xs = [40, 10, 30, 20]  # sorted 10 20 30 40; position (n-1)*q/100 = 3q/100
    assert percentile(xs, 0) == 10 and percentile(xs, 100) == 40
    assert percentile(xs, 50) == 25  # position 1.5: midway between 20 and 30
    assert percentile(xs, 90) == pytest.approx(37)  # position 2.7: 30 + 0.7 * 10
    assert percentile(xs, 25) == pytest.approx(17.5)  # position 0.75: 10 + 0.75 * 10
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_median_is_p50_and_agrees_with_the_standard_library():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    for xs in ([5.0, 1.0], [2.0, 9.0, 4.0, 4.0, 1.0], [0.1, 0.2, 0.7]):
        assert median(xs) == pytest.approx(statistics.median(xs))


def test_spread_keeps_the_runs_in_order():
    assert spread([12.0, 10.0, 11.0]) == {"median": 11.0, "min": 10.0, "max": 12.0, "runs": [12.0, 10.0, 11.0]}
    assert spread((2.0, 4.0))["median"] == 3.0


def test_t_quantile_matches_scipy():
    from scipy import stats as sp

    from toolkit.stats import t_quantile

    for df in (1, 2, 4, 9, 30, 200):
        assert t_quantile(0.975, df) == pytest.approx(sp.t.ppf(0.975, df), rel=1e-9)


def test_interval_is_the_t_interval_of_the_mean():
    import numpy as np
    from scipy import stats as sp

    from toolkit.stats import interval

    xs = [101.0, 97.5, 103.2, 99.9, 100.4]
    got = interval(xs)
    low, high = sp.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=sp.sem(xs))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))
    assert got["cv"] == pytest.approx(np.std(xs, ddof=1) / np.mean(xs))
    one = interval([5.0])
    assert one["mean"] == 5.0 and one["ci_low"] is None and one["cv"] is None


def test_bootstrap_interval_brackets_a_real_shift_and_covers_zero_for_the_same_sample():
    import random

    from toolkit.stats import bootstrap_ci

    rng = random.Random(1)
    a = [rng.gauss(100, 10) for _ in range(200)]
    est, low, high = bootstrap_ci(a, [x * 1.3 for x in a])
    assert low > 0.2 and high < 0.4 and low <= est <= high
    est, low, high = bootstrap_ci(a, list(a))
    assert est == 0 and low < 0 < high
