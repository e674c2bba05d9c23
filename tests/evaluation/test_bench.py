"""Arithmetic behind the vLLM-vs-transformers table (README): per-batch-size ratio, hand-computed; how both
sides' runs become ``offline_*`` metrics labelled ``batch_size``; then a real run of the transformers side on a
tiny model checked against the common results schema. The vLLM side starts an engine (minutes on CPU), so it
is left to ``make bench-eval``."""

import pytest

from toolkit.evaluation.bench import comparison_rows, main, record
from toolkit.results import SCHEMA, BenchRun, find, read_results


def test_rows_hold_both_throughputs_and_their_ratio():
    rows = comparison_rows([1, 8], {"1": 30.0, "8": 240.0}, {"1": 20.0, "8": 64.0})
    assert rows == [{"batch_size": 1, "vllm_tok_s": 30.0, "transformers_tok_s": 20.0, "ratio": 1.5},
                    {"batch_size": 8, "vllm_tok_s": 240.0, "transformers_tok_s": 64.0, "ratio": 3.75}]


def test_rows_follow_the_requested_batches_only():
    rows = comparison_rows([4], {"1": 1.0, "4": 10.0}, {"4": 40.0})
    assert [r["batch_size"] for r in rows] == [4] and rows[0]["ratio"] == pytest.approx(0.25)


def test_record_labels_both_engines_by_batch_size_and_divides_the_means():
    run = BenchRun("bench-eval")
    v = {"engine_load_s": 30.0, "runs": {"1": [29.0, 31.0], "8": [240.0, 240.0]}}
    t = {"runs": {"1": [20.0, 20.0], "8": [60.0, 68.0]}}
    rows = record(run, [1, 8], v, t)
    data = run.to_json()
    assert [r["ratio"] for r in rows] == [pytest.approx(1.5), pytest.approx(3.75)]  # 30/20, 240/64
    assert [m["value"] for m in find(data, "offline_decode_ratio")] == [pytest.approx(1.5), pytest.approx(3.75)]
    (v1,) = find(data, "offline_decode_tok_s", engine="vllm", batch_size=1)
    assert v1["value"] == 30.0 and v1["interval"]["n"] == 2 and v1["interval"]["values"] == [29.0, 31.0]
    assert len(find(data, "offline_decode_tok_s")) == 4
    assert not any("concurrency" in m["labels"] for m in data["metrics"])
    assert find(data, "engine_load_s", engine="vllm")[0]["value"] == 30.0


def test_bad_batch_sizes_exit_2(tiny_llama, capsys):
    assert main(["--model", str(tiny_llama), "--batch-sizes", "1,x", "--skip-vllm"]) == 2
    assert "--batch-sizes" in capsys.readouterr().out


def test_real_run_of_the_transformers_side(tiny_llama, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    results = tmp_path / "bench-eval.json"
    rc = main(["--model", str(tiny_llama), "--batch-sizes", "1,2", "--new-tokens", "4", "--prompt-tokens", "8",
               "--repeats", "3", "--skip-vllm", "--output", str(results)])
    out = capsys.readouterr().out
    assert rc == 0, out
    data = read_results(results)
    assert data["schema"] == SCHEMA and data["bench"] == "bench-eval" and data["config"]["repeats"] == 3
    env = data["environment"]
    assert {"avx2", "avx512_bf16"} <= set(env["hardware"]["cpu"]["isa"])
    assert len(env["load_avg_start"]) == len(env["load_avg_end"]) == 3 and env["hardware"]["versions"]["transformers"]
    for b in (1, 2):
        (m,) = find(data, "offline_decode_tok_s", engine="transformers", batch_size=b)
        assert m["unit"] == "tok/s" and m["interval"]["n"] == 3 and all(x > 0 for x in m["interval"]["values"])
        assert m["interval"]["ci_low"] <= m["value"] <= m["interval"]["ci_high"]
        assert f"{m['value']:.1f}" in out  # the printed mean is the file's
    assert not find(data, "offline_decode_tok_s", engine="vllm") and not find(data, "offline_decode_ratio")
    assert data["transformers_dtype"] in ("torch.float32", "torch.bfloat16") and data["transformers_threads"] >= 1
