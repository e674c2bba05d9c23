"""Release gates of ``toolkit compare`` with three outcomes: PASS, FAIL, INCONCLUSIVE (plus SKIP).

A gate compares a variant with the baseline against a limit. A measured difference carries noise, so each
gate decides on a 95% confidence interval of the difference, not on the point estimate:

- **FAIL**: the interval's low end is above the limit (worse than allowed beyond noise);
- **PASS**: the interval's high end is within the limit (within the limit even at its worst);
- **INCONCLUSIVE**: the interval straddles the limit: the noise is too large to tell. ``compare`` warns and
  exits 0 (1 with ``--strict``); more repeats or requests narrow the interval.

Where the intervals come from:

- Latency regressions (p50/p99 end-to-end, p50 TTFT, relative to the baseline), per shared load point.
  With >= 2 repeats on both sides: **Welch's t interval** of the difference of the per-repeat means,
  divided by the baseline mean, ``(m_new - m_base ± t(df) · se) / m_base`` with ``se = √(s²_b/n_b + s²_n/n_n)``
  and the Welch–Satterthwaite ``df`` (Welch 1947). Each repeat's own percentile is one observation
  (``LoadPoint.intervals``; a p99 the report has no interval for is computed per repeat from the records).
  The baseline mean is treated as exact in the division; it is itself estimated, so the interval is slightly
  optimistic when the baseline is as noisy as the variant. With single runs: the **percentile bootstrap**
  of the ratio of the two samples' statistic (median for p50, 99th percentile for p99) over the per-request
  records, :func:`toolkit.stats.bootstrap_ci`; it measures request-to-request spread within one run, not
  run-to-run drift (the line says so). Without samples: the point comparison of the two figures.
- QA F1 / exact-match drops: the **paired bootstrap** over per-question scores (Efron & Tibshirani 1993,
  ch. 16; Koehn 2004 for evaluation metrics): both variants answered the same questions, so resampling
  questions keeps each pair together and the question difficulty cancels out. The F1 floor (``--min-f1``):
  the bootstrap interval of the variant's mean F1 over its questions. Without per-question records (the
  ``phase: "quality"`` lines of the sidecar): point comparison.
- Perplexity (same token windows for every variant), retrieval MRR (the index does not depend on the model)
  and error counts are deterministic: PASS or FAIL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolkit.stats import bootstrap_mean_ci, median, percentile, t_quantile

if TYPE_CHECKING:
    from toolkit.evaluation.compare import Comparison

PASS, FAIL, INCONCLUSIVE, SKIP = "PASS", "FAIL", "INCONCLUSIVE", "SKIP"
CONFIDENCE = 0.95


@dataclass
class Gates:
    """Relative limits are fractions (0.05 = 5%); drops are absolute (0.02 F1 points)."""

    max_ppl_increase: float | None = None
    max_f1_drop: float | None = None
    max_em_drop: float | None = None
    max_mrr_drop: float | None = None
    max_p50_regression: float | None = None
    max_p99_regression: float | None = None
    max_ttft_regression: float | None = None
    max_errors: int | None = None
    min_f1: float | None = None
    max_p50_ms: float | None = None
    allow_mismatch: bool = False

    def any(self) -> bool:
        return any(v is not None for k, v in vars(self).items() if k != "allow_mismatch")


@dataclass
class GateResult:
    gate: str
    label: str
    outcome: str  # PASS | FAIL | INCONCLUSIVE | SKIP (variant not served here: nothing to check)
    detail: str  # one line: the figure, its interval, the limit and how the interval was obtained

    @property
    def ok(self) -> bool:
        """Not a failure (an INCONCLUSIVE gate fails only under ``--strict``)."""
        return self.outcome != FAIL

    @property
    def skipped(self) -> bool:
        return self.outcome == SKIP


# --- intervals ---------------------------------------------------------------------------------------------


def decide(low: float, high: float, limit: float) -> str:
    """FAIL above the limit beyond noise, PASS within it even at the interval's worst, else INCONCLUSIVE."""
    if low > limit:
        return FAIL
    if high <= limit:
        return PASS
    return INCONCLUSIVE


