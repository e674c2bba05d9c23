"""The bench-engines recommendation on reports built with known latencies and answer scores
(tests/evaluation/conftest.build_report: closed-loop points whose req/s follow from the e2e times)."""

from toolkit.engine.recommend import recommend
from toolkit.evaluation.report import read_report

from tests.evaluation.conftest import build_report

SLO = {"percentile": 95, "e2e_ms": 5000}


def _reports(tmp_path):
    spec = {  # name: (F1 of each of 4 questions, e2e ms at c=1, e2e ms at c=4), 2 repeats of 8 requests
        "vllm-model": ([0.3] * 4, 1000, 2000),          # c=4: 8 requests x 2 s over 4 workers -> 2 req/s
        "llamacpp-q8_0": ([0.28] * 4, 600, 4000),       # fastest eligible single stream; 1 req/s at c=4
        "llamacpp-q4_k_m": ([0.2] * 4, 300, 1000),      # fastest of all, but F1 0.1 below the best
    }
    out = {}
    for name, (f1, c1, c4) in spec.items():
        path = build_report(tmp_path / f"{name}.json", {"c1": [[c1] * 8] * 2, "c4": [[c4] * 8] * 2},
                            f1={f"q{i}": s for i, s in enumerate(f1)}, slo=SLO)
        out[name] = read_report(path)
    return out


def test_lowest_latency_wins_one_stream_and_most_requests_win_under_load(tmp_path):
    lines = recommend(_reports(tmp_path))
    assert lines[0] == "Eligible: answer F1 within 0.05 of the best (0.300); left out for quality: llamacpp-q4_k_m."
    at1 = next(i for i, ln in enumerate(lines) if "at 1 concurrent stream:" in ln)
    assert "use llamacpp-q8_0 (p50 e2e 600 ms" in lines[at1]
    assert "llama.cpp/vLLM p50 latency 0.60x" in lines[at1 + 1]
    at4 = next(i for i, ln in enumerate(lines) if "at 4 concurrent streams:" in ln)
    assert "use vllm-model (p50 e2e 2,000 ms, 2.00 req/s" in lines[at4]
    assert "vLLM/llama.cpp req/s 2.00x" in lines[at4 + 1]


def test_a_wider_margin_lets_the_faster_lower_quality_variant_win(tmp_path):
    lines = recommend(_reports(tmp_path), f1_margin=0.2)
    assert "left out" not in lines[0]
    assert any("at 4 concurrent streams: use llamacpp-q4_k_m" in ln for ln in lines)


def test_nothing_served_says_so():
    assert recommend({}) == ["no served variant with an answer F1: nothing to recommend"]
