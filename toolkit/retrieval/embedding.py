"""Sentence-transformers embedder: batched, L2-normalised float32 vectors (inner product == cosine).

The model loads once per process (``torch`` threads follow the machine); query encoding of one short string
takes a few milliseconds on CPU, which is why the serving stack caches hot queries' embeddings. ``backend``
runs the transformer in ONNX Runtime or OpenVINO instead of torch (:mod:`toolkit.retrieval.embed_backends`;
exports cached under ``artifacts/embedders``); tokenisation, pooling and normalisation stay sentence-transformers'.
"""

from __future__ import annotations

import numpy as np

from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.retrieval.config import embedding_id


class Embedder:
    def __init__(self, model: str, device: str | None = None, threads: int | None = None, backend: str = "torch",
                 cache_dir: str | Path | None = None, calibration: list[str] | None = None) -> None:
        """``threads``: intra-op threads for this process (torch; ONNX Runtime ``intra_op_num_threads``;
        OpenVINO ``INFERENCE_NUM_THREADS``). One thread is the right choice in a server whose neighbour (vLLM)
        owns the other cores: with two threads on a busy 2-core machine, a 10-token query took ~480 ms
        (threads spin waiting for each other) instead of ~15 ms. ``backend``: one of
        :data:`toolkit.retrieval.embed_backends.BACKENDS`; ``cache_dir``: export cache root (default
        ``artifacts/embedders``); ``calibration``: texts for ``openvino-int8`` (default: reference chunks)."""
        from toolkit.retrieval import embed_backends as eb

        eb.check_backend(backend)
        eb.require(backend)  # before the model load: a missing package is a one-line error, not a slow one
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)

        self.model_name = model
        self.model_id = embedding_id(model)
        try:
            self._st = SentenceTransformer(model, device=device or "cpu", local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any load failure is a user-facing config problem
            raise ToolkitError(f"embedding model '{model}': cannot load ({type(exc).__name__}: {exc})"[:400]) from None
        self.backend = backend
        if cache_dir is None:
            from toolkit import paths

            cache_dir = paths.ARTIFACTS / "embedders"
        self.export_path = eb.attach(self._st, backend, model, self.model_id, cache_dir, threads, calibration)
        self.dimension = int(self._st.get_embedding_dimension() if hasattr(self._st, "get_embedding_dimension")
                             else self._st.get_sentence_embedding_dimension())

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        vecs = self._st.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                               convert_to_numpy=True, normalize_embeddings=True)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """One query → a (1, d) array; skips the batching/progress machinery of :meth:`encode`."""
        return self.encode([text], batch_size=1)
