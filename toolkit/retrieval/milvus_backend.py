"""Milvus backend (:class:`MilvusBackend`, a :class:`toolkit.retrieval.backend.VectorBackend`), through
``pymilvus.MilvusClient``.

For users who outgrow one machine: ``milvus_uri`` pointing at Milvus standalone or distributed
(``http://host:19530``) shards and replicates the collection; without it, an embedded milvus-lite database
inside the index directory (``milvus.db``) serves tests and local use. Chunk metadata and text are stored as
scalar fields of the collection, so a search returns everything the RAG prompt needs in one round trip.
A remote build writes a new collection ``<name>_<version>`` (the manifest names it), so a build never
overwrites the collection a running server reads; drop old ones with ``MilvusClient.drop_collection``.

Updates (:meth:`MilvusBackend.update`) use ``delete`` by primary key and ``upsert``. With milvus-lite they run
on the temporary copy of the index directory, installed atomically with the new manifest. A remote collection
is changed in place (Milvus has no transaction across delete and upsert): a crash half-way leaves the
collection partly updated while the installed manifest still describes the old state; rerun the same update
(both steps are idempotent) to finish it. Filtered search passes the allowed ids as the filter expression
``id in [...]``, which Milvus applies inside the search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.retrieval.chunking import Chunk
from toolkit.retrieval.config import IndexConfig

LITE_NAME = "milvus.db"
MAX_TEXT = 65535  # Milvus VARCHAR limit (bytes)
INDEX_PARAMS = {  # our index types → Milvus index types with matching knobs
    "flat": ("FLAT", {}, {}),
    "ivf": ("IVF_FLAT", {"nlist": "nlist"}, {"nprobe": "nprobe"}),
    "ivfpq": ("IVF_PQ", {"nlist": "nlist", "m": "pq_m", "nbits": "pq_bits"}, {"nprobe": "nprobe"}),
    "hnsw": ("HNSW", {"M": "hnsw_m", "efConstruction": "ef_construction"}, {"ef": "ef_search"}),
}
# milvus-lite 3.2 (milvus_lite/index/factory.py, build_index_from_spec) raises NotImplementedError for IVF_PQ
# ("reserved for a future phase"); its closest compressed IVF is IVF_SQ8 (8-bit scalar codes). Milvus server
# builds real IVF_PQ.
LITE_INDEX_PARAMS = {**INDEX_PARAMS, "ivfpq": ("IVF_SQ8", {"nlist": "nlist"}, {"nprobe": "nprobe"})}


def index_params(uri: str, index_type: str) -> tuple[str, dict[str, str], dict[str, str]]:
    return (LITE_INDEX_PARAMS if is_lite(uri) else INDEX_PARAMS)[index_type]


def is_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://", "grpc://"))


def _client(uri: str) -> Any:
    from pymilvus import MilvusClient

    try:
        return MilvusClient(uri)
    except Exception as exc:  # noqa: BLE001 - connection problems are user-facing
        raise ToolkitError(f"milvus '{uri}': cannot connect ({type(exc).__name__}: {exc})"[:400]) from None


def _release_lite(uri: str) -> None:
    """milvus-lite keeps an in-process server (and a lock on the data directory) per path after
    ``MilvusClient.close()`` (milvus_lite/server_manager.py, ServerManager keeps ``_servers`` until atexit);
    an index built in a temporary directory and renamed into place could then not be opened again in the same
    process ("another process holds the lock"). Release it explicitly."""
    if is_lite(uri):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def write_milvus(uri: str, collection: str, vectors: np.ndarray, chunks: list[Chunk], eff: dict[str, Any],
                 batch: int = 512) -> None:
    from pymilvus import DataType, MilvusClient

    client = _client(uri)
    try:
        if client.has_collection(collection):
            client.drop_collection(collection)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(vectors.shape[1]))
        for name in ("doc_id", "chunk_id", "title"):
            schema.add_field(name, DataType.VARCHAR, max_length=1024)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT)
        kind, build_keys, _ = index_params(uri, eff["index_type"])
        params = client.prepare_index_params()
        params.add_index(field_name="vector", index_type=kind, metric_type="IP",
                         params={k: int(eff[v]) for k, v in build_keys.items()})
        client.create_collection(collection, schema=schema, index_params=params)
        _insert(client, collection, vectors, chunks, list(range(len(chunks))), batch)
        client.flush(collection)
    finally:
        client.close()
        _release_lite(uri)


def _insert(client: Any, collection: str, vectors: np.ndarray, chunks: list[Chunk], ids: list[int],
            batch: int = 512, upsert: bool = False) -> None:
    write = client.upsert if upsert else client.insert
    for start in range(0, len(chunks), batch):
        write(collection, [
            {"id": int(i), "vector": v.tolist(), "doc_id": c.doc_id[:1024], "chunk_id": c.chunk_id[:1024],
             "title": c.title[:1024], "text": c.text.encode()[:MAX_TEXT].decode(errors="ignore")}
            for i, v, c in zip(ids[start:start + batch], vectors[start:start + batch], chunks[start:start + batch])])


class MilvusBackend:
    """Search a collection; returns ``(score, Chunk)`` pairs like :class:`FaissBackend`."""

    device = "milvus"

    @classmethod
    def build(cls, directory: Path, vectors: np.ndarray, chunks: list[Chunk], eff: dict[str, Any],
              config: IndexConfig, version: str) -> dict[str, Any]:
        # a remote build gets a fresh collection, so a server still reading the old one is never disturbed
        collection = f"{config.milvus_collection}_{version}" if config.milvus_uri else config.milvus_collection
        uri = config.milvus_uri or lite_uri(directory)
        write_milvus(uri, collection, vectors, chunks, eff)
        return {"milvus_uri": config.milvus_uri, "milvus_collection": collection,
                "milvus_index_type": index_params(uri, eff["index_type"])[0]}

    @classmethod
    def update(cls, directory: Path, results: dict[str, Any], eff: dict[str, Any], config: IndexConfig,
               remove_ids: np.ndarray, vectors: np.ndarray, ids: np.ndarray, chunks: list[Chunk]) -> dict[str, Any]:
        uri = results.get("milvus_uri") or lite_uri(directory)
        collection = results["milvus_collection"]
        client = _client(uri)
        try:
            if not client.has_collection(collection):
                raise ToolkitError(f"milvus '{uri}': collection '{collection}' not found (rebuild the index)")
            if len(remove_ids):
                client.delete(collection, ids=[int(i) for i in remove_ids])
            if len(vectors):
                _insert(client, collection, vectors, chunks, [int(i) for i in ids], upsert=True)
            client.flush(collection)
        finally:
            client.close()
            _release_lite(uri)
        return {}

    @classmethod
    def load(cls, directory: Path, results: dict[str, Any], eff: dict[str, Any],
             config: IndexConfig) -> MilvusBackend:
        return cls(results.get("milvus_uri") or lite_uri(directory), results["milvus_collection"], eff)

    def __init__(self, uri: str, collection: str, eff: dict[str, Any]) -> None:
        self.uri, self.collection = uri, collection
        self._client = _client(uri)
        if not self._client.has_collection(collection):
            raise ToolkitError(f"milvus '{uri}': collection '{collection}' not found (rebuild the index)")
        try:
            self._client.load_collection(collection)
        except Exception as exc:  # noqa: BLE001 - pymilvus raises MilvusException for server-side failures
            raise ToolkitError(f"milvus '{uri}': cannot load collection '{collection}': {exc}"[:400]) from None
        _, _, search_keys = index_params(uri, eff["index_type"])
        self._params = {"metric_type": "IP", "params": {k: int(eff[v]) for k, v in search_keys.items()}}

    def __len__(self) -> int:
        stats = self._client.get_collection_stats(self.collection)
        return int(stats.get("row_count", 0))

    def search(self, query: np.ndarray, k: int, ids: np.ndarray | None = None) -> list[tuple[float, Chunk]]:
        if ids is not None and not len(ids):
            return []
        expr = "" if ids is None else f"id in [{', '.join(str(int(i)) for i in ids)}]"
        res = self._client.search(self.collection, data=[query[0].tolist()], limit=k, search_params=self._params,
                                  filter=expr, output_fields=["doc_id", "chunk_id", "title", "text"])
        out = []
        for hit in res[0]:
            e = hit["entity"]
            out.append((float(hit["distance"]), Chunk(e["doc_id"], e["chunk_id"], e["title"], e["text"])))
        return out

    def close(self) -> None:
        self._client.close()
        _release_lite(self.uri)


def lite_uri(index_dir: Path) -> str:
    return str(index_dir / LITE_NAME)
