"""The contract between :mod:`toolkit.retrieval.index` and a vector store, and the registry of stores.

:mod:`~toolkit.retrieval.index` owns everything backends share (chunking, embedding, the chunk store, the
manifest, the atomic directory) and talks to a backend only through :class:`VectorBackend`. A third backend
is one new module with a class meeting the Protocol, plus its name in ``BackendName`` and ``BACKENDS`` below
(its own knobs, if any, go in :class:`toolkit.retrieval.config.IndexConfig`).

``build`` covers training, adding every vector and persisting in one call, because a Milvus collection is
persisted as rows are inserted (there is no separate in-memory stage to save). ``update`` removes and adds
vectors by id in what ``build`` persisted, inside the temporary copy of the index directory that
:func:`toolkit.retrieval.index.update_index` installs atomically with a fresh ``index_version`` (which the
serving cache keys on): documents are added or removed without re-embedding the rest.

Vector ids are chunk-store rows (:mod:`toolkit.retrieval.store`); ``search`` takes an optional array of
allowed ids (a filter resolved by the store) and must rank only those, inside the search.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from toolkit.errors import ToolkitError

if TYPE_CHECKING:
    import numpy as np

    from toolkit.retrieval.chunking import Chunk
    from toolkit.retrieval.config import IndexConfig

BackendName = Literal["faiss", "milvus"]
# name -> "module:Class", imported on first use so that FAISS users never import pymilvus and vice versa
BACKENDS: dict[str, str] = {
    "faiss": "toolkit.retrieval.faiss_backend:FaissBackend",
    "milvus": "toolkit.retrieval.milvus_backend:MilvusBackend",
}


@runtime_checkable
class VectorBackend(Protocol):
    """Inner-product search over L2-normalised vectors; vector id ``i`` is chunk-store row ``i`` (a build
    numbers ``chunks`` 0..n-1)."""

    device: str  # where searches run, for /health and reports: "cpu", "cuda:0", "milvus"

    @classmethod
    def build(cls, directory: Path, vectors: np.ndarray, chunks: list[Chunk], eff: dict[str, Any],
              config: IndexConfig, version: str) -> dict[str, Any]:
        """Train (if the index type needs it), add ``vectors`` and persist the index under ``directory``
        (the build's temporary directory); return the manifest results ``load`` will need."""
        ...

    @classmethod
    def load(cls, directory: Path, results: dict[str, Any], eff: dict[str, Any],
             config: IndexConfig) -> VectorBackend:
        """Open what ``build`` persisted (``results`` = the manifest's); an unusable index is a ToolkitError."""
        ...

    @classmethod
    def update(cls, directory: Path, results: dict[str, Any], eff: dict[str, Any], config: IndexConfig,
               remove_ids: np.ndarray, vectors: np.ndarray, ids: np.ndarray, chunks: list[Chunk]) -> dict[str, Any]:
        """Remove the vectors ``remove_ids`` and add ``vectors`` (of ``chunks``) under ``ids`` in the index
        persisted under ``directory`` (a temporary copy of the index directory); return the manifest results
        that change. Removing an id the index lacks is a ToolkitError (the caller checks ids beforehand)."""
        ...

    def __len__(self) -> int:
        """Vectors in the index."""
        ...

    def search(self, query: np.ndarray, k: int, ids: np.ndarray | None = None) -> list[tuple[float, Chunk]]:
        """Up to ``k`` (score, chunk) pairs for a ``(1, dim)`` query, best first; with ``ids`` (int64), only
        vectors with those ids are candidates (the restriction applies inside the search)."""
        ...

    def close(self) -> None:
        ...


def backend_class(name: str) -> type[VectorBackend]:
    """The class registered as ``name`` (``IndexConfig.backend`` / a manifest's ``results.backend``)."""
    if name not in BACKENDS:
        raise ToolkitError(f"unknown retrieval backend '{name}' (known: {', '.join(BACKENDS)})")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
