"""Every shipped recipe, shrunk to a few short calibration windows, on real tiny Llama and Qwen2 models."""

import json
import math

import pytest
import torch
from safetensors import safe_open

from toolkit.config import load_recipe
from toolkit.engine.kernels import weight_only_4bit
from toolkit.manifest import read_manifest, size_on_disk
from toolkit.modeling import load_causal_lm
from toolkit.quantize.recipe import WEIGHT_BITS, QuantizeRecipe
from toolkit.quantize.run import quantize

# (architecture, recipe): every recipe on Llama; on Qwen2 (biased q/k/v projections, other AWQ mappings)
# the two calibrated algorithms with the most architecture-specific plumbing.
CASES = [("llama", r) for r in ("rtn-w4a16", "gptq-w4a16", "awq-w4a16", "gptq-w8a8-int8", "fp8-dynamic")] + \
        [("qwen2", "awq-w4a16"), ("qwen2", "gptq-w8a8-int8")]
STORED_DTYPE = {"W4A16": "I32", "W4A16_ASYM": "I32", "W8A8": "I8", "FP8_DYNAMIC": "F8_E4M3"}


def _tensors(model_dir):
    out = {}
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                sl = st.get_slice(k)
                out[k] = (sl.get_dtype(), sl.get_shape())
    return out


@pytest.mark.parametrize("arch, name", CASES, ids=[f"{a}-{n}" for a, n in CASES])
def test_recipe_produces_a_smaller_quantized_checkpoint(arch, name, request, small_recipe, text_files, tmp_path):
    src = request.getfixturevalue(f"tiny_{arch}")
    recipe_path = small_recipe(name)
    recipe = load_recipe(recipe_path, QuantizeRecipe)
    out = tmp_path / "out"
    quantize(recipe, src, out, eval_data=text_files["eval"], recipe_source=str(recipe_path))

    # the config carries the quantization config vLLM reads
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["ignore"] == ["lm_head"]
    weights = qc["config_groups"]["group_0"]["weights"]
    assert weights["num_bits"] == WEIGHT_BITS[recipe.scheme]
    assert weights["group_size"] == recipe.effective_group_size
    assert weights["symmetric"] == (recipe.scheme != "W4A16_ASYM")
    assert (out / "tokenizer.json").is_file()
    assert weight_only_4bit(out) == (recipe.scheme in ("W4A16", "W4A16_ASYM"))  # what serving checks first

    # every quantized projection is stored packed/low-precision; lm_head and embeddings stay as they were
    tensors = _tensors(out)
    src_tensors = _tensors(src)
    q_proj = "model.layers.0.self_attn.q_proj"
    stored = tensors.get(f"{q_proj}.weight_packed") or tensors.get(f"{q_proj}.weight")
    assert stored[0] == STORED_DTYPE[recipe.scheme]
    bits = WEIGHT_BITS[recipe.scheme]
    rows, cols = src_tensors[f"{q_proj}.weight"][1]
    assert math.prod(stored[1]) * {"I32": 32, "I8": 8, "F8_E4M3": 8}[stored[0]] == rows * cols * bits
    assert tensors["lm_head.weight"] == src_tensors["lm_head.weight"]

    # size shrinks as the bit width predicts: quantized share shrinks 16/bits-fold, plus scales (and zero points)
    linear = sum(math.prod(shape) for k, (_, shape) in src_tensors.items()
                 if k.endswith("proj.weight") and ".layers." in k)
    src_bytes, q_bytes = size_on_disk(src), size_on_disk(out)
    expected = src_bytes - linear * 2 + linear * bits / 8
    scale_overhead = linear * 2 * (2 / (recipe.effective_group_size or cols))  # bf16 scale (+ zp) per group/row
    assert expected * 0.98 < q_bytes - size_on_disk(out / "toolkit_manifest.json") < expected + scale_overhead + 64e3

    # manifest: inputs, calibration, sizes, quality of source and of the saved checkpoint
    m = read_manifest(out)
    res = m["results"]
    assert m["inputs"]["model"]["sha256"] and m["recipe"]["scheme"] == recipe.scheme
    assert res["size_bytes"]["source"] == src_bytes and res["size_bytes"]["quantized"] < src_bytes
    if recipe.algorithm == "rtn":
        assert "calibration" not in res
    else:
        assert res["calibration"]["samples"] == 8 and res["calibration"]["seq_len"] == 64
    assert res["cpu_awq_pin_memory_workaround"] == (recipe.algorithm == "awq")
    # the tiny models are stored in bf16: computed in bf16 only where the recorded hardware runs it natively
    assert res["compute_dtype"] == ("bfloat16" if m["hardware"]["supports"]["bf16"] else "float32")
    ppl = res["perplexity"]
    assert math.isfinite(ppl["source"]) and math.isfinite(ppl["quantized"])
    assert ppl["quantized"] != ppl["source"]  # measured on the changed weights
    assert 0.8 < ppl["quantized"] / ppl["source"] < 1.25  # tiny random model: quantization noise is small
    assert m["timings_s"]["quantize"] > 0 and m["peak_rss_mb"] > 0


def test_reloaded_weights_really_are_4_bit(tiny_llama, small_recipe, text_files, tmp_path):
    """What perplexity is measured on: the reloaded checkpoint holds at most 16 levels per quantization group."""
    recipe_path = small_recipe("rtn-w4a16")
    out = tmp_path / "rtn"
    recipe = load_recipe(recipe_path, QuantizeRecipe)
    quantize(recipe, tiny_llama, out, eval_data=text_files["eval"])
    model = load_causal_lm(out)
    with torch.inference_mode():
        model(input_ids=torch.tensor([[5, 6, 7]]))  # compressed-tensors decompresses on first use
    gs = recipe.effective_group_size
    w = model.model.layers[1].mlp.down_proj.weight.float()
    assert max(len(g.unique()) for g in w.reshape(-1, gs)) <= 16
    assert len(load_causal_lm(tiny_llama).model.layers[1].mlp.down_proj.weight.reshape(-1, gs)[0].unique()) > 16


def test_source_perplexity_is_computed_once_per_source_and_windows(tiny_llama, small_recipe, text_files, tmp_path,
                                                                    monkeypatch):
    """Two recipes on one source: the second reuses the first's source perplexity (same windows, same dtype);
    a changed source is measured again."""
    import toolkit.quantize.run as run

    monkeypatch.setattr(run, "ARTIFACTS", tmp_path / "artifacts")
    results = []
    for name in ("rtn-w4a16", "fp8-dynamic"):
        quantize(load_recipe(small_recipe(name), QuantizeRecipe), tiny_llama, tmp_path / name,
                 eval_data=text_files["eval"])
        results.append(read_manifest(tmp_path / name)["results"]["perplexity"])
    assert [r["source_cached"] for r in results] == [False, True]
    assert results[0]["source"] == results[1]["source"]
    assert len(list((tmp_path / "artifacts" / "cache" / "perplexity").glob("*.json"))) == 1
    # the first result as a source: another model, so another key
    quantize(load_recipe(small_recipe("fp8-dynamic"), QuantizeRecipe), tmp_path / "rtn-w4a16", tmp_path / "again",
             eval_data=text_files["eval"])
    assert read_manifest(tmp_path / "again")["results"]["perplexity"]["source_cached"] is False
