"""The search logic of ``toolkit optimize`` as pure functions of trial records (no I/O, no servers), so it can be
tested on synthetic results whose right answer follows from how they were built.

Method
1. Screen (:func:`ppl_pruned`): a variant whose validation perplexity rises more than the budget above the
   baseline's is never load-tested; its configurations are recorded as pruned with the figure.
2. Successive halving (Jamieson & Talwalkar, AISTATS 2016; the inner loop of Hyperband, Li et al., JMLR 2018):
   rung 0 measures every surviving configuration cheaply (a max-load search with few requests per trial);
   :func:`promote` keeps the best ``ceil(n / eta)`` for rung 1, which measures them with ``eta`` times the
   requests and more repeats, and so on. The record of rung r is the configuration's measurement at that
   precision; a later rung's figure supersedes an earlier one.
3. Objective (:func:`rank_key`): the max load meeting the SLO (median over the rung's repeated searches),
   higher first; ties broken by the engine's peak memory, then the size on disk, lower first.
4. Not promoted, whatever the rank: a failed trial, a configuration for which no load met the SLO, one whose F1
   fell more than ``f1_drop`` below the baseline's, and a *known-dominated* one: a load at or below the best
   configuration's max load already missed the SLO for it (its knee lies below the best's, under the monotone
   load/latency assumption the max-load search itself makes) and its F1 is no better.
5. Resume (:func:`next_work`): the schedule is recomputed from the records alone, so a re-run with every record
   present has nothing to do, and an interrupted one continues at the first missing trial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Trials = Mapping[tuple[int, str], Mapping[str, Any]]


def ppl_pruned(increase: float | None, budget: float | None) -> str | None:
    """Why a variant is pruned by the perplexity screen, or None. ``increase``: relative perplexity increase over
    the baseline (0.05 = +5%); None when it could not be measured (then the variant is load-tested)."""
    if budget is None or increase is None or increase <= budget:
        return None
    return f"perplexity +{increase:.1%} over the baseline's, above the budget (+{budget:.1%}); not load-tested"


def rung_plan(rung: int, base_requests: int, eta: int, repeats: Sequence[int]) -> tuple[int, int]:
    """(requests per max-load trial, max-load searches) at ``rung``: requests grow by ``eta`` per rung; repeats
    follow the recipe's list, its last value holding for deeper rungs."""
    return base_requests * eta**rung, repeats[min(rung, len(repeats) - 1)]


def rank_key(rec: Mapping[str, Any]) -> tuple[float, float, float]:
    """Sort key, best first: max load (higher), engine peak RSS (lower), size on disk (lower); unknowns last."""
    inf = math.inf
    value = rec.get("value")
    return (-(value if value is not None else -inf), rec.get("peak_rss_mb") or inf, rec.get("size_bytes") or inf)


def f1_floor(trials: Trials, baseline_id: str, f1_drop: float | None) -> float | None:
    """Lowest F1 within the quality budget: the baseline's rung-0 F1 minus ``f1_drop`` (None: no check)."""
    base = trials.get((0, baseline_id))
    if f1_drop is None or base is None or base.get("f1") is None:
        return None
    return float(base["f1"]) - f1_drop


def excluded(rec: Mapping[str, Any], floor: float | None) -> str | None:
    """Why a measured configuration cannot be chosen or promoted, whatever its rank (None: it can)."""
    if rec.get("status") != "done":
        return f"trial failed: {rec.get('reason') or 'unknown error'}"
    if rec.get("value") is None:
        return "no load tried met the SLO"
    if floor is not None and rec.get("f1") is not None and rec["f1"] < floor:
        return f"F1 {rec['f1']:.3f} below the quality floor {floor:.3f} (baseline F1 - f1_drop)"
    return None