def welch_relative(base: Sequence[float], new: Sequence[float], confidence: float = CONFIDENCE
                   ) -> tuple[float, float, float]:
    """``(estimate, low, high)`` of ``mean(new) / mean(base) - 1``: Welch's t interval of the difference of
    means divided by the baseline mean (see the module docstring). Needs >= 2 values per side."""
    na, nb = len(base), len(new)
    if na < 2 or nb < 2:
        raise ValueError("welch_relative needs at least two values per side")
    ma, mb = sum(base) / na, sum(new) / nb
    if ma <= 0:
        raise ValueError("welch_relative needs a positive baseline mean")
    va = sum((x - ma) ** 2 for x in base) / (na - 1) / na  # squared standard error of each mean
    vb = sum((x - mb) ** 2 for x in new) / (nb - 1) / nb
    se = math.sqrt(va + vb)
    if se == 0:  # both sides constant: no noise to allow for
        return (mb - ma) / ma, (mb - ma) / ma, (mb - ma) / ma
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = t_quantile(0.5 + confidence / 2, df) * se
    return (mb - ma) / ma, (mb - ma - half) / ma, (mb - ma + half) / ma


def _stat(q: float) -> Callable[[Sequence[float]], float]:
    return median if q == 50 else (lambda xs: percentile(xs, q))


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def _explain(outcome: str, est: str, lo: str, hi: str, limit: str, how: str) -> str:
    verdict = {PASS: f"within limit {limit}", FAIL: f"exceeds limit {limit} beyond noise",
               INCONCLUSIVE: f"straddles limit {limit}: noise too large to tell"}[outcome]
    return f"{est} [95% CI {lo}, {hi}] {verdict} ({how})"


def regression_gate(gate: str, label: str, limit: float, q: float, *,
                    base_repeats: Sequence[float] | None = None, new_repeats: Sequence[float] | None = None,
                    base_requests: Sequence[float] | None = None, new_requests: Sequence[float] | None = None,
                    base_point: float | None = None, new_point: float | None = None,
                    repeats: tuple[int, int] = (1, 1)) -> GateResult:
    """Relative latency increase of ``new`` over ``base`` against ``limit`` (a fraction), deciding on the
    best interval the data allows: per-repeat values (Welch), else per-request samples (bootstrap of the
    ``q``-th percentile), else the two point figures. ``repeats`` (base, new) only words the explanation."""
    if base_repeats and new_repeats and len(base_repeats) >= 2 and len(new_repeats) >= 2 and sum(base_repeats) > 0:
        est, lo, hi = welch_relative(base_repeats, new_repeats)
        how = f"Welch t interval over {len(base_repeats)} vs {len(new_repeats)} repeats"
    elif base_requests and new_requests and len(base_requests) >= 2 and len(new_requests) >= 2:
        est, lo, hi = _bootstrap(base_requests, new_requests, q)
        how = ("single run: interval from per-request bootstrap" if repeats == (1, 1) else
               f"{repeats[0]} vs {repeats[1]} repeats: interval from per-request bootstrap of the pooled requests")
        how += f", {len(base_requests)} vs {len(new_requests)} requests"
    elif base_point is None or new_point is None or base_point == 0:
        return GateResult(gate, label, FAIL, "metric missing from a report, cannot verify")
    else:
        rel = new_point / base_point - 1.0
        outcome = PASS if rel <= limit else FAIL
        return GateResult(gate, label, outcome, f"{_pct(rel)} (limit {_pct(limit)}; no samples, point comparison)")
    outcome = decide(lo, hi, limit)
    return GateResult(gate, label, outcome, _explain(outcome, _pct(est), _pct(lo), _pct(hi), _pct(limit), how))


def _bootstrap(base: Sequence[float], new: Sequence[float], q: float) -> tuple[float, float, float]:
    from toolkit.stats import bootstrap_ci

    return bootstrap_ci(base, new, stat=_stat(q))


