"""Arithmetic behind the serving benchmark (README): cold-start ratios, recall against the exact index,
endpoint overhead and the medians it reports, hand-computed; then a real run at small sizes (no engine), its
printed lines and its results file in the common schema."""

import importlib.util
import re

import numpy as np
import pytest

from toolkit.results import SCHEMA, find, read_results
from toolkit.retrieval.index import read_index_manifest
from toolkit.serving.bench import (
    alternate,
    cold_start_ratios,
    endpoint_overhead_ms,
    main,
    p50,
    parse_backends,
    recall_vs_truth,
)

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx")
                               is None, reason="onnxruntime/onnx not installed (embedding backend onnx)")


def test_cold_start_ratios_without_and_with_the_shared_model_load():
    ratio, with_model = cold_start_ratios(rebuild_s=20.0, load_s=0.01, embedder_load_s=2.0)
    assert ratio == pytest.approx(2000.0)
    assert with_model == pytest.approx(22.0 / 2.01)  # 10.945...: the model load both paths pay dominates


def test_recall_vs_truth_is_mean_overlap_over_k():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 2, 1], [5, 6, 9, 10]])  # order does not matter; 4/4 and 2/4
    assert recall_vs_truth(found, truth) == pytest.approx(0.75)
    assert recall_vs_truth(truth, truth) == 1.0


def test_endpoint_overhead_is_total_minus_engine_time():
    assert endpoint_overhead_ms({"total": 130.5, "llm_total": 118.0, "embed": 9.0}) == pytest.approx(12.5)


def test_p50_is_the_median():
    assert p50([3.0, 1.0, 2.0, 10.0]) == 2.5 and p50([5.0]) == 5.0


