"""The cross-check against vLLM's benchmark client (toolkit.evaluation.crosscheck / vllm_client).

Data: tests/data/crosscheck/ holds one real run of each client from ``make bench-crosscheck`` on SmolLM2-135M
(concurrency 1, round 0, the same 4 questions, 1 warm-up): vLLM's own result file (``vllm bench serve
--save-detailed``, 8.8 kB) and our load generator's records (7.5 kB). vLLM computed its medians with numpy, so
they are an independent reference for our parsing; our side's expected figures come from :mod:`statistics`."""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.errors import ToolkitError
from toolkit.evaluation.crosscheck import compare, record_metrics, table_lines
from toolkit.evaluation.loadgen import Request
from toolkit.evaluation.vllm_client import parse_vllm_result, vllm_argv, write_prompts
from toolkit.paths import REPO_ROOT, vllm_python

DATA = Path(__file__).resolve().parents[1] / "data" / "crosscheck"


@pytest.fixture(scope="module")
def vllm_result() -> dict:
    return json.loads((DATA / "vllm-c1-r0.json").read_text())


@pytest.fixture(scope="module")
def ours() -> list[dict]:
    return [json.loads(line) for line in (DATA / "toolkit-c1-r0.records.jsonl").read_text().splitlines()]


def test_parsed_vllm_result_reproduces_vllms_own_medians(vllm_result):
    parsed = parse_vllm_result(vllm_result, n=vllm_result["num_prompts"])
    recs = parsed["records"]
    assert len(recs) == vllm_result["num_prompts"] == 4 and all(r["ok"] for r in recs)
    for ours_key, vllm_key in (("ttft_ms", "ttft"), ("e2e_ms", "e2el"), ("tpot_ms", "tpot")):
        values = [r[ours_key] for r in recs]
        assert statistics.median(values) == pytest.approx(vllm_result[f"median_{vllm_key}_ms"], rel=1e-9)
        assert statistics.fmean(values) == pytest.approx(vllm_result[f"mean_{vllm_key}_ms"], rel=1e-9)
    assert [r["output_tokens"] for r in recs] == vllm_result["output_lens"]
    assert sum(r["output_tokens"] for r in recs) == vllm_result["total_output_tokens"]
    assert parsed["duration_s"] == vllm_result["duration"]
    assert parsed["reported"]["median_ttft_ms"] == vllm_result["median_ttft_ms"]


def test_same_prompts_gave_the_same_greedy_answers(vllm_result, ours):
    """Both clients sent the same questions: greedy decoding gave the same text and token counts."""
    vllm_answers = vllm_result["generated_texts"]
    assert [r["answer"] for r in sorted(ours, key=lambda r: r["qid"])] == vllm_answers
    assert sorted(r["output_tokens"] for r in ours) == sorted(vllm_result["output_lens"])


def test_parse_refuses_what_it_cannot_read(vllm_result):
    with pytest.raises(ToolkitError, match=r"r\.json: not a vLLM bench serve result .*missing ttfts, itls"):
        parse_vllm_result({k: v for k, v in vllm_result.items() if k not in ("ttfts", "itls")}, "r.json")
    with pytest.raises(ToolkitError, match="4 requests, 5 prompts given"):
        parse_vllm_result(vllm_result, "r.json", n=5)
    lying = copy.deepcopy(vllm_result)
    lying["errors"][1] = "Traceback (most recent call last):\n  ...\naiohttp.ClientError: boom"
    with pytest.raises(ToolkitError, match="3 requests without an error but 4 reported completed"):
        parse_vllm_result(lying)
    lying["completed"] = 3  # now consistent: one failed request, kept as a failure with its last line
    recs = parse_vllm_result(lying)["records"]
    assert recs[1] == {"ok": False, "error": "aiohttp.ClientError: boom"} and sum(r["ok"] for r in recs) == 3


