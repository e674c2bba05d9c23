"""Build, persist and load a retrieval index (FAISS or Milvus) with its chunk store and manifest.

Directory layout (``artifacts/indexes/<name>``), written atomically with :func:`toolkit.manifest.atomic_dir`:

- what the backend persists (:class:`toolkit.retrieval.backend.VectorBackend`): ``index.faiss``
  (``faiss.write_index``) for FAISS, ``milvus.db`` (milvus-lite) for Milvus;
- ``chunks.sqlite``: chunk texts, titles, document ids and metadata (row ``i`` = vector id ``i``);
- ``toolkit_manifest.json``: embedding model id, dimension, count, index type and effective parameters,
  build time, the metadata fields filters may use (``filter_fields``), an ``index_version`` (fresh per build
  and per update; the serving cache keys on it).

:func:`update_index` adds and removes documents in place of a rebuild: it embeds only the new documents,
copies the directory into the temporary sibling of :func:`~toolkit.manifest.atomic_dir`, applies the change
there (chunk store, then :meth:`VectorBackend.update`), writes a manifest with a new ``index_version`` and
installs it in one step, so a crash leaves the previous version and a server's cached results (keyed on the
version it loaded) never describe a newer index.

Loading checks the manifest against the configured embedding model and against the files: a different model
id or dimension is refused with a one-line error instead of returning meaningless neighbours; so is a query
embedding backend (``embedding_backend`` in the manifest: torch, onnx, onnx-int8, ...) other than the documents'
one, unless :mod:`toolkit.retrieval.embed_select` measured that pair within its recall budget. Loading a
persisted index costs a file read; rebuilding costs embedding every chunk (see ``toolkit.serving.bench``).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import dump_recipe, validate
from toolkit.errors import ToolkitError
from toolkit.manifest import MANIFEST_NAME, RunRecord, atomic_dir, read_manifest
from toolkit.retrieval.backend import VectorBackend, backend_class
from toolkit.retrieval.chunking import Chunk, chunk_docs, read_docs
from toolkit.retrieval.config import IndexConfig, embedding_id
from toolkit.retrieval.embed_backends import export_info
from toolkit.retrieval.embedding import Embedder
from toolkit.retrieval.store import (
    STORE_NAME,
    ChunkStore,
    meta_fields,
    rows_of_docs,
    update_store,
    write_store,
)

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

    def __init__(self, path: Path, manifest: dict[str, Any], embedder: Embedder, backend: VectorBackend,
                 store: ChunkStore | None = None) -> None:
        self.path, self.manifest, self.embedder, self.backend = path, manifest, embedder, backend
        self.results: dict[str, Any] = manifest["results"]
        self.version: str = self.results["index_version"]
        self.dimension: int = int(self.results["dimension"])
        # opened with the backend, so filters select rows of the same version the vectors come from
        self.store = store
        self.filter_fields: list[str] | None = self.results.get("filter_fields")  # None: built before filters

    def embed(self, query: str) -> np.ndarray:
        return self.embedder.encode_query(query)

    def allowed_ids(self, where: dict[str, Any]) -> np.ndarray:
        """Vector ids whose chunks match filter ``where`` (:func:`toolkit.retrieval.store.where_sql`)."""
        from toolkit.retrieval.store import FilterError

        if self.store is None:
            raise FilterError("", f"{self.path}: no chunk store to filter with")
        return self.store.select(where, self.filter_fields)

    def search_vector(self, vector: np.ndarray, top_k: int, where: dict[str, Any] | None = None) -> list[Hit]:
        """Nearest chunks; with ``where``, only chunks matching that filter are ranked (inside the search)."""
        ids = self.allowed_ids(where) if where else None
        return [Hit(s, c) for s, c in self.backend.search(vector, top_k, ids)]

    def search(self, query: str, top_k: int = 5, where: dict[str, Any] | None = None) -> list[Hit]:
        return self.search_vector(self.embed(query), top_k, where)

    def info(self) -> dict[str, Any]:
        r = self.results
        return {"path": str(self.path), "backend": r["backend"], "index_type": r["index_type"], "count": r["count"],
                "dimension": r["dimension"], "embedding_model": r["embedding_model"], "device": self.backend.device,
                "version": self.version, "filter_fields": self.filter_fields,
                "embedding_backend": getattr(self.embedder, "backend", "torch")}

    def close(self) -> None:
        self.backend.close()
        if self.store is not None:
            self.store.close()


def build_index(docs: str | Path | list[dict[str, str]], output: str | Path, config: IndexConfig | None = None,
                embedder: Embedder | None = None, progress: bool = True,
                embedding_backend: str | None = None) -> dict[str, Any]:
    """Chunk, embed and index ``docs`` into ``output``; return the manifest. ``embedder`` may be preloaded;
    ``embedding_backend`` (:mod:`toolkit.retrieval.embed_backends`, default torch) is recorded in the manifest."""
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
        # a build owns the machine: one thread per usable core, set explicitly (ONNX Runtime's default counts
        # physical cores and spins its workers; a fixed count turns spinning off, see embed_backends)
        embedder = embedder or Embedder(config.embedding_model, backend=embedding_backend or "torch",
                                        threads=len(os.sched_getaffinity(0)))
    backend_name = getattr(embedder, "backend", "torch")  # duck-typed embedders (tests) run "torch"
    if embedding_backend and backend_name != embedding_backend:
        raise ToolkitError(f"preloaded embedder runs backend {backend_name}, embedding_backend says "
                           f"{embedding_backend}")
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
                               "embedding_backend": backend_name,
                               "embedding_export": export_info(getattr(embedder, "export_path", None)),
                               "dimension": embedder.dimension, "count": len(chunks), "documents": len(docs),
                               "index_type": eff["index_type"], "params": eff, "index_version": version,
                               "filter_fields": meta_fields(chunks)}
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
               config: IndexConfig | None = None, threads: int | None = None,
               embedding_backend: str | None = None) -> RetrievalIndex:
    """Load a persisted index. ``embedding_model`` (or ``embedder``) is what queries will be embedded with;
    a different model id or dimension than the index was built with is a :class:`ToolkitError`.
    ``embedding_backend`` (default: the one the index was built with) runs the query embedder; another backend
    than the documents' is refused unless the embedding backend selection measured that pair within budget.
    ``config`` supplies run-time knobs (nprobe, efSearch, device); build-time ones come from the manifest."""
    path = Path(path)
    manifest = read_index_manifest(path)
    r = manifest["results"]
    embedder = _embedder_for(path, manifest, embedding_model, embedder, threads, embedding_backend)
    eff = dict(r["params"])
    cfg = config or IndexConfig()
    explicit = cfg.faiss.model_fields_set  # only knobs the caller set override the built ones
    if "nprobe" in eff and "nprobe" in explicit:
        eff["nprobe"] = min(cfg.faiss.nprobe, eff["nlist"])
    if "ef_search" in eff and "ef_search" in explicit:
        eff["ef_search"] = cfg.faiss.ef_search
    backend = backend_class(r["backend"]).load(path, r, eff, cfg)
    return RetrievalIndex(path, manifest, embedder, backend, ChunkStore(path / STORE_NAME))


def _embedder_for(path: Path, manifest: dict[str, Any], embedding_model: str | None, embedder: Embedder | None,
                  threads: int | None, backend: str | None = None, docs: bool = False) -> Embedder:
    """The embedder for an index: the given one or model, else the one it was built with; checked against it.
    ``docs``: it embeds documents to add, so it must run the index's own embedding backend."""
    r = manifest["results"]
    built_with = r["embedding_model"]
    built_backend = r.get("embedding_backend", "torch")  # indexes from before backends: torch
    backend = getattr(embedder, "backend", "torch") if embedder else backend or built_backend
    if backend != built_backend:
        from toolkit.retrieval.embed_select import DEFAULT_OUTPUT, load_selection, pair_allowed

        if docs or not pair_allowed(load_selection(), built_with, built_backend, backend):
            why = "documents added to an index use its own backend" if docs else (
                f"no embedding backend selection ({DEFAULT_OUTPUT}) measured that pair within its recall budget")
            raise ToolkitError(f"{path}: index documents were embedded with backend '{built_backend}', queries "
                               f"would use '{backend}': {why}; use '{built_backend}' or rebuild the index")
    want = embedder.model_id if embedder else embedding_id(embedding_model) if embedding_model else None
    if want is not None and want != built_with:
        raise ToolkitError(f"{path}: index was built with embedding model '{built_with}' but '{want}' is "
                           "configured; rebuild the index or configure the same model")
    if embedder is None:
        recipe_model = (manifest.get("recipe") or {}).get("embedding_model")
        if not embedding_model and recipe_model and Path(recipe_model).exists():
            embedding_model = recipe_model
        embedder = Embedder(embedding_model or IndexConfig().embedding_model, threads=threads, backend=backend)
        if embedder.model_id != built_with:
            raise ToolkitError(f"{path}: index was built with embedding model '{built_with}' but "
                               f"'{embedder.model_id}' is configured; pass the model it was built with")
    if embedder.dimension != int(r["dimension"]):
        raise ToolkitError(f"{path}: index dimension {r['dimension']} != embedding model dimension "
                           f"{embedder.dimension} ({embedder.model_id})")
    return embedder


