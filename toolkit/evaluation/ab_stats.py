"""Statistics of an interleaved A/B benchmark (``make bench-ab``): pure functions, no I/O.

Design (why interleave): two variants measured minutes apart on a shared machine differ by whatever else
the machine did in between. Measuring them alternately, in counterbalanced order, turns that drift into
noise that cancels within each round:

- **Schedule** (:func:`abba_schedule`): each round measures the load point four times, A B B A in even
  rounds and B A A B in odd ones (ABBA counterbalancing, as in within-subject experimental designs). Both
  sides then occupy the same mean position in every round, so a linear drift of the machine's speed adds the
  same to both; alternating the round's opening side also cancels a first-run-of-the-round effect.
- **Per round** (:func:`side_figures`): each side's two runs are pooled the way ``toolkit eval`` pools
  repeats: percentiles over the pooled successful requests (:func:`toolkit.evaluation.metrics.summarize`),
  throughput = pooled ok requests / summed run durations, goodput from
  :func:`toolkit.evaluation.slo.attainment` on the pooled requests over the summed durations.
- **Ratio** (:func:`round_ratios`): B / A per round and figure. < 1 on a latency means B is faster, > 1 on
  a throughput means B serves more.
- **Summary** (:func:`summarize_pairs`): the mean of the per-round ratios with its t-based 95% CI and CV
  (:func:`toolkit.stats.interval`; rounds are the independent replicates); a ratio whose CV exceeds
  :data:`toolkit.stats.UNSTABLE_CV` is flagged unstable.
- **Pooled bootstrap** (:func:`pooled_bootstrap`): every request of each side over all rounds, resampled
  (:func:`toolkit.stats.bootstrap_ci`, percentile bootstrap, seeded), as a second view of the same ratio that
  ignores the round structure; shown beside the per-round interval, not instead of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from toolkit.evaluation.metrics import summarize
from toolkit.stats import UNSTABLE_CV, bootstrap_ci, interval, percentile

# figure key -> (label for tables, unit); the order in which reports list them
FIGURES: dict[str, tuple[str, str]] = {
    "e2e_ms.p50": ("p50 e2e", "ms"),
    "e2e_ms.p95": ("p95 e2e", "ms"),
    "ttft_ms.p50": ("TTFT p50", "ms"),
    "throughput.req_s": ("req/s", "req/s"),
    "slo.goodput_req_s": ("goodput", "req/s"),
}
# per-request figures the pooled bootstrap can resample: key -> (record field, percentile)
BOOTSTRAP: dict[str, tuple[str, float]] = {"e2e_ms.p50": ("e2e_ms", 50), "e2e_ms.p95": ("e2e_ms", 95),
                                           "ttft_ms.p50": ("ttft_ms", 50)}


def abba_schedule(pairs: int) -> list[tuple[int, str]]:
    """``[(round, side)]`` in measurement order: A B B A in even rounds, B A A B in odd ones."""
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    return [(r, side) for r in range(pairs) for side in (("a", "b", "b", "a") if r % 2 == 0 else ("b", "a", "a", "b"))]


def side_figures(runs: Sequence[tuple[Sequence[dict[str, Any]], float]], slo: Any = None) -> dict[str, float | None]:
    """One side's figures in one round from its runs ``[(per-request records, run duration s)]``, pooled:
    percentiles over the pooled successful requests, req/s = ok requests / summed durations, and with an
    ``slo`` goodput = requests meeting it / summed durations. None where there is nothing to measure."""
    records = [r for recs, _ in runs for r in recs]
    duration = sum(d for _, d in runs)
    ok = [r for r in records if r.get("ok")]
    e2e, ttft = summarize(r["e2e_ms"] for r in ok), summarize(r.get("ttft_ms") for r in ok)
    out: dict[str, float | None] = {"e2e_ms.p50": e2e["p50"], "e2e_ms.p95": e2e["p95"], "ttft_ms.p50": ttft["p50"],
                                    "throughput.req_s": len(ok) / duration if duration > 0 else None}
    if slo is not None:
        from toolkit.evaluation.slo import attainment

        out["slo.goodput_req_s"] = attainment(records, slo, duration)["goodput_req_s"]
    return out


def round_ratios(a: dict[str, float | None], b: dict[str, float | None]) -> dict[str, float | None]:
    """B / A for every figure both sides have; None where either is missing or A's is 0."""
    return {k: (b[k] / a[k] if a.get(k) and b.get(k) is not None else None) for k in a if k in b}


def summarize_pairs(rounds: Sequence[dict[str, dict[str, float | None]]]) -> dict[str, dict[str, Any]]:
    """``rounds``: ``[{"a": figures, "b": figures}]`` (one per ABBA round) -> per figure ``{"a", "b", "ratio",
    "unstable"}``: each side's interval across rounds, the interval of the per-round B/A ratios (mean, 95% CI,
    CV, n, values) and whether that ratio's CV exceeds UNSTABLE_CV. Rounds lacking a figure are left out of it."""
    out: dict[str, dict[str, Any]] = {}
    keys = [k for k in FIGURES if any(k in r["a"] for r in rounds)]
    for key in keys:
        ratios = [round_ratios(r["a"], r["b"]).get(key) for r in rounds]
        ratio = interval([x for x in ratios if x is not None])
        out[key] = {"a": interval([r["a"].get(key) for r in rounds if r["a"].get(key) is not None]),
                    "b": interval([r["b"].get(key) for r in rounds if r["b"].get(key) is not None]),
                    "ratio": ratio, "unstable": ratio["cv"] is not None and ratio["cv"] > UNSTABLE_CV}
    return out


def pooled_bootstrap(a_records: Sequence[dict[str, Any]], b_records: Sequence[dict[str, Any]],
                     resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, float] | None]:
    """Percentile-bootstrap 95% interval of B/A for the per-request figures (p50/p95 e2e, TTFT p50), from all
    successful requests of each side pooled over the rounds: ``{key: {"ratio", "low", "high"}}`` (None when a
    side has no such value). ``bootstrap_ci`` gives the relative change; + 1 turns it into the ratio."""
    out: dict[str, dict[str, float] | None] = {}
    for key, (field, q) in BOOTSTRAP.items():
        a = [r[field] for r in a_records if r.get("ok") and r.get(field) is not None]
        b = [r[field] for r in b_records if r.get("ok") and r.get(field) is not None]
        if not a or not b:
            out[key] = None
            continue
        est, low, high = bootstrap_ci(a, b, stat=lambda xs, q=q: percentile(xs, q), resamples=resamples, seed=seed)
        out[key] = {"ratio": 1.0 + est, "low": 1.0 + low, "high": 1.0 + high}
    return out


def ratio_phrase(key: str, ratio: dict[str, Any], rounds: int) -> str:
    """``"p50 e2e 0.71x [0.66, 0.76] 95% CI over 5 ABBA rounds, CV 4%"`` (no CI with fewer than 2 rounds)."""
    name = FIGURES[key][0]
    if ratio.get("mean") is None:
        return f"{name} n/a"
    text = f"{name} {ratio['mean']:.2f}x"
    if ratio.get("ci_low") is not None:
        text += f" [{ratio['ci_low']:.2f}, {ratio['ci_high']:.2f}] 95% CI over {rounds} ABBA rounds"
    if ratio.get("cv") is not None:
        text += f", CV {100 * ratio['cv']:.0f}%"
    return text
