"""SLO parsing and attainment (toolkit.evaluation.slo) on hand-built load-generator records whose expected
figures are worked out by hand in the comments, and the CLI's one-line refusal of a bad --slo."""

from __future__ import annotations

import pytest

from toolkit.errors import ToolkitError
from toolkit.evaluation.slo import attainment, parse_slo


@pytest.mark.parametrize("text,expected", [
    ("ttft:500,tpot:50,e2e:2000", {"ttft_ms": 500.0, "tpot_ms": 50.0, "e2e_ms": 2000.0, "percentile": 95.0}),
    ("e2e_p99:3000, ttft_p99:800", {"e2e_ms": 3000.0, "ttft_ms": 800.0, "percentile": 99.0}),
    ("E2EL:1500", {"e2e_ms": 1500.0, "percentile": 95.0}),  # vLLM's name for end-to-end latency
    ("e2e_ms:1500,retrieval:40", {"e2e_ms": 1500.0, "retrieval_ms": 40.0, "percentile": 95.0}),
    ("tpot_p90:20.5,", {"tpot_ms": 20.5, "percentile": 90.0}),  # a trailing comma is harmless
])
def test_parse_slo_forms(text, expected):
    assert parse_slo(text) == expected


def test_parse_slo_default_percentile_is_the_callers():
    assert parse_slo("e2e:100", default_percentile=50) == {"e2e_ms": 100.0, "percentile": 50}


@pytest.mark.parametrize("text,needle", [
    ("e2e", "'e2e' is not METRIC:MS"),
    ("latency:5", "'latency:5' is not METRIC:MS"),
    ("e2e:fast", "threshold 'fast' is not a number"),
    ("e2e:0", "threshold must be > 0 ms"),
    ("e2e:-5", "threshold must be > 0 ms"),
    ("e2e_p95:1,ttft_p99:2", "one percentile per SLO (already p95)"),
    ("", "give at least one threshold"),
    (" , ", "give at least one threshold"),
])
def test_parse_slo_errors_are_one_line_and_name_the_item(text, needle):
    with pytest.raises(ToolkitError) as exc:
        parse_slo(text)
    msg = str(exc.value)
    assert msg.startswith("--slo: ") and needle in msg and "\n" not in msg


def rec(e2e=None, ttft=None, tpot=None, ok=True, stages=None):
    if not ok:
        return {"ok": False, "error": "HTTP 500: boom", "e2e_ms": e2e or 1.0}
    return {"ok": True, "e2e_ms": e2e, "ttft_ms": ttft, "tpot_ms": tpot, "stages": stages or {}}


def test_failures_count_against_goodput_and_attainment():
    records = [rec(100), rec(200), rec(900), rec(1500), rec(ok=False)]
    a = attainment(records, {"e2e_ms": 1000, "percentile": 80}, duration_s=2.0)
    # 3 of 5 requests met e2e <= 1000 ms (the failure meets nothing): 60% < 80%
    assert a["met_share"] == {"e2e_ms": 0.6} and a["good_share"] == 0.6 and a["meets"] is False
    assert a["goodput_req_s"] == 1.5  # 3 good requests / 2 s
    # p80 of the ok requests' e2e [100, 200, 900, 1500]: position 2.4 -> 900 + 0.4 * 600
    assert a["at_percentile"] == {"e2e_ms": pytest.approx(1140.0)} and a["thresholds"] == {"e2e_ms": 1000.0}
    all_failed = attainment([rec(ok=False)] * 3, {"e2e_ms": 1e9}, duration_s=1.0)
    assert all_failed["meets"] is False and all_failed["goodput_req_s"] == 0 and all_failed["met_share"]["e2e_ms"] == 0


def test_meets_at_the_percentile_boundary():
    records = [rec(100), rec(200), rec(900), rec(1500)]
    # 3 of 4 met: exactly 75% meets the SLO at p75, not at p76
    assert attainment(records, {"e2e_ms": 1000, "percentile": 75}, 1.0)["meets"] is True
    assert attainment(records, {"e2e_ms": 1000, "percentile": 76}, 1.0)["meets"] is False
    assert attainment(records, {"e2e_ms": 1500, "percentile": 100}, 1.0)["meets"] is True


def test_one_token_answer_meets_the_tpot_threshold():
    records = [rec(e2e=300, ttft=290, tpot=None), rec(e2e=400, ttft=100, tpot=60.0), rec(e2e=400, ttft=100, tpot=10.0)]
    a = attainment(records, {"tpot_ms": 50, "ttft_ms": 200, "percentile": 50}, duration_s=1.0)
    # TPOT: the one-token answer (no TPOT) and the 10 ms one meet 50 ms; TTFT: the two 100 ms ones meet 200 ms
    assert a["met_share"] == {"ttft_ms": pytest.approx(2 / 3), "tpot_ms": pytest.approx(2 / 3)}
    assert a["good_share"] == pytest.approx(1 / 3) and a["meets"] is True  # only the third meets both
    assert a["at_percentile"]["tpot_ms"] == 35.0  # p50 of the defined TPOTs [10, 60]


def test_retrieval_is_the_endpoints_embed_plus_search():
    records = [rec(100, stages={"embed": 5.0, "search": 20.0, "total": 90.0}),  # 25 ms
               rec(100, stages={"embed": 15.0, "search": 20.0}),  # 35 ms
               rec(100)]  # the bare engine has no stages: nothing to miss
    a = attainment(records, {"retrieval_ms": 30, "percentile": 50}, duration_s=1.0)
    assert a["met_share"]["retrieval_ms"] == pytest.approx(2 / 3)
    assert a["at_percentile"]["retrieval_ms"] == 30.0  # p50 of [25, 35]


def test_no_records_or_no_time():
    empty = attainment([], {"e2e_ms": 100}, duration_s=1.0)
    assert empty["meets"] is False and empty["good_share"] is None and empty["goodput_req_s"] == 0
    assert attainment([rec(10)], {"e2e_ms": 100}, duration_s=0.0)["goodput_req_s"] is None


@pytest.mark.parametrize("spec,message", [("e2e:fast", "--slo: 'e2e:fast': threshold 'fast' is not a number"),
                                          ("e2e_p150:100", "--slo: 'e2e_p150:100': percentile must be in (0, 100]")])
def test_cli_refuses_a_bad_slo_before_any_work(tmp_path, capsys, spec, message):
    from toolkit.cli import main

    suite = tmp_path / "suite.yaml"
    suite.write_text("name: t\nload: {concurrency: [1]}\n")
    rc = main(["eval", "--model", str(tmp_path / "no-model"), "--suite", str(suite), "--slo", spec])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
