"""Metric functions shared by eval and compare. Pure Python, no heavy imports.

- Answer quality follows the SQuAD v1.1 evaluation script: answers are normalised (lower-case, punctuation
  and the articles a/an/the removed, whitespace collapsed) before exact match and bag-of-tokens F1.
- Retrieval: recall@k is whether the gold document is among the first k retrieved ids (averaged over
  questions), MRR the mean of 1/rank of the gold document (0 when it is not retrieved).
- Latency percentiles are :func:`toolkit.stats.percentile` (linear interpolation, numpy's default "linear"
  method), so p50 of an even-sized sample is the midpoint of the two middle values.
- TPOT is vLLM's definition (benchmarks/benchmark_serving.py): (e2e - ttft) / (output tokens - 1); it is
  undefined for a one-token answer.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

from toolkit.stats import percentile

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall over the normalised bags of tokens."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:  # SQuAD: both empty counts as a match, one empty as a miss
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def context_overlap(answer: str, context: str) -> float:
    """Share of the answer's normalised tokens that occur in the retrieved context (1.0 = fully grounded)."""
    tokens = answer_tokens(answer)
    if not tokens:
        return 0.0
    ctx = set(answer_tokens(context))
    return sum(t in ctx for t in tokens) / len(tokens)


def gold_rank(retrieved_ids: Sequence[str], gold_id: str) -> int | None:
    """1-based rank of the first occurrence of ``gold_id`` (several chunks may share a document)."""
    for i, doc_id in enumerate(retrieved_ids, 1):
        if doc_id == gold_id:
            return i
    return None


def recall_at_k(ranked: Iterable[tuple[Sequence[str], str]], k: int) -> float:
    """Mean over questions of [gold document in the first k ids]; ``ranked`` is (retrieved ids, gold id)."""
    hits = [(rank := gold_rank(ids, gold)) is not None and rank <= k for ids, gold in ranked]
    return sum(hits) / len(hits) if hits else float("nan")


def mean_reciprocal_rank(ranked: Iterable[tuple[Sequence[str], str]]) -> float:
    rr = [1.0 / rank if (rank := gold_rank(ids, gold)) else 0.0 for ids, gold in ranked]
    return sum(rr) / len(rr) if rr else float("nan")


def summarize(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """``{"mean", "p50", "p90", "p95", "p99", "n"}`` over the non-missing values (None when there are none)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return {"mean": None, "p50": None, "p90": None, "p95": None, "p99": None, "n": 0}
    return {"mean": sum(xs) / len(xs), "p50": percentile(xs, 50), "p90": percentile(xs, 90),
            "p95": percentile(xs, 95), "p99": percentile(xs, 99), "n": len(xs)}


def tpot_ms(e2e_ms: float, ttft_ms: float, output_tokens: int) -> float | None:
    """Time per output token after the first (vLLM's definition); None for answers of fewer than 2 tokens."""
    if output_tokens < 2:
        return None
    return (e2e_ms - ttft_ms) / (output_tokens - 1)


def inter_token_latencies(arrivals_ms: Sequence[float]) -> list[float]:
    """Gaps between consecutive streamed chunks (client-side arrival times, ms)."""
    return [b - a for a, b in zip(arrivals_ms, arrivals_ms[1:])]
