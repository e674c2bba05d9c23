"""Repeated load points: run each point N times, pool the requests, and say how much the figures moved.

Method
- Each repeat is a full :func:`toolkit.evaluation.loadgen.run_point` with its own warm-up, so a repeat does not
  inherit the previous one's queue or caches beyond what a warm server keeps anyway. Repeats run in rounds
  (every point once, then every point again), so they sample the machine at different times.
- Repeats within one eval still share that eval's stretch of time: they measure its noise, not how different
  the machine was when another report was made. Separate reports compared by ``toolkit compare`` inherit that
  limit; ``make bench-ab`` measures a ratio between two variants interleaved.
- The point's summaries (percentiles, throughput, SLO attainment) pool every repeat's requests: percentiles over
  all requests, throughput = pooled ok requests / summed measured durations (idle time between repeats is not
  counted), goodput likewise. They are computed by :func:`toolkit.evaluation.loadgen.summarize_point`, the one
  place a point's summary is made, called on the pooled records.
- Across repeats, each repeat's own figure (its p50 e2e, its req/s, ...) is one observation; the report gives
  their mean, t-based 95% confidence interval and coefficient of variation (:func:`toolkit.stats.interval`,
  AIPerf's convention) and lists as *unstable* the figures whose CV exceeds :data:`toolkit.stats.UNSTABLE_CV`.
  Tail percentiles of a few requests move a lot between repeats; an unstable flag there says "measure more",
  not "the server is broken".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from toolkit.evaluation.loadgen import LoadPlan, Request, Target, run_point_sync, summarize_point
from toolkit.stats import UNSTABLE_CV, interval

if TYPE_CHECKING:
    from toolkit.evaluation.report import Interval, LoadPoint

# figures compared across repeats ("summary key.field"), in the order the report and the table show them
INTERVAL_KEYS = ("e2e_ms.p50", "e2e_ms.p95", "ttft_ms.p50", "tpot_ms.p50", "throughput.req_s",
                 "throughput.output_tok_s")
GOODPUT_KEY = "slo.goodput_req_s"
_LABELS = {"e2e_ms.p50": "e2e p50 ms", "e2e_ms.p95": "e2e p95 ms", "ttft_ms.p50": "TTFT p50 ms",
           "tpot_ms.p50": "TPOT p50 ms", "throughput.req_s": "req/s", "throughput.output_tok_s": "out tok/s",
           GOODPUT_KEY: "goodput req/s"}


def figure(summary: dict[str, Any], key: str) -> float | None:
    """The value at a dotted ``key`` ("e2e_ms.p50") of a point summary (None where absent)."""
    value: Any = summary
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def pool_repeats(plan: LoadPlan, kind: str, runs: Sequence[tuple[Sequence[dict[str, Any]], float]],
                 slo: Any = None) -> dict[str, Any]:
    """One point's summary from its repeats, ``runs`` = [(that repeat's records, its measured duration_s)]:
    the pooled summary plus ``repeats``, ``intervals`` (across repeats) and ``unstable`` (see module docstring)."""
    records = [r for recs, _ in runs for r in recs]
    pooled = summarize_point(plan, kind, records, sum(d for _, d in runs), slo)
    each = [summarize_point(plan, kind, recs, d, slo) for recs, d in runs]
    keys = INTERVAL_KEYS + ((GOODPUT_KEY,) if slo is not None else ())
    intervals = {k: interval([v for s in each if (v := figure(s, k)) is not None]) for k in keys}
    unstable = [k for k, iv in intervals.items() if iv["cv"] is not None and iv["cv"] > UNSTABLE_CV]
    return {**pooled, "repeats": len(runs), "intervals": intervals, "unstable": unstable}


def measure_rounds(jobs: Sequence[tuple[Target, LoadPlan]], reqs: Sequence[Request], timeout_s: float,
                   repeats: int, slo: Any, console) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Run every (target, plan) of ``jobs`` ``repeats`` times, in rounds: all points once, then all points again,
    so a point's repeats are spread over the whole measurement and slow drift of the machine (other jobs,
    thermal, caches) shows up as spread between repeats instead of hiding in back-to-back runs. Returns, per
    job in order, (pooled summary, records each tagged with its 0-based ``"repeat"``); a progress line per run."""
    runs: list[list[tuple[list[dict[str, Any]], float]]] = [[] for _ in jobs]
    for i in range(repeats):
        of = f" (round {i + 1}/{repeats})" if repeats > 1 else ""
        for j, (target, plan) in enumerate(jobs):
            console.print(f"[bold]load[/] {target.kind} {plan.name}: {plan.requests} requests{of}")
            summary, recs = run_point_sync(target, reqs, plan, timeout_s, slo)
            for r in recs:
                r["repeat"] = i
            runs[j].append((recs, summary["duration_s"]))
            console.print(f"  {outcome(summary)}")
    return [(pool_repeats(plan, target.kind, job_runs, slo), [r for recs, _ in job_runs for r in recs])
            for (target, plan), job_runs in zip(jobs, runs)]


def outcome(summary: dict[str, Any]) -> str:
    """One progress line for a measured point (or trial) summary."""
    def ms(v):
        return "–" if v is None else f"{v:,.0f} ms"

    req_s = summary["throughput"]["req_s"]
    line = (f"e2e p50 {ms(summary['e2e_ms']['p50'])}, p95 {ms(summary['e2e_ms']['p95'])}; "
            f"{'–' if req_s is None else f'{req_s:.2f}'} req/s")
    if summary.get("slo"):
        s = summary["slo"]
        good = "–" if s["goodput_req_s"] is None else f"{s['goodput_req_s']:.2f}"
        line += f"; goodput {good} req/s; SLO {'met' if s['meets'] else '[yellow]missed[/]'}"
    if summary["errors"]:
        line += f"; [yellow]{summary['errors']} errors[/]: {summary['error_examples']}"
    return line


def interval_table(points: Sequence[LoadPoint]):
    """Rich table of the across-repeat intervals of report ``LoadPoint``s with more than one repeat: per figure
    ``mean±half-width of the 95% CI`` and the CV, unstable figures starred (in red)."""
    from rich.table import Table

    repeated = [p for p in points if p.repeats > 1]
    keys = [k for k in (*INTERVAL_KEYS, GOODPUT_KEY) if any(k in p.intervals for p in repeated)]
    runs = sorted({p.repeats for p in repeated})
    table = Table(title=f"across {'/'.join(map(str, runs))} repeats: mean±95% CI half-width, CV "
                  f"(* unstable: CV > {UNSTABLE_CV:.0%})")
    for col in ("target", "point", *(_LABELS[k] for k in keys)):
        table.add_column(col, justify="right")
    for p in repeated:
        table.add_row(p.target, p.name, *(_cell(p.intervals.get(k), k in p.unstable) for k in keys))
    return table


def _cell(iv: Interval | None, unstable: bool) -> str:
    if iv is None or iv.mean is None:
        return "–"
    nd = 0 if abs(iv.mean) >= 100 else 1 if abs(iv.mean) >= 1 else 2
    text = f"{iv.mean:,.{nd}f}"
    if iv.ci_low is not None:
        text += f"±{(iv.ci_high - iv.ci_low) / 2:,.{nd}f}"
    if iv.cv is not None:
        text += f" {iv.cv:.0%}"
    return f"[red]{text}*[/]" if unstable else text