def promote(at_rung: Mapping[str, Mapping[str, Any]], eta: int, floor: float | None
            ) -> tuple[list[str], dict[str, str]]:
    """Configurations going on from one rung (best first) and why each other one stops there."""
    dropped: dict[str, str] = {}
    eligible = []
    for cid, rec in at_rung.items():
        why = excluded(rec, floor)
        if why:
            dropped[cid] = why
        else:
            eligible.append(cid)
    eligible.sort(key=lambda c: (rank_key(at_rung[c]), c))
    if not eligible:
        return [], dropped
    best = at_rung[eligible[0]]
    survivors = [eligible[0]]
    for cid in eligible[1:]:
        rec = at_rung[cid]
        fail = rec.get("first_failing")
        if fail is not None and fail <= best["value"] and (rec.get("f1") or 0.0) <= (best.get("f1") or 0.0):
            dropped[cid] = (f"dominated: {fail:g} already missed the SLO, at or below the best's max load "
                            f"({best['value']:g}), with no better F1")
        else:
            survivors.append(cid)
    keep = max(1, math.ceil(len(eligible) / eta))
    for rank, cid in enumerate(survivors[keep:], start=keep + 1):
        dropped[cid] = (f"rank {rank} of {len(eligible)} (max load {at_rung[cid]['value']:g}); "
                        f"only the best {keep} go on")
    return survivors[:keep], dropped


def next_work(config_ids: Sequence[str], pruned: set[str], trials: Trials, rungs: int, eta: int,
              floor: float | None) -> tuple[int | None, list[str]]:
    """The first rung with missing trials and those configurations, in the given order; (None, []) when the
    search is complete. Rung 0 runs every configuration not pruned by the screen."""
    alive = [c for c in config_ids if c not in pruned]
    for rung in range(rungs):
        missing = [c for c in alive if (rung, c) not in trials]
        if missing:
            return rung, missing
        alive, _ = promote({c: trials[(rung, c)] for c in alive}, eta, floor)
        if not alive:
            return None, []
    return None, []


def outcome(config_ids: Sequence[str], pruned: Mapping[str, str], trials: Trials, rungs: int, eta: int,
            floor: float | None) -> dict[str, dict[str, Any]]:
    """Per configuration: ``{"rung": deepest rung measured (None if never), "record": that record,
    "status": pruned|stopped|finalist|unmeasured, "reason": why it stopped}``. Finalists are the configurations
    promoted through every rung measured so far."""
    out: dict[str, dict[str, Any]] = {c: {"rung": None, "record": None, "status": "unmeasured", "reason": None}
                                      for c in config_ids}
    for c, why in pruned.items():
        out[c].update(status="pruned", reason=why)
    alive = [c for c in config_ids if c not in pruned]
    for rung in range(rungs):
        measured = {c: trials[(rung, c)] for c in alive if (rung, c) in trials}
        for c, rec in measured.items():
            out[c].update(rung=rung, record=rec, status="finalist", reason=None)
        if len(measured) < len(alive):  # this rung is unfinished (budget spent): stop here
            for c in alive:
                if c not in measured and out[c]["rung"] is not None:
                    out[c]["reason"] = f"rung {rung} not measured (budget spent)"
            break
        alive, dropped = promote(measured, eta, floor)
        for c, why in dropped.items():
            out[c].update(status="stopped", reason=f"rung {rung}: {why}")
    return out


def choose(result: Mapping[str, Mapping[str, Any]], floor: float | None) -> str | None:
    """The winner: among the configurations measured at the deepest rung any eligible one reached, the best by
    :func:`rank_key`; None when no configuration is eligible (nothing met the SLO within the quality budget)."""
    eligible = [(c, r) for c, r in result.items()
                if r["record"] is not None and excluded(r["record"], floor) is None]
    if not eligible:
        return None
    deepest = max(r["rung"] for _, r in eligible)
    return min((c for c, r in eligible if r["rung"] == deepest), key=lambda c: (rank_key(result[c]["record"]), c))


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Ids not dominated on (quality, load), both higher-is-better: no other point is >= on both and > on one."""
    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] >= b[0] and a[1] >= b[1] and a != b
    return sorted((k for k, p in points.items() if not any(dominates(q, p) for q in points.values())),
                  key=lambda k: points[k][1])
