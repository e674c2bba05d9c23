"""The quantization recipe: a strict YAML schema (unknown keys are errors) for what users tune.

``algorithm`` picks how weights are rounded, ``scheme`` what they are rounded to:

- ``rtn``: round-to-nearest from each group's min/max, no calibration data (llm-compressor's
  ``QuantizationModifier``). The baseline; also the right tool for FP8 and dynamic-activation schemes,
  whose activation scales are computed at run time anyway.
- ``gptq``: quantizes one column at a time and compensates the error in the remaining columns using the
  layer's input Hessian from calibration data (``GPTQModifier``). Slower, usually better at 4 bits.
- ``awq``: scales salient input channels (chosen from calibration activations by a grid search) before
  rounding, so the weights that matter most lose least (``AWQModifier``). Weight-only schemes only.

``scheme`` is a compressed-tensors preset that vLLM serves: ``W4A16`` (int4 symmetric, groups),
``W4A16_ASYM`` (int4 with zero points, groups), ``W8A16`` (int8 weights per channel), ``W8A8`` (int8 weights
per channel + dynamic per-token int8 activations), ``FP8_DYNAMIC`` (fp8 weights per channel + dynamic fp8
activations).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from toolkit.config import StrictModel

Scheme = Literal["W4A16", "W4A16_ASYM", "W8A16", "W8A8", "FP8_DYNAMIC"]
# Schemes whose weights are quantized in groups along the input dimension (``group_size`` applies).
GROUPED_SCHEMES = {"W4A16", "W4A16_ASYM"}
WEIGHT_ONLY_SCHEMES = {"W4A16", "W4A16_ASYM", "W8A16"}
# Bits per stored weight, for the size check in tests and the benchmark's expectations.
WEIGHT_BITS = {"W4A16": 4, "W4A16_ASYM": 4, "W8A16": 8, "W8A8": 8, "FP8_DYNAMIC": 8}


class CalibrationSpec(StrictModel):
    """Where calibration text comes from and how much of it is used (ignored by ``rtn``)."""

    dataset: str = Field("reference", description="'reference' (the reference corpus), a local .jsonl/.txt "
                         "path, or 'hf:<dataset id>' (needs the hub)")
    split: str = Field("train", description="split of the reference corpus or the HF dataset")
    text_field: str = Field("text", description="field holding the text (.jsonl / HF dataset)")
    hf_config: str | None = Field(None, description="HF dataset configuration name, if it has several")
    num_samples: int = Field(128, ge=1, description="number of calibration windows")
    seq_len: int = Field(512, ge=8, description="tokens per calibration window")


class AWQOptions(StrictModel):
    duo_scaling: bool | Literal["both"] = Field(True, description="use weight magnitudes as well as "
                                                "activations to pick the scales ('both' tries both)")
    n_grid: int = Field(20, ge=1, description="grid points searched per layer for the scaling exponent")


class GPTQOptions(StrictModel):
    dampening_frac: float = Field(0.01, gt=0, lt=1, description="diagonal dampening of the Hessian, as a "
                                  "fraction of its mean diagonal (raise it if GPTQ reports instability)")
    block_size: int = Field(128, ge=1, description="columns quantized per pass")
    actorder: Literal["static", "group", "weight"] | None = Field(
        "static", description="activation ordering (static: best accuracy, no run-time cost); null disables")


class SmoothQuantOptions(StrictModel):
    """SmoothQuant (Xiao et al., 2023): before quantizing, move activation outliers into the weights by
    per-channel scales s_j = max|X_j|^a / max|W_j|^(1-a), which the preceding norm absorbs; activations then
    quantize to int8 with less error. llm-compressor's own W8A8-INT8 examples run it before GPTQ."""

    smoothing_strength: float = Field(0.8, gt=0, lt=1, description="migration strength a: 0 leaves "
                                      "activations as they are, 1 moves all of their range into the weights")


class EvalSpec(StrictModel):
    """Held-out perplexity measured on the source model and on the quantized checkpoint."""

    seq_len: int = Field(256, ge=8)
    max_windows: int | None = Field(64, ge=1, description="cap on evaluation windows (null: all)")
    batch_size: int = Field(8, ge=1)


class QuantizeRecipe(StrictModel):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9._-]+$",
                      description="default output directory name under artifacts/models/")
    algorithm: Literal["rtn", "gptq", "awq"]
    scheme: Scheme
    group_size: int | None = Field(None, ge=1, description="weights per quantization group (grouped "
                                   "schemes only); null keeps the preset's 128")
    targets: list[str] = Field(default_factory=lambda: ["Linear"], min_length=1)
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"],
                              description="layers left unquantized (names or 're:' patterns)")
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    awq: AWQOptions | None = None
    gptq: GPTQOptions | None = None
    smoothquant: SmoothQuantOptions | None = Field(None, description="smooth activations first (schemes that "
                                                   "quantize activations: W8A8, FP8)")
    eval: EvalSpec = Field(default_factory=EvalSpec)

    @model_validator(mode="after")
    def _consistent(self) -> "QuantizeRecipe":
        if self.group_size is not None and self.scheme not in GROUPED_SCHEMES:
            raise ValueError(f"group_size applies only to grouped schemes ({', '.join(sorted(GROUPED_SCHEMES))}); "
                             f"{self.scheme} quantizes per channel")
        if self.algorithm == "awq" and self.scheme not in WEIGHT_ONLY_SCHEMES:
            raise ValueError(f"awq needs a weight-only scheme ({', '.join(sorted(WEIGHT_ONLY_SCHEMES))}), "
                             f"not {self.scheme}")
        if self.awq is not None and self.algorithm != "awq":
            raise ValueError("'awq' options given but algorithm is not awq")
        if self.gptq is not None and self.algorithm != "gptq":
            raise ValueError("'gptq' options given but algorithm is not gptq")
        if self.smoothquant is not None and self.scheme in WEIGHT_ONLY_SCHEMES:
            raise ValueError(f"smoothquant helps only schemes that quantize activations, not {self.scheme}")
        return self

    @property
    def needs_calibration(self) -> bool:
        return self.algorithm != "rtn" or self.smoothquant is not None

    @property
    def effective_group_size(self) -> int | None:
        if self.scheme not in GROUPED_SCHEMES:
            return None
        return self.group_size or 128
