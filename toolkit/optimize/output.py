"""What ``toolkit optimize`` leaves in ``artifacts/optimize/<name>/``: ``optimize.json`` (every configuration
with its deepest trial, status and reason), ``pareto.png`` (QA F1 vs max load under the SLO), ``profile.yaml``
(the winner as a serve profile) and ``verdict.md`` (one paragraph).

The verdict compares the winner with the baseline configuration at the precision each was last measured at, then
says whether the interleaved confirmation run (:mod:`toolkit.optimize.confirm`) reproduced it; when nothing
qualified, which SLO metric binds and by how much for the closest configurations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit.atomic import atomic_write_bytes, atomic_write_text
from toolkit.optimize.search import excluded, pareto_front


def front(result: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Pareto front (F1, max load) over configurations measured with a value; F1 unknown counts as 0."""
    pts = {c: (r["record"].get("f1") or 0.0, r["record"]["value"]) for c, r in result.items()
           if r["record"] is not None and r["record"].get("value") is not None}
    return pareto_front(pts)


def pareto_png(result: Mapping[str, Mapping[str, Any]], on_front: list[str], winner: str | None,
               unit: str) -> bytes | None:
    """Scatter of every measured configuration: max load under the SLO (x) vs QA F1 (y), the front dashed, the
    winner starred. Uses the compare figures' canvas helpers (:mod:`toolkit.evaluation.plots`)."""
    from toolkit.evaluation.plots import new_figure, png_bytes

    pts = {c: r for c, r in result.items() if r["record"] is not None and r["record"].get("status") == "done"}
    if not pts:
        return None
    plt, fig, ax = new_figure(height=4.2)
    for c, r in pts.items():
        rec = r["record"]
        x, y = rec.get("value") or 0.0, rec.get("f1") or 0.0
        ax.plot([x], [y], "*" if c == winner else "o" if c in on_front else "x", ms=12 if c == winner else 7,
                color="C3" if c == winner else "C0" if c in on_front else "gray", clip_on=False)
        ax.annotate(rec["label"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
    line = sorted((pts[c]["record"]["value"], pts[c]["record"].get("f1") or 0.0) for c in on_front if c in pts)
    if len(line) > 1:
        ax.plot([p[0] for p in line], [p[1] for p in line], "--", color="gray", label="Pareto front")
        ax.legend(fontsize=7)
    ax.set_xlim(0, max((r["record"].get("value") or 0.0) for r in pts.values()) * 1.2 or 1.0)
    ax.set_ylim(0, max(1e-3, max((r["record"].get("f1") or 0.0) for r in pts.values())) * 1.25)
    ax.set_xlabel(f"max load under the SLO ({unit})")
    ax.set_ylabel("QA token F1 (rung 0)")
    ax.set_title("toolkit optimize: quality vs max load (x = no load met the SLO)")
    ax.grid(alpha=0.3)
    return png_bytes(plt, fig)


def _f1(trials: Mapping[tuple[int, str], Mapping[str, Any]], cid: str) -> float | None:
    rec = trials.get((0, cid))
    return None if rec is None else rec.get("f1")


def binding(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The SLO metric that binds for a configuration: at the lowest load its searches tried, the metric whose
    percentile overshoots its threshold the most (median over the searches); None when nothing was tried."""
    from toolkit.stats import median

    trials = [t for m in rec.get("max_loads") or [] for t in m.get("trials") or []]
    if not trials:
        return None
    low = min(t["load"] for t in trials)
    over: dict[str, list[tuple[float, float, float]]] = {}
    for t in (t for t in trials if t["load"] == low):
        for metric, limit in t["slo"]["thresholds"].items():
            if (value := t["slo"]["at_percentile"].get(metric)) is not None:
                over.setdefault(metric, []).append((value / limit - 1, value, limit))
    if not over:
        return None
    metric = max(over, key=lambda m: median([x[0] for x in over[m]]))
    xs = over[metric]
    return {"metric": metric, "load": low, "overshoot": median([x[0] for x in xs]),
            "value": median([x[1] for x in xs]), "threshold": xs[0][2], "percentile": trials[0]["slo"]["percentile"]}


def nothing_met(result: Mapping[str, Mapping[str, Any]], floor: float | None, unit: str, closest: int = 3) -> str:
    """Why no configuration qualified: those that met the SLO but not the quality floor, then the constraint
    that binds and by how much for the ``closest`` configurations (smallest overshoot first)."""
    def short(metric: str) -> str:
        return metric.removesuffix("_ms")

    done = [r["record"] for r in result.values() if r["record"] is not None and r["record"].get("status") == "done"]
    parts = []
    if too_poor := [rec for rec in done if rec.get("value") is not None]:
        parts.append("met the SLO but not the quality budget: " + "; ".join(
            f"{rec['label']} ({rec['value']:g} {unit}, {excluded(rec, floor)})" for rec in too_poor))
    missed = sorted(((b, rec) for rec in done if rec.get("value") is None and (b := binding(rec)) is not None),
                    key=lambda x: x[0]["overshoot"])
    if missed:
        metrics = sorted({b["metric"] for b, _ in missed})
        parts.append(f"binding constraint: {', '.join(short(m) for m in metrics)}; closest: " + "; ".join(
            f"{rec['label']}: {short(b['metric'])} p{b['percentile']:g} {b['value']:,.0f} ms vs {b['threshold']:,.0f} "
            f"ms at {b['load']:g} {unit} (+{b['overshoot']:.0%})" for b, rec in missed[:closest]))
    return "No configuration met the SLO within the quality budget" + (": " + ". ".join(parts) if parts else "") + "."


def verdict(result: Mapping[str, Mapping[str, Any]], winner: str | None, baseline: str,
            trials: Mapping[tuple[int, str], Mapping[str, Any]], floor: float | None, unit: str, stopped: str,
            confirmation: Mapping[str, Any] | None = None) -> str:
    """One paragraph: the winner vs the baseline and whether the interleaved confirmation reproduced it, or why
    nothing qualified and what came closest."""
    from toolkit.optimize.confirm import phrase

    base = result[baseline]["record"]
    tail = f" Search: {stopped}."
    if winner is None:
        if not any(r["record"] is not None for r in result.values()):
            return "No configuration was measured: " + "; ".join(
                sorted({str(r["reason"]) for r in result.values() if r["reason"]})) + "." + tail
        return nothing_met(result, floor, unit) + tail
    w = result[winner]["record"]
    parts = [(f"Chosen: {w['label']}: max load {w['value']:g} {unit} under the SLO (rung {w['rung']}, "
              f"median of {len(w['values'])} search(es))")]
    if winner == baseline:
        parts.append("; that is the baseline configuration: no other configuration did better")
    elif base is not None and base.get("value"):
        parts.append(f", {w['value'] / base['value']:.2f}x the baseline's {base['value']:g} "
                     f"(measured at rung {base['rung']})")
    elif base is not None:
        parts.append(f"; the baseline ({base['label']}) had no max load under the SLO "
                     f"({excluded(base, None) or 'not measured'})")
    fw, fb = _f1(trials, winner), _f1(trials, baseline)
    if fw is not None and fb is not None and winner != baseline:
        parts.append(f", F1 {fw - fb:+.3f} vs the baseline ({fw:.3f} vs {fb:.3f})")
    if w.get("interval") and w["interval"].get("cv") is not None:
        parts.append(f"; CV of its max load across searches {w['interval']['cv']:.0%}")
    text = "".join(parts) + "."
    if confirmation is None:
        if winner != baseline:
            text += " Not confirmed by an interleaved run (confirm.enabled is off or the baseline was not measured)."
    elif confirmation.get("error"):
        text += f" The interleaved confirmation run failed: {confirmation['error']}."
    else:
        text += " " + phrase(confirmation, unit)
    return text + tail


def write_outputs(root: Path, summary: dict[str, Any], png: bytes | None) -> list[Path]:
    """Write ``optimize.json``, ``verdict.md`` and ``pareto.png`` atomically; returns the paths written."""
    paths = [atomic_write_text(root / "optimize.json", json.dumps(summary, indent=1) + "\n"),
             atomic_write_text(root / "verdict.md", summary["verdict"] + "\n")]
    if png is not None:
        paths.append(atomic_write_bytes(root / "pareto.png", png))
    return paths
