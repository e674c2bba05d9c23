"""Side-by-side comparison of eval reports: metric table with deltas, compatibility checks, release gates
(:mod:`toolkit.evaluation.gates`), capacity under the SLO, the Pareto front of quality versus capacity and a
one-line recommendation.

- Reports made on different hardware (:func:`toolkit.hardware.hardware_fingerprint`) or with a different
  suite (name + content hash) are flagged; with gates, an unflagged mismatch fails the ``comparable`` gate
  (a release pipeline should not pass on apples-to-oranges numbers) unless ``allow_mismatch`` is set.
- Latency is compared on the load points every report shares. The headline point is the busiest shared
  closed-loop point (highest concurrency): that is where quantization/batching gains show or vanish.
- Capacity: with an SLO (``toolkit eval --slo``), goodput (requests/s meeting every threshold) per shared
  point, and the highest load meeting the SLO (``--find-max-load``). A figure measured over repeats is shown
  as its mean with a 95% t interval (:func:`toolkit.stats.interval`); a point whose CV across repeats
  exceeds :data:`toolkit.stats.UNSTABLE_CV` is flagged unstable.
- Recommendation: among the variants within the quality budget (the ppl-increase and F1-drop gates, or
  5% / 0.02), the one with the highest max load under the SLO when the reports have one; otherwise the one
  with the lowest p50 end-to-end latency at the headline point. The Pareto front is over QA F1 and the
  same capacity axis (max load, else requests/s at the headline point), both higher-is-better.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.evaluation.capacity import (
    capacity,
    comparable_max_loads,
    cv_flag,
    slo_text,
    trust_notes,
)
from toolkit.evaluation.gates import FAIL, INCONCLUSIVE, GateResult, Gates, evaluate
from toolkit.evaluation.report import (
    LoadPoint,
    MaxLoad,
    Report,
    read_records,
    read_report,
)
from toolkit.hardware import hardware_fingerprint
from toolkit.stats import percentile

__all__ = ["Comparison", "Entry", "GateResult", "Gates", "compare", "pareto_front", "quality_score"]

DEFAULT_PPL_BUDGET = 0.05
DEFAULT_F1_BUDGET = 0.02


@dataclass
class Entry:
    label: str
    path: Path
    report: Report
    records: list[dict[str, Any]]

    def point(self, name: str, target: str = "rag") -> LoadPoint | None:
        pts = self.report.latency.points if target == "rag" else self.report.latency.engine_alone
        return next((p for p in pts if p.name == name), None)

    def _load_records(self, point: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("phase", "load") == "load" and r.get("target") == "rag"
                and r.get("point") == point and r.get("ok")]

    def request_samples(self, point: str, metric: str) -> list[float]:
        """Per-request values of ``metric`` (``e2e_ms``, ``ttft_ms``) at a RAG point, every repeat pooled."""
        return [r[metric] for r in self._load_records(point) if r.get(metric) is not None]

    def repeat_values(self, point: str, metric: str, stat: str) -> list[float] | None:
        """Each repeat's own ``stat`` (``p50``, ``p99``) of ``metric``: the report's interval values, else
        computed per repeat from the records. None for a single run (or when neither source has them)."""
        p = self.point(point)
        if p is None or p.repeats < 2:
            return None
        iv = p.intervals.get(f"{metric}.{stat}")
        if iv is not None and iv.n >= 2:
            return list(iv.values)
        groups: dict[int, list[float]] = {}
        for r in self._load_records(point):
            if r.get(metric) is not None and r.get("repeat") is not None:
                groups.setdefault(int(r["repeat"]), []).append(r[metric])
        return [percentile(v, float(stat[1:])) for _, v in sorted(groups.items())] if len(groups) >= 2 else None

    def question_scores(self, metric: str) -> dict[str, float] | None:
        """``{qid: score}`` of the answered questions (``metric`` = ``f1`` or ``em``); None without records."""
        rows = [r for r in self.records if r.get("phase") == "quality" and r.get("qid") is not None]
        if not rows:
            return None
        return {str(r["qid"]): float(r[metric]) for r in rows if r.get("error") is None and r.get(metric) is not None}

    @property
    def max_load(self) -> MaxLoad | None:
        return self.report.latency.max_load


@dataclass
class Comparison:
    entries: list[Entry]
    baseline: Entry
    warnings: list[str]  # not like-for-like (hardware, suite, prefix caching)
    common_points: list[str]
    headline_point: str | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    pareto: list[str] = field(default_factory=list)
    recommendation: str = ""
    notes: list[str] = field(default_factory=list)  # how far to trust the numbers: repeats, unstable points, load
    f1_budget: float = DEFAULT_F1_BUDGET
    ppl_budget: float = DEFAULT_PPL_BUDGET

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if g.outcome == FAIL]

    @property
    def inconclusive(self) -> list[GateResult]:
        return [g for g in self.gates if g.outcome == INCONCLUSIVE]

    @property
    def served(self) -> list[Entry]:
        return [e for e in self.entries if not e.report.latency.not_served]


def load_entries(paths: list[str | Path]) -> list[Entry]:
    entries, seen = [], set()
    for p in paths:
        path = Path(p)
        report = read_report(path)
        label = path.stem
        if label in seen:  # two "report.json" from different folders
            label = f"{path.parent.name}/{path.stem}"
        seen.add(label)
        entries.append(Entry(label, path, report, read_records(path, report)))
    return entries


def _mismatches(entries: list[Entry], baseline: Entry) -> list[str]:
    out = []
    base_env = baseline.report.environment
    base_fp = hardware_fingerprint(base_env.hardware)
    for e in entries:
        if e is baseline:
            continue
        env = e.report.environment
        fp = hardware_fingerprint(env.hardware)
        if fp != base_fp:
            out.append(f"{e.label}: measured on different hardware ({fp}) than {baseline.label} ({base_fp})")
        if (env.suite.name, env.suite.sha256) != (base_env.suite.name, base_env.suite.sha256):
            out.append(f"{e.label}: made with suite '{env.suite.name}' ({env.suite.sha256}), "
                       f"{baseline.label} with '{base_env.suite.name}' ({base_env.suite.sha256})")
        if env.prefix_caching != base_env.prefix_caching:
            out.append(f"{e.label}: prefix caching {'on' if env.prefix_caching else 'off'}, "
                       f"{baseline.label} {'on' if base_env.prefix_caching else 'off'}")
    return out


def _get(e: Entry, key: str) -> float | None:
    """Metric by dotted key: ``quality.qa_f1``, ``quality.recall_at_k.5``, ``rag.<point>.e2e_ms.p50``, ..."""
    q, r = e.report.quality, e.report.resources
    if key.startswith("quality.recall_at_k."):
        return q.recall_at_k.get(key.rsplit(".", 1)[1])
    if key.startswith("quality.baselines."):  # quality.baselines.<closed_book|oracle>.<qa_f1|qa_exact_match>
        _, _, mode, metric = key.split(".")
        return q.baselines.get(mode, {}).get(metric)
    if key.startswith("quality."):
        return getattr(q, key.split(".", 1)[1])
    if key.startswith("resources."):
        return getattr(r, key.split(".", 1)[1])
    target, point, metric, stat = key.split(".")
    p = e.point(point, target)
    if p is None:
        return None
    if metric == "errors":
        return float(p.errors)
    group = getattr(p, metric)  # throughput, slo (None without an SLO), or a latency summary
    return None if group is None else getattr(group, stat)


METRICS: list[tuple[str, str, str]] = [  # (key, label, "lower"/"higher" is better)
    ("quality.val_ppl", "validation perplexity", "lower"),
    ("quality.qa_exact_match", "QA exact match", "higher"),
    ("quality.qa_f1", "QA token F1", "higher"),
    ("quality.context_overlap", "answer tokens in context", "higher"),
    ("quality.mrr", "retrieval MRR", "higher"),
    ("resources.size_on_disk_bytes", "size on disk (MiB)", "lower"),
    ("resources.engine_startup_s", "engine start-up (s)", "lower"),
    ("resources.engine_peak_rss_mb", "engine peak RSS (MiB)", "lower"),
    ("resources.gpu_memory_mb", "GPU memory (MiB)", "lower"),
]
BASELINE_LABELS = {"closed_book": "no context (RAG-OFF)", "oracle": "gold document only (oracle)"}
POINT_METRICS = [("ttft_ms.p50", "TTFT p50 (ms)"), ("tpot_ms.p50", "TPOT p50 (ms)"), ("e2e_ms.p50", "e2e p50 (ms)"),
                 ("e2e_ms.p95", "e2e p95 (ms)"), ("e2e_ms.p99", "e2e p99 (ms)"), ("throughput.output_tok_s", "output tok/s"),
                 ("throughput.req_s", "requests/s"), ("slo.goodput_req_s", "goodput (req/s meeting the SLO)"),
                 ("slo.good_share", "share of requests meeting the SLO"), ("errors.n", "errors")]
HIGHER = ("throughput", "slo")


def _metric_rows(c: Comparison) -> list[dict[str, Any]]:
    keys = list(METRICS)
    ks = sorted({k for e in c.entries for k in e.report.quality.recall_at_k}, key=int)
    keys[4:4] = [(f"quality.recall_at_k.{k}", f"retrieval recall@{k}", "higher") for k in ks]
    modes = [m for m in ("closed_book", "oracle") if any(m in e.report.quality.baselines for e in c.entries)]
    keys[3:3] = [(f"quality.baselines.{m}.qa_f1", f"QA token F1, {BASELINE_LABELS[m]}", "higher") for m in modes]
    for point in c.common_points:
        for m, label in POINT_METRICS:
            keys.append((f"rag.{point}.{m}", f"{point}: {label}", "higher" if m.startswith(HIGHER) else "lower"))
    engine_points = [p.name for p in c.baseline.report.latency.engine_alone
                     if all(e.point(p.name, "engine") for e in c.served)]
    for point in engine_points:
        for m, label in POINT_METRICS[:5]:
            keys.append((f"engine.{point}.{m}", f"engine alone {point}: {label}", "lower"))
    rows = []
    for key, label, better in keys:
        scale = 2**-20 if key == "resources.size_on_disk_bytes" else 1.0
        values = {e.label: (None if (v := _get(e, key)) is None else v * scale) for e in c.entries}
        if all(v is None for v in values.values()):
            continue
        base = values[c.baseline.label]
        deltas = {lab: None if v is None or base is None else {"abs": v - base, "rel": (v - base) / base if base else None}
                  for lab, v in values.items()}
        flags = {}
        if key.count(".") == 3:  # a load-point metric: flag it where its repeats disagree
            target, point, m = key.split(".", 2)
            flags = {e.label: cv_flag(p, m) for e in c.entries if (p := e.point(point, target)) is not None}
        rows.append({"key": key, "label": label, "better": better, "values": values, "deltas": deltas, "flags": flags})
    return rows


def pareto_front(points: dict[str, tuple[float, float]], lower_x: bool = True) -> list[str]:
    """Labels not dominated in (x, quality), quality higher-is-better; x lower-is-better (latency) or, with
    ``lower_x=False``, higher-is-better (capacity)."""
    sign = 1.0 if lower_x else -1.0
    pts = {k: (sign * x, q) for k, (x, q) in points.items()}
    front = []
    for a, (x_a, q_a) in pts.items():
        dominated = any(x_b <= x_a and q_b >= q_a and (x_b < x_a or q_b > q_a) for b, (x_b, q_b) in pts.items() if b != a)
        if not dominated:
            front.append(a)
    return front


def quality_score(e: Entry) -> float | None:
    """The quality axis of the scatter and the Pareto front: QA token F1 (end-to-end answer quality)."""
    return e.report.quality.qa_f1


def _within_budget(c: Comparison) -> list[Entry]:
    bq = c.baseline.report.quality
    out = []
    for e in c.entries:
        q = e.report.quality
        if q.val_ppl is not None and bq.val_ppl and q.val_ppl / bq.val_ppl - 1.0 > c.ppl_budget:
            continue
        if q.qa_f1 is not None and bq.qa_f1 is not None and bq.qa_f1 - q.qa_f1 > c.f1_budget:
            continue
        out.append(e)
    return out


def _recommend(c: Comparison) -> str:
    budget = f"perplexity +{c.ppl_budget:.0%}, F1 -{c.f1_budget:.2f}"
    flag = " (reports not comparable: see warnings)" if c.warnings else ""
    within = _within_budget(c)
    loads = comparable_max_loads(c)
    if loads:
        ranked = [e for e in within if e.label in loads and loads[e.label].value is not None]
        ref = next(iter(loads.values()))
        if not ranked:
            return (f"No variant within the quality budget ({budget}) meets the SLO ({slo_text(ref.slo)}) at the "
                    f"lowest load tried; keep the baseline and revisit the SLO.{flag}")
        best = max(ranked, key=lambda e: (loads[e.label].value, quality_score(e) or 0.0))
        v, unit = loads[best.label].value, loads[best.label].unit
        base = loads.get(c.baseline.label)
        if best is c.baseline:
            return (f"Recommended: {best.label} (the baseline): max load {v:g} {unit} under the SLO ({slo_text(ref.slo)}); "
                    f"no variant sustains more within the quality budget ({budget}){flag}.")
        if base is None:
            vs = "the baseline has no max-load search"
        elif base.value is None:
            vs = "the baseline misses the SLO at the lowest load tried"
        else:
            vs = f"{v / base.value:.1f}x the baseline's {base.value:g}"
        f1, bf1 = quality_score(best), quality_score(c.baseline)
        df1 = f", F1 {f1 - bf1:+.3f}" if f1 is not None and bf1 is not None else ""
        return f"Recommended: {best.label}: max load {v:g} {unit} under the SLO ({slo_text(ref.slo)}), {vs}{df1}{flag}."
    if c.headline_point is None:
        return "No shared load point: cannot rank the variants by latency."
    key = f"rag.{c.headline_point}.e2e_ms.p50"
    ranked = [e for e in within if _get(e, key) is not None]
    if not ranked:
        return "No variant stays within the quality budget; keep the baseline."
    best = min(ranked, key=lambda e: _get(e, key))
    speedup = _get(c.baseline, key) / _get(best, key) if _get(best, key) else float("nan")
    return (f"Recommended: {best.label} — fastest within the quality budget ({budget}): p50 end-to-end "
            f"{_get(best, key):.0f} ms at {c.headline_point}, {speedup:.2f}x vs baseline {c.baseline.label}{flag}.")


def compare(paths: list[str | Path], baseline: str | Path | None = None, gates: Gates | None = None) -> Comparison:
    if len(paths) < 1:
        raise ToolkitError("compare: give at least one report")
    gates = gates or Gates()
    entries = load_entries(list(paths))
    if baseline is not None:
        bpath = Path(baseline).resolve()
        base = next((e for e in entries if e.path.resolve() == bpath), None)
        if base is None:
            extra = load_entries([baseline])[0]
            entries.insert(0, extra)
            base = extra
    else:
        base = entries[0]
    served = [e for e in entries if not e.report.latency.not_served]  # quality-only reports have no points
    common = [p.name for p in base.report.latency.points if all(e.point(p.name) for e in served)]
    closed = [p for p in base.report.latency.points if p.name in common and p.mode == "concurrency"]
    headline = max(closed, key=lambda p: p.concurrency or 0).name if closed else (common[0] if common else None)
    c = Comparison(entries, base, _mismatches(entries, base), common, headline)
    c.ppl_budget = gates.max_ppl_increase if gates.max_ppl_increase is not None else DEFAULT_PPL_BUDGET
    c.f1_budget = gates.max_f1_drop if gates.max_f1_drop is not None else DEFAULT_F1_BUDGET
    c.rows = _metric_rows(c)
    c.gates = evaluate(c, gates)
    c.notes = trust_notes(c)
    _, xs = capacity(c)
    pts = {k: (x, q) for k, (x, _, _) in xs.items() if (q := quality_score(next(e for e in entries if e.label == k))) is not None}
    c.pareto = pareto_front(pts, lower_x=False)
    c.recommendation = _recommend(c)
    return c
