"""A real precision run on the tiny Llama fixture (CPU): quantize INT8 with llm-compressor, two vLLM engine
starts (BF16, INT8 W8A8), perplexity vs FP32 in transformers, a profile; then re-selection under a budget
nothing meets. FP32 is the quality reference only here (not a speed candidate) to keep to two engine starts."""

import json
import subprocess
import sys

import pytest
import yaml

from toolkit.paths import REPO_ROOT


def toolkit(*args):
    return subprocess.run([sys.executable, "-m", "toolkit", "precision", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory, sample_texts):
    path = tmp_path_factory.mktemp("precision-data") / "validation.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in sample_texts))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_llama, eval_file):
    out = tmp_path_factory.mktemp("precision-run")
    profile = out / "profiles" / "tiny.yaml"
    proc = toolkit("--model", tiny_llama, "--candidates", "bf16,int8", "--quick", "--repeats", 2,
                   "--eval-data", eval_file, "--calibration-data", eval_file, "--work-dir", out / "work",
                   "--output", profile)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return proc, profile, out


def test_run_measures_each_candidate_and_writes_a_profile(tiny_run, tiny_llama):
    proc, profile, out = tiny_run
    result = json.loads(profile.with_suffix(".json").read_text())
    rows = {r["name"]: r for r in result["candidates"]}
    assert list(rows) == ["bf16", "int8"]
    assert result["reference"]["dtype"] == "float32" and result["reference"]["perplexity"] > 1
    for r in rows.values():
        assert r.get("error") is None, r
        assert r["status"] in ("native", "emulated")
        tp = r["throughput"]
        for stats in (*tp["decode"].values(), tp["prefill"]):
            assert len(stats["runs"]) == 2 and 0 < stats["min"] <= stats["median"] <= stats["max"]
        assert r["ppl_delta"] == pytest.approx((r["perplexity"] - result["reference"]["perplexity"])
                                               / result["reference"]["perplexity"])
    # INT8 runs the W8A8 checkpoint made by the quantization stage, cached in the work dir
    int8_ckpt = out / "work" / "checkpoints" / "int8"
    assert rows["int8"]["checkpoint"] == str(int8_ckpt)
    qcfg = json.loads((int8_ckpt / "config.json").read_text())["quantization_config"]
    assert qcfg["config_groups"]["group_0"]["weights"]["num_bits"] == 8
    assert set(result["microbench"]) == {"bf16", "int8"}
    assert (out / "work" / "last-run" / "toolkit_manifest.json").is_file()
    assert result["settings"]["throughput"]["enforce_eager"] is True  # --quick: eager engines, and it says so

    text = profile.read_text()
    data = yaml.safe_load(text)
    sel = result["selection"]
    win = rows[sel["winner"]]
    assert data["device"] == "cpu" and data["engine"]["dtype"] == win["engine_dtype"] == "bfloat16"
    assert data["engine"]["kv_cache_dtype"] == "auto"
    served = str(int8_ckpt) if sel["winner"] == "int8" else str(tiny_llama)
    assert result["serve"]["model"] == served
    assert f"make serve MODEL={served} PROFILE=" in text  # header says what to serve it with
    assert f"# {sel['message']}" in text and "[" in text.split("bf16", 1)[1].splitlines()[0]
    assert "chosen" in proc.stdout and "decode b4" in proc.stdout
    # the baseline to beat: BF16 is the only unquantized candidate; its own profile only when INT8 won
    assert sel["fastest_unquantized"] == "bf16"
    baseline = profile.with_name("tiny-unquantized.yaml")
    assert baseline.is_file() == (sel["winner"] == "int8")
    if baseline.is_file():
        b = yaml.safe_load(baseline.read_text())
        assert b["engine"]["dtype"] == "bfloat16" and b["model"] == str(tiny_llama)
        assert "the fastest format served from the checkpoint as it is" in baseline.read_text()


def test_profile_is_accepted_by_serve(tiny_run):
    from toolkit.serving.profiles import load_profile

    _, profile, _ = tiny_run
    loaded = load_profile(profile)  # exactly what `toolkit serve --profile` does; raises if it would reject it
    assert loaded.device == "cpu" and loaded.engine.dtype == "bfloat16" and loaded.engine.kv_cache_dtype == "auto"
    result = json.loads(profile.with_suffix(".json").read_text())
    assert loaded.model == result["serve"]["model"]  # what `toolkit serve --profile` serves without --model
    assert loaded.selection["winner"] == result["selection"]["winner"]


def test_budget_nothing_meets_picks_the_most_accurate(tiny_run, tmp_path):
    _, profile, _ = tiny_run
    result = json.loads(profile.with_suffix(".json").read_text())
    deltas = {r["name"]: abs(r["ppl_delta"]) for r in result["candidates"]}
    assert min(deltas.values()) > 0  # neither reproduces FP32 exactly, so a 0% budget rules both out
    strict = tmp_path / "strict.yaml"
    proc = toolkit("--from-json", profile.with_suffix(".json"), "--budget", "0%", "--output", strict)
    assert proc.returncode == 0, proc.stderr
    assert "no candidate stays within the 0% perplexity budget" in " ".join(proc.stdout.split())
    sel = json.loads(strict.with_suffix(".json").read_text())["selection"]
    assert sel["within_budget"] is False and sel["winner"] == min(deltas, key=deltas.get)
    assert "no candidate stays within" in strict.read_text()


def test_bad_input_is_one_line_exit_2(tmp_path, tiny_llama):
    for args, needle in ((["--budget", "lots"], "--budget"), (["--candidates", "fp64"], "fp64"),
                         (["--model", tmp_path / "missing"], "--model"),
                         (["--model", tiny_llama, "--output", tmp_path / "p.txt"], "--output"),
                         (["--from-json", tmp_path / "none.json"], "--from-json"),
                         (["--checkpoint", "int4=x"], "--checkpoint"),
                         (["--checkpoint", f"int8={tmp_path}"], "not a model directory")):
        proc = toolkit(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and needle in proc.stderr and proc.stderr.count("\n") == 1
