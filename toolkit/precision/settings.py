"""The precision-selection recipe (``recipes/precision/*.yaml``): candidate set, budget, measurement sizes.

Kept as a strict pydantic model so a typo in a recipe or a nonsensical size is a one-line error before any
engine starts. The CLI's flags override single fields (``--repeats``, ``--candidates``, ``--budget``...).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from toolkit.config import StrictModel, parse_fraction
from toolkit.errors import ToolkitError


def parse_budget(value: str | float) -> float:
    """``"1%"`` → 0.01, ``"0.5%"`` → 0.005, ``0.02`` → 0.02. Negative or non-numeric budgets are errors."""
    x = parse_fraction(value, "--budget")
    if not 0 <= x < 10:
        raise ToolkitError(f"--budget: must be between 0% and 1000%, got '{str(value).strip()}'")
    return x


class ThroughputSettings(StrictModel):
    """vLLM offline throughput job (see ``toolkit/engine/offline.py``)."""

    batch_sizes: list[int] = Field(default=[1, 8], min_length=1)
    new_tokens: int = Field(64, ge=1)
    prompt_tokens: int = Field(32, ge=1)
    prefill_tokens: int = Field(256, ge=1)
    prefill_batch: int = Field(4, ge=1)
    repeats: int = Field(3, ge=1)
    # vLLM without graph compilation: each engine starts ~1.5 min sooner on 2 cores but decodes slower (SmolLM2
    # BF16, batch 8: ~135 vs ~170 tok/s), so a ranking to act on is measured compiled; --quick (CI) sets it
    enforce_eager: bool = False

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("batch sizes must be >= 1")
        return v


class QualitySettings(StrictModel):
    """Validation perplexity: fixed windows of the validation split, same tokens for every candidate."""

    eval_data: str | None = None   # .jsonl with "text" or .txt; default: the reference validation split
    seq_len: int = Field(256, ge=8)
    max_windows: int = Field(32, ge=1)
    batch_size: int = Field(4, ge=1)


class QuantizeSettings(StrictModel):
    """How the FP8/INT8 candidates' checkpoints are made (passed to ``toolkit quantize``); None = its recipe's."""

    recipes: dict[Literal["fp8", "int8"], str] = {
        "fp8": "recipes/quantize/fp8-dynamic.yaml",
        "int8": "recipes/quantize/gptq-w8a8-int8.yaml",
    }
    checkpoints: dict[Literal["fp8", "int8"], str] = Field(
        default_factory=dict, description="an existing quantized checkpoint to measure instead of making one "
        "(e.g. the output of `make quantize` with the same recipe)")
    calibration_data: str | None = None
    num_samples: int | None = Field(None, ge=1)
    seq_len: int | None = Field(None, ge=8)
    # quantize checks its own perplexity too; precision measures quality itself, so keep that check short
    eval_windows: int = Field(4, ge=1)


class PrecisionRecipe(StrictModel):
    candidates: list[str] = ["fp32", "tf32", "bf16", "fp16", "fp8", "int8"]
    budget: str = "1%"
    emulated: Literal["measure", "skip"] = "measure"
    rank_by: Literal["decode", "prefill"] = "decode"
    quantize: QuantizeSettings = QuantizeSettings()
    throughput: ThroughputSettings = ThroughputSettings()
    quality: QualitySettings = QualitySettings()
    microbench_repeats: int = Field(3, ge=1)

    @field_validator("candidates")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from toolkit.precision.candidates import CANDIDATES

        unknown = [c for c in v if c not in CANDIDATES]
        if unknown or not v:
            raise ValueError(f"unknown format(s) {unknown or '(none)'}; choose from {', '.join(CANDIDATES)}")
        return list(dict.fromkeys(v))

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: str) -> str:
        try:
            parse_budget(v)
        except ToolkitError as exc:
            raise ValueError(str(exc).removeprefix("--budget: ")) from None
        return v
