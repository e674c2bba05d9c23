"""The load generator's timing math on recorded stream events (no server, no clock: given timestamps)."""

import pytest

from toolkit.evaluation.loadgen import LoadPlan, cycle, Request, plans_for, record_from_events, summarize_point
from toolkit.evaluation.suite import LoadSection, PoissonSection


def _rag_events():
    return [
        (10.010, {"type": "sources", "sources": [{"id": "d1"}, {"id": "d2"}], "cached": False}),
        (10.100, {"type": "token", "text": "Hello"}),
        (10.150, {"type": "token", "text": ""}),  # empty chunks are not tokens
        (10.160, {"type": "token", "text": " world"}),
        (10.300, {"type": "token", "text": "!"}),
        (10.310, {"type": "done", "timings": {"embed": 5.0, "search": 1.0, "prompt": 0.5, "llm_ttft": 80.0,
                                              "llm_total": 290.0, "total": 300.0, "other": 9}, "usage":
                  {"prompt_tokens": 40, "completion_tokens": 4}}),
    ]


def test_rag_record_from_events():
    rec = record_from_events("rag", 10.0, _rag_events(), 10.320)
    assert rec["ttft_ms"] == pytest.approx(100)
    assert rec["e2e_ms"] == pytest.approx(320)
    assert rec["itl_ms"] == pytest.approx([60, 140])
    # vLLM TPOT with the server's token count (4): (320 - 100) / 3
    assert rec["tpot_ms"] == pytest.approx(220 / 3)
    assert rec["answer"] == "Hello world!" and rec["source_ids"] == ["d1", "d2"] and rec["cached"] is False
    assert rec["stages"] == {"embed": 5.0, "search": 1.0, "prompt": 0.5, "llm_ttft": 80.0, "llm_total": 290.0,
                             "total": 300.0}


