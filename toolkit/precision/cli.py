"""``toolkit precision``: measure the numeric formats this machine can run and write a serving profile.

    toolkit precision --model DIR [--budget 1%] [--output serve/profiles/NAME.yaml]
    make precision MODEL=DIR [BUDGET=1%] [OUTPUT=serve/profiles/NAME.yaml]

Steps: plan (hardware report → native / emulated / skipped per format), raw-kernel microbenchmarks,
per candidate perplexity + vLLM throughput, selection under the budget, then three outputs: a rich table,
``<output>.json`` (every measurement with its spread), and the serving profile ``<output>`` for
``make serve PROFILE=...``. ``--from-json`` re-applies a different budget to an earlier run's measurements
without measuring again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError

DEFAULT_RECIPE = "recipes/precision/default.yaml"
RESULT_KEYS = ("model", "created", "hardware", "hardware_summary", "reference", "settings", "candidates")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model directory (HF causal LM); default: the reference model")
    parser.add_argument("--budget", help="allowed |perplexity change| vs the reference, e.g. 1%% or 0.01 "
                                         "(default: the recipe's, 1%%)")
    parser.add_argument("--output", help="serving profile to write (default serve/profiles/<model>.yaml); "
                                         "the measurements go beside it as .json")
    parser.add_argument("--recipe", help=f"precision recipe (default {DEFAULT_RECIPE})")
    parser.add_argument("--candidates", help="comma-separated subset of fp32,tf32,bf16,fp16,fp8,int8")
    parser.add_argument("--repeats", type=int, help="timed repetitions per measurement (spread is reported)")
    parser.add_argument("--eval-data", help="validation text (.jsonl with 'text' or .txt) for perplexity "
                                            "(default: the reference validation split)")
    parser.add_argument("--calibration-data", help="calibration text for the INT8 checkpoint (passed to "
                                                   "`toolkit quantize`; default: its recipe's)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="FORMAT=DIR",
                        help="measure an existing quantized checkpoint for int8 or fp8 instead of quantizing "
                        "again (e.g. --checkpoint int8=artifacts/models/gptq-w8a8-int8)")
    parser.add_argument("--work-dir", help="cache for quantized checkpoints and run records "
                                           "(default artifacts/precision/<model>)")
    parser.add_argument("--skip-emulated", action="store_true",
                        help="skip formats this hardware only emulates (e.g. BF16 on an AVX2-only CPU)")
    parser.add_argument("--quick", action="store_true",
                        help="small measurement sizes (CI/smoke runs): fewer tokens, windows and batch sizes, "
                             "eager vLLM engines (no graph compilation)")
    parser.add_argument("--from-json", help="re-select from an earlier run's .json without measuring")


def _recipe(args: argparse.Namespace):
    from toolkit.config import load_recipe
    from toolkit.paths import REPO_ROOT
    from toolkit.precision.settings import PrecisionRecipe

    overrides: dict[str, Any] = {}
    if args.candidates:
        from toolkit.precision.candidates import parse_candidates

        overrides["candidates"] = parse_candidates(args.candidates)
    if args.budget is not None:
        from toolkit.precision.settings import parse_budget

        parse_budget(args.budget)  # the error names the flag, not the recipe file
        overrides["budget"] = args.budget
    if args.skip_emulated:
        overrides["emulated"] = "skip"
    if args.repeats is not None:
        if args.repeats < 1:
            raise ToolkitError(f"--repeats: must be >= 1, got {args.repeats}")
        overrides["throughput.repeats"] = args.repeats
        overrides["microbench_repeats"] = args.repeats
    if args.eval_data:
        overrides["quality.eval_data"] = args.eval_data
    if args.calibration_data:
        overrides["quantize.calibration_data"] = args.calibration_data
    for spec in getattr(args, "checkpoint", []):
        fmt, _, directory = spec.partition("=")
        if fmt not in ("int8", "fp8") or not directory:
            raise ToolkitError(f"--checkpoint: expected int8=DIR or fp8=DIR, got '{spec}'")
        if not (Path(directory) / "config.json").is_file():
            raise ToolkitError(f"--checkpoint: {directory}: not a model directory (no config.json)")
        overrides[f"quantize.checkpoints.{fmt}"] = str(Path(directory).resolve())
    if args.quick:
        overrides.update({"throughput.new_tokens": 16, "throughput.prefill_tokens": 128,
                          "throughput.enforce_eager": True, "throughput.batch_sizes": [1, 4],
                          "quality.seq_len": 128, "quality.max_windows": 4,
                          "quantize.num_samples": 16, "quantize.seq_len": 128, "quantize.eval_windows": 1})
    path = Path(args.recipe) if args.recipe else REPO_ROOT / DEFAULT_RECIPE
    return load_recipe(path, PrecisionRecipe, overrides)


def unquantized_profile_path(output: Path) -> Path:
    """``profile.yaml`` → ``profile-unquantized.yaml``: the fastest format served from the checkpoint as is."""
    return output.with_name(f"{output.stem}-unquantized{output.suffix}")


def _paths(args: argparse.Namespace, model: Path) -> tuple[Path, Path, Path]:
    from toolkit.paths import ARTIFACTS, SERVE_DIR

    # artifacts/reference/model → "reference": a directory called "model" says nothing
    name = model.parent.name if model.name == "model" and model.parent.name else model.name
    output = Path(args.output) if args.output else SERVE_DIR / "profiles" / f"{name}.yaml"
    if output.suffix not in (".yaml", ".yml"):
        raise ToolkitError(f"--output: {output} must be a .yaml file (the serving profile)")
    if output.is_dir():
        raise ToolkitError(f"--output: {output} is a directory")
    work = Path(args.work_dir) if args.work_dir else ARTIFACTS / "precision" / name
    return output, output.with_suffix(".json"), work


def _measure(args: argparse.Namespace, recipe, model: Path, work: Path, console) -> dict[str, Any]:
    from rich.markup import escape

    from toolkit.hardware import hardware_fingerprint, hardware_report
    from toolkit.manifest import RunRecord, atomic_dir
    from toolkit.paths import reference_split
    from toolkit.precision.candidates import plan
    from toolkit.precision.measure import candidate_perplexity, eval_windows, measure_candidate, reference_dtype
    from toolkit.precision.microbench import run_microbench
    from toolkit.precision.select import add_quality

    report = hardware_report()
    device = report["device"]
    planned = plan(report, recipe.candidates, recipe.emulated)
    eval_data = Path(recipe.quality.eval_data) if recipe.quality.eval_data else reference_split("validation")
    if not eval_data.is_file():
        raise ToolkitError(f"{eval_data}: validation text not found; pass --eval-data FILE.jsonl "
                           "(or build the reference with `make reference`)")
    record = RunRecord("precision")
    record.add_input("model", model)
    record.add_input("eval_data", eval_data)
    record.recipe = recipe.model_dump(mode="json")
    log = lambda msg: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(msg)}")  # noqa: E731

    windows = eval_windows(model, recipe, eval_data)
    ref_dtype = reference_dtype(model, report)
    if ref_dtype != "float32":  # an FP32 copy would not fit: FP32/TF32 cannot be candidates either
        planned = [dataclasses.replace(p, status="skipped", reason="model too large to hold in FP32 on this "
                                       "device; BF16 is the quality reference") if p.candidate.engine_dtype ==
                   "float32" else p for p in planned]
    for p in planned:
        console.print(f"  {p.candidate.label:<20} {p.status:<9} {p.reason}")
    with record.timed("reference_perplexity"):
        log(f"reference perplexity ({ref_dtype}, {len(windows)} windows of {recipe.quality.seq_len} tokens)")
        ref_ppl = candidate_perplexity(model, ref_dtype, windows, recipe.quality.batch_size, device=device)

    cfg = json.loads((model / "config.json").read_text())
    measured = [p.candidate.name for p in planned if p.measured]
    with record.timed("microbench"):
        log(f"raw kernel microbenchmarks ({', '.join(measured)})")
        micro = run_microbench(measured, cfg.get("hidden_size", 1024), cfg.get("intermediate_size", 4096),
                               cfg.get("num_attention_heads", 16), device=device, repeats=recipe.microbench_repeats)
    rows = []
    for p in planned:
        t0 = time.perf_counter()
        with record.timed(p.candidate.name):
            row = measure_candidate(model, p, recipe, work, windows, eval_data, device, log=log,
                                    ppl_cache={(str(model), ref_dtype, False): ref_ppl})
        rows.append(row)
        if p.measured:
            log(f"[{p.candidate.name}] done in {time.perf_counter() - t0:.0f} s")
    add_quality(rows, ref_ppl)
    result = {
        "model": str(model.resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hardware_summary": hardware_fingerprint(report),
        "hardware": report,
        "reference": {"dtype": ref_dtype, "perplexity": ref_ppl, "eval_data": str(eval_data),
                      "windows": len(windows), "seq_len": recipe.quality.seq_len},
        "settings": recipe.model_dump(mode="json"),
        "candidates": rows,
        "microbench": micro,
    }
    with atomic_dir(work / "last-run") as tmp:
        (tmp / "precision.json").write_text(json.dumps(result, indent=2))
        record.results = {r["name"]: {k: r.get(k) for k in ("status", "perplexity", "ppl_delta", "error")}
                          for r in rows}
        record.write(tmp)
    return result


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from toolkit.precision.profile import build_profile, dump_profile, serve_model
    from toolkit.precision.report import candidates_table, microbench_table
    from toolkit.precision.select import select
    from toolkit.precision.settings import parse_budget

    console = Console(width=None if sys.stdout.isatty() else 180)  # logs/CI: keep table rows unwrapped
    recipe = _recipe(args)
    budget = parse_budget(recipe.budget)
    if args.from_json:
        src = Path(args.from_json)
        if not src.is_file():
            raise ToolkitError(f"--from-json: {src}: file not found")
        try:
            result = json.loads(src.read_text())
            missing = [k for k in RESULT_KEYS if k not in result]
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            missing = ["valid JSON"]
        if missing:
            raise ToolkitError(f"--from-json: {src}: not a precision result file (missing {', '.join(missing)})")
        rows = result["candidates"]
        model = Path(result["model"])
        output, json_out, _ = _paths(args, model)
    else:
        from toolkit.modeling import resolve_model
        from toolkit.paths import REFERENCE_MODEL

        model = Path(args.model) if args.model else REFERENCE_MODEL
        if not model.exists():
            raise ToolkitError(f"--model: {model}: not found (a local model directory is needed: vLLM runs offline)")
        model = Path(resolve_model(model))
        output, json_out, work = _paths(args, model)
        console.print(f"[bold]precision[/] {model} → {output}")
        result = _measure(args, recipe, model, work, console)
        rows = result["candidates"]
    selection = select(rows, budget, recipe.rank_by)
    result["selection"] = selection
    console.print(microbench_table(result.get("microbench") or {}, result["hardware_summary"]))
    console.print(candidates_table(result))
    style = "green" if selection["within_budget"] else "yellow"
    console.print(f"[bold {style}]{escape(selection['message'])}[/]")
    profile = build_profile(result)
    result["serve"] = {"model": serve_model(result), "profile": str(output)}
    from toolkit.manifest import atomic_write_text  # readers never see half a profile; runs never collide

    unquantized = selection.get("fastest_unquantized")
    if unquantized and unquantized != selection["winner"]:  # the baseline to beat, as its own profile
        result["serve"]["unquantized_profile"] = str(unquantized_profile_path(output))
    atomic_write_text(json_out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(output, dump_profile(profile, result))
    if "unquantized_profile" in result["serve"]:
        baseline = dump_profile(build_profile(result, unquantized), result, unquantized)
        atomic_write_text(unquantized_profile_path(output), baseline)
    console.print(f"profile: {output}\nmeasurements: {json_out}\n"
                  f"serve it: make serve MODEL={result['serve']['model']} PROFILE={output}")
    if unquantized:
        console.print(f"fastest unquantized format (the baseline to beat): {unquantized}"
                      + (f", profile {unquantized_profile_path(output)}" if unquantized != selection["winner"] else ""))
    return 0
