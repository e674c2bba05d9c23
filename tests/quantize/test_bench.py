"""Arithmetic behind the quantization table (README): RTN-loss recovery and ratios to the source model,
with hand-computed values; how measured figures become named metrics of the common results schema; then one
real run of the benchmark on a tiny model (quality, size, no vLLM) checked against that schema."""

import json

import pytest

from toolkit.quantize.bench import main, record, recovery, render, vs_source
from toolkit.results import SCHEMA, BenchRun, find


def test_recovery_is_the_share_of_rtn_loss_won_back():
    # source ppl 10, RTN 12: RTN lost 2 points
    assert recovery(12.0, 11.0, 10.0) == pytest.approx(0.5)   # 1 of the 2 points back
    assert recovery(12.0, 10.0, 10.0) == pytest.approx(1.0)   # all the way back to the source
    assert recovery(12.0, 12.0, 10.0) == 0.0                  # RTN itself recovers nothing
    assert recovery(12.0, 13.0, 10.0) == pytest.approx(-0.5)  # worse than RTN
    assert recovery(12.0, 9.5, 10.0) == pytest.approx(1.25)   # better than the source
    assert recovery(10.0, 10.5, 10.0) is None                 # RTN lost nothing: nothing to recover
    assert recovery(9.0, 10.5, 10.0) is None


def test_ratios_to_the_source_model():
    source = {"size_bytes": 1_000_000, "vllm": {"b1": 20.0, "b8": 80.0}}
    row = {"size_bytes": 250_000, "vllm": {"b1": 30.0, "b8": 60.0}}
    assert vs_source(row, source) == {"size": 0.25, "b1": 1.5, "b8": 0.75}
    failed = {"size_bytes": 500_000, "vllm": {"error": "no W4A16 kernel"}}
    assert vs_source(failed, source) == {"size": 0.5, "b1": None, "b8": None}
    assert vs_source(row, {"size_bytes": 2_000_000}) == {"size": 0.125, "b1": None, "b8": None}  # --skip-vllm


