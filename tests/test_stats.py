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