def test_engine_record_from_openai_chunks():
    events = [(1.2, {"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
              (1.5, {"choices": [{"delta": {"content": "a"}}]}),
              (1.7, {"choices": [{"delta": {"content": "b"}}]}),
              (1.8, {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})]
    rec = record_from_events("engine", 1.0, events, 1.8)
    assert rec["ttft_ms"] == pytest.approx(500) and rec["e2e_ms"] == pytest.approx(800)
    assert rec["tpot_ms"] == pytest.approx(300) and rec["output_tokens"] == 2


def test_stream_without_tokens_or_with_an_error_event_is_an_error():
    with pytest.raises(ValueError):
        record_from_events("rag", 0.0, [(0.1, {"type": "done"})], 0.2)
    with pytest.raises(RuntimeError, match="engine failed"):
        record_from_events("rag", 0.0, [(0.1, {"type": "token", "text": "a"}),
                                        (0.2, {"type": "error", "message": "LLM engine failed mid-answer"})], 0.3)


def test_summary_counts_errors_and_throughput():
    ok = record_from_events("rag", 10.0, _rag_events(), 10.320)
    bad = {"ok": False, "error": "HTTP 500: boom", "e2e_ms": 3.0}
    s = summarize_point(LoadPlan("c2", "concurrency", concurrency=2, requests=3), "rag", [ok, ok, bad], 2.0)
    assert s["errors"] == 1 and s["requests"] == 3 and s["error_examples"] == ["HTTP 500: boom"]
    assert s["throughput"]["req_s"] == 1.0 and s["throughput"]["output_tok_s"] == 4.0
    assert s["stages"]["embed"]["p50"] == 5.0 and s["e2e_ms"]["n"] == 2


def test_plans_and_cycling():
    plans = plans_for(LoadSection(concurrency=[1, 4], requests_per_level=5, warmup=1,
                                  poisson=PoissonSection(rate_rps=2.5, requests=7)))
    assert [(p.name, p.mode, p.requests) for p in plans] == [("c1", "concurrency", 5), ("c4", "concurrency", 5),
                                                             ("poisson2.5", "poisson", 7)]
    reqs = [Request(str(i), f"q{i}") for i in range(3)]
    assert [r.qid for r in cycle(reqs, 5)] == ["0", "1", "2", "0", "1"]
    assert [r.qid for r in cycle(reqs, 2, offset=-2)] == ["1", "2"]  # warm-up takes the last questions


def _ok(e2e, ttft=None, tokens=4):
    ttft = e2e / 4 if ttft is None else ttft
    return {"ok": True, "error": None, "e2e_ms": e2e, "ttft_ms": ttft, "tpot_ms": (e2e - ttft) / (tokens - 1),
            "itl_ms": [], "output_tokens": tokens, "stages": {}}


def test_summary_carries_slo_attainment_over_every_request():
    bad = {"ok": False, "error": "HTTP 500: boom", "e2e_ms": 3.0}
    plan = LoadPlan("c2", "concurrency", concurrency=2, requests=3)
    s = summarize_point(plan, "engine", [_ok(100), _ok(300), bad], 2.0, {"e2e_ms": 200, "percentile": 50})
    # one of three requests is good (the failure meets nothing): 1/3 < 50%, goodput 1 request / 2 s
    assert s["slo"]["goodput_req_s"] == 0.5 and s["slo"]["meets"] is False
    assert s["throughput"]["req_s"] == 1.0  # throughput counts both ok requests
    assert summarize_point(plan, "engine", [_ok(100)], 1.0)["slo"] is None  # no SLO, no attainment


def test_repeats_pool_requests_and_give_intervals_across_repeats():
    from toolkit.evaluation.repeats import pool_repeats

    plan = LoadPlan("c2", "concurrency", concurrency=2, requests=2)
    slo = {"e2e_ms": 250, "percentile": 50}
    runs = [([_ok(100), _ok(200)], 1.0), ([_ok(300), _ok(400)], 1.0)]
    s = pool_repeats(plan, "engine", runs, slo)
    assert s["repeats"] == 2 and s["requests"] == 4 and s["e2e_ms"]["n"] == 4
    assert s["e2e_ms"]["p50"] == 250.0  # pooled: the median of all four requests
    assert s["throughput"]["req_s"] == 2.0  # 4 ok requests / (1 s + 1 s)
    assert s["slo"]["goodput_req_s"] == 1.0 and s["slo"]["meets"] is True  # 2 good of 4 over 2 s; 50% >= p50
    p50 = s["intervals"]["e2e_ms.p50"]  # each repeat's own p50: 150 and 350
    assert p50["values"] == [150.0, 350.0] and p50["mean"] == 250.0 and p50["n"] == 2
    # sd = 141.42, t(0.975, 1 df) = 12.706: half-width 12.706 * 141.42 / sqrt(2) = 1270.6
    assert p50["ci_high"] - p50["mean"] == pytest.approx(1270.6, abs=0.1)
    assert p50["cv"] == pytest.approx(0.5657, abs=1e-4)
    assert s["intervals"]["slo.goodput_req_s"]["values"] == [2.0, 0.0]  # all good in repeat 0, none in repeat 1
    assert s["intervals"]["throughput.req_s"]["cv"] == 0.0  # 2 req/s both times
    assert set(s["intervals"]) == {"e2e_ms.p50", "e2e_ms.p95", "ttft_ms.p50", "tpot_ms.p50", "throughput.req_s",
                                   "throughput.output_tok_s", "slo.goodput_req_s"}
    assert "e2e_ms.p50" in s["unstable"] and "throughput.req_s" not in s["unstable"]
    one = pool_repeats(plan, "engine", runs[:1], None)
    assert one["repeats"] == 1 and one["slo"] is None and "slo.goodput_req_s" not in one["intervals"]
    assert one["intervals"]["e2e_ms.p50"] == {"mean": 150.0, "ci_low": None, "ci_high": None, "cv": None, "n": 1,
                                              "values": [150.0]}
    assert one["unstable"] == []


def test_pooled_summary_is_a_valid_report_load_point():
    from toolkit.evaluation.repeats import pool_repeats
    from toolkit.evaluation.report import LoadPoint

    runs = [([_ok(100), _ok(200)], 1.0), ([_ok(300)], 0.5)]
    p = LoadPoint(**pool_repeats(LoadPlan("c1", "concurrency", concurrency=1, requests=2), "rag", runs,
                                 {"ttft_ms": 80, "percentile": 90}))
    assert p.repeats == 2 and p.intervals["e2e_ms.p50"].n == 2 and p.slo.thresholds == {"ttft_ms": 80.0}