def drop_gate(gate: str, label: str, limit: float, base_scores: dict[str, float] | None,
              new_scores: dict[str, float] | None, base_point: float | None, new_point: float | None,
              metric: str = "F1") -> GateResult:
    """Absolute drop ``base - new`` of a per-question score (QA F1 or exact match) against ``limit``: the
    paired bootstrap over the questions both variants answered, else the point comparison."""
    shared = sorted(set(base_scores or {}) & set(new_scores or {}))
    if len(shared) >= 2:
        est, lo, hi = bootstrap_mean_ci([base_scores[k] - new_scores[k] for k in shared])  # type: ignore[index]
        outcome = decide(lo, hi, limit)
        f = lambda x: f"{x:+.4f}"
        return GateResult(gate, label, outcome, _explain(
            outcome, f"{metric} drop {f(est)}", f(lo), f(hi), f"{limit:.4f}",
            f"paired bootstrap over {len(shared)} questions"))
    if base_point is None or new_point is None:
        return GateResult(gate, label, FAIL, "metric missing from a report, cannot verify")
    drop = base_point - new_point
    return GateResult(gate, label, PASS if drop <= limit else FAIL,
                      f"{metric} drop {drop:+.4f} (limit {limit:.4f}; no per-question records, point comparison)")


def deterministic_gate(gate: str, label: str, value: float | None, limit: float, text: Callable[[float], str],
                       why: str = "deterministic") -> GateResult:
    """PASS when ``value <= limit``; for figures that carry no sampling noise (perplexity, error counts)."""
    if value is None:
        return GateResult(gate, label, FAIL, "metric missing from a report, cannot verify")
    return GateResult(gate, label, PASS if value <= limit else FAIL, f"{text(value)} (limit {text(limit)}; {why})")


# --- evaluation over a comparison --------------------------------------------------------------------------

SERVED_GATES = ("max-f1-drop", "max-em-drop", "max-mrr-drop", "max-p50-regression", "max-p99-regression",
                "max-ttft-regression", "min-f1", "max-p50-ms")
LATENCY_GATES = (("max-p50-regression", "e2e_ms", "p50"), ("max-p99-regression", "e2e_ms", "p99"),
                 ("max-ttft-regression", "ttft_ms", "p50"))


def evaluate(c: Comparison, g: Gates) -> list[GateResult]:
    """Every requested gate for every variant (and shared load point) of a comparison."""
    out: list[GateResult] = []
    if not g.any():
        return out
    if c.warnings and not g.allow_mismatch:
        out.append(GateResult("comparable", "*", FAIL, "; ".join(c.warnings) + " (pass --allow-mismatch to gate anyway)"))
    base = c.baseline
    bq = base.report.quality
    for e in c.entries:
        q = e.report.quality
        if e is not base and g.max_ppl_increase is not None:
            inc = None if q.val_ppl is None or not bq.val_ppl else q.val_ppl / bq.val_ppl - 1.0
            out.append(deterministic_gate("max-ppl-increase", e.label, inc, g.max_ppl_increase, _pct,
                                          "deterministic: same token windows"))
        if e.report.latency.not_served:
            out.extend(GateResult(name, e.label, SKIP, f"skipped: not served ({e.report.latency.not_served})")
                       for name in SERVED_GATES if getattr(g, name.replace("-", "_")) is not None)
            continue
        if e is not base:
            for name, metric, limit in (("max-f1-drop", "f1", g.max_f1_drop), ("max-em-drop", "em", g.max_em_drop)):
                if limit is not None:
                    attr = "qa_f1" if metric == "f1" else "qa_exact_match"
                    out.append(drop_gate(name, e.label, limit, base.question_scores(metric), e.question_scores(metric),
                                         getattr(bq, attr), getattr(q, attr), "F1" if metric == "f1" else "EM"))
            if g.max_mrr_drop is not None:
                drop = None if q.mrr is None or bq.mrr is None else bq.mrr - q.mrr
                out.append(deterministic_gate("max-mrr-drop", e.label, drop, g.max_mrr_drop, lambda x: f"{x:+.4f}",
                                              "deterministic: retrieval does not depend on the model"))
            for name, metric, stat in LATENCY_GATES:
                limit = getattr(g, name.replace("-", "_"))
                for point in c.common_points if limit is not None else []:
                    out.append(_latency_gate(name, e, base, point, metric, stat, limit))
        if g.max_errors is not None:
            total = sum(p.errors for p in e.report.latency.points) + q.errors
            out.append(deterministic_gate("max-errors", e.label, float(total), float(g.max_errors), lambda x: f"{x:.0f}",
                                          "count"))
        if g.min_f1 is not None:
            out.append(_floor_gate(e, g.min_f1))
        if g.max_p50_ms is not None:
            for point in c.common_points:
                out.append(_absolute_latency_gate(e, point, g.max_p50_ms))
    return out


