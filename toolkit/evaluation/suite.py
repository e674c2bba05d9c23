"""Eval suites: strict YAML describing what ``toolkit eval`` measures (``eval/suites/*.yaml``).

A suite is part of a report's identity: its name and a hash of its resolved content are stored in every
report, and ``toolkit compare`` flags reports made with different suites instead of comparing them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from typing import Literal

from pydantic import Field, field_validator, model_validator

from toolkit.config import StrictModel, dump_recipe, load_recipe


class QASection(StrictModel):
    path: str | None = Field(None, description="QA jsonl {id, question, answer, doc_id, split}; default: reference QA")
    split: str | None = Field("test", description="keep only rows of this split (null: all rows)")
    limit: int | None = Field(None, ge=1, description="first N questions (null: all)")
    docs: str | None = Field(None, description="documents jsonl {id, text} holding each question's doc_id (the "
                             "oracle baseline's context); default: reference docs")


class RetrievalSection(StrictModel):
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)

    @field_validator("ks")
    @classmethod
    def _positive_sorted(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError("every k must be >= 1")
        return sorted(set(v))


class GenerationSection(StrictModel):
    top_k: int = Field(5, ge=1, description="passages put into the prompt")
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    baselines: list[Literal["closed_book", "oracle"]] = Field(
        default_factory=list, description="also answer every question with no context (closed_book, RAG-OFF) and "
        "with only its gold document (oracle), from the bare engine (toolkit.evaluation.baselines)")


class PerplexitySection(StrictModel):
    enabled: bool = True
    text: str | None = Field(None, description=".jsonl with a 'text' field or .txt; default: reference validation split")
    seq_len: int = Field(256, ge=8)
    max_windows: int | None = Field(64, ge=1)


class PoissonSection(StrictModel):
    rate_rps: float = Field(..., gt=0, description="mean request rate (open loop, exponential gaps)")
    requests: int = Field(..., ge=1)
    seed: int = 0


class SLOSection(StrictModel):
    """Latency objectives (toolkit.evaluation.slo): goodput counts requests meeting every threshold; a load
    point meets the SLO when at least ``percentile``% of its requests meet each threshold."""

    percentile: float = Field(95.0, gt=0, le=100)
    ttft_ms: float | None = Field(None, gt=0, description="time to first token")
    tpot_ms: float | None = Field(None, gt=0, description="time per output token after the first")
    e2e_ms: float | None = Field(None, gt=0, description="request sent to last chunk, client side")
    retrieval_ms: float | None = Field(None, gt=0, description="endpoint's embed + search stages")

    @model_validator(mode="after")
    def _one_threshold(self) -> "SLOSection":
        if all(getattr(self, m) is None for m in ("ttft_ms", "tpot_ms", "e2e_ms", "retrieval_ms")):
            raise ValueError("give at least one threshold (ttft_ms, tpot_ms, e2e_ms, retrieval_ms)")
        return self


class MaxLoadSection(StrictModel):
    """``toolkit eval --find-max-load``: the highest load meeting the suite's SLO (bracketing, then bisection)."""

    mode: Literal["concurrency", "poisson"] = Field("concurrency", description="closed-loop concurrency or "
                                                    "open-loop Poisson request rate")
    start: float = Field(1.0, gt=0, description="first load tried (concurrency, or req/s)")
    limit: float = Field(64.0, gt=0, description="highest load tried")
    resolution: float = Field(1.0, gt=0, description="stop bisecting when the bracket is this narrow")
    requests: int = Field(16, ge=1, description="measured requests per trial")
    budget_s: float = Field(600.0, gt=0, description="wall-time bound of the search")

    @model_validator(mode="after")
    def _ordered(self) -> "MaxLoadSection":
        if self.limit < self.start:
            raise ValueError(f"limit ({self.limit:g}) must be >= start ({self.start:g})")
        return self


class LoadSection(StrictModel):
    concurrency: list[int] = Field(default_factory=lambda: [1, 4, 16])
    requests_per_level: int = Field(32, ge=1, description="measured requests per concurrency level")
    warmup: int = Field(2, ge=0, description="requests sent before each level and excluded from it")
    repeats: int = Field(1, ge=1, description="runs of each load point (fresh warm-up each); with 2 or more every "
                         "figure carries mean, 95% CI and CV")
    max_load: MaxLoadSection | None = Field(None, description="search settings of --find-max-load (defaults if unset)")
    poisson: PoissonSection | None = None
    engine_alone: bool = Field(True, description="also load the bare vLLM server with the same prompts")
    timeout_s: float = Field(300.0, gt=0)

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(c < 1 for c in v):
            raise ValueError("every concurrency level must be >= 1")
        return v


class EngineSection(StrictModel):
    prefix_caching: bool = Field(False, description="off by default so before/after runs are comparable")
    query_cache: bool = Field(False, description="endpoint's hot-query cache; off so repeated questions pay "
                              "embedding + search like new ones")
    semantic_cache: bool = Field(False, description="endpoint's semantic (paraphrase) cache: off whatever the "
                                 "profile says unless turned on here, so quality figures are the model's")
    extra_args: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="extra vLLM server flags {name: value}, as in serving profiles")


class Suite(StrictModel):
    name: str
    description: str = ""
    qa: QASection = Field(default_factory=QASection)
    retrieval: RetrievalSection = Field(default_factory=RetrievalSection)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    perplexity: PerplexitySection = Field(default_factory=PerplexitySection)
    load: LoadSection = Field(default_factory=LoadSection)
    slo: SLOSection | None = Field(None, description="latency objectives: goodput and SLO attainment per load point")
    engine: EngineSection = Field(default_factory=EngineSection)

    @model_validator(mode="after")
    def _something_to_do(self) -> "Suite":
        if not self.load.concurrency and self.load.poisson is None:
            raise ValueError("load: give at least one concurrency level or a poisson section")
        return self

    def digest(self) -> str:
        """Short content hash of the resolved suite (defaults included), for matching reports."""
        blob = json.dumps(dump_recipe(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_suite(path: str | Path) -> Suite:
    return load_recipe(path, Suite)
