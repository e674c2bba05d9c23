"""FAISS backend (:class:`FaissBackend`, a :class:`toolkit.retrieval.backend.VectorBackend`): index construction,
search-time knobs and the optional move to GPU. Chunk texts come from the SQLite store beside the index.

All index types use inner product on L2-normalised vectors (= cosine). Construction goes through
``faiss.index_factory`` strings (``Flat``, ``IVF{nlist},Flat``, ``IVF{nlist},PQ{m}x{bits}``, ``HNSW{M},Flat``).
Parameters that cannot work on a small corpus are adapted and recorded as *effective* parameters: IVF needs
~39 training points per list, PQ k-means ~39 per centroid (``2**bits`` centroids).

Ids: vector ids are chunk-store rows. IVF indexes store ids natively; flat and HNSW indexes are wrapped in
``IndexIDMap2`` so that documents can be added (``add_with_ids``) and removed (``remove_ids``) in place. FAISS
HNSW cannot remove vectors (``IndexHNSW::remove_ids`` throws), so a removal from an HNSW index rebuilds the graph
from its stored vectors (no re-embedding); adding is incremental. Indexes written before ids existed (plain
``IndexFlat``/``IndexHNSWFlat`` with implicit ids 0..n-1) are wrapped on their first update.

Filtered search: the allowed ids (from the chunk store) go into the search as ``faiss.IDSelectorBatch`` through
``SearchParameters(sel=...)``, so only allowed vectors are ranked. IVF then probes every list (``nprobe =
nlist``): with a filter the nearest allowed vectors may sit in lists the query would not otherwise probe, and
scanning a list costs an id check per vector plus distances for the allowed ones only. HNSW with a selective
filter (at most ``HNSW_EXACT_MAX`` ids) scores the allowed vectors exactly instead: a graph walk restricted to a
few ids loses recall (it must traverse disallowed nodes it cannot return), the usual switch to brute force for
small filtered sets.

GPU: with a faiss build that has GPU support (``faiss.StandardGpuResources`` present and
``faiss.get_num_gpus() > 0``), flat and IVF indexes are copied to GPU 0 with ``faiss.index_cpu_to_gpu``.
HNSW has no GPU implementation in faiss: it stays on the CPU (``device: auto``) or is refused
(``device: cuda``). faiss-cpu wheels (this machine) always run on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import NotAvailableError, ToolkitError
from toolkit.retrieval.chunking import Chunk
from toolkit.retrieval.config import FaissParams, IndexConfig
from toolkit.retrieval.store import STORE_NAME, ChunkStore

log = logging.getLogger(__name__)
FAISS_NAME = "index.faiss"
HNSW_EXACT_MAX = 4096  # filtered HNSW searches over at most this many ids score them exactly


def effective_params(p: FaissParams, n: int, dim: int) -> dict[str, Any]:
    """The parameters actually used for ``n`` vectors of ``dim`` (small corpora shrink nlist / pq_bits)."""
    eff: dict[str, Any] = {"index_type": p.index_type}
    if p.index_type in ("ivf", "ivfpq"):
        eff["nlist"] = max(1, min(p.nlist, n // 39))
        eff["nprobe"] = min(p.nprobe, eff["nlist"])
    if p.index_type == "ivfpq":
        if dim % p.pq_m:
            raise ToolkitError(f"faiss.pq_m={p.pq_m} must divide the embedding dimension {dim}")
        eff["pq_m"] = p.pq_m
        # k-means of each sub-quantizer wants ~39 points per centroid (2**bits centroids)
        eff["pq_bits"] = max(1, min(p.pq_bits, int(math.log2(max(n // 39, 2)))))
    if p.index_type == "hnsw":
        eff.update(hnsw_m=p.hnsw_m, ef_construction=p.ef_construction, ef_search=p.ef_search)
    return eff


def factory_string(eff: dict[str, Any]) -> str:
    t = eff["index_type"]
    if t == "flat":
        return "Flat"
    if t == "ivf":
        return f"IVF{eff['nlist']},Flat"
    if t == "ivfpq":
        # "np": no polysemous training (index_factory enables it for IVF-PQ; it only helps Hamming-distance
        # filtering, which we do not use, and multiplies training time)
        return f"IVF{eff['nlist']},PQ{eff['pq_m']}x{eff['pq_bits']}np"
    return f"HNSW{eff['hnsw_m']},Flat"


def build_faiss(vectors: np.ndarray, eff: dict[str, Any]) -> Any:
    """Train (when the type needs it) and fill an index with ``vectors`` (rows become ids 0..n-1)."""
    import faiss

    index = faiss.index_factory(vectors.shape[1], factory_string(eff), faiss.METRIC_INNER_PRODUCT)
    if eff["index_type"] == "hnsw":
        index.hnsw.efConstruction = eff["ef_construction"]
    if not index.is_trained:
        index.train(vectors)
    index = with_ids(index)
    index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    set_search_params(index, eff)
    return index


def with_ids(index: Any) -> Any:
    """``index`` able to hold arbitrary ids: IVF as is, flat/HNSW wrapped in an (empty) ``IndexIDMap2``."""
    import faiss

    if is_ivf(index) or isinstance(index, faiss.IndexIDMap):
        return index
    return faiss.IndexIDMap2(index)  # faiss's Python layer keeps ``index`` alive as long as the wrapper


def is_ivf(index: Any) -> bool:
    import faiss

    return faiss.try_extract_index_ivf(index) is not None


def ids_and_vectors(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """All (id, vector) pairs of a flat/HNSW index (an ``IndexIDMap2`` or a pre-id index with ids 0..n-1)."""
    import faiss

    if isinstance(index, faiss.IndexIDMap):
        inner = faiss.downcast_index(index.index)
        return faiss.vector_to_array(index.id_map).astype(np.int64), inner.reconstruct_n(0, inner.ntotal)
    return np.arange(index.ntotal, dtype=np.int64), index.reconstruct_n(0, index.ntotal)


def update_faiss(index: Any, eff: dict[str, Any], remove_ids: np.ndarray, vectors: np.ndarray,
                 ids: np.ndarray) -> Any:
    """Remove ``remove_ids`` and add ``vectors`` under ``ids``; returns the (possibly new) index object."""
    import faiss

    if not is_ivf(index) and (eff["index_type"] == "hnsw" and len(remove_ids)
                              or not isinstance(index, faiss.IndexIDMap)):
        # HNSW cannot remove, a pre-id index cannot take ids: rebuild from the stored vectors (no embedding)
        old_ids, old_vecs = ids_and_vectors(index)
        keep = ~np.isin(old_ids, remove_ids)
        index = build_faiss_with_ids(old_vecs[keep], old_ids[keep], eff)
    elif len(remove_ids):
        removed = index.remove_ids(faiss.IDSelectorBatch(remove_ids.astype(np.int64)))
        if removed != len(remove_ids):
            raise ToolkitError(f"the FAISS index held {removed} of the {len(remove_ids)} vectors to remove "
                               "(index directory is inconsistent; rebuild)")
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    set_search_params(index, eff)
    return index


def build_faiss_with_ids(vectors: np.ndarray, ids: np.ndarray, eff: dict[str, Any]) -> Any:
    """A flat/HNSW index (no training) holding ``vectors`` under ``ids``."""
    import faiss

    index = faiss.index_factory(vectors.shape[1], factory_string(eff), faiss.METRIC_INNER_PRODUCT)
    if eff["index_type"] == "hnsw":
        index.hnsw.efConstruction = eff["ef_construction"]
    index = with_ids(index)
    if len(vectors):
        index.add_with_ids(vectors, ids)
    return index


def set_search_params(index: Any, eff: dict[str, Any]) -> None:
    """nprobe / efSearch on a CPU or GPU index (GpuParameterSpace knows GPU index classes)."""
    import faiss

    space = faiss.GpuParameterSpace() if on_gpu(index) else faiss.ParameterSpace()
    if "nprobe" in eff:
        space.set_index_parameter(index, "nprobe", int(eff["nprobe"]))
    if "ef_search" in eff:
        space.set_index_parameter(index, "efSearch", int(eff["ef_search"]))


def on_gpu(index: Any) -> bool:
    return type(index).__name__.startswith("Gpu")


def faiss_gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def place(index: Any, params: FaissParams, eff: dict[str, Any]) -> tuple[Any, str, Any]:
    """Return ``(index, device, gpu_resources)``; keep the resources alive as long as the GPU index."""
    want = params.device
    if want == "cpu" or (want == "auto" and not faiss_gpu_available()):
        return index, "cpu", None
    if not faiss_gpu_available():
        raise NotAvailableError("faiss.device=cuda: this faiss build has no GPU support or no GPU is visible "
                                "(install faiss-gpu on a CUDA machine, or use device: cpu)")
    if eff["index_type"] == "hnsw":
        if want == "cuda":
            raise NotAvailableError("faiss.device=cuda: faiss has no GPU HNSW; use index type flat, ivf or "
                                    "ivfpq on GPU, or keep hnsw with device: cpu")
        log.warning("HNSW has no faiss GPU implementation; the index stays on the CPU (use flat/ivf on GPU)")
        return index, "cpu", None
    import faiss

    res = faiss.StandardGpuResources()
    res.setTempMemory(params.gpu_temp_memory_mb * 1024 * 1024)
    gpu_index = faiss.index_cpu_to_gpu(res, 0, index)
    set_search_params(gpu_index, eff)
    return gpu_index, "cuda:0", res


def read_faiss(f: Path) -> Any:
    import faiss

    if not f.is_file():
        raise ToolkitError(f"{f}: index file missing (rebuild the index)")
    try:
        return faiss.read_index(str(f))
    except RuntimeError as exc:
        raise ToolkitError(f"{f}: unreadable FAISS index ({str(exc).splitlines()[0][:200]})") from None


class FaissBackend:
    """A FAISS index (CPU or GPU) and the chunk store its rows point into."""

    def __init__(self, index: Any, store: ChunkStore, device: str, gpu_resources: Any = None,
                 eff: dict[str, Any] | None = None) -> None:
        self.index, self.store, self.device = index, store, device
        self.eff = eff or {"index_type": "flat"}
        self._gpu_resources = gpu_resources  # must outlive the GPU index
        # CPU indexes are safe to search from several threads; GPU ones share one StandardGpuResources (its
        # scratch memory and stream) and are not (FAISS wiki, "Threads and asynchronous calls"), so the
        # endpoint's worker threads take turns there.
        self._search_lock = threading.Lock() if device != "cpu" else contextlib.nullcontext()

    @classmethod
    def build(cls, directory: Path, vectors: np.ndarray, chunks: list[Chunk], eff: dict[str, Any],
              config: IndexConfig, version: str) -> dict[str, Any]:
        import faiss

        faiss.write_index(build_faiss(vectors, eff), str(directory / FAISS_NAME))
        return {"factory": factory_string(eff)}

    @classmethod
    def update(cls, directory: Path, results: dict[str, Any], eff: dict[str, Any], config: IndexConfig,
               remove_ids: np.ndarray, vectors: np.ndarray, ids: np.ndarray, chunks: list[Chunk]) -> dict[str, Any]:
        import faiss

        f = directory / FAISS_NAME
        index = update_faiss(read_faiss(f), eff, remove_ids, vectors, ids)
        faiss.write_index(index, str(f))
        return {}

    @classmethod
    def load(cls, directory: Path, results: dict[str, Any], eff: dict[str, Any],
             config: IndexConfig) -> FaissBackend:
        f = directory / FAISS_NAME
        index = read_faiss(f)
        if index.d != int(results["dimension"]) or index.ntotal != int(results["count"]):
            raise ToolkitError(f"{f}: holds {index.ntotal} vectors of dimension {index.d}, manifest says "
                               f"{results['count']} of {results['dimension']} (index directory is inconsistent; "
                               "rebuild)")
        set_search_params(index, eff)
        index, device, res = place(index, config.faiss, eff)
        store = ChunkStore(directory / STORE_NAME)
        if len(store) != index.ntotal:
            raise ToolkitError(f"{directory / STORE_NAME}: {len(store)} chunks for {index.ntotal} vectors (rebuild)")
        return cls(index, store, device, res, eff)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, k: int, ids: np.ndarray | None = None) -> list[tuple[float, Chunk]]:
        if ids is None:
            with self._search_lock:
                scores, rows = self.index.search(query, k)
        elif not len(ids):
            return []
        elif self.device != "cpu":
            from toolkit.retrieval.store import FilterError

            raise FilterError("", "filtered search on a GPU FAISS index is not supported yet (load the index "
                                  "with faiss.device: cpu to filter)")
        elif self.eff["index_type"] == "hnsw" and len(ids) <= HNSW_EXACT_MAX:
            scores, rows = self._exact(query, k, ids)
        else:
            scores, rows = self.index.search(query, k, params=self._selector_params(ids))
        keep = rows[0] >= 0  # FAISS pads with -1 when fewer than k results exist
        return [(float(s), c) for s, c in zip(scores[0][keep], self.store.get(rows[0][keep]))]

    def _selector_params(self, ids: np.ndarray) -> Any:
        """Search parameters of the (inner) index type carrying an ``IDSelectorBatch`` over ``ids``."""
        import faiss

        sel = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        t = self.eff["index_type"]
        if t in ("ivf", "ivfpq"):
            params = faiss.SearchParametersIVF(sel=sel, nprobe=int(self.eff["nlist"]))
        elif t == "hnsw":
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=int(self.eff["ef_search"]))
        else:
            params = faiss.SearchParameters(sel=sel)
        params.referenced_objects = [sel]  # SWIG does not keep the selector alive through the params
        return params

    def _exact(self, query: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inner products of ``query`` with the stored vectors of ``ids`` (an ``IndexIDMap2``), top ``k``."""
        vecs = self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))
        scores = vecs @ query[0]
        top = np.argsort(-scores, kind="stable")[:k]
        return scores[top][None, :], np.asarray(ids, dtype=np.int64)[top][None, :]

    def close(self) -> None:
        self.store.close()
