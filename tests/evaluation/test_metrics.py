"""Metric functions against hand-computed cases."""

import math

import pytest

from toolkit.evaluation.metrics import (context_overlap, exact_match, inter_token_latencies, mean_reciprocal_rank,
                                        normalize_answer, percentile, recall_at_k, summarize, token_f1, tpot_ms)


def test_normalisation_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Quick, brown fox!  ") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # article only as a whole word


def test_exact_match_after_normalisation():
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("Eiffel", "eiffel tower") == 0.0


def test_token_f1_hand_computed():
    # pred tokens: [paris, france] ; ref: [paris] -> P=1/2, R=1 -> F1 = 2/3
    assert token_f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: pred [a1 a1 b] vs ref [a1 b b]: common = 1 (a1) + 1 (b) = 2
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("the", "dog") == 0.0  # "the" normalises to nothing


def test_context_overlap():
    assert context_overlap("blue whale", "The blue whale is large") == 1.0
    assert context_overlap("red whale", "The blue whale") == 0.5
    assert context_overlap("", "anything") == 0.0


def test_recall_and_mrr():
    ranked = [(["d1", "d2", "d3"], "d1"), (["d2", "d3", "d1"], "d1"), (["d4", "d4", "d5"], "d1"), (["d9", "d1"], "d1")]
    assert recall_at_k(ranked, 1) == 0.25
    assert recall_at_k(ranked, 2) == 0.5
    assert recall_at_k(ranked, 3) == 0.75
    assert mean_reciprocal_rank(ranked) == pytest.approx((1 + 1 / 3 + 0 + 1 / 2) / 4)
    # duplicate chunks of one document: the first occurrence counts
    assert mean_reciprocal_rank([(["d2", "d1", "d1"], "d1")]) == 0.5


def test_percentiles_linear_interpolation():
    xs = [10, 20, 30, 40]
    assert percentile(xs, 50) == 25
    assert percentile(xs, 90) == pytest.approx(37)  # pos 2.7 -> 30 + 0.7*10
    assert percentile(xs, 99) == pytest.approx(39.7)
    assert percentile([5], 99) == 5
    assert math.isnan(percentile([], 50))
    s = summarize([1, 2, 3, None])
    assert s == {"mean": 2, "p50": 2, "p90": pytest.approx(2.8), "p95": pytest.approx(2.9), "p99": pytest.approx(2.98),
                 "n": 3}
    assert summarize([])["p50"] is None


def test_tpot_and_itl():
    # 5 tokens, first at 100 ms, done at 500 ms -> 4 gaps over 400 ms
    assert tpot_ms(500, 100, 5) == 100
    assert tpot_ms(500, 100, 1) is None
    assert inter_token_latencies([100, 150, 260]) == [50, 110]
