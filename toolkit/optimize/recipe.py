"""Optimize recipes (``recipes/optimize/*.yaml``): the search space, the SLO, the quality budget, the time budget.

A strict pydantic model (:class:`toolkit.config.StrictModel`), loaded by :func:`toolkit.config.load_recipe`, so a
misspelt axis or knob is a one-line error naming the file and field. Values typed on the command line
(``--slo``, ``--quality``, ``--budget``, ``--model``) become dotted overrides of the same fields and go through
the same validation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from toolkit.config import StrictModel, load_recipe, parse_fraction
from toolkit.errors import ToolkitError
from toolkit.evaluation.suite import MaxLoadSection

# one engine start plus one short trial does not fit in less on any machine the toolkit runs on
MIN_BUDGET_S = 60.0
_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|min|h)?\s*$")


def parse_budget(text: str | float, field: str = "budget") -> float:
    """``"60m"``, ``"90s"``, ``"1.5h"`` or a bare number of minutes -> seconds; refuses a budget too small
    for one trial (:data:`MIN_BUDGET_S`)."""
    m = _DURATION.match(str(text))
    if m is None:
        raise ToolkitError(f"{field}: '{text}' is not a duration like 60m, 90s or 1.5h")
    seconds = float(m["n"]) * {"s": 1, "m": 60, "min": 60, "h": 3600, None: 60}[m["unit"]]
    if seconds < MIN_BUDGET_S:
        raise ToolkitError(f"{field}: {seconds:g} s is too small for one trial (an engine start and one short "
                           f"max-load search need at least {MIN_BUDGET_S:g} s)")
    return seconds


class Quality(StrictModel):
    """The quality budget, both relative to the baseline (the first variant, first value of every knob)."""

    f1_drop: float | None = Field(0.02, ge=0, le=1, description="largest QA token-F1 drop (absolute) allowed")
    ppl_increase: float | None = Field(0.03, ge=0, description="largest relative validation-perplexity increase "
                                       "(0.03 = 3%); checked before any load test")

    @field_validator("ppl_increase", mode="before")
    @classmethod
    def _fraction(cls, v: Any) -> Any:
        try:
            return None if v is None else parse_fraction(v, "ppl_increase")
        except ToolkitError as exc:  # pydantic reports ValueErrors with the file and field
            raise ValueError(str(exc)) from None


def parse_quality(text: str) -> dict[str, Any]:
    """``"f1_drop:0.02,ppl_increase:3%"`` -> ``{"quality.f1_drop": 0.02, "quality.ppl_increase": "3%"}``
    (overrides, validated with the recipe)."""
    out: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition(":")
        if not sep or key.strip() not in Quality.model_fields:
            raise ToolkitError(f"--quality: '{item}' is not KEY:VALUE with KEY one of "
                               f"{', '.join(Quality.model_fields)}")
        out[f"quality.{key.strip()}"] = value.strip()
    if not out:
        raise ToolkitError("--quality: give at least one of f1_drop:0.02, ppl_increase:3%")
    return out


class Space(StrictModel):
    """The axes; each a list whose first value is the baseline's. Every combination is one configuration."""

    variants: list[str] = Field(..., min_length=1, description="model directories; the first is the baseline")
    max_num_seqs: list[int | None] = Field(default_factory=lambda: [None], min_length=1,
                                           description="vLLM max_num_seqs (null: the profile's)")
    enable_prefix_caching: list[bool] = Field(default_factory=lambda: [False], min_length=1)
    max_num_batched_tokens: list[int | None] = Field(default_factory=lambda: [None], min_length=1,
                                                     description="vLLM chunked-prefill budget (null: vLLM's)")
    top_k: list[int] = Field(default_factory=lambda: [5], min_length=1, description="passages in the prompt")
    dtype: list[Literal["auto", "bfloat16", "float16", "float32"] | None] = Field(
        default_factory=lambda: [None], min_length=1, description="vLLM --dtype, the activations' format (null: the "
        "profile's); which is fastest depends on the CPU (make precision measures it)")
    kv_cache_space_gib: list[float | None] = Field(default_factory=lambda: [None], min_length=1,
                                                   description="CPU: VLLM_CPU_KVCACHE_SPACE in GiB (null: profile's)")
    embedding_backend: list[Literal["torch", "onnx", "onnx-int8", "openvino", "openvino-int8"] | None] = Field(
        default_factory=lambda: [None], min_length=1, description="query embedder runtime (null: the index's own); "
        "another than the index's only where `toolkit index select-backend` measured that pair")
    index: list[str | None] = Field(default_factory=lambda: [None], min_length=1, description="retrieval index "
                                    "directories, e.g. flat vs hnsw builds (null: the recipe's index)")
    nprobe: list[int | None] = Field(default_factory=lambda: [None], min_length=1,
                                     description="IVF lists probed per query (null: as built)")
    ef_search: list[int | None] = Field(default_factory=lambda: [None], min_length=1,
                                        description="HNSW efSearch (null: as built)")
    kv_cache_dtype: list[Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] | None] = Field(
        default_factory=lambda: [None], min_length=1, description="CUDA: vLLM KV-cache dtype (null: the profile's)")
    attention_backend: list[str | None] = Field(default_factory=lambda: [None], min_length=1,
                                                description="CUDA: vLLM attention backend, e.g. FLASH_ATTN")

    @field_validator("max_num_seqs", "max_num_batched_tokens", "top_k", "kv_cache_space_gib", "dtype",
                     "embedding_backend", "index", "nprobe", "ef_search", "kv_cache_dtype", "attention_backend")
    @classmethod
    def _positive(cls, v: list) -> list:
        if any(isinstance(x, (int, float)) and x <= 0 for x in v):
            raise ValueError("every value must be > 0 (or null for the default)")
        if len(set(v)) != len(v):
            raise ValueError("a value is listed twice")
        return v


