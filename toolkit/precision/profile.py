"""The serving profile a precision run writes, for ``make serve MODEL=... PROFILE=...``.

The profile is the serving stage's own default for this device (``serve/<device>.yaml``: endpoint and
retrieval settings untouched) with the engine's ``dtype`` and ``kv_cache_dtype`` set to the chosen format.
The checkpoint to serve (the quantized one when the winner is FP8/INT8) and the measurements that justified
the choice (budget, winner, per-candidate medians with their spread, hardware) are written as the profile's
header comment, and as ``model:``/``selection:`` keys if the serving schema defines them; the full record is
the ``.json`` beside the profile.

The profile is validated against the serving stage's model (``toolkit.serving.profiles.ServeProfile``)
before it is written, so a profile this stage writes is one ``serve`` accepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from toolkit.paths import REPO_ROOT
from toolkit.precision.select import pct, speed


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


def _serve_schema():
    """The serving stage's profile model, or None when that stage is not installed."""
    try:
        from toolkit.serving.profiles import ServeProfile
    except ImportError:
        return None
    return ServeProfile


def _base_profile(device: str) -> dict[str, Any]:
    """The serving stage's own default profile for this device (endpoint/retrieval settings kept as they are)."""
    from toolkit.config import read_yaml
    from toolkit.paths import SERVE_DIR

    base = SERVE_DIR / f"{device}.yaml"
    return read_yaml(base) if base.is_file() else {}


def build_profile(result: dict[str, Any], candidate: str | None = None) -> dict[str, Any]:
    """Serving profile for the selected candidate (or ``candidate``): the device's default profile with its
    engine dtype and KV-cache dtype. The checkpoint to serve and the justification go in as ``model``/
    ``selection`` when the serving schema has those fields; otherwise they are written as the profile's header
    comment (:func:`dump_profile`) and in full in the ``.json`` beside it."""
    rows = {r["name"]: r for r in result["candidates"]}
    win = rows[candidate or result["selection"]["winner"]]
    device = result["hardware"]["device"]
    profile = _base_profile(device)
    profile["device"] = device
    engine = dict(profile.get("engine") or {})
    engine.update(dtype=win["engine_dtype"], kv_cache_dtype=win["kv_cache_dtype"])
    profile["engine"] = engine
    schema = _serve_schema()
    fields = schema.model_fields if schema is not None else {"model": None, "selection": None}
    if "model" in fields:
        profile["model"] = serve_model(result, candidate)
    if "selection" in fields:
        profile["selection"] = selection_block(result)
    validate_profile(profile)
    return profile


def serve_model(result: dict[str, Any], candidate: str | None = None) -> str:
    """The checkpoint to serve: the quantized one when the winner (or ``candidate``) is FP8/INT8, else the
    model measured."""
    name = candidate or result["selection"]["winner"]
    win = next(r for r in result["candidates"] if r["name"] == name)
    return _portable(win.get("checkpoint") or result["model"])


def validate_profile(profile: dict[str, Any]) -> None:
    """Validate against the serving stage's profile model when that stage is installed (no-op otherwise)."""
    schema = _serve_schema()
    if schema is None:
        return
    from toolkit.config import validate

    validate(schema, profile, "precision profile")


def dump_profile(profile: dict[str, Any], result: dict[str, Any], candidate: str | None = None) -> str:
    """YAML text whose header says where it came from, what to serve with it and the numbers behind it.
    ``candidate``: a profile for another format than the selected one (the fastest unquantized baseline)."""
    sel = selection_block(result)
    label = next((r["label"] for r in result["candidates"] if r["name"] == candidate), None)
    head = (f"Serving profile chosen by `toolkit precision` on {sel['hardware']} ({sel['measured_at']})."
            if candidate is None else
            f"Serving profile for {label}, the fastest format served from the checkpoint as it is "
            f"(the baseline to beat), measured by `toolkit precision` on {sel['hardware']} ({sel['measured_at']}).")
    lines = [
        head,
        sel["message"],
        f"Serve it:  make serve MODEL={serve_model(result, candidate)} PROFILE=<this file>",
        f"Quality reference: {sel['reference']['dtype']} perplexity {sel['reference']['perplexity']}; "
        f"speed = {sel['rank_by']} tok/s median [min-max] of {sel['repeats']} runs.",
    ]
    for name, c in sel["candidates"].items():
        s = c.get(f"{sel['rank_by']}_tok_s")
        parts = [f"{name:<5} {c['status']:<9}"]
        if s:
            parts.append(f"{s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}] tok/s")
        if "ppl_delta" in c:
            parts.append(f"ppl {c['perplexity']} ({pct(c['ppl_delta'], True)})")
        if c.get("reason") or c.get("error"):
            parts.append(c.get("error") or c["reason"])
        lines.append("  " + "  ".join(parts))
    lines.append("All measurements: the .json beside this file.")
    return "".join(f"# {ln}\n" for ln in lines) + yaml.safe_dump(profile, sort_keys=False, allow_unicode=True,
                                                                   width=110)
