"""FAISS backend (:class:`FaissBackend`, a :class:`toolkit.retrieval.backend.VectorBackend`): index construction,
search-time knobs and the optional move to GPU. Chunk texts come from the SQLite store beside the index.

All index types use inner product on L2-normalised vectors (= cosine). Construction goes through
``faiss.index_factory`` strings (``Flat``, ``IVF{nlist},Flat``, ``IVF{nlist},PQ{m}x{bits}``, ``HNSW{M},Flat``).
Parameters that cannot work on a small corpus are adapted and recorded as *effective* parameters: IVF needs
~39 training points per list, PQ k-means ~39 per centroid (``2**bits`` centroids).

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
    index.add(vectors)
    set_search_params(index, eff)
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


class FaissBackend:
    """A FAISS index (CPU or GPU) and the chunk store its rows point into."""

    def __init__(self, index: Any, store: ChunkStore, device: str, gpu_resources: Any = None) -> None:
        self.index, self.store, self.device = index, store, device
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
    def load(cls, directory: Path, results: dict[str, Any], eff: dict[str, Any],
             config: IndexConfig) -> FaissBackend:
        import faiss

        f = directory / FAISS_NAME
        if not f.is_file():
            raise ToolkitError(f"{f}: index file missing (rebuild the index)")
        try:
            index = faiss.read_index(str(f))
        except RuntimeError as exc:
            raise ToolkitError(f"{f}: unreadable FAISS index ({str(exc).splitlines()[0][:200]})") from None
        if index.d != int(results["dimension"]) or index.ntotal != int(results["count"]):
            raise ToolkitError(f"{f}: holds {index.ntotal} vectors of dimension {index.d}, manifest says "
                               f"{results['count']} of {results['dimension']} (index directory is inconsistent; "
                               "rebuild)")
        set_search_params(index, eff)
        index, device, res = place(index, config.faiss, eff)
        store = ChunkStore(directory / STORE_NAME)
        if len(store) != index.ntotal:
            raise ToolkitError(f"{directory / STORE_NAME}: {len(store)} chunks for {index.ntotal} vectors (rebuild)")
        return cls(index, store, device, res)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, k: int) -> list[tuple[float, Chunk]]:
        with self._search_lock:
            scores, rows = self.index.search(query, k)
        keep = rows[0] >= 0  # FAISS pads with -1 when fewer than k results exist
        return [(float(s), c) for s, c in zip(scores[0][keep], self.store.get(rows[0][keep]))]

    def close(self) -> None:
        self.store.close()