class SearchSettings(StrictModel):
    """Successive halving (Jamieson & Talwalkar 2016; Li et al., Hyperband, 2018): rung r gives every surviving
    configuration a max-load search of ``max_load.requests * eta**r`` requests per trial, run ``repeats[r]``
    times; the best ``1/eta`` go on."""

    eta: int = Field(2, ge=2, description="keep the best 1/eta of each rung")
    rungs: int = Field(3, ge=1, le=6)
    repeats: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1,
                               description="max-load searches per configuration at each rung (last value repeats)")
    max_load: MaxLoadSection = Field(default_factory=lambda: MaxLoadSection(requests=8, limit=32, budget_s=300),
                                     description="the max-load search of one trial (its requests grow per rung)")

    @field_validator("repeats")
    @classmethod
    def _repeats_positive(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v):
            raise ValueError("every repeat count must be >= 1")
        return v


class ConfirmSettings(StrictModel):
    """The interleaved confirmation of the winner against the baseline after the search
    (:mod:`toolkit.optimize.confirm`); it runs outside the search's time budget."""

    enabled: bool = Field(True, description="confirm the winner (skipped when the winner is the baseline)")
    pairs: int = Field(3, ge=2, le=10, description="ABBA rounds at each of the two loads (>= 2 for an interval; "
                       "with 2 the t interval is very wide)")
    requests: int = Field(16, ge=1, description="measured requests per run")


class OptimizeRecipe(StrictModel):
    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]+$", description="output directory under artifacts/optimize/")
    suite: str = Field("eval/suites/demo.yaml", description="eval suite: QA set, perplexity text, load warm-up")
    index: str | None = Field(None, description="retrieval index directory (default: artifacts/indexes/flat)")
    profile: str | None = Field(None, description="base serve profile the knobs are applied to (default: device's)")
    llamacpp_profile: str = Field("serve/llamacpp.yaml", description="base serve profile of GGUF variants, which "
                                  "llama.cpp serves (make setup-llamacpp)")
    slo: str | None = Field(None, description="e.g. e2e_p95:2000,ttft_p95:800 (toolkit.evaluation.slo.parse_slo); "
                            "null: the suite's slo section")
    quality: Quality = Field(default_factory=Quality)
    budget: str | float = Field("60m", description="wall-time budget of the whole search")
    space: Space
    search: SearchSettings = Field(default_factory=SearchSettings)
    confirm: ConfirmSettings = Field(default_factory=ConfirmSettings)

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: str | float) -> str | float:
        try:
            parse_budget(v)
        except ToolkitError as exc:
            raise ValueError(str(exc)) from None
        return v

    @property
    def budget_s(self) -> float:
        return parse_budget(self.budget)


def repo_path(path: str | Path) -> Path:
    """A recipe path as given, else relative to the repository root (recipes name repo files that way)."""
    from toolkit.paths import REPO_ROOT

    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


def load_optimize_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> OptimizeRecipe:
    """Load and validate; ``overrides`` are dotted keys (``{"space.variants": [...], "budget": "10m"}``)."""
    return load_recipe(path, OptimizeRecipe, overrides)
