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


# --- retrieval/serving fixtures (issue 4): a small hand-written corpus and a FAISS index built from it ---
SMALL_DOCS = [
    ("paris", "Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower in Paris, France, completed in 1889."),
    ("python", "Python language", "Python is a programming language created by Guido van Rossum and first released "
     "in 1991. It emphasises readable code and uses significant indentation."),
    ("photosynthesis", "Photosynthesis", "Photosynthesis is the process by which green plants use sunlight, water "
     "and carbon dioxide to produce glucose and oxygen in their chloroplasts."),
    ("everest", "Mount Everest", "Mount Everest is the highest mountain above sea level, 8849 metres, on the border "
     "of Nepal and China in the Himalayas."),
    ("coffee", "Coffee", "Coffee is a drink brewed from roasted coffee beans, the seeds of berries of the Coffea "
     "plant. It contains caffeine, a stimulant."),
    ("moon", "Apollo 11", "Apollo 11 landed the first humans on the Moon in July 1969; Neil Armstrong and Buzz "
     "Aldrin walked on the lunar surface."),
    ("faiss", "FAISS", "FAISS is a library for efficient similarity search and clustering of dense vectors, with "
     "flat, IVF, product quantization and HNSW indexes."),
    ("volcano", "Volcanoes", "A volcano is a rupture in the crust of a planet through which lava, volcanic ash and "
     "gases escape from a magma chamber below the surface."),
    ("chess", "Chess", "Chess is a board game for two players on a checkered board of 64 squares; each player "
     "starts with sixteen pieces including a king and a queen."),
    ("heart", "Human heart", "The human heart pumps blood through the circulatory system; it has four chambers, "
     "two atria and two ventricles."),
    ("long", "Rivers of the world", " ".join(
        f"River {i}: the {name} river flows through {place} and is about {100 * i} kilometres long."
        for i, (name, place) in enumerate([("Nile", "Egypt"), ("Amazon", "Brazil"), ("Danube", "Austria"),
                                           ("Mekong", "Vietnam"), ("Volga", "Russia"), ("Rhine", "Germany"),
                                           ("Thames", "England"), ("Ganges", "India")], 1))),
]


@pytest.fixture(scope="session")
def small_docs(tmp_path_factory) -> Path:
    """A JSONL corpus of 11 short documents on distinct topics; one is long enough to be cut into chunks."""
    import json

    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "title": t, "text": x}) + "\n" for i, t, x in SMALL_DOCS))
    return path


@pytest.fixture(scope="session")
def embedder():
    """The packaged all-MiniLM-L6-v2, loaded once per session (one torch thread: the machine is shared)."""
    from toolkit.retrieval.config import default_embedding_model
    from toolkit.retrieval.embedding import Embedder

    return Embedder(default_embedding_model(), threads=1)


@pytest.fixture(scope="session")
def small_index(tmp_path_factory, small_docs, embedder) -> Path:
    """A flat FAISS index of ``small_docs`` (chunks of 24 words, 6 overlapping)."""
    from toolkit.retrieval.config import IndexConfig
    from toolkit.retrieval.index import build_index

    out = tmp_path_factory.mktemp("index") / "flat"
    build_index(small_docs, out, IndexConfig(chunk_words=24, chunk_overlap=6), embedder=embedder, progress=False)
    return out


@pytest.fixture(scope="session")
def hardware_reports() -> dict[str, dict]:
    """Hand-written hardware reports of supported machines (tests/data/hardware_reports.json), by name:
    tests decide against these so that their expected values hold on any CI machine."""
    import json

    reports = json.loads((Path(__file__).parent / "data" / "hardware_reports.json").read_text())
    reports.pop("_comment")
    return reports


@pytest.fixture
def as_machine(monkeypatch, hardware_reports):
    """``as_machine("epyc-avx2")``: for this test, ``toolkit.hardware.hardware_report()`` returns that fixed
    report (every caller imports it lazily from the module, so this reaches them all); returns the report."""
    import copy

    def use(name: str) -> dict:
        report = copy.deepcopy(hardware_reports[name])
        monkeypatch.setattr("toolkit.hardware.hardware_report", lambda: report)
        return report

    return use