def test_render_shows_the_ratios(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich would otherwise wrap the table at 80 columns under pytest
    env = {"started_utc": "2026-01-01T00:00:00Z", "load_avg_start": [0.5, 0, 0], "load_avg_end": [0.7, 0, 0],
           "hardware": {"cpu": {"model": "test cpu"}}}
    report = {"model": "/m/ref",
              "source": {"dtype": "bfloat16", "ppl": 10.0, "size_bytes": 1_000_000, "vllm": {"b1": 20.0, "b8": 80.0}},
              "rows": {"rtn-w4a16": {"scheme": "W4A16", "ppl": 12.0, "rtn_loss_recovered": 0.0, "quantize_s": 1.0,
                                     "size_bytes": 250_000, "vllm": {"error": "no kernel"}},
                       "gptq-w8a8-int8": {"scheme": "W8A8", "ppl": 10.5, "rtn_loss_recovered": 0.75,
                                          "quantize_s": 2.0, "size_bytes": 500_000,
                                          "vllm": {"b1": 30.0, "b8": 60.0}}}}
    render(report, env)
    out = capsys.readouterr().out
    assert "75%" in out and "0.50×" in out and "0.25×" in out
    assert "30.0 (1.50×)" in out and "60.0 (0.75×)" in out
    assert "rtn-w4a16: vLLM n/a — no kernel" in out
    assert "2026-01-01T00:00 UTC, load avg 0.5→0.7" in out


def test_render_marks_an_unstable_throughput(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    env = {"started_utc": "2026-01-01T00:00:00Z", "load_avg_start": [0.5], "load_avg_end": [0.7], "hardware": {}}
    # batch 1 runs 10, 20, 30: sd 10 over mean 20 = CV 0.5 > 0.10; batch 8 runs 79, 80, 81: CV 0.0125
    vllm = {"b1": 20.0, "b8": 80.0, "runs": {"1": [10.0, 20.0, 30.0], "8": [79.0, 80.0, 81.0]}}
    report = {"model": "/m/ref", "source": {"dtype": "bf16", "ppl": 10.0, "size_bytes": 1, "vllm": vllm}, "rows": {}}
    render(report, env)
    out = capsys.readouterr().out
    assert "20.0*" in out and "80.0*" not in out and "80.0" in out


def test_record_names_offline_throughput_by_batch_size_with_its_interval():
    run = BenchRun("bench-quantize")
    vllm = {"b1": 20.0, "b8": 80.0, "runs": {"1": [19.0, 20.0, 21.0], "8": [80.0, 80.0, 80.0]}, "engine_load_s": 9.5}
    report = {"model": "/m/ref", "source": {"dtype": "bf16", "ppl": 10.0, "size_bytes": 1000, "vllm": vllm},
              "rows": {"rtn-w4a16": {"scheme": "W4A16", "algorithm": "rtn", "dir": "/o/rtn", "ppl": 12.0,
                                     "rtn_loss_recovered": 0.0, "quantize_s": 1.5, "size_bytes": 250,
                                     "vllm": {"error": "no kernel"}}}}
    detail = record(run, report)
    data = run.to_json(detail)
    b1 = find(data, "offline_decode_tok_s", variant="source", batch_size=1)
    assert len(b1) == 1 and b1[0]["unit"] == "tok/s" and "concurrency" not in b1[0]["labels"]
    # mean 20, sd 1, t(0.975, 2) = 4.303: half-width 4.303 / sqrt(3) = 2.484
    assert b1[0]["value"] == pytest.approx(20.0) and b1[0]["interval"]["n"] == 3
    assert b1[0]["interval"]["ci_low"] == pytest.approx(20.0 - 2.484, abs=1e-3)
    assert find(data, "offline_decode_tok_s", variant="source", batch_size=8)[0]["interval"]["cv"] == 0.0
    assert find(data, "offline_decode_tok_s", variant="rtn-w4a16") == []  # vLLM could not run it: no number
    assert data["variants"]["rtn-w4a16"] == {"scheme": "W4A16", "algorithm": "rtn", "dir": "/o/rtn",
                                             "vllm_error": "no kernel"}
    assert find(data, "perplexity", variant="rtn-w4a16")[0]["value"] == 12.0
    assert find(data, "quantize_time_s", variant="source") == []  # the source is not quantized
    assert all(m["unit"] for m in data["metrics"])


def test_real_run_without_vllm(tiny_llama, small_recipe, text_files, tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for name in ("rtn-w4a16", "gptq-w4a16", "gptq-w8a8-int8"):
        small_recipe(name).rename(recipes / f"{name}.yaml")
    report = tmp_path / "bench.json"
    rc = main(["--model", str(tiny_llama), "--recipes", str(recipes), "--out-dir", str(tmp_path / "out"),
               "--output", str(report), "--eval-data", str(text_files["eval"]), "--skip-vllm"])
    assert rc == 0
    r = json.loads(report.read_text())
    assert r["schema"] == SCHEMA and r["bench"] == "bench-quantize" and r["config"]["skip_vllm"] is True
    env = r["environment"]
    assert {"avx2", "avx512f", "avx512_vnni"} <= set(env["hardware"]["cpu"]["isa"])  # ISA flags, present or not
    assert env["hardware"]["versions"]["torch"] and len(env["load_avg_start"]) == len(env["load_avg_end"]) == 3
    assert all(m["unit"] for m in r["metrics"])
    assert set(r["variants"]) == {"source", "rtn-w4a16", "gptq-w4a16", "gptq-w8a8-int8"}
    assert not find(r, "offline_decode_tok_s") and not find(r, "engine_load_s")  # --skip-vllm: no speed figures

    def fig(name, variant):
        (m,) = find(r, name, variant=variant)
        return m["value"]

    rtn, gptq, int8, src = "rtn-w4a16", "gptq-w4a16", "gptq-w8a8-int8", "source"
    assert r["variants"][rtn]["scheme"] == r["variants"][gptq]["scheme"]  # the shipped 4-bit presets share one
    assert fig("rtn_loss_recovered", rtn) in (0.0, None)  # the baseline recovers none of its own loss
    if fig("perplexity", rtn) > fig("perplexity", src):  # the formula: (ppl_rtn - ppl_x) / (ppl_rtn - ppl_source)
        expect = (fig("perplexity", rtn) - fig("perplexity", gptq)) / (fig("perplexity", rtn) - fig("perplexity", src))
        assert fig("rtn_loss_recovered", gptq) == pytest.approx(expect)
    assert fig("rtn_loss_recovered", int8) is None  # no RTN recipe of its scheme: a 4-bit RTN is no baseline for it
    assert fig("size_on_disk", rtn) < fig("size_on_disk", int8) < fig("size_on_disk", src)  # 4-bit < 8-bit < bf16
    assert fig("quantize_time_s", int8) > 0
