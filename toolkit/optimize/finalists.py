"""``compare.html`` of ``toolkit optimize``'s winner against the baseline, from the confirmation run.

Each side becomes an ordinary eval report (:class:`toolkit.evaluation.report.Report`): its QA F1 / exact match
from the rung-0 trial, its validation perplexity from the screen, its max-load search from the deepest rung,
and as latency points the confirmation's pooled runs at both loads (so both reports have the same points and
``toolkit compare`` sets them side by side, its gates judging the winner against the baseline with the
recipe's quality budget). The reports land in ``finalists/`` and the comparison in ``finalists/compare/``,
written the way ``toolkit compare`` writes it (:func:`toolkit.evaluation.compare_cli.write_comparison`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit.optimize.recipe import repo_path
from toolkit.optimize.space import Config


def side_report(cfg: Config, rec: Mapping[str, Any], points: list[dict[str, Any]], suite, suite_path: str,
                slo: dict[str, Any], screen: Mapping[str, Any] | None, startup_s: float | None, load_avg: list[float] | None):
    """One configuration as an eval report (module docstring); ``points``: pooled point summaries."""
    from toolkit.evaluation.cli import git_commit
    from toolkit.evaluation.report import (Environment, Latency, LoadPoint, MaxLoad, ModelInfo, Quality,
                                           Resources, Report, SuiteInfo)
    from toolkit.hardware import hardware_fingerprint, hardware_report
    from toolkit.manifest import read_manifest

    variant = repo_path(cfg.variant).resolve()
    hw = hardware_report()
    screen = screen or {}
    return Report(
        model=ModelInfo(path=str(variant), name=cfg.label(), manifest=read_manifest(variant)),
        quality=Quality(qa_f1=rec.get("f1"), qa_exact_match=rec.get("exact_match"), val_ppl=screen.get("ppl"),
                        val_ppl_error=screen.get("error"), errors=rec.get("quality_errors") or 0),
        latency=Latency(points=[LoadPoint(**p) for p in points], slo=slo,
                        max_load=MaxLoad.model_validate(rec["max_loads"][-1]) if rec.get("max_loads") else None),
        resources=Resources(size_on_disk_bytes=rec.get("size_bytes"), engine_startup_s=startup_s,
                            engine_peak_rss_mb=rec.get("peak_rss_mb"),
                            note="latency points: toolkit optimize's interleaved confirmation run"),
        environment=Environment(hardware=hw, fingerprint=hardware_fingerprint(hw), git_commit=git_commit(),
                                suite=SuiteInfo(name=suite.name, path=suite_path, sha256=suite.digest()),
                                prefix_caching=cfg.enable_prefix_caching, started_by_eval=True,
                                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                load_avg_start=load_avg, load_avg_end=list(os.getloadavg())),
    )


def write_finalist_reports(out: Path, suite, suite_path: str, slo: dict[str, Any], cfgs: Mapping[str, Config],
                           records: Mapping[str, Mapping[str, Any]], result: Mapping[str, Any],
                           runs: Mapping[float, list[dict[str, Any]]], info: Mapping[str, Mapping[str, Any]],
                           screens: Mapping[str, Mapping[str, Any]] | None = None,
                           f1_drop: float | None = None) -> dict[str, str]:
    """Write ``baseline.json`` and ``winner.json`` (+ their request records) and ``compare/``; returns paths."""
    from toolkit.evaluation.compare import compare
    from toolkit.evaluation.compare_cli import write_comparison
    from toolkit.evaluation.gates import Gates
    from toolkit.evaluation.report import write_report

    names = {"a": "baseline", "b": "winner"}
    first_load = [x["load_avg"] for xs in runs.values() for x in xs][:1]
    paths = {}
    for side, cfg in cfgs.items():
        points = [s for key, s in result["points"].items() if key.startswith(f"{side}@")]
        report = side_report(cfg, records[cfg.id], points, suite, suite_path, slo, (screens or {}).get(cfg.variant),
                             info[side]["engine_startup_s"], first_load[0] if first_load else None)
        recs = [{"phase": "load", "round": x["round"], "order": x["order"], "load": load, **r}
                for load, xs in runs.items() for x in xs if x["side"] == side for r in x["records"]]
        paths[names[side]] = str(write_report(report, out / f"{names[side]}.json", recs))
    c = compare([paths["baseline"], paths["winner"]], baseline=paths["baseline"],
                gates=Gates(max_f1_drop=f1_drop, allow_mismatch=True))
    write_comparison(c, out / "compare")
    paths["compare"] = str(out / "compare" / "compare.html")
    paths["recommendation"] = c.recommendation
    return paths
