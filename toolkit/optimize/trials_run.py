"""Real measurements of ``toolkit optimize``: the perplexity screen and one rung's trials through the real stack.

- Screen: the validation perplexity of a variant, by the same function ``toolkit eval`` uses
  (:func:`toolkit.evaluation.quality.validation_perplexity`, the suite's text, window length and window cap),
  relative to the baseline's. A quantized variant whose ``toolkit quantize`` manifest measured source and
  quantized perplexity on the same windows, with the baseline as its source and the suite's text and window
  length, reuses that pair's ratio instead (no model load).
- Questions: the F1 pass asks the suite's questions; the load is made of the whole split's, each sent at most
  once per engine start (:class:`toolkit.evaluation.loadgen.QuestionCursor`), so prefix caching reuses only
  what requests really share (the system prompt, common passages), never a whole repeated prompt.
- Trial: one engine start per :func:`toolkit.optimize.space.stack_key` (configurations differing only in
  ``top_k`` share it, since top_k travels with each request). Per configuration: at rung 0 the QA token F1 of
  the suite's questions through the endpoint (:func:`toolkit.evaluation.quality.rag_quality`), then
  ``repeats`` max-load searches (:func:`toolkit.evaluation.maxload.find_max_load`) with the rung's requests per
  trial. The configuration's figure is the median of the searches' values, a search with no passing load
  counting as 0 (:func:`toolkit.stats.median`; rounded down to whole streams in concurrency mode, so that the
  figure is a load that can be run and confirmed); with 2 or more searches also their interval
  (:func:`toolkit.stats.interval`). The engine's peak RSS over the stack's life (psutil) and the variant's
  size on disk break ties. Anything that goes wrong is recorded as a failed trial and the search goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit.optimize.recipe import OptimizeRecipe, repo_path
from toolkit.optimize.search import rung_plan
from toolkit.optimize.space import Config, serve_profile
from toolkit.optimize.trials import TrialStore


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def perplexity_text(suite) -> Path:
    from toolkit.paths import reference_split

    return Path(suite.perplexity.text) if suite.perplexity.text else reference_split("validation")


def manifest_increase(variant: Path, baseline: Path, suite) -> float | None:
    """Relative perplexity increase from the variant's quantize manifest when it is comparable (module
    docstring), else None."""
    from toolkit.manifest import read_manifest

    m = read_manifest(variant) or {}
    ppl = (m.get("results") or {}).get("perplexity") or {}
    inputs = m.get("inputs") or {}
    spec = (m.get("recipe") or {}).get("eval") or {}
    same = (m.get("stage") == "quantize" and ppl.get("source") and ppl.get("quantized")
            and (inputs.get("model") or {}).get("path") == str(baseline.resolve())
            and (inputs.get("eval_data") or {}).get("path") == str(perplexity_text(suite).resolve())
            and spec.get("seq_len") == suite.perplexity.seq_len)
    return float(ppl["quantized"]) / float(ppl["source"]) - 1 if same else None


def screen(variants: Sequence[str], suite, store: TrialStore, console) -> dict[str, dict[str, Any]]:
    """Screen record per variant (loaded when on disk): ``{"variant", "ppl", "increase", "source", "error"}``;
    ``increase`` None when not measurable (perplexity disabled in the suite, or transformers cannot load it)."""
    from toolkit.evaluation.quality import validation_perplexity

    out: dict[str, dict[str, Any]] = {}
    base_path = repo_path(variants[0])

    def measured(variant: str) -> dict[str, Any]:
        if (rec := store.screen(variant)) is not None:
            return rec
        rec = {"kind": "screen", "variant": variant, "ppl": None, "increase": None, "source": None, "error": None,
               "created": _now()}
        if not suite.perplexity.enabled:
            rec["error"] = "perplexity disabled in the suite"
        elif variant != variants[0] and (inc := manifest_increase(repo_path(variant), base_path, suite)) is not None:
            rec.update(increase=inc, source="quantize manifest (source and quantized on the same windows)")
        else:
            console.print(f"[bold]screen[/]: perplexity of {variant}")
            p = suite.perplexity
            ppl = validation_perplexity(repo_path(variant), perplexity_text(suite), p.seq_len, p.max_windows)
            rec.update(ppl=ppl["value"], error=ppl["error"], source="measured (toolkit eval's validation_perplexity)")
        store.save_screen(rec)
        return rec

    for v in variants:
        rec = measured(v)
        if v != variants[0] and rec["increase"] is None and rec["ppl"] is not None:
            base = measured(variants[0])
            if base["ppl"]:
                rec = {**rec, "increase": rec["ppl"] / base["ppl"] - 1}
        elif v == variants[0] and rec["ppl"] is not None:
            rec = {**rec, "increase": 0.0}
        out[v] = rec
    return out


def measure_group(recipe: OptimizeRecipe, suite, slo: dict[str, Any], index: Path, group: Sequence[Config],
                  rung: int, rows: list[dict[str, str]], store: TrialStore, budget_left_s: float, console,
                  pool: list[dict[str, str]] | None = None) -> float:
    """Start one stack for ``group`` (same :func:`stack_key`), measure each configuration at ``rung``, write a
    record per configuration (done or failed). Returns the wall seconds spent. ``rows``: the QA questions of
    the F1 pass; ``pool``: the questions load is made of (``rows`` first), each sent once per engine
    (:class:`toolkit.evaluation.loadgen.QuestionCursor`)."""
    import tempfile

    from toolkit.evaluation.loadgen import QuestionCursor
    from toolkit.evaluation.resources import PeakSampler
    from toolkit.hardware import hardware_report
    from toolkit.manifest import size_on_disk
    from toolkit.serving.stack import running_stack

    t0 = time.perf_counter()
    requests, repeats = rung_plan(rung, recipe.search.max_load.requests, recipe.search.eta, recipe.search.repeats)
    variant = repo_path(group[0].variant)
    size = size_on_disk(variant) if variant.exists() else None
    done: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="toolkit-optimize-") as tmp:
            profile = serve_profile(recipe, suite, group[0], Path(tmp))
            console.print(f"[bold]rung {rung}[/]: starting {group[0].label().rsplit(' top_k=', 1)[0]} "
                          f"({len(group)} configuration(s), {requests} requests per trial, {repeats} search(es))")
            served = repo_path(group[0].index) if group[0].index else index
            with running_stack(variant, served, profile=profile, progress=True) as stack:
                pool = pool or rows
                cursor = QuestionCursor(len(pool), start=len(rows))  # past the F1 pass's questions
                cuda = hardware_report()["device"] == "cuda"
                with PeakSampler(stack.engine_pid, cuda=cuda) as sampler:
                    for c in group:
                        t = time.perf_counter()
                        rec = _measure(c, stack, suite, slo, recipe, rung, requests, repeats, rows, pool, cursor,
                                       budget_left_s - (time.perf_counter() - t0), console)
                        if why := stack.failure():
                            raise RuntimeError(why)
                        rec.update(peak_rss_mb=sampler.peak_rss_mb, peak_gpu_mb=sampler.peak_gpu_mb, size_bytes=size,
                                   engine_startup_s=stack.engine_startup_s, wall_s=round(time.perf_counter() - t, 1))
                        store.save_trial(rec)  # now, so an interruption keeps it
                        done[c.id] = rec
                    # one engine served the whole group: every configuration gets its peak over the whole life,
                    # so a tie is not broken by the order in which they were measured
                    for rec in done.values():
                        store.save_trial(rec | {"peak_rss_mb": sampler.peak_rss_mb, "peak_gpu_mb": sampler.peak_gpu_mb})
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded; the search goes on
        why = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        console.print(f"[red]trial failed[/]: {why}")
        for c in group:
            if c.id not in done:
                store.save_trial(_record(c, rung, requests, repeats) | {"status": "failed", "reason": why,
                                                                         "size_bytes": size})
    return time.perf_counter() - t0


def _record(c: Config, rung: int, requests: int, repeats: int) -> dict[str, Any]:
    return {"kind": "trial", "rung": rung, "config_id": c.id, "config": c.as_dict(), "label": c.label(),
            "requests_per_trial": requests, "repeats": repeats, "status": None, "reason": None, "value": None,
            "first_failing": None, "values": [], "interval": None, "f1": None, "max_loads": [], "created": _now()}


def _measure(c: Config, stack, suite, slo: dict[str, Any], recipe: OptimizeRecipe, rung: int, requests: int,
             repeats: int, rows: list[dict[str, str]], pool: list[dict[str, str]], cursor, budget_left_s: float,
             console) -> dict[str, Any]:
    from toolkit.evaluation.loadgen import Request, Target
    from toolkit.evaluation.maxload import describe, find_max_load
    from toolkit.evaluation.quality import rag_quality
    from toolkit.stats import interval, median

    rec = _record(c, rung, requests, repeats)
    gen = suite.generation
    if rung == 0:  # answers do not change with the load, so one quality pass per configuration
        q, _ = rag_quality(stack.url, rows, [c.top_k], c.top_k, gen.max_tokens, gen.temperature, suite.load.timeout_s)
        rec.update(f1=q.get("qa_f1"), exact_match=q.get("qa_exact_match"), quality_errors=q.get("errors"))
    target = Target("rag", stack.url, gen.max_tokens, gen.temperature, c.top_k)
    reqs = [Request(r["id"], r["question"]) for r in pool]
    ml = recipe.search.max_load
    # each search gets its share of what is left, so the last repeat cannot overrun the whole budget
    share = max(1.0, min(ml.budget_s, budget_left_s / repeats))
    section = suite.load.model_copy(update={"max_load": ml.model_copy(update={"requests": requests, "budget_s": share})})
    for i in range(repeats):
        console.print(f"  {c.label()}: max-load search {i + 1}/{repeats}")
        result, _ = find_max_load(target, reqs, section, slo, console, cursor)
        rec["max_loads"].append(result.model_dump(mode="json"))
        console.print(f"  {describe(result)}")
    loads = rec["max_loads"]
    values = [m["value"] or 0.0 for m in loads]  # no passing load counts as zero load
    fails = [m["first_failing"] for m in loads if m["first_failing"] is not None]
    mid = median(values)
    # a load "known to miss" only when most searches saw it miss (a lone miss may be noise)
    fail = median(fails) if 2 * len(fails) > len(loads) else None
    if ml.mode == "concurrency":  # a load that can be run: the median of 8 and 9 streams is 8, not 8.5
        mid, fail = math.floor(mid), None if fail is None else math.ceil(fail)
    rec.update(status="done", values=values, value=mid if mid > 0 else None, first_failing=fail,
               interval=interval(values) if len(values) > 1 else None,
               stopped=[m["stopped"] for m in loads],
               questions={"pool": len(pool), "sent_by_now": cursor.next, "pool_wrapped": cursor.wrapped})
    return rec
