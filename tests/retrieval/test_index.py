"""Real FAISS + real all-MiniLM-L6-v2 embeddings on the small hand-written corpus (tests/conftest.py)."""

import json

import pytest

from toolkit.errors import NotAvailableError, ToolkitError
from toolkit.manifest import MANIFEST_NAME
from toolkit.retrieval.config import FaissParams, IndexConfig
from toolkit.retrieval.index import build_index, load_index

QUESTIONS = {  # question -> document that answers it
    "How tall is the highest mountain on Earth?": "everest",
    "Who walked on the Moon in 1969?": "moon",
    "How do plants make glucose from sunlight?": "photosynthesis",
    "Which library does vector similarity search with HNSW?": "faiss",
}


def _top1(index, question):
    return index.search(question, 3)[0].chunk.doc_id


def test_persistence_round_trip(small_index, embedder):
    manifest = json.loads((small_index / MANIFEST_NAME).read_text())
    r = manifest["results"]
    assert r["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert r["dimension"] == 384 and r["index_type"] == "flat" and r["count"] > 11  # the long doc is chunked
    assert r["build_time_s"] > 0 and manifest["recipe"]["chunk_words"] == 24
    assert not list(small_index.parent.glob(".*tmp*"))  # atomic: no temp dir left
    index = load_index(small_index, embedder=embedder)
    assert len(index.backend) == r["count"]
    for question, doc in QUESTIONS.items():
        assert _top1(index, question) == doc
    hits = index.search("Which river flows through Egypt?", 5)
    assert hits[0].chunk.doc_id == "long" and hits[0].chunk.chunk_id.startswith("long#")
    assert hits[0].score >= hits[-1].score
    assert set(hits[0].as_source()) == {"id", "chunk_id", "title", "score", "text"}


@pytest.mark.parametrize("index_type", ["flat", "ivf", "ivfpq", "hnsw"])
def test_each_index_type_builds_loads_and_finds(tmp_path, small_docs, embedder, index_type):
    cfg = IndexConfig(chunk_words=24, chunk_overlap=6, faiss=FaissParams(index_type=index_type))
    r = build_index(small_docs, tmp_path / index_type, cfg, embedder=embedder, progress=False)["results"]
    assert r["index_type"] == index_type
    if index_type in ("ivf", "ivfpq"):  # small corpus: nlist capped at n // 39
        assert r["params"]["nlist"] == max(1, r["count"] // 39)
    if index_type == "ivfpq":
        assert r["factory"].startswith("IVF") and "PQ48x" in r["factory"] and r["factory"].endswith("np")
    index = load_index(tmp_path / index_type, embedder=embedder)
    found = [doc in {h.chunk.doc_id for h in index.search(q, 3)} for q, doc in QUESTIONS.items()]
    assert all(found) if index_type != "ivfpq" else sum(found) >= 3  # PQ is lossy


def test_embedding_model_mismatch_is_refused(small_index):
    with pytest.raises(ToolkitError, match="built with embedding model 'sentence-transformers/all-MiniLM-L6-v2'"):
        load_index(small_index, embedding_model="intfloat/e5-small-v2")


def test_dimension_mismatch_is_refused(tmp_path, small_index, embedder):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_index, copy)
    m = json.loads((copy / MANIFEST_NAME).read_text())
    m["results"]["dimension"] = 768
    (copy / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(ToolkitError, match="dimension 768 != embedding model dimension 384"):
        load_index(copy, embedder=embedder)


def test_missing_or_foreign_directory(tmp_path):
    with pytest.raises(ToolkitError, match="index directory not found"):
        load_index(tmp_path / "nope")
    with pytest.raises(ToolkitError, match="not an index directory"):
        load_index(tmp_path)


def test_gpu_request_without_faiss_gpu_is_a_clear_error(small_index, embedder):
    cfg = IndexConfig(faiss=FaissParams(device="cuda"))
    with pytest.raises(NotAvailableError, match="no GPU support"):
        load_index(small_index, embedder=embedder, config=cfg)


def test_milvus_lite_backend_same_api(tmp_path, small_docs, embedder):
    cfg = IndexConfig(backend="milvus", chunk_words=24, chunk_overlap=6, faiss=FaissParams(index_type="hnsw"))
    r = build_index(small_docs, tmp_path / "milvus", cfg, embedder=embedder, progress=False)["results"]
    assert r["backend"] == "milvus" and r["milvus_index_type"] == "HNSW"
    index = load_index(tmp_path / "milvus", embedder=embedder)
    try:
        assert len(index.backend) == r["count"]
        for question, doc in QUESTIONS.items():
            assert _top1(index, question) == doc
        assert index.info()["backend"] == "milvus"
    finally:
        index.close()


def test_cli_build_and_errors(tmp_path, small_docs, capsys):
    from toolkit.cli import main

    assert main(["index", "build", "--docs", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "x")]) == 2
    assert "missing.jsonl: documents file not found" in capsys.readouterr().err
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("chunk_words: 24\nchunk_overlap: 6\nfaiss:\n  nprobe: 2\n  bogus: 1\n")
    args = ["index", "build", "--docs", str(small_docs), "--config", str(cfg), "--output", str(tmp_path / "x")]
    assert main(args) == 2
    assert "field 'faiss.bogus': unknown key" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
