"""The serving profile a precision run writes, for ``make serve PROFILE=...``.

The profile says how vLLM should run the model: ``dtype``, the checkpoint to serve (the quantized one when
the winner is FP8/INT8), the KV-cache dtype, and under ``selection`` the measurements that justified the
choice (budget, winner, per-candidate medians with their spread, hardware). The full measurement record
stays in the ``.json`` beside the profile; the profile carries the summary a reviewer needs.

If the serving stage's profile model (``toolkit.serving``) is importable, the profile is validated against
it before it is written, so a profile this stage writes is one ``serve`` accepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from toolkit.paths import REPO_ROOT
from toolkit.precision.select import speed


def _portable(path: str | Path) -> str:
    """Repo-relative when inside the repository (profiles are committed/shared), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def _summary(row: dict[str, Any], rank_by: str) -> dict[str, Any]:
    out: dict[str, Any] = {"status": row["status"]}
    if row.get("error"):
        out["error"] = row["error"]
    if row["status"] == "skipped":
        out["reason"] = row["reason"]
        return out
    if row.get("perplexity") is not None:
        out["perplexity"] = round(row["perplexity"], 4)
        out["ppl_delta"] = round(row["ppl_delta"], 5)
    s = speed(row, rank_by)
    if s:
        out[f"{rank_by}_tok_s"] = {k: round(s[k], 2) for k in ("median", "min", "max")}
    return out


def selection_block(result: dict[str, Any]) -> dict[str, Any]:
    """The ``selection`` section: what was chosen, under which budget, and the numbers behind it."""
    sel, rows = result["selection"], result["candidates"]
    return {
        "winner": sel["winner"],
        "within_budget": sel["within_budget"],
        "message": sel["message"],
        "budget_ppl_change": sel["budget"],
        "rank_by": sel["rank_by"],
        "reference": {"dtype": result["reference"]["dtype"], "perplexity": round(result["reference"]["perplexity"], 4)},
        "repeats": result["settings"]["throughput"]["repeats"],
        "hardware": result["hardware_summary"],
        "measured_at": result["created"],
        "candidates": {r["name"]: _summary(r, sel["rank_by"]) for r in rows},
    }


def build_profile(result: dict[str, Any]) -> dict[str, Any]:
    """Serving profile for the selected candidate (dtype, checkpoint, KV-cache dtype, justification)."""
    rows = {r["name"]: r for r in result["candidates"]}
    win = rows[result["selection"]["winner"]]
    checkpoint = win.get("checkpoint") or result["model"]
    profile = {
        "model": _portable(checkpoint),
        "dtype": win["engine_dtype"],
        "quantization": Path(win["quantize_recipe"]).stem if win.get("quantize_recipe") else None,
        "kv_cache_dtype": win["kv_cache_dtype"],
        "selection": selection_block(result),
    }
    validate_profile(profile)
    return profile


def validate_profile(profile: dict[str, Any]) -> None:
    """Validate against the serving stage's profile model when that stage is installed (no-op otherwise)."""
    try:
        from toolkit.serving.profile import ServingProfile  # type: ignore[import-not-found]
    except ImportError:
        return
    from toolkit.config import validate

    validate(ServingProfile, profile, "precision profile")


def dump_profile(profile: dict[str, Any], result: dict[str, Any]) -> str:
    """YAML text with a header saying where it came from and how to use it."""
    sel = result["selection"]
    header = (
        f"# Serving profile chosen by `toolkit precision` on {result['hardware_summary']} ({result['created']}).\n"
        f"# {sel['message']}\n"
        f"# Measurements: the .json beside this file. Use it with:\n"
        f"#   make serve PROFILE=<this file>\n"
    )
    return header + yaml.safe_dump(profile, sort_keys=False, allow_unicode=True, width=110)
