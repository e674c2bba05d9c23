"""Quantization stage: a YAML recipe (AWQ, GPTQ, W8A8-INT8, FP8, round-to-nearest) applied to a causal LM with
llm-compressor's ``oneshot``, written as a compressed-tensors checkpoint that vLLM serves directly.

Modules, one job each: :mod:`.recipe` (what a user may set), :mod:`.calibration` (text → token windows),
:mod:`.modifiers` (recipe → llm-compressor modifiers, checked against the model), :mod:`.cpu_awq` (the
CPU-only AWQ workaround), :mod:`.run` (the whole run: quantize, save, measure, manifest), :mod:`.cli` and
:mod:`.bench`.
"""
