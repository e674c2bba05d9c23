"""The confirmation run of ``toolkit optimize``: the winner and the baseline measured again, interleaved, to see
whether the search's claim holds.

The claim (from each configuration's deepest-rung record, :func:`claim`): the winner W meets the SLO at its max
load ``L_w``, the baseline B at ``L_b`` (below ``L_w``) and B misses at ``L_w``; the headline ratio is
``L_w / L_b``. With it comes the traffic each serves within the SLO at its own max load: the goodput of the
searches' trials at that load (median over the searches), and their ratio ``G_w / G_b``.

Method: both stacks are up together (one stack when W and B differ only in ``top_k``); for each load in
``{L_b, L_w}``, ``pairs`` ABBA rounds (:func:`toolkit.evaluation.ab.interleave`: both engines quiet before every
run, the idle side's CPU read), every run a real load point of ``requests`` requests through the endpoint, on
questions its engine has not been sent before (:class:`toolkit.evaluation.loadgen.QuestionCursor`).
On the pooled runs of each side and load (:func:`toolkit.evaluation.repeats.pool_repeats`): does W meet at
``L_w``, B at ``L_b``, and does B miss at ``L_w``? Per round, W's goodput at ``L_w`` over B's at ``L_b``; the
mean of those ratios with its t-based 95% interval (:func:`toolkit.stats.interval`). The claim is *reproduced*
when every check holds and the claimed goodput ratio lies within that interval; a *lower bound* when the only
failed check is the baseline missing at its own claimed load (the winner's advantage stands, the baseline's max
load is lower than claimed); else *not reproduced*.

The record is ``trials/confirm-<W id>-<B id>.json`` (a re-run with the same claim reuses it); the pooled points
also become two eval reports under ``finalists/`` that ``toolkit compare`` turns into ``compare.html``.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from toolkit.atomic import atomic_write_text
from toolkit.optimize.recipe import OptimizeRecipe, repo_path
from toolkit.optimize.space import Config, serve_profile, stack_key
from toolkit.optimize.trials import TrialStore


def goodput_at(rec: Mapping[str, Any]) -> float | None:
    """Median goodput (req/s) of the record's searches at the record's max load (None: never measured there)."""
    from toolkit.stats import median

    load = rec.get("value")
    found = [t["slo"]["goodput_req_s"] for m in rec.get("max_loads") or [] for t in m.get("trials") or []
             if load is not None and t.get("load") == load and (t.get("slo") or {}).get("goodput_req_s") is not None]
    return median(found) if found else None


def claim(winner: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """What the search says, from the two deepest-rung records (see the module docstring)."""
    lw, lb = winner["value"], baseline.get("value")
    gw, gb = goodput_at(winner), goodput_at(baseline)
    return {"winner_load": lw, "baseline_load": lb, "load_ratio": lw / lb if lb else None,
            "winner_goodput": gw, "baseline_goodput": gb, "goodput_ratio": gw / gb if gw and gb else None,
            "winner_rung": winner["rung"], "baseline_rung": baseline.get("rung")}


def judge(said: Mapping[str, Any], pooled: Mapping[tuple[str, float], Mapping[str, Any]],
          ratios: list[float]) -> dict[str, Any]:
    """Checks and verdict from the pooled point summaries ``{(side, load): summary}`` (side ``a`` = baseline,
    ``b`` = winner) and the per-round goodput ratios. Pure, so it is tested on hand-made summaries."""
    from toolkit.stats import interval

    def meets(side: str, load: float | None) -> bool | None:
        s = pooled.get((side, load)) if load is not None else None
        return None if s is None or s.get("slo") is None else bool(s["slo"]["meets"])

    lw, lb = said["winner_load"], said["baseline_load"]
    higher = lb is None or lw > lb  # the claim that B misses at L_w exists only when L_w is above B's max load
    checks = {"winner_meets_at_its_load": meets("b", lw),
              "baseline_meets_at_its_load": meets("a", lb) if lb is not None else None,
              "baseline_misses_at_winner_load": None if not higher or meets("a", lw) is None else not meets("a", lw)}
    iv = interval(ratios) if ratios else None
    claimed = said["goodput_ratio"]
    within = (None if claimed is None or iv is None or iv.get("ci_low") is None
              else iv["ci_low"] <= claimed <= iv["ci_high"])
    failed = [k for k, v in checks.items() if v is False]
    out = {"checks": checks, "goodput_ratio": iv, "claimed_within_interval": within, "failed": failed,
           "reproduced": not failed and within is not False}
    return {**out, "outcome": outcome(out)}


def outcome(result: Mapping[str, Any]) -> str:
    """``reproduced``, ``lower bound`` or ``not reproduced`` (module docstring). The baseline missing at its own
    claimed load while the winner holds at its own: the advantage stands and the baseline's true max load is
    lower than the search said, so the claimed ratio is a lower bound."""
    if result["reproduced"]:
        return "reproduced"
    return "lower bound" if result["failed"] == ["baseline_meets_at_its_load"] else "not reproduced"


def phrase(result: Mapping[str, Any], unit: str) -> str:
    """One sentence for the verdict."""
    said, iv = result["claim"], result["goodput_ratio"]
    lw, lb = f"{said['winner_load']:g} {unit}", f"{said['baseline_load'] or 0:g}"
    words = {"winner_meets_at_its_load": (f"the winner met the SLO at {lw}", f"the winner MISSED the SLO at {lw}"),
             "baseline_meets_at_its_load": (f"the baseline met it at {lb}",
                                            f"the baseline MISSED it at its own max load {lb}"),
             "baseline_misses_at_winner_load": (f"the baseline missed it at {said['winner_load']:g}",
                                                f"the baseline MET it at {said['winner_load']:g} too")}
    seen = [words[k][0 if v else 1] for k, v in result["checks"].items() if v is not None]
    ratio = ""
    if iv and iv.get("mean") is not None:
        ci = f" [{iv['ci_low']:.2f}, {iv['ci_high']:.2f}]" if iv.get("ci_low") is not None else ""
        claimed = said["goodput_ratio"]
        ratio = (f"; goodput at each one's max load {iv['mean']:.2f}x{ci} over {result['pairs']} ABBA rounds"
                 + (f" vs {claimed:.2f}x claimed by the search" if claimed is not None else ""))
    head = {"reproduced": "Confirmed by an interleaved run",
            "lower bound": "Confirmed as a lower bound by an interleaved run (the baseline fell short even of its "
                           "own claimed max load, so the ratio is if anything larger)",
            "not reproduced": "NOT reproduced by the interleaved run"}[outcome(result)]
    return f"{head} ({result['requests']} requests per run): " + "; ".join(seen) + ratio + "."


def confirm(recipe: OptimizeRecipe, suite, slo: dict[str, Any], index: Path, base: Config, win: Config,
            records: Mapping[str, Mapping[str, Any]], rows: list[dict[str, str]], store: TrialStore, root: Path,
            suite_path: str, screens: Mapping[str, Mapping[str, Any]], console) -> dict[str, Any]:
    """Run (or reuse) the confirmation of ``win`` against ``base``; returns the result record and writes the two
    eval reports under ``root/finalists``. ``records``: the deepest-rung trial record per configuration id;
    ``screens``: the perplexity screen per variant."""
    said = claim(records[win.id], records[base.id])
    path = store.dir / f"confirm-{win.id}-{base.id}.json"
    settings = recipe.confirm.model_dump(mode="json")
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("claim") == said and old.get("settings") == settings:
            console.print(f"[bold]confirm[/]: reusing {path}")
            return old
    loads = sorted({x for x in (said["baseline_load"], said["winner_load"]) if x is not None})
    section = suite.load.model_copy(update={"max_load": recipe.search.max_load.model_copy(
        update={"requests": recipe.confirm.requests})})
    runs, info = _measure(recipe, suite, slo, index, base, win, loads, section, rows, console)
    result = analyse(said, runs, loads, recipe.confirm.pairs, slo, section)
    result.update(settings=settings, requests=recipe.confirm.requests, pairs=recipe.confirm.pairs, stacks=info,
                  created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    from toolkit.optimize.finalists import write_finalist_reports

    result["reports"] = write_finalist_reports(root / "finalists", suite, suite_path, slo, {"a": base, "b": win},
                                               records, result, runs, info, screens, recipe.quality.f1_drop)
    atomic_write_text(path, json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1) + "\n")
    return result


def analyse(said: dict[str, Any], runs: Mapping[float, list[dict[str, Any]]], loads: list[float], pairs: int,
            slo: dict[str, Any], section) -> dict[str, Any]:
    """Pooled point summaries per (side, load), per-round goodput ratios and the :func:`judge` verdict.
    ``section``: the suite's load section with the confirmation's max-load settings (names the points)."""
    from toolkit.evaluation.ab_stats import side_figures
    from toolkit.evaluation.maxload import trial_plan
    from toolkit.evaluation.repeats import pool_repeats

    pooled = {}
    for load in loads:
        plan = trial_plan(section, load)
        for side in ("a", "b"):
            mine = [(x["records"], x["summary"]["duration_s"]) for x in runs[load] if x["side"] == side]
            pooled[(side, load)] = pool_repeats(plan, "rag", mine, slo)
    ratios = []
    lw, lb = said["winner_load"], said["baseline_load"]
    for r in range(pairs):
        if lb is None:
            break

        def good(side: str, load: float) -> float | None:
            return side_figures([(x["records"], x["summary"]["duration_s"]) for x in runs[load]
                                 if x["side"] == side and x["round"] == r], slo)["slo.goodput_req_s"]
        gw, gb = good("b", lw), good("a", lb)
        if gw is not None and gb:
            ratios.append(gw / gb)
    return {"claim": said, **judge(said, pooled, ratios), "round_ratios": ratios,
            "points": {f"{side}@{load:g}": s for (side, load), s in pooled.items()}, "runs": runs}


def _measure(recipe: OptimizeRecipe, suite, slo: dict[str, Any], index: Path, base: Config, win: Config,
             loads: list[float], section, rows: list[dict[str, str]], console
             ) -> tuple[dict[float, list], dict[str, Any]]:
    """Both stacks up, ABBA rounds at every load; returns ({load: runs}, per-side stack facts)."""
    from toolkit.evaluation.ab import interleave, tree_rss_mb
    from toolkit.evaluation.loadgen import QuestionCursor, Request, Target, run_point_sync
    from toolkit.evaluation.maxload import trial_plan
    from toolkit.serving.stack import running_stack

    gen, c = suite.generation, recipe.confirm
    reqs = [Request(r["id"], r["question"]) for r in rows]
    labels = [f"baseline {base.label()}", f"winner {win.label()}"]
    with tempfile.TemporaryDirectory(prefix="toolkit-confirm-") as tmp, contextlib.ExitStack() as both:
        stacks: dict[str, Any] = {}
        for side, cfg in (("a", base), ("b", win)):
            if side == "b" and stack_key(win) == stack_key(base):
                stacks["b"] = stacks["a"]  # top_k travels with each request: one engine serves both
                continue
            console.print(f"[bold]confirm[/]: starting {labels['ab'.index(side)]}")
            profile = serve_profile(recipe, suite, cfg, Path(tmp) / side)
            served = repo_path(cfg.index) if cfg.index else index
            stacks[side] = both.enter_context(running_stack(repo_path(cfg.variant), served, profile=profile,
                                                            progress=True))
        info = {s: {"label": labels["ab".index(s)], "engine_startup_s": st.engine_startup_s,
                    "rss_mb": tree_rss_mb([st.engine_pid, st.endpoint_pid]), "engine_pid": st.engine_pid} for s, st in stacks.items()}
        targets = {"a": Target("rag", stacks["a"].url, gen.max_tokens, gen.temperature, base.top_k),
                   "b": Target("rag", stacks["b"].url, gen.max_tokens, gen.temperature, win.top_k)}
        cursors = {"a": QuestionCursor(len(reqs))}  # every run on questions its engine has not seen
        cursors["b"] = cursors["a"] if stacks["b"] is stacks["a"] else QuestionCursor(len(reqs))
        runs = {}
        for load in loads:
            plan = trial_plan(section, load)
            one: Callable[[str], Any] = (lambda side, load=load: run_point_sync(
                targets[side], reqs, trial_plan(section, load, cursors[side]), suite.load.timeout_s, slo))
            runs[load] = interleave(stacks, labels, c.pairs, one, console, f"confirm {plan.name}",
                                    {s: f" ({plan.requests} requests)" for s in "ab"})
    return runs, info
