"""Per candidate: its checkpoint (quantized on demand, cached), vLLM throughput, and validation perplexity.

- Checkpoints: FP32/TF32/BF16/FP16 run the model as given with a different ``dtype``; FP8 and INT8 run a
  W8A8 checkpoint made by the quantization stage (``python -m toolkit quantize --recipe ... --output ...``),
  cached under the work directory and reused while the source model's content hash is unchanged.
- Speed: one vLLM offline ``throughput`` job per candidate (one engine start each) → decode tokens/s per
  batch size and prefill tokens/s, each the median of ``repeats`` runs with min/max. TF32 has no vLLM
  switch; ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1`` makes cuBLAS use TF32 for the FP32 engine's matmuls.
  On CUDA the FP8 candidate also gets an FP8 KV cache (``kv_cache_dtype="fp8"``).
- Quality: perplexity of the candidate in transformers (``toolkit.modeling.perplexity``) on the same
  validation windows; quantized checkpoints load through compressed-tensors, which applies the same
  per-token dynamic activation quantization the engine uses. The change is relative to the reference
  (FP32, or BF16 when the model is too large to hold in FP32 — see :func:`reference_dtype`).

A candidate that fails (quantization error, engine refusing the format) is recorded with its error and the
run continues: one broken format must not hide the measurements of the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.manifest import atomic_write_text, read_manifest, sha256_tree
from toolkit.paths import REPO_ROOT
from toolkit.precision.candidates import Planned
from toolkit.precision.settings import PrecisionRecipe, QuantizeSettings, ThroughputSettings

FP32_RAM_FRACTION = 0.4  # above this share of device memory the FP32 copy is too big to be the reference


def _param_bytes(model_dir: Path) -> tuple[int, int]:
    """(parameter count estimate, bytes per stored parameter) from the safetensors size and config dtype."""
    cfg = json.loads((model_dir / "config.json").read_text())
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    per = 4 if "32" in dtype else 2
    size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) or \
        sum(f.stat().st_size for f in model_dir.glob("*.bin"))
    return size // per, per


def reference_dtype(model_dir: Path, report: dict[str, Any]) -> str:
    """``float32`` unless an FP32 copy would take more than 40% of RAM (CPU) or GPU memory: then ``bfloat16``."""
    params, _ = _param_bytes(model_dir)
    mem_gb = (report["cuda"][0]["memory_gb"] if report.get("cuda") else report["cpu"].get("ram_gb")) or 0
    return "bfloat16" if mem_gb and params * 4 > FP32_RAM_FRACTION * mem_gb * 2**30 else "float32"


def quantized_checkpoint(model: Path, candidate: str, recipe: Path, work_dir: Path, settings: QuantizeSettings,
                         eval_data: Path) -> Path:
    """The W8A8 checkpoint for ``candidate``; made by ``toolkit quantize`` once, then reused from the cache.

    Reused only if the same source model content, recipe file and calibration settings made it.
    """
    out = work_dir / "checkpoints" / candidate
    want = {"model": sha256_tree(model), "recipe": sha256_tree(recipe) if recipe.is_file() else None,
            "settings": settings.model_dump(mode="json")}
    stamp = out / "precision_source.json"
    if read_manifest(out) is not None and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return out
    if not recipe.is_file():
        raise ToolkitError(f"{recipe}: quantization recipe for {candidate} not found")
    cmd = [sys.executable, "-m", "toolkit", "quantize", "--recipe", str(recipe), "--model", str(model),
           "--output", str(out), "--eval-data", str(eval_data), "--set", f"eval.max_windows={settings.eval_windows}"]
    for flag, value in (("--calibration-data", settings.calibration_data), ("--num-samples", settings.num_samples),
                        ("--seq-len", settings.seq_len)):
        if value is not None:
            cmd += [flag, str(value)]
    # Stream quantize's own progress bars through (GPTQ can take minutes) and keep the tail for the error.
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tail = b""
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.read1(4096), b""):
        sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.flush()
        tail = (tail + chunk)[-4096:]
    if proc.wait() != 0:
        lines = [ln for ln in tail.decode(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
        raise ToolkitError(f"quantize ({recipe.name}) failed (exit {proc.returncode}): "
                           f"{(lines or ['no output'])[-1][:300]}")
    atomic_write_text(stamp, json.dumps(want))
    return out


def engine_throughput(checkpoint: Path, planned: Planned, tp: ThroughputSettings) -> dict[str, Any]:
    """One engine start: decode tokens/s per batch size and prefill tokens/s, with their spread."""
    from toolkit.engine.client import engine_args, run_offline

    c = planned.candidate
    max_len = max(tp.prefill_tokens, tp.prompt_tokens + tp.new_tokens) + 8
    args = engine_args(checkpoint, dtype=c.engine_dtype, max_model_len=max_len, enforce_eager=tp.enforce_eager,
                       kv_cache_dtype=None if planned.kv_cache_dtype == "auto" else planned.kv_cache_dtype)
    env = {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1"} if c.tf32 else {}  # the engine's environment only
    return run_offline("throughput", args, env=env, batch_sizes=tp.batch_sizes, new_tokens=tp.new_tokens,
                       prompt_tokens=tp.prompt_tokens, prefill_tokens=tp.prefill_tokens,
                       prefill_batch=tp.prefill_batch, repeats=tp.repeats)


def eval_windows(model: Path, recipe: PrecisionRecipe, eval_data: Path) -> list[list[int]]:
    from toolkit.modeling import load_tokenizer, read_texts, token_windows

    q = recipe.quality
    windows = token_windows(load_tokenizer(model), read_texts(eval_data), q.seq_len, q.max_windows)
    if not windows:
        raise ToolkitError(f"{eval_data}: too little text for one {q.seq_len}-token evaluation window")
    return windows


def candidate_perplexity(checkpoint: Path, torch_dtype: str, windows: list[list[int]], batch_size: int,
                         tf32: bool = False, device: str = "cpu") -> float:
    """Perplexity of ``checkpoint`` loaded in ``torch_dtype`` (TF32 matmuls if asked, CUDA only)."""
    import torch

    from toolkit.modeling import load_causal_lm, perplexity

    model = load_causal_lm(checkpoint, dtype=getattr(torch, torch_dtype), device=device)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        return perplexity(model, windows, batch_size=batch_size, progress=f"perplexity {torch_dtype}")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
        del model


def measure_candidate(model: Path, planned: Planned, recipe: PrecisionRecipe, work_dir: Path,
                      windows: list[list[int]], eval_data: Path, device: str, log=print,
                      ppl_cache: dict[tuple, float] | None = None) -> dict[str, Any]:
    """Everything known about one candidate: plan status, checkpoint, throughput, perplexity (or the error).

    ``ppl_cache`` maps (checkpoint, dtype, tf32) to a perplexity already computed in this run (the reference),
    so FP32 is not evaluated twice.
    """
    c = planned.candidate
    row: dict[str, Any] = {"name": c.name, "label": c.label, "status": planned.status, "reason": planned.reason,
                           "engine_dtype": c.engine_dtype, "kv_cache_dtype": planned.kv_cache_dtype,
                           "checkpoint": None, "quantize_recipe": None}
    if not planned.measured:
        return row
    try:
        checkpoint = model
        if c.quantize_recipe and c.quantize_recipe in recipe.quantize.checkpoints:  # made earlier, by the user
            checkpoint = Path(recipe.quantize.checkpoints[c.quantize_recipe])
            log(f"[{c.name}] quantized checkpoint given: {checkpoint}")
            row["checkpoint"], row["quantize_recipe"] = str(checkpoint), "given"
        elif c.quantize_recipe:
            given = recipe.quantize.recipes[c.quantize_recipe]
            qrecipe = Path(given) if Path(given).is_absolute() else REPO_ROOT / given
            log(f"[{c.name}] quantized checkpoint ({qrecipe.name}; cached under {work_dir / 'checkpoints'})")
            checkpoint = quantized_checkpoint(model, c.name, qrecipe, work_dir, recipe.quantize, eval_data)
            row["checkpoint"], row["quantize_recipe"] = str(checkpoint), given
        key = (str(checkpoint), c.torch_dtype, c.tf32)
        if ppl_cache is not None and key in ppl_cache:
            row["perplexity"] = ppl_cache[key]
        else:
            log(f"[{c.name}] perplexity ({c.torch_dtype})")
            row["perplexity"] = candidate_perplexity(checkpoint, c.torch_dtype, windows, recipe.quality.batch_size,
                                                     tf32=c.tf32, device=device)
        log(f"[{c.name}] vLLM throughput (dtype {c.engine_dtype}, kv {planned.kv_cache_dtype}, "
            f"{recipe.throughput.repeats} repeats)")
        row["throughput"] = engine_throughput(checkpoint, planned, recipe.throughput)
    except (ToolkitError, RuntimeError, NotImplementedError) as exc:  # e.g. a kernel missing for this dtype
        row["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]
        log(f"[{c.name}] failed: {row['error']}")
    return row
