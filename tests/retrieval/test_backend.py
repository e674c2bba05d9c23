"""The backend contract: FAISS and a third backend written in one file go through the same build/load/search
path of :mod:`toolkit.retrieval.index`, with a bag-of-words stand-in embedder (no model to load)."""

import typing

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.retrieval.backend import (
    BACKENDS,
    BackendName,
    VectorBackend,
    backend_class,
)
from toolkit.retrieval.config import IndexConfig
from toolkit.retrieval.index import build_index, load_index, update_index

WORDS = ["apple", "river", "mountain", "piano"]
DOCS = [{"id": w, "title": w.title(), "text": f"{w} {w} {w} and some filler"} for w in WORDS]

THIRD_BACKEND = '''
"""Brute-force inner product in numpy: the whole backend contract in one file."""
import numpy as np

from toolkit.retrieval.store import STORE_NAME, ChunkStore


class NumpyBackend:
    device = "cpu"

    def __init__(self, vectors, ids, store):
        self.vectors, self.ids, self.store = vectors, ids, store

    @classmethod
    def build(cls, directory, vectors, chunks, eff, config, version):
        np.save(directory / "vectors.npy", vectors)
        np.save(directory / "ids.npy", np.arange(len(vectors), dtype=np.int64))
        return {"numpy_file": "vectors.npy"}

    @classmethod
    def update(cls, directory, results, eff, config, remove_ids, vectors, ids, chunks):
        keep = ~np.isin(np.load(directory / "ids.npy"), remove_ids)
        np.save(directory / "vectors.npy", np.concatenate([np.load(directory / "vectors.npy")[keep], vectors]))
        np.save(directory / "ids.npy", np.concatenate([np.load(directory / "ids.npy")[keep], ids]))
        return {}

    @classmethod
    def load(cls, directory, results, eff, config):
        return cls(np.load(directory / results["numpy_file"]), np.load(directory / "ids.npy"),
                   ChunkStore(directory / STORE_NAME))

    def __len__(self):
        return len(self.vectors)

    def search(self, query, k, ids=None):
        scores = self.vectors @ query[0]
        if ids is not None:  # only allowed ids compete
            scores = np.where(np.isin(self.ids, ids), scores, -np.inf)
        rows = [r for r in np.argsort(-scores)[:k] if np.isfinite(scores[r])]
        return [(float(scores[r]), c) for r, c in zip(rows, self.store.get(self.ids[rows]))]

    def close(self):
        self.store.close()
'''


class BagOfWords:
    """Counts of WORDS, L2-normalised: enough to make each document its word's nearest neighbour."""

    model_id = "test/bag-of-words"
    dimension = len(WORDS)

    def encode(self, texts, batch_size=64, progress=False):
        v = np.array([[t.lower().split().count(w) for w in WORDS] for t in texts], dtype=np.float32) + 1e-3
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_query(self, text):
        return self.encode([text])


def test_registry_and_config_name_the_same_backends():
    assert set(typing.get_args(BackendName)) == set(BACKENDS)
    with pytest.raises(ToolkitError, match="unknown retrieval backend 'nope' \\(known: faiss, milvus\\)"):
        backend_class("nope")


@pytest.mark.parametrize("name", ["faiss", "third"])
def test_backends_meet_the_contract_through_index(name, tmp_path, monkeypatch):
    config = IndexConfig(embedding_model=BagOfWords.model_id)
    if name == "third":
        (tmp_path / "numpy_backend_for_test.py").write_text(THIRD_BACKEND)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setitem(BACKENDS, "numpy", "numpy_backend_for_test:NumpyBackend")
        config = config.model_copy(update={"backend": "numpy"})  # outside BackendName on purpose
    embedder = BagOfWords()
    results = build_index(DOCS, tmp_path / "index", config, embedder=embedder, progress=False)["results"]
    index = load_index(tmp_path / "index", embedder=embedder)
    try:
        assert isinstance(index.backend, VectorBackend) and len(index.backend) == len(WORDS)
        assert results["backend"] == config.backend and index.info()["device"] == "cpu"
        for w in WORDS:
            hits = index.search(f"where is the {w}", 2)
            assert hits[0].chunk.doc_id == w and hits[0].score >= hits[1].score
        assert [h.chunk.doc_id for h in index.search("river", 2, {"title_prefix": "M"})] == ["mountain"]
    finally:
        index.close()
    update_index(tmp_path / "index", [{"id": "lake", "title": "Lake", "text": "river river"}], ["river"],
                 embedder=embedder)
    index = load_index(tmp_path / "index", embedder=embedder)
    try:
        assert len(index.backend) == len(WORDS) and index.search("river", 1)[0].chunk.doc_id == "lake"
    finally:
        index.close()
