"""How much load each variant carries, and how far to trust the figures: goodput and requests/s with their
intervals across repeats, the max-load search results, the capacity axis of the Pareto plot, and the notes
a verdict carries (single runs, unstable points, a busy machine, searches that cannot be compared).

- A figure measured over >= 2 repeats is its mean with the t-based 95% interval of the mean
  (:func:`toolkit.stats.interval`, as stored in ``LoadPoint.intervals``); over one run, the pooled figure
  without an interval. A key whose coefficient of variation across repeats exceeds
  :data:`toolkit.stats.UNSTABLE_CV` (``LoadPoint.unstable``) is flagged "⚠ CV 14%".
- Max loads are only ranked against each other when they were searched in the same mode (concurrency or
  Poisson rate) under the same SLO; the reference is the baseline's search, else the first variant's.
- QA F1's interval is the percentile bootstrap of the mean over the questions (:mod:`toolkit.evaluation.gates`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.evaluation.report import LoadPoint, MaxLoad
from toolkit.evaluation.slo import thresholds
from toolkit.stats import UNSTABLE_CV, bootstrap_mean_ci

if TYPE_CHECKING:
    from toolkit.evaluation.compare import Comparison, Entry

BUSY_LOAD = 0.5  # 1-min load average per core at the eval's start above which other work is flagged


def with_ci(p: LoadPoint, key: str) -> tuple[float | None, float | None, float | None, int]:
    """``(value, ci_low, ci_high, repeats)`` of an interval key (``slo.goodput_req_s``, ``throughput.req_s``):
    the mean over repeats with its t interval when there are >= 2, else the pooled figure without one."""
    iv = p.intervals.get(key)
    if iv is not None and iv.n >= 2 and iv.mean is not None:
        return iv.mean, iv.ci_low, iv.ci_high, iv.n
    group, stat = key.split(".")
    value = getattr(getattr(p, group), stat) if getattr(p, group) is not None else None
    return value, None, None, 1


def cv_flag(p: LoadPoint, key: str) -> str:
    """``"⚠ CV 14%"`` when ``key`` is unstable across the point's repeats, else ``""``."""
    iv = p.intervals.get(key)
    if key not in p.unstable:
        return ""
    return f"⚠ CV {iv.cv:.0%}" if iv is not None and iv.cv is not None else "⚠ unstable"


def slo_text(slo: dict[str, Any] | None) -> str:
    """``"e2e<=5000 ms at p95"`` for an SLO section dict."""
    if not slo:
        return "no SLO"
    limits = ", ".join(f"{m.removesuffix('_ms')}<={v:g} ms" for m, v in thresholds(slo).items())
    return f"{limits} at p{float(slo.get('percentile', 95.0)):g}"


def trust_notes(c: Comparison) -> list[str]:
    """What limits trust in the numbers: single runs, unstable points, a busy machine, max-load mismatches."""
    out = []
    reps = {e.label: max((p.repeats for p in e.report.latency.points), default=1) for e in c.served}
    if reps and all(n == 1 for n in reps.values()):
        out.append("Single runs (no repeats): latency gates use per-request bootstrap intervals, which miss "
                   "run-to-run drift; rerun `toolkit eval --repeats 3` for intervals across runs.")
    elif len(set(reps.values())) > 1:
        out.append("Unequal repeats (" + ", ".join(f"{k} {v}" for k, v in reps.items()) + "): gates with a single "
                   "run on one side fall back to per-request bootstrap intervals.")
    for e in c.served:
        shaky = [f"{p.name} (" + ", ".join(f"{k} {cv_flag(p, k).removeprefix('⚠ ')}" for k in p.unstable) + ")"
                 for p in e.report.latency.points if p.unstable]
        if shaky:  # one line per variant, so the verdict stays short
            out.append(f"Unstable: {e.label} varies by more than {UNSTABLE_CV:.0%} across repeats at "
                       + "; ".join(shaky) + ".")
        env = e.report.environment
        cores = (env.hardware.get("cpu") or {}).get("cores")
        if env.load_avg_start and cores and env.load_avg_start[0] >= BUSY_LOAD * cores:
            out.append(f"Busy machine: {e.label} started with a 1-min load average of {env.load_avg_start[0]:.1f} "
                       f"on {cores} cores; other work inflates its latencies.")
    ref = max_load_reference(c)
    for e in c.entries:
        ml = e.max_load
        if ml is not None and ref is not None and (ml.mode, ml.slo) != (ref.mode, ref.slo):
            out.append(f"{e.label}: max load searched as {ml.mode} under {slo_text(ml.slo)}, not {ref.mode} under "
                       f"{slo_text(ref.slo)}: left out of the capacity ranking.")
    return out


def max_load_reference(c: Comparison) -> MaxLoad | None:
    """The search every max load is compared with: the baseline's, else the first variant's."""
    return c.baseline.max_load or next((e.max_load for e in c.entries if e.max_load is not None), None)


def comparable_max_loads(c: Comparison) -> dict[str, MaxLoad]:
    """``{label: MaxLoad}`` of the variants searched in the same mode under the same SLO as the reference."""
    ref = max_load_reference(c)
    if ref is None:
        return {}
    return {e.label: e.max_load for e in c.entries
            if e.max_load is not None and (e.max_load.mode, e.max_load.slo) == (ref.mode, ref.slo)}


def capacity(c: Comparison) -> tuple[str, dict[str, tuple[float, float | None, float | None]]]:
    """The capacity axis of the Pareto plot and front: ``(axis label, {label: (x, low, high)})``. Max load
    under the SLO when a search exists (0 when even the first load missed; low..high = the search bracket,
    last passing to first failing load), else requests/s at the headline point (with its t interval)."""
    loads = comparable_max_loads(c)
    if loads:
        ref = next(iter(loads.values()))
        return (f"max load under the SLO ({ref.unit}; {slo_text(ref.slo)})",
                {k: (m.value or 0.0, m.value or 0.0, m.first_failing) for k, m in loads.items()})
    if c.headline_point is None:
        return "", {}
    out = {}
    for e in c.served:
        p = e.point(c.headline_point)
        value, lo, hi, _ = with_ci(p, "throughput.req_s") if p is not None else (None, None, None, 1)
        if value is not None:
            out[e.label] = (value, lo, hi)
    return f"requests/s at {c.headline_point}", out


def quality_interval(e: Entry) -> tuple[float | None, float | None]:
    """Bootstrap 95% interval of the mean F1 over this report's questions, (None, None) without records."""
    scores = e.question_scores("f1")
    if not scores or len(scores) < 2:
        return None, None
    _, lo, hi = bootstrap_mean_ci(list(scores.values()))
    return lo, hi
