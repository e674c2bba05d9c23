"""Arithmetic behind the quantization table (README): RTN-loss recovery and ratios to the source model,
with hand-computed values; then one real run of the benchmark on a tiny model (quality, size, no vLLM)."""

import json

import pytest

from toolkit.quantize.bench import main, recovery, render, vs_source


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
    report = {"model": "/m/ref", "date_utc": "2026-01-01T00:00", "load_avg_start": [0.5], "load_avg_end": [0.7],
              "hardware": {"cpu": {"model": "test cpu"}},
              "source": {"dtype": "bfloat16", "ppl": 10.0, "size_bytes": 1_000_000, "vllm": {"b1": 20.0, "b8": 80.0}},
              "rows": {"rtn-w4a16": {"scheme": "W4A16", "ppl": 12.0, "rtn_loss_recovered": 0.0, "quantize_s": 1.0,
                                     "size_bytes": 250_000, "vllm": {"error": "no kernel"}},
                       "gptq-w8a8-int8": {"scheme": "W8A8", "ppl": 10.5, "rtn_loss_recovered": 0.75,
                                          "quantize_s": 2.0, "size_bytes": 500_000,
                                          "vllm": {"b1": 30.0, "b8": 60.0}}}}
    render(report)
    out = capsys.readouterr().out
    assert "75%" in out and "0.50×" in out and "0.25×" in out
    assert "30.0 (1.50×)" in out and "60.0 (0.75×)" in out
    assert "rtn-w4a16: vLLM n/a — no kernel" in out


def test_real_run_without_vllm(tiny_llama, small_recipe, text_files, tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for name in ("rtn-w4a16", "gptq-w8a8-int8"):
        small_recipe(name).rename(recipes / f"{name}.yaml")
    report = tmp_path / "bench.json"
    rc = main(["--model", str(tiny_llama), "--recipes", str(recipes), "--out-dir", str(tmp_path / "out"),
               "--report", str(report), "--eval-data", str(text_files["eval"]), "--skip-vllm"])
    assert rc == 0
    r = json.loads(report.read_text())
    rows, src = r["rows"], r["source"]
    assert set(rows) == {"rtn-w4a16", "gptq-w8a8-int8"} and "vllm" not in src
    rtn, int8 = rows["rtn-w4a16"], rows["gptq-w8a8-int8"]
    assert rtn["rtn_loss_recovered"] in (0.0, None)  # the baseline recovers none of its own loss
    if rtn["ppl"] > src["ppl"]:  # the formula written out: (ppl_rtn - ppl_x) / (ppl_rtn - ppl_source)
        expect = (rtn["ppl"] - int8["ppl"]) / (rtn["ppl"] - src["ppl"])
        assert int8["rtn_loss_recovered"] == pytest.approx(expect)
    assert rtn["size_bytes"] < int8["size_bytes"] < src["size_bytes"]  # 4-bit < 8-bit < bf16
