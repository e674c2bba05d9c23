"""Pick the format to serve: the fastest candidate whose perplexity stays within the budget.

Quality: ``delta = (ppl_candidate - ppl_reference) / ppl_reference``. The budget bounds ``|delta|``: a
format is meant to reproduce the reference model, and on a small validation sample a *lower* perplexity
after quantization is numerical noise, not an improvement to bank on. Speed: median decode tokens/s at the
largest measured batch (``rank_by: decode``, the serving-throughput view) or median prefill tokens/s
(``rank_by: prefill``, for long-prompt RAG workloads).

If no measured candidate meets the budget, the answer is the most accurate one (smallest ``|delta|``) with
a message saying so: a deployer then knows the budget, not the tool, ruled out the faster formats. The
winner's lead is also checked against the spread: if the runner-up's best run beats the winner's worst run,
the note says the two are within measurement noise.
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import ToolkitError


UNQUANTIZED = ("fp32", "tf32", "bf16", "fp16")  # served from the checkpoint as it is, only the engine dtype changes


def pct(x: float, signed: bool = False) -> str:
    """Percentages at the resolution perplexity changes need (a 0.004% change is not "0.00%")."""
    return f"{x * 100:+.3f}%" if signed else f"{x * 100:g}%"


def add_quality(rows: list[dict[str, Any]], reference_ppl: float) -> None:
    """Fill ``ppl_delta`` (relative change vs the reference) on every row that has a perplexity."""
    for r in rows:
        if r.get("perplexity") is not None:
            r["ppl_delta"] = (r["perplexity"] - reference_ppl) / reference_ppl


def speed(row: dict[str, Any], rank_by: str = "decode") -> dict[str, float] | None:
    """The stats dict ({median, min, max}) used to rank ``row``; None when it has no throughput."""
    tp = row.get("throughput") or {}
    if rank_by == "prefill":
        return tp.get("prefill")
    decode = tp.get("decode") or {}
    if not decode:
        return None
    return decode[max(decode, key=int)]


def select(rows: list[dict[str, Any]], budget: float, rank_by: str = "decode") -> dict[str, Any]:
    """``{"winner", "within_budget", "message", "ranking"}``; raises when nothing was measured at all."""
    usable = [r for r in rows if r.get("ppl_delta") is not None and speed(r, rank_by) is not None]
    if not usable:
        failed = "; ".join(f"{r['name']}: {r.get('error') or r['reason']}" for r in rows)
        raise ToolkitError(f"no candidate could be measured on this machine ({failed})")
    ranking = sorted(usable, key=lambda r: -speed(r, rank_by)["median"])
    within = [r for r in ranking if abs(r["ppl_delta"]) <= budget]
    metric = "decode tok/s" if rank_by == "decode" else "prefill tok/s"
    if within:
        win = within[0]
        s = speed(win, rank_by)
        msg = (f"{win['label']}: fastest within the {pct(budget)} perplexity budget "
               f"({s['median']:.1f} {metric}, perplexity {pct(win['ppl_delta'], True)})")
        if len(within) > 1 and speed(within[1], rank_by)["max"] >= s["min"]:
            msg += f"; {within[1]['label']} is within the measured spread (runs overlap)"
        ok = True
    else:
        win = min(usable, key=lambda r: (abs(r["ppl_delta"]), -speed(r, rank_by)["median"]))
        by_accuracy = sorted(usable, key=lambda r: abs(r["ppl_delta"]))
        closest = ", ".join(f"{r['label']} {pct(r['ppl_delta'], True)}" for r in by_accuracy)
        msg = (f"no candidate stays within the {pct(budget)} perplexity budget ({closest}); "
               f"choosing the most accurate: {win['label']}")
        ok = False
    # The baseline a user would compare against: the fastest format that needs no quantized checkpoint.
    unquantized = next((r["name"] for r in ranking if r["name"] in UNQUANTIZED), None)
    return {"winner": win["name"], "within_budget": ok, "message": msg, "rank_by": rank_by, "budget": budget,
            "ranking": [r["name"] for r in ranking], "fastest_unquantized": unquantized}
