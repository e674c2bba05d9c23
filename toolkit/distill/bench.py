"""Distillation benchmark: ``python -m toolkit.distill.bench [--teacher DIR] [--steps N]`` (``make bench-distill``).

One run, side by side on the same machine, all students initialised identically (the white-box recipe's
teacher-layer subset, weights copied) and trained for the same number of steps:

- teacher (the reference model),
- white-box KD student (``recipes/distill/whitebox-kd.yaml``),
- black-box student (``recipes/distill/blackbox-sft.yaml``: fine-tuned on vLLM-generated teacher answers),
- CE-only student (the white-box recipe and data with α = 0, β = 0: plain fine-tuning, the baseline).

Measured: validation perplexity (same token windows for all), QA token-F1 on test-split questions with the
gold document as context (greedy transformers ``generate``, same prompts for all; F1 is
:func:`toolkit.evaluation.metrics.token_f1`, SQuAD-style), and vLLM decode tokens/s (offline
``throughput`` job, batch 1 and 8) of the teacher and the student (the three students share one
architecture, so one measurement stands for all). Targets: KD student perplexity below the CE-only
student's; student ≥ 1.8× the teacher's decode tokens/s with perplexity within 10 % of the
teacher's. The table is printed; the figures are written in the common results schema
(:class:`toolkit.results.BenchRun`: ``perplexity``, ``qa_f1``, ``train_runtime_s`` per ``variant``;
``offline_decode_tok_s`` per ``variant`` and ``batch_size`` with the interval over 3 runs;
``offline_decode_speedup`` per ``batch_size``) to ``artifacts/reports/distill-bench.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.paths import ARTIFACTS, RECIPES_DIR, REFERENCE_MODEL, REPORTS_DIR
from toolkit.results import BenchRun
from toolkit.stats import interval


def qa_f1(model_dir: Path, questions: list[dict[str, Any]], context_chars: int, max_new_tokens: int = 48,
          batch_size: int = 16) -> float:
    """Mean token-F1 of greedy answers to ``questions`` (gold context in the prompt)."""
    import torch

    from toolkit.distill.data import fit_qa_messages, render_prompt
    from toolkit.distill.run import teacher_context
    from toolkit.evaluation.metrics import token_f1
    from toolkit.modeling import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_dir)
    tok.padding_side = "left"
    model = load_causal_lm(model_dir, dtype=torch.float32)
    budget = teacher_context(str(model_dir)) - max_new_tokens
    scores = []
    for i in range(0, len(questions), batch_size):
        rows = questions[i:i + batch_size]
        prompts = [render_prompt(tok, fit_qa_messages(tok, r["question"], r["context"], budget, context_chars))
                   for r in rows]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        for r, ids in zip(rows, out[:, enc["input_ids"].shape[1]:]):
            scores.append(token_f1(tok.decode(ids, skip_special_tokens=True), r["answer"]))
    return sum(scores) / len(scores)


def decode_runs(model_dir: Path) -> dict[str, list[float]]:
    """vLLM decode tok/s of 3 runs per batch size (1 and 8), keyed by the batch size as a string."""
    from toolkit.engine.client import engine_args, run_offline

    r = run_offline("throughput", engine_args(model_dir), batch_sizes=[1, 8], new_tokens=64, prompt_tokens=32,
                    repeats=3, prefill_tokens=0)
    return {b: s["runs"] for b, s in r["decode"].items()}


def decode_means(runs: dict[str, list[float]]) -> dict[str, float]:
    """``{"batch1": mean tok/s, ...}``: the figure the table prints and the speed-up divides."""
    return {f"batch{b}": interval(xs)["mean"] for b, xs in runs.items()}


def decode_speedup(student: dict[str, float], teacher: dict[str, float]) -> dict[str, float]:
    """Student tok/s over teacher tok/s per batch size (keys as given, e.g. ``batch1``), to 2 decimals."""
    return {b: round(student[b] / teacher[b], 2) for b in teacher}


def ppl_vs_teacher(ppl: float, teacher_ppl: float) -> float:
    """Relative perplexity change against the teacher: 0.05 = 5 % worse."""
    return ppl / teacher_ppl - 1


def bench_targets(ppl: dict[str, float], speedup: dict[str, float], students: list[str]) -> dict[str, bool]:
    """The benchmark's pass/miss lines: KD beats CE-only, the best student is within 10 % of the teacher's
    perplexity, the student decodes >= 1.8x the teacher's tok/s (a missing batch size misses)."""
    return {
        "kd_beats_ce_only_ppl": ppl["whitebox-kd"] < ppl["ce-only"],
        "best_student_ppl_within_10pct_of_teacher": min(ppl[k] for k in students) <= 1.1 * ppl["teacher"],
        "decode_speedup_ge_1_8x_batch1": speedup.get("batch1", 0) >= 1.8,
        "decode_speedup_ge_1_8x_batch8": speedup.get("batch8", 0) >= 1.8,
    }


