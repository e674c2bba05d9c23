"""Arithmetic behind the vLLM-vs-transformers table (README): per-concurrency ratio, hand-computed. A real run
starts vLLM and generates with transformers (minutes on CPU), so it is left to ``make bench-eval``."""

import pytest

from toolkit.evaluation.bench import comparison_rows


def test_rows_hold_both_throughputs_and_their_ratio():
    rows = comparison_rows([1, 8], {"1": 30.0, "8": 240.0}, {"1": 20.0, "8": 64.0})
    assert rows == [{"concurrency": 1, "vllm_tok_s": 30.0, "transformers_tok_s": 20.0, "ratio": 1.5},
                    {"concurrency": 8, "vllm_tok_s": 240.0, "transformers_tok_s": 64.0, "ratio": 3.75}]


def test_rows_follow_the_requested_batches_only():
    rows = comparison_rows([4], {"1": 1.0, "4": 10.0}, {"4": 40.0})
    assert [r["concurrency"] for r in rows] == [4] and rows[0]["ratio"] == pytest.approx(0.25)
