"""``toolkit optimize [--recipe R] [--model A,B] [--slo S] [--quality Q] [--budget 60m]``: the configuration that
serves the most traffic within a latency SLO and a quality budget.

Order of work: validate everything (recipe, suite, SLO, index, variants) before anything slow; perplexity
screen per variant (:mod:`toolkit.optimize.trials_run`); successive halving through the real endpoint, one
engine start per group of configurations sharing a stack, until the search is complete or the time budget
would be overrun (:mod:`toolkit.optimize.search`); then the outputs (:mod:`toolkit.optimize.output`). The time
budget: a group is started only if the time used plus the slowest group so far fits, so the search ends within
about the budget; every finished trial is on disk, and a re-run with a larger budget continues.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.paths import ARTIFACTS, RECIPES_DIR

DEFAULT_RECIPE = RECIPES_DIR / "optimize" / "default.yaml"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="optimize recipe YAML (default: %(default)s)")
    parser.add_argument("--model", help="comma-separated model directories (the first is the baseline); "
                        "replaces space.variants")
    parser.add_argument("--slo", help="e.g. e2e_p95:2000,ttft_p95:800 (replaces the recipe's slo)")
    parser.add_argument("--quality", help="e.g. f1_drop:0.02,ppl_increase:3%% (replaces those budget entries)")
    parser.add_argument("--budget", help="wall-time budget of the search, e.g. 60m, 90s, 1.5h")
    parser.add_argument("--index", help="retrieval index directory")
    parser.add_argument("--name", help="output name (artifacts/optimize/<name>/; default: the recipe's)")
    parser.add_argument("--output", help="output directory (default: artifacts/optimize/<name>)")
    parser.add_argument("--no-confirm", action="store_true", help="skip the interleaved confirmation run of the "
                        "winner against the baseline (recipe confirm.enabled)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line values as dotted recipe overrides (validated with the recipe)."""
    from toolkit.optimize.recipe import parse_quality

    out: dict[str, Any] = {}
    if getattr(args, "model", None):
        out["space.variants"] = [m.strip() for m in args.model.split(",") if m.strip()]
    for flag in ("slo", "budget", "index", "name"):
        if getattr(args, flag, None):
            out[flag] = getattr(args, flag)
    if getattr(args, "no_confirm", False):
        out["confirm.enabled"] = False
    if getattr(args, "quality", None):
        out.update(parse_quality(args.quality))
    return out


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Everything checked before slow work: recipe, suite, SLO, index, variants, QA rows, output directory."""
    from toolkit.evaluation.quality import read_qa
    from toolkit.evaluation.slo import parse_slo, thresholds
    from toolkit.evaluation.suite import load_suite
    from toolkit.optimize.recipe import load_optimize_recipe, repo_path
    from toolkit.optimize.space import configs
    from toolkit.optimize.trials import TrialStore
    from toolkit.paths import INDEXES_DIR, REFERENCE_QA

    recipe = load_optimize_recipe(args.recipe, overrides(args))
    suite_path = repo_path(recipe.suite)
    suite = load_suite(suite_path)
    if recipe.slo:
        slo = parse_slo(recipe.slo)
    elif suite.slo is not None:
        slo = {**thresholds(suite.slo), "percentile": suite.slo.percentile}
    else:
        raise ToolkitError(f"slo: no SLO to meet (set slo in {args.recipe}, pass --slo, or add one to {suite_path})")
    index = repo_path(recipe.index) if recipe.index else INDEXES_DIR / "flat"
    if not index.is_dir():
        raise ToolkitError(f"index: {index} not found (build one with `make index` or pass --index)")
    for v in recipe.space.variants:
        if not repo_path(v).is_dir():
            raise ToolkitError(f"space.variants: {v}: model directory not found")
    for i in recipe.space.index:
        if i is not None and not repo_path(i).is_dir():
            raise ToolkitError(f"space.index: {i}: index directory not found")
    rows = read_qa(suite.qa.path or REFERENCE_QA, suite.qa.split, suite.qa.limit)  # the F1 pass
    pool = read_qa(suite.qa.path or REFERENCE_QA, suite.qa.split, None)  # load: every question of the split
    root = Path(args.output) if getattr(args, "output", None) else ARTIFACTS / "optimize" / recipe.name
    store = TrialStore(root)
    context = {"slo": slo, "suite": str(suite_path), "suite_sha256": suite.digest(), "index": str(index.resolve()),
               "search": recipe.search.model_dump(mode="json"), "profile": recipe.profile}
    store.check_context(context)
    return {"recipe": recipe, "suite": suite, "slo": slo, "index": index, "rows": rows, "pool": pool, "store": store,
            "root": root, "configs": configs(recipe.space), "context": context}


def search_loop(p: dict[str, Any], console) -> str:
    """Screen, then run the missing trials rung by rung until done or the budget is spent; returns why it ended."""
    from toolkit.optimize.search import f1_floor, next_work, ppl_pruned
    from toolkit.optimize.space import stack_key
    from toolkit.optimize.trials_run import measure_group, screen

    recipe, store, cfgs = p["recipe"], p["store"], p["configs"]
    t0, budget = time.monotonic(), recipe.budget_s
    p["screens"] = screen(recipe.space.variants, p["suite"], store, console)
    p["pruned"] = {c.id: why for c in cfgs
                   if (why := ppl_pruned(p["screens"][c.variant]["increase"], recipe.quality.ppl_increase))}
    ids, by_id = [c.id for c in cfgs], {c.id: c for c in cfgs}
    slowest = 0.0
    while True:
        trials = store.trials()
        floor = f1_floor(trials, cfgs[0].id, recipe.quality.f1_drop)
        rung, missing = next_work(ids, set(p["pruned"]), trials, recipe.search.rungs, recipe.search.eta, floor)
        if rung is None:
            return "complete: every rung measured" if trials else "nothing to measure: every variant pruned"
        group_key = stack_key(by_id[missing[0]])
        group = [by_id[c] for c in missing if stack_key(by_id[c]) == group_key]
        used = time.monotonic() - t0
        if slowest and used + slowest > budget:
            return (f"time budget ({recipe.budget}) spent: {used:.0f} s used, the next engine start (rung {rung}) "
                    f"would likely overrun; re-run with a larger --budget to continue")
        slowest = max(slowest, measure_group(recipe, p["suite"], p["slo"], p["index"], group, rung, p["rows"], store,
                                             budget - used, console, p["pool"]))


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from toolkit.evaluation.maxload import UNITS, slo_label
    from toolkit.optimize.output import front, pareto_png, verdict, write_outputs
    from toolkit.optimize.search import choose, f1_floor, outcome
    from toolkit.optimize.space import serve_profile

    console = Console(stderr=True)
    p = prepare(args)
    recipe, store, cfgs = p["recipe"], p["store"], p["configs"]
    console.print(f"[bold]optimize[/] {recipe.name}: {len(cfgs)} configurations, SLO {slo_label(p['slo'])}, "
                  f"budget {recipe.budget}; trials in {store.dir}")
    existing = len(store.trials())
    stopped = search_loop(p, console)
    trials = store.trials()
    floor = f1_floor(trials, cfgs[0].id, recipe.quality.f1_drop)
    ids = [c.id for c in cfgs]
    result = outcome(ids, p["pruned"], trials, recipe.search.rungs, recipe.search.eta, floor)
    winner = choose(result, floor)
    on_front = front(result)
    unit = UNITS[recipe.search.max_load.mode]
    by_id = {c.id: c for c in cfgs}
    confirmation = None
    if winner is not None and winner != ids[0] and recipe.confirm.enabled and result[ids[0]]["record"] is not None:
        from toolkit.optimize.confirm import confirm

        records = {c: r["record"] for c, r in result.items() if r["record"] is not None}
        try:
            confirmation = confirm(recipe, p["suite"], p["slo"], p["index"], by_id[ids[0]], by_id[winner], records,
                                   p["pool"], store, p["root"], p["context"]["suite"], p["screens"], console)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - the search's result stands; the verdict says it is unconfirmed
            confirmation = {"error": (str(exc).splitlines() or [type(exc).__name__])[0][:300]}
            console.print(f"[red]confirmation failed[/]: {confirmation['error']}")
    text = verdict(result, winner, ids[0], trials, floor, unit, stopped, confirmation)
    profile = None
    if winner is not None:
        profile = serve_profile(recipe, p["suite"], by_id[winner], p["root"], for_serving=True)
    summary = {
        "name": recipe.name, "recipe": recipe.model_dump(mode="json"), "context": p["context"], "stopped": stopped,
        "trials_before": existing, "trials_after": len(trials), "f1_floor": floor,
        "screens": p["screens"], "baseline": ids[0], "winner": winner, "pareto_front": on_front,
        "profile": str(profile) if profile else None, "verdict": text,
        "confirmation": None if confirmation is None else {k: v for k, v in confirmation.items() if k != "runs"},
        "configurations": [{"id": c.id, "config": c.as_dict(), "label": c.label(), "status": result[c.id]["status"],
                            "reason": result[c.id]["reason"], "rung": result[c.id]["rung"],
                            "value": (result[c.id]["record"] or {}).get("value"),
                            "f1": (trials.get((0, c.id)) or {}).get("f1")} for c in cfgs],
    }
    paths = write_outputs(p["root"], summary, pareto_png(result, on_front, winner, unit))
    _print(summary, paths, profile)
    return 0


def _print(summary: dict[str, Any], paths: list[Path], profile: Path | None) -> None:
    from rich.table import Table

    table = Table(title="configurations (deepest rung measured)")
    for col in ("configuration", "status", "rung", "max load", "F1", "why"):
        table.add_column(col)
    for c in summary["configurations"]:
        star = " *" if c["id"] == summary["winner"] else ""
        table.add_row(c["label"] + star, c["status"], "–" if c["rung"] is None else str(c["rung"]),
                      "–" if c["value"] is None else f"{c['value']:g}", "–" if c["f1"] is None else f"{c['f1']:.3f}",
                      c["reason"] or "")
    out = _stdout_console()
    out.print(table)
    out.print(summary["verdict"])
    out.print(f"trials: {summary['trials_before']} on disk before, {summary['trials_after']} after; wrote "
              + ", ".join(str(x) for x in paths) + (f"; serve it with `make serve PROFILE={profile}`" if profile else ""))


def _stdout_console():
    """A plain stdout console, wide enough for the table in logs."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)