def _train(name: str, recipe_file: Path, overrides: dict[str, Any], teacher: Path, work: Path) -> dict[str, Any]:
    from toolkit.distill.recipe import load_distill_recipe
    from toolkit.distill.run import distill

    print(f"\n== training {name} ({recipe_file.name}, {overrides}) ==", flush=True)
    recipe = load_distill_recipe(recipe_file, overrides)
    return distill(recipe, str(teacher), work / name, recipe_path=str(recipe_file))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toolkit.distill.bench", description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=str(REFERENCE_MODEL))
    p.add_argument("--steps", type=int, default=100, help="training steps of every student")
    p.add_argument("--prompts", type=int, default=256, help="teacher answers for the black-box student")
    p.add_argument("--min-answer-tokens", type=int, default=0,
                   help="forbid the teacher's EOS before this many tokens (for an undertrained teacher)")
    p.add_argument("--questions", type=int, default=48, help="test-split QA questions for F1")
    p.add_argument("--validation-windows", type=int, default=32, help="validation windows (seq_len tokens each)")
    p.add_argument("--output", "--report", dest="output", default=str(REPORTS_DIR / "distill-bench.json"),
                   help="results file (common schema, toolkit.results)")
    args = p.parse_args(argv)
    run = BenchRun("distill-bench", config={k: v for k, v in vars(args).items() if k != "output"})
    try:
        report = _bench(args)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = run.write(args.output, extra=record(run, report))
    _print(report, json.loads(out.read_text())["environment"])
    print(f"\nresults: {out}")
    return 0


