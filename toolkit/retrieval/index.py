"""Build, persist and load a retrieval index (FAISS or Milvus) with its chunk store and manifest.

Directory layout (``artifacts/indexes/<name>``), written atomically with :func:`toolkit.manifest.atomic_dir`:

- what the backend persists (:class:`toolkit.retrieval.backend.VectorBackend`): ``index.faiss``
  (``faiss.write_index``) for FAISS, ``milvus.db`` (milvus-lite) for Milvus;
- ``chunks.sqlite``: chunk texts, titles and document ids (row ``i`` = vector ``i``);
- ``toolkit_manifest.json``: embedding model id, dimension, count, index type and effective parameters,
  build time, an ``index_version`` (fresh per build; the serving cache keys on it).

Loading checks the manifest against the configured embedding model and against the files: a different model
id or dimension is refused with a one-line error instead of returning meaningless neighbours. Loading a
persisted index costs a file read; rebuilding costs embedding every chunk (see ``toolkit.serving.bench``).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import dump_recipe
from toolkit.errors import ToolkitError
from toolkit.manifest import RunRecord, atomic_dir, read_manifest
from toolkit.retrieval.backend import VectorBackend, backend_class
from toolkit.retrieval.chunking import Chunk, chunk_docs, read_docs
from toolkit.retrieval.config import IndexConfig, embedding_id
from toolkit.retrieval.embedding import Embedder
from toolkit.retrieval.store import STORE_NAME, write_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    score: float
    chunk: Chunk
    row: int = -1

    def as_source(self) -> dict[str, Any]:
        c = self.chunk
        return {"id": c.doc_id, "chunk_id": c.chunk_id, "title": c.title, "score": round(self.score, 6),
                "text": c.text}


class RetrievalIndex:
    """A loaded index: embeds a query, searches, returns :class:`Hit` objects. Thread-safe for search."""

    def __init__(self, path: Path, manifest: dict[str, Any], embedder: Embedder, backend: VectorBackend) -> None:
        self.path, self.manifest, self.embedder, self.backend = path, manifest, embedder, backend
        self.results: dict[str, Any] = manifest["results"]
        self.version: str = self.results["index_version"]
        self.dimension: int = int(self.results["dimension"])

    def embed(self, query: str) -> np.ndarray:
        return self.embedder.encode_query(query)

    def search_vector(self, vector: np.ndarray, top_k: int) -> list[Hit]:
        return [Hit(s, c) for s, c in self.backend.search(vector, top_k)]

    def search(self, query: str, top_k: int = 5) -> list[Hit]:
        return self.search_vector(self.embed(query), top_k)

    def info(self) -> dict[str, Any]:
        r = self.results
        return {"path": str(self.path), "backend": r["backend"], "index_type": r["index_type"], "count": r["count"],
                "dimension": r["dimension"], "embedding_model": r["embedding_model"], "device": self.backend.device,
                "version": self.version}

    def close(self) -> None:
        self.backend.close()


def build_index(docs: str | Path | list[dict[str, str]], output: str | Path, config: IndexConfig | None = None,
                embedder: Embedder | None = None, progress: bool = True) -> dict[str, Any]:
    """Chunk, embed and index ``docs`` into ``output``; return the manifest. ``embedder`` may be preloaded."""
    config = config or IndexConfig()
    output = Path(output)
    record = RunRecord("index")
    record.recipe = dump_recipe(config)
    if isinstance(docs, (str, Path)):
        record.add_input("docs", docs)
        docs = read_docs(docs)
    with record.timed("chunk"):
        chunks = list(chunk_docs(docs, config.chunk_words, config.chunk_overlap))
    if not chunks:
        raise ToolkitError("documents contain no text to index")
    with record.timed("load_embedder"):
        embedder = embedder or Embedder(config.embedding_model)
    if embedder.model_id != config.embedding_id():
        raise ToolkitError(f"preloaded embedder is {embedder.model_id}, config says {config.embedding_id()}")
    t0 = time.perf_counter()
    with record.timed("embed"):
        vectors = embedder.encode([c.text for c in chunks], batch_size=config.batch_size, progress=progress)
    from toolkit.retrieval.faiss_backend import effective_params

    backend = backend_class(config.backend)
    eff = effective_params(config.faiss, len(chunks), embedder.dimension)
    version = uuid.uuid4().hex[:12]
    results: dict[str, Any] = {"backend": config.backend, "embedding_model": embedder.model_id,
                               "dimension": embedder.dimension, "count": len(chunks), "documents": len(docs),
                               "index_type": eff["index_type"], "params": eff, "index_version": version}
    with atomic_dir(output) as tmp:
        with record.timed("index"):
            results.update(backend.build(tmp, vectors, chunks, eff, config, version))
            write_store(tmp / STORE_NAME, chunks)
        results["build_time_s"] = round(time.perf_counter() - t0 + record.timings["chunk"], 3)
        record.results = results
        manifest = record.write(tmp)
    return manifest


def read_index_manifest(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_dir():
        raise ToolkitError(f"{p}: index directory not found (build one with `toolkit index build`)")
    manifest = read_manifest(p)
    if not manifest or manifest.get("stage") != "index":
        raise ToolkitError(f"{p}: not an index directory (no index manifest)")
    return manifest


def load_index(path: str | Path, embedding_model: str | None = None, embedder: Embedder | None = None,
               config: IndexConfig | None = None, threads: int | None = None) -> RetrievalIndex:
    """Load a persisted index. ``embedding_model`` (or ``embedder``) is what queries will be embedded with;
    a different model id or dimension than the index was built with is a :class:`ToolkitError`.
    ``config`` supplies run-time knobs (nprobe, efSearch, device); build-time ones come from the manifest."""
    path = Path(path)
    manifest = read_index_manifest(path)
    r = manifest["results"]
    built_with = r["embedding_model"]
    want = embedder.model_id if embedder else embedding_id(embedding_model) if embedding_model else None
    if want is not None and want != built_with:
        raise ToolkitError(f"{path}: index was built with embedding model '{built_with}' but '{want}' is "
                           "configured; rebuild the index or configure the same model")
    if embedder is None:
        recipe_model = (manifest.get("recipe") or {}).get("embedding_model")
        if not embedding_model and recipe_model and Path(recipe_model).exists():
            embedding_model = recipe_model
        embedder = Embedder(embedding_model or IndexConfig().embedding_model, threads=threads)
        if embedder.model_id != built_with:
            raise ToolkitError(f"{path}: index was built with embedding model '{built_with}' but "
                               f"'{embedder.model_id}' is configured; pass the model it was built with")
    if embedder.dimension != int(r["dimension"]):
        raise ToolkitError(f"{path}: index dimension {r['dimension']} != embedding model dimension "
                           f"{embedder.dimension} ({embedder.model_id})")
    eff = dict(r["params"])
    cfg = config or IndexConfig()
    explicit = cfg.faiss.model_fields_set  # only knobs the caller set override the built ones
    if "nprobe" in eff and "nprobe" in explicit:
        eff["nprobe"] = min(cfg.faiss.nprobe, eff["nlist"])
    if "ef_search" in eff and "ef_search" in explicit:
        eff["ef_search"] = cfg.faiss.ef_search
    backend = backend_class(r["backend"]).load(path, r, eff, cfg)
    return RetrievalIndex(path, manifest, embedder, backend)