def update_index(path: str | Path, docs: str | Path | list[dict[str, Any]] | None = None,
                 remove: list[str] | None = None, embedder: Embedder | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Add ``docs`` to and remove the documents ``remove`` (ids) from a persisted index; return the new manifest.

    An added document whose id the index already holds replaces it (upsert). Removing an id the index does not
    hold is a :class:`ToolkitError` raised before anything is written. New documents are chunked with the
    index's own recipe and embedded with its model; nothing else is re-embedded. FAISS IVF/IVF-PQ keep their
    trained centroids: many additions from a different distribution call for a rebuild (recall drifts)."""
    path = Path(path)
    manifest = read_index_manifest(path)
    r = manifest["results"]
    recipe = {k: v for k, v in (manifest.get("recipe") or {}).items() if k != "backend"}
    # the backend name is checked by backend_class (a registered third backend is not in BackendName)
    config = validate(IndexConfig, recipe, f"{path / MANIFEST_NAME} recipe").model_copy(
        update={"backend": r["backend"]})
    record = RunRecord("index")
    record.recipe, record.inputs = manifest.get("recipe"), dict(manifest.get("inputs") or {})
    if isinstance(docs, (str, Path)):
        record.add_input("added_docs", docs)
        docs = read_docs(docs)
    docs, remove = list(docs or []), list(dict.fromkeys(str(i) for i in remove or []))
    if not docs and not remove:
        raise ToolkitError("nothing to update: give documents to add and/or ids to remove")
    new_ids = [str(d["id"]) for d in docs]
    if len(set(new_ids)) != len(new_ids):
        dup = sorted({i for i in new_ids if new_ids.count(i) > 1})
        raise ToolkitError(f"documents to add repeat id(s) {', '.join(dup[:5])}")
    store = path / STORE_NAME
    held = rows_of_docs(store, remove + new_ids)
    unknown = [i for i in remove if i not in held]
    if unknown:
        more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise ToolkitError(f"ids: the index holds no document {', '.join(repr(i) for i in unknown[:5])}{more}; "
                           "nothing was changed")
    t0 = time.perf_counter()
    with record.timed("chunk"):
        chunks = list(chunk_docs(docs, config.chunk_words, config.chunk_overlap))
    # like a build, an update owns the machine: one embedding thread per usable core (build_index says why)
    embedder = _embedder_for(path, manifest, None, embedder, len(os.sched_getaffinity(0)), docs=True)
    with record.timed("embed"):
        vectors = (embedder.encode([c.text for c in chunks], batch_size=config.batch_size, progress=progress)
                   if chunks else np.zeros((0, int(r["dimension"])), np.float32))
    gone = sorted({row for i in [*remove, *new_ids] for row in held.get(i, [])})
    replaced = sorted(set(new_ids) & set(held))
    with atomic_dir(path) as tmp:
        with record.timed("update"):
            _copy_tree(path, tmp)
            rows = update_store(tmp / STORE_NAME, gone, chunks)
            results = {**r}
            results.update(backend_class(r["backend"]).update(
                tmp, r, dict(r["params"]), config, np.asarray(gone, np.int64), vectors, np.asarray(rows, np.int64),
                chunks))
            counts = ChunkStore(tmp / STORE_NAME)
            try:
                results["count"], results["documents"] = len(counts), counts.documents()
            finally:
                counts.close()
            if results["count"] == 0:
                raise ToolkitError("the update would leave the index empty; build a new index instead")
            fields = set(r.get("filter_fields") or []) | set(meta_fields(chunks))
            results.update(filter_fields=sorted(fields), index_version=uuid.uuid4().hex[:12],
                           previous_version=r["index_version"],
                           last_update={"added_docs": len(set(new_ids) - set(replaced)), "replaced_docs": len(replaced),
                                        "removed_docs": len(remove) - len(set(remove) & set(new_ids)),
                                        "added_chunks": len(chunks), "removed_chunks": len(gone),
                                        "time_s": round(time.perf_counter() - t0, 3)})
        record.results = results
        manifest = record.write(tmp)
    return manifest


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy an index directory's files (not its manifest, which is rewritten) into ``dst``."""
    import shutil

    for entry in src.iterdir():
        if entry.name == MANIFEST_NAME:
            continue
        if entry.is_dir():
            shutil.copytree(entry, dst / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, dst / entry.name)

