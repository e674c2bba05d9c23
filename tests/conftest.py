"""Shared fixtures: tiny random-initialised causal LMs of two architectures (Llama, Qwen2) with a real
byte-level BPE tokenizer trained in seconds on standard-library docstrings. Session-scoped and read-only:
a test that changes a model copies it first (``copy_model``)."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest

TINY_DIMS = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512)
SAMPLE_MODULES = ("json", "collections", "functools", "textwrap", "pathlib", "re", "itertools", "string")


def _docstrings() -> list[str]:
    import importlib

    texts = []
    for name in SAMPLE_MODULES:
        mod = importlib.import_module(name)
        for _, obj in inspect.getmembers(mod):
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 40:
                texts.append(doc)
    return texts


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    """A few hundred real docstrings: enough text to train a tokenizer and calibrate a quantizer."""
    return _docstrings()


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, sample_texts) -> Path:
    from toolkit.reference.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(sample_texts, vocab_size=512, out_dir=out)
    return out


def build_tiny_model(arch: str, tokenizer_dir: Path, out: Path, seed: int = 0, **overrides) -> Path:
    """Save a random-initialised ``arch`` ("llama" or "qwen2") causal LM plus tokenizer to ``out``."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    config = config_cls(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **{**TINY_DIMS, **overrides})
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_tiny_model("llama", tiny_tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_tiny_model("qwen2", tiny_tokenizer_dir, tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(params=["llama", "qwen2"])
def tiny_model(request) -> Path:
    """Each test using this runs once per architecture."""
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.fixture
def copy_model(tmp_path):
    def _copy(src: Path) -> Path:
        dst = tmp_path / f"{src.name}-copy"
        shutil.copytree(src, dst)
        return dst

    return _copy
