"""scripts/gpu_check.py, the CUDA evidence script, on this CPU-only machine: without CUDA it says so in one line,
exits 0 and writes nothing; ``--cpu-smoke`` runs every section for real at toy sizes (figures meaningless,
mechanics checked: formats, skips with reasons, the planted-neighbour recall, GPTQ on a random Llama, the
common schema); a spent budget and a failing section are recorded without losing the rest; the inline writer
(for a GPU machine where the toolkit does not import) writes what :class:`toolkit.results.BenchRun` writes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.results import SCHEMA, BenchRun, find, read_results

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(autouse=True)
def _no_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("these tests describe a machine without CUDA")


def test_without_cuda_one_line_exit_0_nothing_written(tmp_path):
    out = tmp_path / "gpu-check.json"
    proc = _run("--output", str(out), cwd=tmp_path)  # outside the repo: no toolkit install needed
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith("gpu-check: no CUDA device here")
    assert "nothing written" in proc.stdout and not out.exists()


def test_cpu_smoke_runs_every_section_into_the_common_schema(tmp_path):
    out = tmp_path / "smoke.json"
    proc = _run("--cpu-smoke", "--output", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = read_results(out)
    assert data["schema"] == SCHEMA and data["bench"] == "gpu-check" and data["writer"] == "BenchRun"
    assert data["config"]["device"] == "cpu" and data["config"]["cpu_smoke"] is True
    env = data["environment"]
    assert "avx512f" in env["hardware"]["cpu"]["isa"] and len(env["load_avg_start"]) == len(env["load_avg_end"]) == 3
    assert {s: v["status"] for s, v in data["sections"].items()} == {"matmul": "ok", "sdpa": "ok", "knn": "ok",
                                                                     "gptq": "ok"}
    assert "CUDA tensor-core" in data["sections"]["matmul"]["skipped"]["tf32"]
    assert all(m["unit"] for m in data["metrics"])
    for fmt in ("fp32", "bf16", "fp16", "fp8"):
        for n in (64, 128):
            (m,) = find(data, "matmul_tflops", format=fmt, n=n)
            assert m["value"] > 0 and m["interval"]["n"] == 2
    err = {fmt: find(data, "matmul_rel_error", format=fmt)[0]["value"] for fmt in ("fp32", "fp16", "bf16", "fp8")}
    # mantissa bits 23 > 10 (fp16) > 7 (bf16) > 3 (e4m3): the product's error grows in that order
    assert err["fp32"] < 1e-5 < err["fp16"] < err["bf16"] < err["fp8"] < 0.1
    assert find(data, "sdpa_max_abs_diff")[0]["value"] < 0.1  # flash and math agree to bf16 rounding
    assert find(data, "sdpa_speedup")[0]["value"] > 0
    for bs in (1, 64):
        (qps,) = find(data, "offline_search_qps", batch_size=bs)
        assert qps["unit"] == "queries/s" and "concurrency" not in qps["labels"]
        assert find(data, "planted_recall_at_1", batch_size=bs)[0]["value"] == 1.0  # exact search finds its source
    # one Llama layer: q, k, v, o, gate, up, down are quantized; lm_head is ignored
    assert find(data, "gptq_quantized_layers")[0]["value"] == 7
    assert 0 < find(data, "gptq_logits_rel_change")[0]["value"] < 1
    assert find(data, "gptq_calibration_s")[0]["interval"]["n"] == 2  # after the warm-up run


def test_a_spent_budget_skips_and_still_writes(tmp_path):
    out = tmp_path / "smoke.json"
    proc = _run("--cpu-smoke", "--budget-s", "0", "--output", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = read_results(out)
    assert {v["status"] for v in data["sections"].values()} == {"skipped"} and data["metrics"] == []
    assert data["sections"]["matmul"]["reason"] == "time budget spent before matmul"


def test_a_failing_section_is_recorded_and_the_others_run(tmp_path, monkeypatch, capsys):
    gc = _script()
    sizes = list(gc.SIZES["cpu-smoke"])
    sizes[0] = [-1]  # torch.randn(-1, -1) raises: a real failure inside the matmul section
    monkeypatch.setitem(gc.SIZES, "cpu-smoke", tuple(sizes))
    out = tmp_path / "smoke.json"
    assert gc.main(["--cpu-smoke", "--output", str(out)]) == 1
    data = read_results(out)
    status = {s: v["status"] for s, v in data["sections"].items()}
    assert status == {"matmul": "error", "sdpa": "ok", "knn": "ok", "gptq": "ok"}
    assert "fp32" in data["sections"]["matmul"]["error"] and find(data, "matmul_tflops") == []
    assert find(data, "sdpa_speedup") and find(data, "planted_recall_at_1")
    assert "matmul: error:" in capsys.readouterr().out


def test_inline_writer_writes_what_benchrun_writes(tmp_path):
    gc = _script()
    runs = {"toolkit": BenchRun("gpu-check", {"a": 1}), "inline": gc.InlineRun("gpu-check", {"a": 1})}
    for run in runs.values():
        run.add("matmul_tflops", "TFLOP/s", repeats=[10.0, 12.0, 14.0], labels={"format": "bf16", "n": 8})
        run.add("offline_search_ms", "ms", samples=[5.0, 1.0, 3.0, 2.0, 4.0], labels={"batch_size": 1})
        run.add("gptq_quantized_layers", "count", value=7)
        run.add("one", "s", repeats=[2.0])
    data = {k: read_results(run.write(tmp_path / f"{k}.json", extra={"sections": {}})) for k, run in runs.items()}
    a, b = data["toolkit"], data["inline"]
    assert set(a) == set(b) and set(a["environment"]) == set(b["environment"]) and a["config"] == b["config"]
    assert a["environment"]["hardware"]["cpu"]["isa"] == b["environment"]["hardware"]["cpu"]["isa"]
    assert a["environment"]["hardware"]["cpu"]["model"] == b["environment"]["hardware"]["cpu"]["model"]
    for ma, mb in zip(a["metrics"], b["metrics"], strict=True):
        assert set(ma) == set(mb) and ma["name"] == mb["name"] and ma["labels"] == mb["labels"]
        for part in ("summary", "interval"):
            assert (ma[part] is None) == (mb[part] is None)
            for key, va in (ma[part] or {}).items():  # the inline t table has 3 decimals
                assert mb[part][key] == (pytest.approx(va, rel=1e-3) if isinstance(va, float) else va), (part, key)
    with pytest.raises(ValueError, match="not both"):
        runs["inline"].add("x", "ms", value=1.0, labels={"batch_size": 1, "concurrency": 1})
