"""``toolkit eval --find-max-load``: the highest load at which the RAG endpoint still meets its SLO.

The load is closed-loop concurrency (whole numbers of requests in flight) or an open-loop Poisson request rate
(req/s), as the suite's ``load.max_load.mode`` says. A *trial* at load L is a real load point: the suite's
warm-up, then ``max_load.requests`` measured requests (in concurrency mode at least L, so every worker sends
one), judged by :func:`toolkit.evaluation.slo.attainment` (``meets``: at least P% of requests met every
threshold, failures counting against).

Search (:func:`search`, kept apart from the HTTP plumbing so it can be tested on synthetic response curves):
1. Bracketing: try ``start``, then double (``start``, 2·start, 4·start, ..., capped at ``limit``) until a trial
   misses the SLO or the limit itself passed.
2. Bisection between the last passing load ``lo`` and the first failing one ``hi``: try their midpoint (rounded
   down to a whole number in concurrency mode), move ``lo`` up on a pass and ``hi`` down on a miss, until
   ``hi - lo <= resolution`` (in concurrency mode adjacent integers are the finest bracket, so resolution 1
   finds the knee of a monotone curve exactly).
3. Time budget: the first trial always runs; a later one is started only if the time used so far plus the
   slowest trial so far fits in ``budget_s``, so the search ends within about the budget. When it stops early
   ``stopped`` says so and the value is a lower bound.

Noise. Latency under load is noisy, so pass/miss need not be monotone in the load. The reported value is the
highest load that passed **with every lower load tried also passing**. The search guarantees this by
construction: it never tries a load above one that missed (doubling stops at the first miss, bisection only
moves ``hi`` down), so every miss it saw lies above the value and ``first_failing`` is the lowest load that
missed. A spurious miss therefore makes the answer conservative (a higher load that would pass is never tried);
a spurious pass inside the bracket can raise it by up to the bracket width. The trials are all in the report;
more ``requests`` per trial make each verdict steadier.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from toolkit.errors import ToolkitError

if TYPE_CHECKING:
    from toolkit.evaluation.loadgen import LoadPlan, QuestionCursor, Request, Target
    from toolkit.evaluation.report import MaxLoad, MaxLoadTrial
    from toolkit.evaluation.suite import LoadSection

T = TypeVar("T")
UNITS = {"concurrency": "concurrent requests", "poisson": "req/s"}


@dataclass
class SearchResult(Generic[T]):
    value: float | None  # highest load that passed with every lower tried load passing; None: start missed
    first_failing: float | None  # lowest load tried that missed (None: none missed)
    trials: list[tuple[float, bool, T]] = field(default_factory=list)  # (load, meets, measurement), in order
    stopped: str = ""


def bounds(start: float, limit: float, resolution: float, integer: bool) -> tuple[float, float, float]:
    """(start, limit, resolution) as the search uses them: whole numbers >= 1 for concurrency."""
    if not integer:
        return start, limit, resolution
    lo, hi = max(1, math.ceil(start)), math.floor(limit)
    if hi < lo:
        raise ToolkitError(f"load.max_load: no whole concurrency between start {start:g} and limit {limit:g}")
    return lo, hi, max(1, resolution)


def search(measure: Callable[[float], tuple[bool, T]], start: float, limit: float, resolution: float,
           budget_s: float, integer: bool, clock: Callable[[], float] = time.monotonic) -> SearchResult[T]:
    """Highest load meeting the SLO, by doubling then bisection (module docstring). ``measure(load)`` runs one
    trial and returns (meets the SLO, whatever the caller wants kept for that trial)."""
    start, limit, resolution = bounds(start, limit, resolution, integer)
    res: SearchResult[T] = SearchResult(None, None)
    t0, slowest = clock(), 0.0

    def fmt(x: float) -> str:
        return f"{x:g}"

    def trial(load: float) -> bool | None:
        """Run one trial; None when the budget does not allow it."""
        nonlocal slowest
        used = clock() - t0
        if res.trials and used + slowest > budget_s:
            return None
        t = clock()
        meets, kept = measure(load)
        slowest = max(slowest, clock() - t)
        res.trials.append((load, bool(meets), kept))
        return bool(meets)

    def out_of_time(nxt: float) -> SearchResult[T]:
        # the first trial always runs and a miss in bracketing ends it, so a value exists here
        where = (f"{fmt(res.value)} is a lower bound" if res.first_failing is None else
                 f"the knee lies between {fmt(res.value)} and {fmt(res.first_failing)}")
        res.stopped = (f"time budget ({budget_s:g} s) spent: {clock() - t0:.0f} s used, trying {fmt(nxt)} would "
                       f"likely overrun; {where}")
        return res

    load = start
    while True:  # 1. bracketing
        passed = trial(load)
        if passed is None:
            return out_of_time(load)
        if not passed:
            res.first_failing = load
            break
        res.value = load
        if load >= limit:
            res.stopped = f"reached the limit ({fmt(limit)}) with the SLO met"
            return res
        load = min(load * 2, limit)
    if res.value is None:
        res.stopped = f"the first load tried ({fmt(start)}) missed the SLO"
        return res
    lo, hi = res.value, res.first_failing
    while hi - lo > resolution:  # 2. bisection
        mid = (lo + hi) // 2 if integer else (lo + hi) / 2
        passed = trial(mid)
        if passed is None:
            return out_of_time(mid)
        if passed:
            lo = res.value = mid
        else:
            hi = res.first_failing = mid
    res.stopped = f"bracket {fmt(lo)}..{fmt(hi)} within the resolution ({fmt(resolution)})"
    return res


# --- plumbing: real trials against the RAG endpoint ------------------------------------------------------

def trial_plan(load_section: LoadSection, load: float, cursor: QuestionCursor | None = None) -> LoadPlan:
    """The load point of one trial (suite ``load`` section with its ``max_load`` settings); with a ``cursor``,
    on questions the engine has not seen (:class:`toolkit.evaluation.loadgen.QuestionCursor`)."""
    from toolkit.evaluation.loadgen import LoadPlan
    from toolkit.evaluation.suite import MaxLoadSection

    ml = load_section.max_load or MaxLoadSection()
    if ml.mode == "concurrency":
        c = int(load)
        plan = LoadPlan(name=f"maxload-c{c}", mode="concurrency", concurrency=c, requests=max(ml.requests, c),
                        warmup=load_section.warmup)
    else:
        seed = load_section.poisson.seed if load_section.poisson is not None else 0
        plan = LoadPlan(name=f"maxload-poisson{load:g}", mode="poisson", rate_rps=load, requests=ml.requests,
                        warmup=load_section.warmup, seed=seed)
    if cursor is not None:
        plan.offset = cursor.take(plan.warmup + plan.requests)
    return plan


def find_max_load(target: Target, reqs: Sequence[Request], load_section: LoadSection, slo: dict[str, Any],
                  console, cursor: QuestionCursor | None = None) -> tuple[MaxLoad, list[dict[str, Any]]]:
    """Run the search against ``target`` (the RAG endpoint) with a progress line per trial on the rich
    ``console``; return (report ``MaxLoad``, the trials' records tagged ``"phase": "max_load"``). ``cursor``:
    every trial on fresh questions (needed to measure prefix caching; see ``QuestionCursor``)."""
    from toolkit.evaluation.loadgen import run_point_sync
    from toolkit.evaluation.repeats import outcome
    from toolkit.evaluation.report import MaxLoad, MaxLoadTrial
    from toolkit.evaluation.suite import MaxLoadSection

    if target.kind != "rag":
        raise ValueError("the max-load search measures the RAG endpoint")
    ml = load_section.max_load or MaxLoadSection()
    records: list[dict[str, Any]] = []
    console.print(f"[bold]max load[/]: searching the highest {ml.mode} meeting the SLO ({slo_label(slo)}), "
                  f"{ml.start:g}..{ml.limit:g}, budget {ml.budget_s:g} s")

    def measure(load: float) -> tuple[bool, MaxLoadTrial]:
        plan = trial_plan(load_section, load, cursor)
        console.print(f"[bold]max load[/] trial {load:g} {UNITS[ml.mode]}: {plan.requests} requests")
        summary, recs = run_point_sync(target, reqs, plan, load_section.timeout_s, slo)
        records.extend({"phase": "max_load", "load": load, **r} for r in recs)
        console.print(f"  {outcome(summary)}")
        trial = MaxLoadTrial(load=load, meets=summary["slo"]["meets"], slo=summary["slo"], e2e_ms=summary["e2e_ms"],
                             req_s=summary["throughput"]["req_s"], errors=summary["errors"])
        return trial.meets, trial

    t = time.perf_counter()
    res = search(measure, ml.start, ml.limit, ml.resolution, ml.budget_s, integer=ml.mode == "concurrency")
    result = MaxLoad(mode=ml.mode, unit=UNITS[ml.mode], value=res.value, first_failing=res.first_failing, slo=slo,
                     trials=[kept for _, _, kept in res.trials], stopped=res.stopped,
                     wall_s=round(time.perf_counter() - t, 1))
    return result, records


# --- words -----------------------------------------------------------------------------------------------

def _short(metric: str) -> str:
    return metric.removesuffix("_ms")


def slo_label(slo: dict[str, Any]) -> str:
    """``"ttft<=3000 ms, e2e<=5000 ms at p95"``."""
    from toolkit.evaluation.slo import thresholds

    limits = ", ".join(f"{_short(m)}<={ms:g} ms" for m, ms in thresholds(slo).items())
    return f"{limits} at p{float(slo.get('percentile', 95.0)):g}"


def _missed(trial: MaxLoadTrial) -> str:
    """What a failed trial missed: the metrics below the percentile, with their value there, and errors."""
    s = trial.slo
    parts = [f"p{s.percentile:g} {_short(m)} " + ("–" if s.at_percentile.get(m) is None else
                                                  f"{s.at_percentile[m]:,.0f} ms")
             for m, share in s.met_share.items() if share is None or share < s.percentile / 100]
    if trial.errors:
        parts.append(f"{trial.errors} errors")
    return ", ".join(parts) or "missed"


def describe(max_load: MaxLoad) -> str:
    """The report's max-load line, e.g. ``max load under SLO (e2e<=2000 ms at p95): 6 concurrent requests;
    7 missed (p95 e2e 2,310 ms)``."""
    def fmt(x: float) -> str:
        return f"{int(x)}" if max_load.mode == "concurrency" else f"{x:g}"

    failing = next((t for t in max_load.trials if t.load == max_load.first_failing), None)
    head = f"max load under SLO ({slo_label(max_load.slo)}): "
    if max_load.value is None:
        if failing is None:
            return head + f"none ({max_load.stopped})"
        return head + f"none: the first load tried, {fmt(failing.load)} {max_load.unit}, missed ({_missed(failing)})"
    line = head + f"{fmt(max_load.value)} {max_load.unit}"
    return line + (f"; {fmt(failing.load)} missed ({_missed(failing)})" if failing else "; no load tried missed")