@pytest.mark.filterwarnings("ignore:typing.(io|re) is deprecated:DeprecationWarning")  # stdlib docstring scan
def test_real_run_at_small_sizes(tmp_path, capsys):
    """Cold start and index types, end to end on 60 chunks and 2,000 vectors (the endpoint part needs vLLM)."""
    results = tmp_path / "reports" / "bench-serve.json"
    rc = main(["--chunks", "60", "--chunk-words", "32", "--vectors", "2000", "--queries", "20", "--nlist", "16",
               "--skip", "endpoint", "--workdir", str(tmp_path), "--output", str(results)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "[1] cold start, 60 chunks" in out and "ratio rebuild/load:" in out
    assert "[2] retrieval stage on 60 chunks, 20 distinct queries" in out
    recalls = dict(re.findall(r"^\s+(flat|ivf|ivfpq|hnsw)\s+recall@10 ([\d.]+)", out, re.M))
    assert set(recalls) == {"flat", "ivf", "ivfpq", "hnsw"}
    assert recalls["flat"] == "1.000"  # flat is the reference it is measured against
    assert all(0.0 <= float(v) <= 1.0 for v in recalls.values())

    data = read_results(results)
    assert data["schema"] == SCHEMA and data["bench"] == "bench-serve" and data["config"]["skip"] == ["endpoint"]
    env = data["environment"]
    assert "avx2" in env["hardware"]["cpu"]["isa"] and len(env["load_avg_start"]) == len(env["load_avg_end"]) == 3
    assert all(m["unit"] for m in data["metrics"])
    for kind, printed in recalls.items():  # the file holds the figures the table printed
        (m,) = find(data, "recall_at_10", index_type=kind, vectors=2000)
        assert f"{m['value']:.3f}" == printed and m["unit"] == "share"
        (lat,) = find(data, "search_ms", index_type=kind, vectors=2000)
        assert lat["summary"]["n"] == 20 and lat["value"] == lat["summary"]["p50"] and lat["unit"] == "ms"
    (ret,) = find(data, "retrieval_ms", chunks=60)
    assert ret["summary"]["n"] == 20 and ret["summary"]["p50"] <= ret["summary"]["p99"]
    assert f"embed+search p50 {ret['value']:6.2f} ms wall" in out
    assert ret["labels"]["embedding_backend"] == "torch" and data["config"]["embedding_backend"] == ["torch"]
    (load,) = find(data, "index_load_ms", chunks=60)
    assert load["summary"]["n"] == 5
    (build,) = find(data, "index_rebuild_s", chunks=60)
    assert build["labels"]["embed_batch"] == 64 and build["labels"]["threads"] >= 1
    assert not find(data, "online_endpoint_overhead_ms")  # skipped
    assert not any("batch_size" in m["labels"] or "concurrency" in m["labels"] for m in data["metrics"])


def test_bad_embedding_backend_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--embedding-backend", "torch,nope", "--skip", "cold", "types", "endpoint"])
    assert exc.value.code == 2
    assert "--embedding-backend: unknown embedding backend 'nope'" in capsys.readouterr().err


@needs_ort
def test_backends_from_repeats_and_comma_lists():
    assert parse_backends(None) == ["torch"]
    assert parse_backends(["onnx, torch", "torch"]) == ["onnx", "torch"]  # order kept, repeats dropped


@needs_ort
@pytest.mark.filterwarnings("ignore:typing.(io|re) is deprecated:DeprecationWarning")  # stdlib docstring scan
def test_two_backends_interleaved_each_on_its_own_index(tmp_path, capsys, monkeypatch):
    """torch and onnx on 30 chunks: [1] per backend, [2] interleaved, every figure labelled by its backend."""
    from toolkit import paths

    monkeypatch.setattr(paths, "ARTIFACTS", tmp_path / "artifacts")  # the onnx export goes to a fresh cache
    results = tmp_path / "bench-serve.json"
    rc = main(["--chunks", "30", "--queries", "6", "--embedding-backend", "torch,onnx", "--skip", "types", "endpoint",
               "--workdir", str(tmp_path), "--output", str(results)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("[1] cold start, 30 chunks") == 2 and "embedding backend onnx" in out
    assert "backends interleaved: torch, onnx" in out
    data = read_results(results)
    for backend in ("torch", "onnx"):
        (ret,) = find(data, "retrieval_ms", chunks=30, embedding_backend=backend)
        assert ret["summary"]["n"] == 6
        assert f"{backend:13s} embed p50" in out and f"embed+search p50 {ret['value']:6.2f} ms wall" in out
        (build,) = find(data, "index_rebuild_s", chunks=30, embedding_backend=backend)
        assert build["value"] > 0
        manifest = read_index_manifest(tmp_path / f"bench-30-{backend}")
        assert manifest["results"]["embedding_backend"] == backend  # its documents were embedded by that backend
    (speed,) = find(data, "retrieval_speedup", embedding_backend="onnx", baseline="torch")
    torch_p50 = find(data, "retrieval_ms", embedding_backend="torch")[0]["value"]
    assert speed["value"] == pytest.approx(torch_p50 / find(data, "retrieval_ms", embedding_backend="onnx")[0]["value"])
    assert not find(data, "retrieval_speedup", embedding_backend="torch")  # the baseline has none


def test_backends_alternate_which_goes_first():
    items = {"torch": 1, "onnx-int8": 2}
    assert alternate(items, 0) == [("torch", 1), ("onnx-int8", 2)]
    assert alternate(items, 1) == [("onnx-int8", 2), ("torch", 1)]
    assert alternate(items, 2) == alternate(items, 0)


@needs_ort
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:typing.(io|re) is deprecated:DeprecationWarning")  # stdlib docstring scan
def test_endpoint_part_runs_one_endpoint_per_backend(tmp_path, capsys, monkeypatch, tiny_llama):
    """[4] with two backends: two real endpoint processes (torch, onnx) on one engine (the fake streaming engine
    of live_servers, since vLLM takes minutes to start), every query sent to both, figures per backend."""
    from live_servers import FakeEngine, serve

    from toolkit import paths

    monkeypatch.setattr(paths, "ARTIFACTS", tmp_path / "artifacts")
    monkeypatch.setenv("TOOLKIT_ARTIFACTS", str(tmp_path / "artifacts"))  # the endpoint processes' export cache
    results = tmp_path / "bench-serve.json"
    engine = FakeEngine(tokens=2, delay_s=0.0)
    with serve(engine) as engine_url:
        rc = main(["--chunks", "30", "--queries", "4", "--embedding-backend", "torch,onnx", "--skip", "types",
                   "--engine-url", engine_url, "--model", str(tiny_llama), "--workdir", str(tmp_path),
                   "--output", str(results)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert engine.completed == 2 * (1 + 4)  # a warm-up and 4 queries through each endpoint
    data = read_results(results)
    for backend in ("torch", "onnx"):
        (over,) = find(data, "online_endpoint_overhead_ms", embedding_backend=backend, concurrency=1)
        assert over["summary"]["n"] == 4 and over["value"] > 0
        assert f"[{backend}]: {over['value']:6.2f} ms" in out
    (speed,) = find(data, "online_endpoint_overhead_speedup", embedding_backend="onnx", baseline="torch")
    assert speed["value"] > 0