def test_side_by_side_table_on_real_runs(vllm_result, ours):
    runs = [{"client": "toolkit", "concurrency": 1, "round": 0, "records": ours},
            {"client": "vllm", "concurrency": 1, "round": 0,
             "records": [{**r, "qid": q} for r, q in zip(parse_vllm_result(vllm_result)["records"],
                                                         sorted(x["qid"] for x in ours))]}]
    point = compare(runs)[1]
    assert point["same_answers"] == {"equal": 4, "pairs": 4}
    lines = table_lines({1: point})
    for fig, vllm_key, label in (("ttft_ms", "ttft", "TTFT"), ("tpot_ms", "tpot", "TPOT"), ("e2e_ms", "e2el", "e2e")):
        mine = statistics.median(r[fig] for r in ours)
        theirs = vllm_result[f"median_{vllm_key}_ms"]
        p = point[fig]
        assert p["toolkit"]["median"] == pytest.approx(mine) and p["vllm"]["median"] == pytest.approx(theirs)
        assert p["rel_diff"]["value"] == pytest.approx(theirs / mine - 1)
        assert p["rel_diff"]["ci_low"] <= p["rel_diff"]["value"] <= p["rel_diff"]["ci_high"]
        assert p["rel_diff"]["within_goal"] == (abs(theirs / mine - 1) <= 0.10)
        assert p["toolkit"]["rounds"]["runs"] == [pytest.approx(mine)] and p["toolkit"]["cv"] is None  # one round
        row = next(line for line in lines if line.split()[:2] == ["1", label])
        assert f"{mine:.1f}" in row and f"{theirs:.1f}" in row and f"{100 * (theirs / mine - 1):+.1f}%" in row
    assert lines[-1] == "identical answers (same round, same question): c1 4/4"

    from toolkit.results import BenchRun, find

    bench = BenchRun("bench-crosscheck")
    record_metrics(bench, runs, {1: point})
    data = bench.to_json()
    (ttft,) = find(data, "online_ttft_ms", client="vllm", concurrency=1)
    assert ttft["summary"]["p50"] == pytest.approx(vllm_result["median_ttft_ms"]) and ttft["summary"]["n"] == 4
    (rel,) = find(data, "crosscheck_e2e_p50_rel_diff", concurrency=1)
    assert rel["value"] == pytest.approx(vllm_result["median_e2el_ms"] / statistics.median(r["e2e_ms"] for r in ours)
                                         - 1)


@pytest.mark.skipif(not vllm_python().exists(), reason="needs .venv-vllm (make setup)")
def test_vllms_own_parser_and_dataset_take_our_arguments_and_prompts(tmp_path, tiny_llama):
    """vLLM's add_cli_args accepts the argv, and its ShareGPT loader yields our questions, in order, as they are."""
    questions = ["What is the abc module for?", "What does json.dumps return?", "Which river flows through Egypt?"]
    write_prompts(tmp_path / "p.json", [Request(f"q{i}", q) for i, q in enumerate(questions)])
    argv = vllm_argv("http://127.0.0.1:9", str(tiny_llama), tmp_path / "p.json", 3, 4, 2, 48, tmp_path, "r.json",
                     api_key="s3cret")
    script = (
        "import json, sys\n"
        "from vllm.benchmarks.serve import add_cli_args\n"
        "from vllm.benchmarks.datasets import get_samples\n"
        "from vllm.tokenizers import get_tokenizer\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "p = FlexibleArgumentParser(); add_cli_args(p); a = p.parse_args(json.loads(sys.argv[1]))\n"
        "a.sharegpt_output_len = a.output_len  # what main_async does before sampling\n"
        "s = get_samples(a, get_tokenizer(a.tokenizer))\n"
        "print(json.dumps({'args': {k: getattr(a, k) for k in ('backend', 'endpoint', 'max_concurrency', 'model',"
        " 'num_warmups', 'temperature', 'save_detailed', 'header', 'top_k')},"
        " 'prompts': [r.prompt for r in s], 'out': [r.expected_output_len for r in s]}))\n")
    proc = subprocess.run([str(vllm_python()), "-c", script, json.dumps(argv)], capture_output=True, text=True,
                          timeout=300, cwd=REPO_ROOT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["prompts"] == questions and got["out"] == [48, 48, 48]
    assert got["args"] == {"backend": "openai-chat", "endpoint": "/v1/chat/completions", "max_concurrency": 4,
                           "model": None, "num_warmups": 2, "temperature": 0.0, "save_detailed": True,
                           "header": ["Authorization=Bearer s3cret"], "top_k": None}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit.evaluation.crosscheck", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO_ROOT, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, env, message", [
    (["--model", "/no/such/model", "--index", "."], None, "--model /no/such/model: model directory not found"),
    (["--model", ".", "--index", "/no/such/index"], None, "--index /no/such/index: index not found"),
    (["--model", ".", "--index", "."], {"TOOLKIT_VLLM_VENV": "/no/venv"},
     "/no/venv/bin/python: serving environment missing; run `make setup`"),
    (["--model", ".", "--index", ".", "--concurrency", "1,x"], None, "--concurrency 1,x: not a comma-separated"),
    (["--model", ".", "--index", ".", "--concurrency", "0"], None, "levels must be integers >= 1"),
    (["--model", ".", "--index", ".", "--rounds", "0"], None, "--rounds 0: must be >= 1"),
    (["--model", ".", "--index", ".", "--questions", "/no/q.jsonl"], None, "/no/q.jsonl: questions file not found"),
])
def test_bad_input_is_one_line_and_exit_2(args, env, message):
    if env is None and not vllm_python().exists() and "--model" in args and "/no/such" not in " ".join(args):
        pytest.skip("the check after the model and index needs .venv-vllm")
    proc = _cli(*args, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr
