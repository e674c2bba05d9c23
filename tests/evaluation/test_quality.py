"""Eval's perplexity pass runs in the compute dtype the hardware report calls for, and says which."""

from __future__ import annotations

import pytest


# (CPU, compute dtype of the bf16-stored tiny model there), written by hand: bf16 only with AVX-512-BF16/AMX
@pytest.mark.parametrize("machine, dtype", [("epyc-avx2", "float32"), ("epyc-avx512-bf16-vnni", "bfloat16"),
                                            ("sapphire-rapids-amx", "bfloat16")])
def test_perplexity_runs_and_records_the_compute_dtype(machine, dtype, as_machine, tiny_llama, sample_texts,
                                                       tmp_path):
    from toolkit.evaluation.quality import validation_perplexity

    as_machine(machine)
    text = tmp_path / "valid.txt"
    text.write_text("\n\n".join(sample_texts[:40]))
    out = validation_perplexity(tiny_llama, text, seq_len=32, max_windows=2)
    assert out["error"] is None and 1 < out["value"] < 1e6
    assert out["compute_dtype"] == dtype
