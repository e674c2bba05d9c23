"""``make_report``: an eval report (+ records sidecar) built from given per-request latencies and per-question
scores, for testing compare/gates/render on inputs whose expected outcome follows from how they were built.
Summaries use the toolkit's own summary functions (metrics.summarize, stats.interval, slo.attainment), as
``toolkit eval`` does; nothing here is a measurement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def _point(name: str, runs: list[list[float]], slo: dict[str, Any] | None, concurrency: int
           ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from toolkit.evaluation.metrics import summarize
    from toolkit.evaluation.slo import attainment
    from toolkit.stats import UNSTABLE_CV, interval, percentile

    records, each = [], []
    total_s = 0.0
    for i, e2e in enumerate(runs):
        recs = [{"phase": "load", "target": "rag", "point": name, "repeat": i, "ok": True, "e2e_ms": x,
                 "ttft_ms": 0.25 * x, "tpot_ms": 0.75 * x / 15, "output_tokens": 16, "stages": {}} for x in e2e]
        duration = sum(e2e) / 1000 / concurrency  # a closed loop of `concurrency` workers
        total_s += duration
        figs = {"e2e_ms.p50": percentile(e2e, 50), "e2e_ms.p95": percentile(e2e, 95),
                "ttft_ms.p50": percentile([0.25 * x for x in e2e], 50), "throughput.req_s": len(e2e) / duration}
        if slo:
            figs["slo.goodput_req_s"] = attainment(recs, slo, duration)["goodput_req_s"]
        each.append(figs)
        records += recs
    intervals = {k: interval([f[k] for f in each]) for k in each[0]}
    ttft = [r["ttft_ms"] for r in records]
    point = {"name": name, "target": "rag", "mode": "concurrency", "concurrency": concurrency,
             "requests": len(records), "errors": 0, "duration_s": total_s,
             "throughput": {"req_s": len(records) / total_s, "output_tok_s": 16 * len(records) / total_s},
             "ttft_ms": summarize(ttft), "tpot_ms": summarize(r["tpot_ms"] for r in records),
             "itl_ms": summarize([]), "e2e_ms": summarize(r["e2e_ms"] for r in records),
             "slo": attainment(records, slo, total_s) if slo else None, "repeats": len(runs),
             "intervals": intervals if len(runs) > 1 else {},
             "unstable": [k for k, iv in intervals.items() if iv["cv"] is not None and iv["cv"] > UNSTABLE_CV]}
    return point, records


def build_report(path: Path, points: dict[str, list[list[float]]], f1: dict[str, float] | None = None,
                 slo: dict[str, Any] | None = None, max_load: dict[str, Any] | None = None, val_ppl: float = 10.0,
                 records: bool = True, suite: str = "synthetic") -> Path:
    """Write ``path`` (+ sidecar): ``points`` = {"c4": [repeat 0 e2e ms list, repeat 1 ...]}; ``f1`` =
    {qid: score} (EM = 1 where F1 is 1); ``max_load`` = MaxLoad fields."""
    from toolkit.evaluation.report import Report, write_report

    recs: list[dict[str, Any]] = []
    lps = []
    for name, runs in points.items():
        p, r = _point(name, runs, slo, int(name.removeprefix("c")))
        lps.append(p)
        recs += r
    if f1 is not None:
        recs += [{"phase": "quality", "qid": q, "error": None, "f1": s, "em": float(s == 1.0)} for q, s in f1.items()]
    mean = (lambda xs: sum(xs) / len(xs)) if f1 else (lambda xs: None)
    report = Report.model_validate({
        "model": {"path": str(path.stem), "name": path.stem},
        "quality": {"val_ppl": val_ppl, "qa_f1": mean(list((f1 or {}).values())),
                    "qa_exact_match": mean([float(s == 1.0) for s in (f1 or {}).values()]),
                    "questions": len(f1 or {})},
        "latency": {"points": lps, "slo": slo,
                    "max_load": None if max_load is None else {"mode": "concurrency", "unit": "concurrent requests",
                                                               "slo": slo, **max_load}},
        "resources": {"size_on_disk_bytes": 2**20},
        "environment": {"hardware": {"cpu": {"model": "test-cpu", "cores": 2}}, "fingerprint": "test-cpu x2 | no-gpu",
                        "suite": {"name": suite, "path": "suite.yaml", "sha256": "0" * 16}, "prefix_caching": False,
                        "started_by_eval": True, "created": "2026-01-01T00:00:00"},
    })
    write_report(report, path, recs if records else [])
    return path


@pytest.fixture
def make_report(tmp_path):
    """``make_report("name", points, ...)`` -> path of a written report under the test's tmp dir."""
    def make(name: str, points: dict[str, list[list[float]]], **kw: Any) -> Path:
        return build_report(tmp_path / f"{name}.json", points, **kw)
    return make