def record(run: BenchRun, r: dict[str, Any]) -> dict[str, Any]:
    """Add the benchmark's figures to ``run`` as named metrics; return the rest (parameter counts, layer
    subset, final losses, pass/miss targets) for the file's ``extra``."""
    for k, ppl in r["validation_perplexity"].items():
        run.add("perplexity", "ppl", value=ppl, labels={"variant": k}, definition="validation perplexity, same windows")
    for k, f1 in r["qa_f1"].items():
        run.add("qa_f1", "score", value=f1, labels={"variant": k},
                definition="mean SQuAD token F1 of greedy answers, gold context (toolkit.evaluation.metrics.token_f1)")
    for k, secs in r["train_runtime_s"].items():
        run.add("train_runtime_s", "s", value=secs, labels={"variant": k})
    for who, runs in r["decode_runs"].items():
        for b, xs in runs.items():
            run.add("offline_decode_tok_s", "tok/s", repeats=xs, labels={"variant": who, "batch_size": int(b)},
                    definition="new tokens / wall s of one vLLM generate call of batch_size 32-token prompts")
    for b, x in r["decode_speedup_student_vs_teacher"].items():
        run.add("offline_decode_speedup", "ratio", value=x, labels={"batch_size": int(b.removeprefix("batch"))},
                definition="student mean tok/s / teacher mean tok/s")
    keep = ("teacher", "steps", "teacher_params", "student_params", "student_layers_from_teacher", "final_losses",
            "targets")
    return {k: r[k] for k in keep}


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from toolkit.distill.data import reference_qa
    from toolkit.modeling import resolve_model

    teacher = Path(resolve_model(args.teacher))
    work = ARTIFACTS / "distill" / "bench"
    wb, bb = RECIPES_DIR / "distill" / "whitebox-kd.yaml", RECIPES_DIR / "distill" / "blackbox-sft.yaml"
    steps = {"training.max_steps": args.steps, "data.max_validation_windows": args.validation_windows}
    runs = {
        "whitebox-kd": _train("whitebox-kd", wb, steps, teacher, work),
        "ce-only": _train("ce-only", wb, {**steps, "loss.alpha": 0.0, "loss.beta": 0.0}, teacher, work),
        "blackbox-sft": _train("blackbox-sft", bb, {**steps, "blackbox.max_prompts": args.prompts,
                                                     "blackbox.min_new_tokens": args.min_answer_tokens}, teacher, work),
    }
    context_chars = runs["whitebox-kd"]["recipe"]["data"]["context_chars"]
    questions = reference_qa("test")[:args.questions]
    print(f"\n== QA F1 on {len(questions)} test questions (gold context) ==", flush=True)
    dirs = {"teacher": teacher, **{k: work / k for k in runs}}
    f1 = {k: round(qa_f1(d, questions, context_chars), 4) for k, d in dirs.items()}
    print("\n== vLLM decode tokens/s (teacher, student) ==", flush=True)
    runs_tps = {"teacher": decode_runs(teacher), "student": decode_runs(work / "whitebox-kd")}
    tps = {k: decode_means(v) for k, v in runs_tps.items()}

    ppl = {"teacher": runs["whitebox-kd"]["results"]["validation_perplexity"]["teacher"],
           "student_init": runs["whitebox-kd"]["results"]["validation_perplexity"]["student_init"],
           **{k: r["results"]["validation_perplexity"]["student"] for k, r in runs.items()}}
    speedup = decode_speedup(tps["student"], tps["teacher"])
    r0 = runs["whitebox-kd"]["results"]
    return {
        "teacher": str(teacher),
        "steps": args.steps,
        "teacher_params": r0["teacher_params"], "student_params": r0["student_params"],
        "student_layers_from_teacher": r0["student_layers_from_teacher"],
        "validation_perplexity": ppl,
        "qa_f1": f1,
        "decode_tokens_per_s": tps, "decode_runs": runs_tps,
        "decode_speedup_student_vs_teacher": speedup,
        "train_runtime_s": {k: r["results"]["train_runtime_s"] for k, r in runs.items()},
        "final_losses": {k: r["results"]["final_losses"] for k, r in runs.items()},
        "targets": bench_targets(ppl, speedup, list(runs)),
    }


def _print(r: dict[str, Any], env: dict[str, Any]) -> None:
    """The table (tok/s: means of 3 runs); ``env`` is the results file's ``environment``."""
    from toolkit.hardware import hardware_fingerprint

    print(f"\nDistillation benchmark — {hardware_fingerprint(env['hardware'])} — load avg "
          f"{env['load_avg_start'][0]:.1f}→{env['load_avg_end'][0]:.1f} — {r['steps']} steps per student, "
          f"teacher {r['teacher_params'] / 1e6:.2f}M params, student {r['student_params'] / 1e6:.2f}M "
          f"(layers {r['student_layers_from_teacher']})")
    print(f"{'model':<14}{'val ppl':>10}{'vs teacher':>12}{'QA F1':>8}{'tok/s b1':>10}{'tok/s b8':>10}")
    tps = r["decode_tokens_per_s"]
    for k in ("teacher", "whitebox-kd", "blackbox-sft", "ce-only"):
        ppl = r["validation_perplexity"][k]
        rel = ppl_vs_teacher(ppl, r["validation_perplexity"]["teacher"])
        t = tps["teacher"] if k == "teacher" else tps["student"]
        print(f"{k:<14}{ppl:>10.2f}{rel:>+11.1%}{r['qa_f1'][k]:>8.3f}{t['batch1']:>10.1f}{t['batch8']:>10.1f}")
    print(f"student at init (layer copy, no training): ppl {r['validation_perplexity']['student_init']:.2f}")
    print(f"decode speedup student/teacher: {r['decode_speedup_student_vs_teacher']}")
    for name, ok in r["targets"].items():
        print(f"  {'PASS' if ok else 'MISS'}  {name}")


if __name__ == "__main__":
    raise SystemExit(main())
