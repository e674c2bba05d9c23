"""One quantization run: load, check, measure the source, ``oneshot``, save, reload, measure, manifest.

Quality of the result is measured on the checkpoint as written: after saving, the compressed-tensors
checkpoint is loaded back with transformers (which decompresses the packed integer/fp8 weights with their
scales and zero points) and its perplexity is computed on the same held-out windows as the source. That
number therefore covers packing and save/load, not just llm-compressor's in-memory fake quantization, and is
about the exact weights vLLM will serve. (Activation quantization of W8A8/FP8 is dynamic and happens inside
vLLM's kernels; the reloaded transformers model runs those layers on the dequantized weights, so for those
schemes the figure is the weight-quantization loss.)

Calibration runs where llm-compressor puts it: its sequential pipeline onloads each decoder layer to the
accelerator when one exists (``llmcompressor.utils.dev.get_main_device``) and stays on the CPU otherwise;
perplexity is measured on CUDA when available. Everything is built in a temporary sibling of the output
directory and renamed into place only when complete (:func:`toolkit.manifest.atomic_dir`).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.config import dump_recipe
from toolkit.errors import ToolkitError
from toolkit.hardware import compute_dtype
from toolkit.manifest import RunRecord, atomic_dir, atomic_write_text, size_on_disk
from toolkit.modeling import load_causal_lm, load_tokenizer, perplexity, read_texts, resolve_model, token_windows
from toolkit.paths import ARTIFACTS, reference_split
from toolkit.quantize.recipe import QuantizeRecipe


@dataclass
class QuantizeResult:
    output: Path
    manifest: dict[str, Any]


def compute_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def eval_windows(tokenizer, recipe: QuantizeRecipe, eval_data: str | Path | None) -> tuple[list, Path]:
    path = Path(eval_data) if eval_data else reference_split("validation")
    if not path.is_file():
        hint = "" if eval_data else " (run `make reference`, or pass --eval-data FILE.jsonl|.txt)"
        raise ToolkitError(f"{path}: evaluation text not found{hint}")
    windows = token_windows(tokenizer, read_texts(path), recipe.eval.seq_len, recipe.eval.max_windows)
    if not windows:
        raise ToolkitError(f"{path}: evaluation text too short for one window of eval.seq_len="
                           f"{recipe.eval.seq_len} tokens")
    return windows, path


def _skeleton(model_id: str):
    """The model's module tree on the meta device (no weights read): enough to check layer shapes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_id)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError) as exc:
        raise ToolkitError(f"{model_id}: cannot build as a causal LM ({str(exc).splitlines()[0]})") from None


def _ppl(model, windows, recipe: QuantizeRecipe, device: str, label: str) -> float:
    model.to(device)
    try:
        return perplexity(model, windows, batch_size=recipe.eval.batch_size, progress=label)
    finally:
        model.to("cpu")


def _source_ppl(lm, model_sha256: str | None, windows, recipe: QuantizeRecipe, device: str,
                dtype) -> tuple[float, bool]:
    """The source's perplexity, and whether it came from the cache (``artifacts/cache/perplexity``).

    Every recipe run on one source evaluates the same windows in the same dtype (the demo quantizes one model
    five ways: ~50 s each on an AVX2 CPU), so the figure is kept under a key of everything it depends on: the
    source's content hash, the window tokens, compute dtype, device, batch size and library versions."""
    import torch
    import transformers

    if model_sha256 is None:  # a hub id: no content hash to key on
        return _ppl(lm, windows, recipe, device, "perplexity (source)"), False
    key = hashlib.sha256(json.dumps([model_sha256, windows, str(dtype), device, recipe.eval.batch_size,
                                     torch.__version__, transformers.__version__]).encode()).hexdigest()[:32]
    path = ARTIFACTS / "cache" / "perplexity" / f"{key}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return float(json.loads(path.read_text())["perplexity"]), True
    ppl = _ppl(lm, windows, recipe, device, "perplexity (source)")
    atomic_write_text(path, json.dumps({"perplexity": ppl, "model_sha256": model_sha256, "dtype": str(dtype),
                                        "windows": len(windows)}) + "\n")
    return ppl, False


