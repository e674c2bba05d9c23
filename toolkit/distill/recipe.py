"""Distillation recipes: strict pydantic models for ``recipes/distill/*.yaml``.

One recipe file per method. Unknown keys and out-of-range values (α outside [0, 1], a temperature ≤ 0) are
rejected when the file is loaded, with the file and the dotted field named, before any model is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from toolkit.config import StrictModel, load_recipe


class StudentSpec(StrictModel):
    """Where the student comes from. ``path`` (or ``--student``) wins over ``layers``.

    - ``layers``: teacher layer indices to keep, weights copied (embeddings, final norm and LM head too).
      Default: every ``keep_every``-th layer (0, k, 2k, …); ``keep_every: 2`` is DistilBERT's initialisation.
    - ``path``: a model directory with weights (fine-tuned as is), or a directory / ``config.json`` without
      weights (randomly initialised from that config). It must use the teacher's tokenizer for white-box KD.
    """

    layers: list[int] | None = None
    keep_every: int = Field(2, ge=1, description="with layers null: keep teacher layers 0, k, 2k, ...")
    path: str | None = None


class DataSpec(StrictModel):
    """Training / validation text. ``null`` means the reference corpus splits (artifacts/reference/splits)."""

    train: str | None = None
    validation: str | None = None
    seq_len: int = Field(256, ge=16)
    max_train_windows: int | None = Field(None, ge=1)
    max_validation_windows: int = Field(64, ge=1)
    qa_chat: bool = False  # white-box: also train on QA chat examples (question + gold context → answer)
    max_qa_examples: int | None = Field(None, ge=1)
    context_chars: int = Field(1200, ge=0)  # gold context is cut to this many characters in prompts


class KDLossSpec(StrictModel):
    """loss = α·T²·D(p_teacher^T, p_student^T) + (1−α)·CE + β·hidden-state loss."""

    alpha: float = Field(0.5, ge=0.0, le=1.0)
    temperature: float = Field(2.0, gt=0.0)
    divergence: Literal["forward", "reverse", "jsd"] = "forward"
    beta: float = Field(0.0, ge=0.0)
    hidden_loss: Literal["mse", "cosine"] = "cosine"
    layer_map: dict[int, int] | None = None  # student hidden index → teacher hidden index (1-based blocks)


class BlackboxSpec(StrictModel):
    """Teacher answers for sequence-level KD, seen only as text.

    ``source: vllm`` runs the teacher in vLLM offline batch mode; ``source: openai`` calls any
    OpenAI-compatible ``/v1/chat/completions`` endpoint at ``url`` (the teacher directory is then only
    recorded, ``api_model`` is the served model name).
    """

    prompts: str | None = None  # .jsonl with "prompt" or "messages"; null = reference QA train split
    source: Literal["vllm", "openai"] = "vllm"
    url: str | None = None
    api_model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(8, ge=1)
    max_prompts: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    min_new_tokens: int = Field(0, ge=0)  # vLLM only: forbid EOS before this many tokens
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    max_model_len: int | None = Field(None, ge=16)
    enforce_eager: bool = False  # vLLM only: skip graph compilation (~1.5 min on 2 cores) for a few prompts
    cache_dir: str | None = None  # default artifacts/distill/cache

    @model_validator(mode="after")
    def _url_for_openai(self) -> "BlackboxSpec":
        if self.source == "openai" and not self.url:
            raise ValueError("source 'openai' needs 'url' (e.g. http://localhost:8000/v1)")
        return self


class TrainingSpec(StrictModel):
    """Hugging Face Trainer settings that matter for distillation; everything else keeps HF defaults."""

    max_steps: int = Field(200, ge=1)
    learning_rate: float = Field(5e-4, gt=0.0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(100, ge=1)
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where the hardware runs it natively


class DistillRecipe(StrictModel):
    method: Literal["blackbox-sft", "whitebox-kd"]
    description: str | None = None
    student: StudentSpec = StudentSpec()
    data: DataSpec = DataSpec()
    loss: KDLossSpec = KDLossSpec()
    blackbox: BlackboxSpec = BlackboxSpec()
    training: TrainingSpec = TrainingSpec()


def load_distill_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> DistillRecipe:
    """Load and validate a distillation recipe; ``overrides`` are dotted keys (e.g. ``training.max_steps``)."""
    return load_recipe(path, DistillRecipe, {k: v for k, v in (overrides or {}).items() if v is not None})
