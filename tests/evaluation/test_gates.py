"""Three-outcome gates (toolkit.evaluation.gates) on synthetic samples whose outcome follows from how they were
built: same distribution never FAILs, 40% slower FAILs, 3% slower with a tiny spread PASSes, a noisy
8%-slower pair is INCONCLUSIVE; paired bootstrap for quality drops; exit codes of `toolkit compare`."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from toolkit.evaluation.gates import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    decide,
    drop_gate,
    regression_gate,
    welch_relative,
)
from toolkit.stats import bootstrap_mean_ci


def lognormal(seed: int, n: int, median_ms: float, sigma: float) -> list[float]:
    """Request latencies: log-normal (right-skewed, like real ones) with the given median."""
    import math

    rng = random.Random(seed)
    return [median_ms * math.exp(rng.gauss(0.0, sigma)) for _ in range(n)]


def gate(base, new, limit=0.10, q=50, **kw):
    return regression_gate("max-p50-regression", "v @ c4", limit, q, base_requests=base, new_requests=new, **kw)


def test_decide_uses_the_interval_ends():
    assert decide(0.11, 0.30, 0.10) == FAIL  # even the best case is over the limit
    assert decide(-0.05, 0.10, 0.10) == PASS  # even the worst case is within it
    assert decide(0.05, 0.15, 0.10) == INCONCLUSIVE


def test_same_distribution_never_fails_single_run():
    outcomes = [gate(lognormal(2 * s, 200, 100.0, 0.25), lognormal(2 * s + 1, 200, 100.0, 0.25)).outcome
                for s in range(60)]
    assert FAIL not in outcomes
    assert outcomes.count(PASS) > len(outcomes) // 2  # and the interval is narrow enough to clear 10% mostly


def test_same_distribution_never_fails_with_repeats():
    rng = random.Random(7)
    for _ in range(500):  # 3 repeats a side, each repeat's p50 within ~5% of 100 ms
        base = [rng.gauss(100.0, 5.0) for _ in range(3)]
        new = [rng.gauss(100.0, 5.0) for _ in range(3)]
        r = regression_gate("max-p50-regression", "v @ c4", 0.10, 50, base_repeats=base, new_repeats=new)
        assert r.outcome != FAIL, r.detail


@pytest.mark.parametrize("seed", range(5))
def test_forty_percent_slower_fails(seed):
    base = lognormal(seed, 200, 100.0, 0.25)
    new = lognormal(seed + 100, 200, 140.0, 0.25)  # a different sample, 40% higher median
    r = gate(base, new)
    assert r.outcome == FAIL, r.detail
    assert "exceeds limit +10.0% beyond noise" in r.detail and "single run: interval from per-request bootstrap" in r.detail


def test_three_percent_slower_with_tiny_spread_passes():
    base = lognormal(1, 100, 100.0, 0.01)
    new = lognormal(2, 100, 103.0, 0.01)
    r = gate(base, new)
    assert r.outcome == PASS and "within limit +10.0%" in r.detail, r.detail


def test_noisy_eight_percent_slower_pair_is_inconclusive():
    base = lognormal(3, 30, 100.0, 0.6)
    new = [1.08 * x for x in base]  # exactly 8% slower at every percentile, but the spread is huge
    r = gate(base, new)
    assert r.outcome == INCONCLUSIVE and "+8.0% [95% CI" in r.detail and "noise too large to tell" in r.detail
    # the same two sets of repeats' p50s: 2 repeats a side gives Welch 1-2 degrees of freedom, too few to tell
    rep = regression_gate("max-p50-regression", "v", 0.10, 50, base_repeats=[90.0, 110.0], new_repeats=[97.2, 118.8])
    assert rep.outcome == INCONCLUSIVE and "Welch t interval over 2 vs 2 repeats" in rep.detail


def test_repeats_decide_on_welch_and_tail_on_p99():
    base, slow = [100.0, 102.0, 98.0, 101.0, 99.0], [140.0, 143.0, 137.0, 141.0, 139.0]
    r = regression_gate("max-p50-regression", "v", 0.10, 50, base_repeats=base, new_repeats=slow)
    assert r.outcome == FAIL and "Welch t interval over 5 vs 5 repeats" in r.detail
    # p99 is decided on the 99th percentile: same bodies, a slow tail in the new sample
    body = lognormal(5, 400, 100.0, 0.05)
    tail = body[:384] + [500.0] * 16  # 4% of requests 5x slower: median barely moves, p99 is 5x
    assert gate(body, tail, q=50).outcome == PASS
    assert gate(body, tail, q=99, limit=0.5).outcome == FAIL


def test_welch_interval_matches_scipy():
    from scipy import stats as sp

    base, new = [100.0, 104.0, 97.0, 101.0], [108.0, 115.0, 104.0]
    est, lo, hi = welch_relative(base, new)
    ci = sp.ttest_ind(new, base, equal_var=False).confidence_interval(0.95)
    mb = sum(base) / len(base)
    assert est == pytest.approx(sum(new) / len(new) / mb - 1)
    assert lo == pytest.approx(ci.low / mb, rel=1e-6) and hi == pytest.approx(ci.high / mb, rel=1e-6)


def test_no_samples_is_a_point_comparison():
    r = regression_gate("max-p50-regression", "v", 0.10, 50, base_point=100.0, new_point=105.0)
    assert r.outcome == PASS and "no samples, point comparison" in r.detail
    assert regression_gate("g", "v", 0.10, 50, base_point=100.0, new_point=125.0).outcome == FAIL


def test_paired_bootstrap_cancels_question_difficulty():
    rng = random.Random(11)
    base = {f"q{i}": rng.random() for i in range(40)}  # scores spread over 0..1: hard and easy questions
    same_drop = {q: s - 0.005 for q, s in base.items()}  # every question 0.005 worse
    r = drop_gate("max-f1-drop", "v", 0.02, base, same_drop, None, None)
    assert r.outcome == PASS and "paired bootstrap over 40 questions" in r.detail, r.detail  # interval [0.005, 0.005]
    big = {q: s - 0.1 for q, s in base.items()}
    assert drop_gate("max-f1-drop", "v", 0.02, base, big, None, None).outcome == FAIL
    noisy = {q: min(1.0, max(0.0, s + rng.choice((-0.3, 0.3)))) for q, s in base.items()}  # +-0.3 at random
    assert drop_gate("max-f1-drop", "v", 0.02, base, noisy, None, None).outcome == INCONCLUSIVE
    point = drop_gate("max-f1-drop", "v", 0.02, None, None, 0.50, 0.49)
    assert point.outcome == PASS and "no per-question records, point comparison" in point.detail


def test_bootstrap_mean_ci_is_seeded_and_brackets_the_mean():
    xs = [0.0, 1.0, 0.5, 0.25, 0.75, 1.0, 0.0, 0.5]
    m, lo, hi = bootstrap_mean_ci(xs)
    assert lo < m < hi and m == pytest.approx(0.5) and bootstrap_mean_ci(xs) == (m, lo, hi)
    assert bootstrap_mean_ci([0.3] * 5) == pytest.approx((0.3, 0.3, 0.3))


def run_compare(*args):
    return subprocess.run([sys.executable, "-m", "toolkit", "compare", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_compare_exit_codes_fail_inconclusive_strict(make_report, tmp_path):
    base = make_report("base", {"c4": [lognormal(1, 30, 100.0, 0.6)]})
    noisy = make_report("noisy", {"c4": [[1.08 * x for x in lognormal(1, 30, 100.0, 0.6)]]})
    slow = make_report("slow", {"c4": [lognormal(2, 30, 200.0, 0.05)]})
    out = run_compare(base, noisy, "--output", tmp_path / "a", "--max-p50-regression", "10%")
    assert out.returncode == 0, out.stderr
    assert "INCONCLUSIVE gate max-p50-regression [noisy @ c4]" in out.stderr
    assert "warning: 1 gate(s) inconclusive (max-p50-regression)" in out.stderr
    assert "single run: interval from per-request bootstrap" in out.stderr
    strict = run_compare(base, noisy, "--output", tmp_path / "b", "--max-p50-regression", "10%", "--strict")
    assert strict.returncode == 1 and "gate failed" not in strict.stderr
    failed = run_compare(base, slow, "--output", tmp_path / "c", "--max-p50-regression", "10%")
    assert failed.returncode == 1 and "FAIL gate max-p50-regression [slow @ c4]" in failed.stderr
    assert "gate failed: max-p50-regression" in failed.stderr


def test_compare_with_repeats_and_quality_records(make_report, tmp_path):
    f1 = {f"q{i}": (i % 5) / 4 for i in range(20)}
    base = make_report("base", {"c4": [lognormal(s, 20, 100.0, 0.2) for s in range(3)]}, f1=f1)
    same = make_report("same", {"c4": [lognormal(s + 10, 20, 100.0, 0.2) for s in range(3)]}, f1=f1, val_ppl=10.2)
    out = run_compare(base, same, "--output", tmp_path / "cmp", "--max-p50-regression", "50%",
                      "--max-f1-drop", "0.02", "--max-ppl-increase", "5%", "--max-p99-regression", "100%")
    assert out.returncode == 0, out.stderr
    assert "PASS gate max-p50-regression [same @ c4]" in out.stdout and "over 3 vs 3 repeats" in out.stdout
    assert "PASS gate max-f1-drop [same]: F1 drop +0.0000 [95% CI +0.0000, +0.0000]" in out.stdout
    assert "PASS gate max-ppl-increase [same]: +2.0% (limit +5.0%; deterministic" in out.stdout
    # the report has no p99 interval: each repeat's p99 comes from the records' "repeat" field
    assert "max-p99-regression [same @ c4]" in out.stdout + out.stderr
    p99 = next(ln for ln in (out.stdout + out.stderr).splitlines() if "max-p99-regression" in ln)
    assert "Welch t interval over 3 vs 3 repeats" in p99