def _oneshot(model, recipe: QuantizeRecipe, calib) -> dict[str, Any]:
    """Run llm-compressor; returns notes for the manifest (e.g. whether the CPU AWQ workaround was active)."""
    from llmcompressor import oneshot

    from toolkit.quantize.cpu_awq import pin_memory_guard
    from toolkit.quantize.modifiers import build_modifiers

    kwargs: dict[str, Any] = {"model": model, "recipe": build_modifiers(recipe)}
    if calib is not None:
        kwargs.update(dataset=calib.to_dataset(), num_calibration_samples=len(calib.windows),
                      max_seq_length=len(calib.windows[0]), shuffle_calibration_samples=False)
    guard = pin_memory_guard() if recipe.algorithm == "awq" else contextlib.nullcontext(False)
    with guard as patched:
        oneshot(**kwargs)
    return {"cpu_awq_pin_memory_workaround": bool(patched)}


def _quantization_config(out: Path) -> dict[str, Any]:
    import json

    cfg = json.loads((out / "config.json").read_text())
    qc = cfg.get("quantization_config")
    if not qc:
        raise ToolkitError(f"{out}: saved checkpoint carries no quantization_config")
    return qc


def quantize(recipe: QuantizeRecipe, model: str | Path, output: str | Path, eval_data: str | Path | None = None,
             recipe_source: str = "recipe") -> QuantizeResult:
    """Quantize ``model`` with ``recipe`` into ``output``; see the module docstring for the steps."""
    from toolkit.quantize.calibration import load_calibration
    from toolkit.quantize.modifiers import check_against_model

    model_id = resolve_model(model)
    record = RunRecord("quantize")
    record.recipe = dump_recipe(recipe)
    device = compute_device()
    output = Path(output)
    with atomic_dir(output) as tmp:
        # Every input check runs before the weights are loaded: bad input fails in seconds, in one line.
        tok = load_tokenizer(model_id)
        n_layers = check_against_model(_skeleton(model_id), recipe, recipe_source)
        windows, eval_path = eval_windows(tok, recipe, eval_data)
        record.add_input("eval_data", eval_path)
        calib = None
        if recipe.needs_calibration:
            calib = load_calibration(recipe.calibration, tok)
            record.results["calibration"] = calib.describe()
            if len(calib.windows) < recipe.calibration.num_samples:
                logging.getLogger(__name__).warning(
                    "calibration data holds %d windows of %d tokens, fewer than num_samples=%d; using all",
                    len(calib.windows), recipe.calibration.seq_len, recipe.calibration.num_samples)
        record.add_input("model", model_id)
        with record.timed("load"):
            lm = load_causal_lm(model_id)
        # fp32 on a CPU that would emulate the stored bf16/fp16: AWQ's grid search and GPTQ's calibration are
        # forward passes. Saved in the source dtype; source and result are evaluated in the same compute dtype.
        save_dtype = next(lm.parameters()).dtype
        work_dtype = compute_dtype(save_dtype)
        lm.to(work_dtype)
        with record.timed("eval_source"):
            ppl_source, source_cached = _source_ppl(lm, record.inputs["model"].get("sha256"), windows, recipe,
                                                    device, work_dtype)
        with record.timed("quantize"):
            notes = _oneshot(lm, recipe, calib)
        with record.timed("save"):
            lm.to(save_dtype)  # floating tensors only: packed ints and zero points are untouched
            lm.save_pretrained(str(tmp), save_compressed=True)
            tok.save_pretrained(str(tmp))
        del lm
        gc.collect()
        with record.timed("eval_quantized"):
            reloaded = load_causal_lm(tmp, dtype=work_dtype)
            ppl_quant = _ppl(reloaded, windows, recipe, device, "perplexity (quantized)")
        del reloaded
        source_bytes = size_on_disk(model_id) if Path(model_id).exists() else None
        record.results.update({
            "quantized_layers": n_layers,
            "quantization_config": _quantization_config(tmp),
            "device": device, "compute_dtype": str(work_dtype).removeprefix("torch."),
            **notes,
            "eval": {"windows": len(windows), "seq_len": recipe.eval.seq_len,
                     "tokens": sum(len(w) for w in windows)},
            "perplexity": {"source": ppl_source, "quantized": ppl_quant, "source_cached": source_cached,
                           "measured_on": "reloaded compressed checkpoint (transformers + compressed-tensors)"},
            "size_bytes": {"source": source_bytes, "quantized": size_on_disk(tmp)},
        })
        manifest = record.write(tmp)
    return QuantizeResult(output, manifest)
