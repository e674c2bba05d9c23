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