def _latency_gate(name: str, e: Any, base: Any, point: str, metric: str, stat: str, limit: float) -> GateResult:
    pn, pb = e.point(point), base.point(point)
    return regression_gate(
        name, f"{e.label} @ {point}", limit, float(stat[1:]),
        base_repeats=base.repeat_values(point, metric, stat), new_repeats=e.repeat_values(point, metric, stat),
        base_requests=base.request_samples(point, metric), new_requests=e.request_samples(point, metric),
        base_point=getattr(getattr(pb, metric), stat), new_point=getattr(getattr(pn, metric), stat),
        repeats=(pb.repeats, pn.repeats))


def _floor_gate(e: Any, floor: float) -> GateResult:
    """``--min-f1``: the F1 of this question set against a floor, decided on the bootstrap interval of the
    mean over questions (FAIL when even its high end is below the floor)."""
    scores = e.question_scores("f1")
    if scores and len(scores) >= 2:
        est, lo, hi = bootstrap_mean_ci(list(scores.values()))
        # "shortfall" = floor - F1, so the same decide() applies: FAIL when the smallest shortfall is > 0
        outcome = decide(floor - hi, floor - lo, 0.0)
        verdict = {PASS: "at or above", FAIL: "below", INCONCLUSIVE: "straddles"}[outcome]
        return GateResult("min-f1", e.label, outcome, f"F1 {est:.4f} [95% CI {lo:.4f}, {hi:.4f}] {verdict} the floor "
                          f"{floor:.4f} (bootstrap over {len(scores)} questions)")
    f1 = e.report.quality.qa_f1
    return deterministic_gate("min-f1", e.label, None if f1 is None else -f1, -floor, lambda x: f"{-x:.4f}",
                              "no per-question records, point comparison")


def _absolute_latency_gate(e: Any, point: str, limit_ms: float) -> GateResult:
    """``--max-p50-ms``: with repeats, on the t interval of the per-repeat p50s; else the pooled p50."""
    p = e.point(point)
    iv = p.intervals.get("e2e_ms.p50") if p is not None else None
    if iv is not None and iv.n >= 2 and iv.ci_low is not None:
        outcome = decide(iv.ci_low, iv.ci_high, limit_ms)
        return GateResult("max-p50-ms", f"{e.label} @ {point}", outcome, _explain(
            outcome, f"{iv.mean:.1f} ms", f"{iv.ci_low:.1f}", f"{iv.ci_high:.1f} ms", f"{limit_ms:.1f} ms",
            f"t interval over {iv.n} repeats"))
    return deterministic_gate("max-p50-ms", f"{e.label} @ {point}", None if p is None else p.e2e_ms.p50, limit_ms,
                              lambda x: f"{x:.1f} ms", "single run: point comparison")


def summary(results: Sequence[GateResult]) -> str:
    """``"gates: 5 PASS, 1 INCONCLUSIVE, 1 FAIL"`` (outcomes that occur, in that order)."""
    counts = {o: sum(r.outcome == o for r in results) for o in (PASS, INCONCLUSIVE, FAIL, SKIP)}
    return "gates: " + ", ".join(f"{n} {o}" for o, n in counts.items() if n) if results else "no gates given"
