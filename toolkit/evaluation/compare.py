"""Side-by-side comparison of eval reports: metric table with deltas, compatibility checks, release gates,
the Pareto front of quality versus latency and a one-line recommendation.

- Reports made on different hardware (:func:`toolkit.hardware.hardware_fingerprint`) or with a different
  suite (name + content hash) are flagged; with gates, an unflagged mismatch fails the ``comparable`` gate
  (a release pipeline should not pass on apples-to-oranges numbers) unless ``allow_mismatch`` is set.
- Latency is compared on the load points every report shares. The headline speed metric is the p50
  end-to-end latency at the busiest shared closed-loop point (highest concurrency): that is where
  quantization/batching gains show or vanish.
- Quality: validation perplexity (lower is better) and QA token F1 (higher). The recommendation is the
  fastest variant whose quality stays within the budget (the ppl-increase and F1-drop gates, or 5% / 0.02).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.evaluation.report import LoadPoint, Report, read_records, read_report
from toolkit.hardware import hardware_fingerprint

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


@dataclass
class Gates:
    """Relative limits are fractions (0.05 = 5%); drops are absolute (0.02 F1 points)."""

    max_ppl_increase: float | None = None
    max_f1_drop: float | None = None
    max_em_drop: float | None = None
    max_mrr_drop: float | None = None
    max_p50_regression: float | None = None
    max_p99_regression: float | None = None
    max_ttft_regression: float | None = None
    max_errors: int | None = None
    min_f1: float | None = None
    max_p50_ms: float | None = None
    allow_mismatch: bool = False

    def any(self) -> bool:
        return any(v is not None for k, v in vars(self).items() if k != "allow_mismatch")


@dataclass
class GateResult:
    gate: str
    label: str
    ok: bool
    detail: str
    skipped: bool = False  # the variant was not served here (quality-only report): nothing to check


@dataclass
class Comparison:
    entries: list[Entry]
    baseline: Entry
    warnings: list[str]
    common_points: list[str]
    headline_point: str | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    pareto: list[str] = field(default_factory=list)
    recommendation: str = ""

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.ok]


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
    """Metric by dotted key: ``quality.qa_f1``, ``quality.recall_at_k.5``, ``<point>.e2e_ms.p50``, ..."""
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
    if metric == "throughput":
        return getattr(p.throughput, stat)
    if metric == "errors":
        return float(p.errors)
    return getattr(getattr(p, metric), stat)


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
                 ("throughput.req_s", "requests/s"), ("errors.n", "errors")]


def _metric_rows(c: Comparison) -> list[dict[str, Any]]:
    keys = list(METRICS)
    ks = sorted({k for e in c.entries for k in e.report.quality.recall_at_k}, key=int)
    keys[4:4] = [(f"quality.recall_at_k.{k}", f"retrieval recall@{k}", "higher") for k in ks]
    modes = [m for m in ("closed_book", "oracle") if any(m in e.report.quality.baselines for e in c.entries)]
    keys[3:3] = [(f"quality.baselines.{m}.qa_f1", f"QA token F1, {BASELINE_LABELS[m]}", "higher") for m in modes]
    for point in c.common_points:
        for m, label in POINT_METRICS:
            better = "higher" if m.startswith("throughput") else "lower"
            keys.append((f"rag.{point}.{m}", f"{point}: {label}", better))
    engine_points = [p.name for p in c.baseline.report.latency.engine_alone
                     if all(e.point(p.name, "engine") for e in c.entries)]
    for point in engine_points:
        for m, label in POINT_METRICS[:5]:
            better = "higher" if m.startswith("throughput") else "lower"
            keys.append((f"engine.{point}.{m}", f"engine alone {point}: {label}", better))
    rows = []
    for key, label, better in keys:
        scale = 2**-20 if key == "resources.size_on_disk_bytes" else 1.0
        values = {e.label: (None if (v := _get(e, key)) is None else v * scale) for e in c.entries}
        if all(v is None for v in values.values()):
            continue
        base = values[c.baseline.label]
        deltas = {}
        for lab, v in values.items():
            if v is None or base is None:
                deltas[lab] = None
            else:
                deltas[lab] = {"abs": v - base, "rel": (v - base) / base if base else None}
        rows.append({"key": key, "label": label, "better": better, "values": values, "deltas": deltas})
    return rows


def _rel(new: float | None, base: float | None) -> float | None:
    return None if new is None or base is None or base == 0 else (new - base) / base


def _evaluate_gates(c: Comparison, g: Gates) -> list[GateResult]:
    out: list[GateResult] = []
    if not g.any():
        return out
    if c.warnings and not g.allow_mismatch:
        out.append(GateResult("comparable", "*", False, "; ".join(c.warnings) + " (pass --allow-mismatch to gate anyway)"))
    base = c.baseline
    pct = lambda x: "n/a" if x is None else f"{x:+.1%}"  # noqa: E731

    def check(name: str, label: str, value: float | None, limit: float, fmt) -> None:
        if value is None:
            out.append(GateResult(name, label, False, "metric missing from a report, cannot verify"))
        else:
            out.append(GateResult(name, label, value <= limit, f"{fmt(value)} (limit {fmt(limit)})"))

    served_gates = ("max-f1-drop", "max-em-drop", "max-mrr-drop", "max-p50-regression", "max-p99-regression",
                    "max-ttft-regression", "min-f1", "max-p50-ms")
    for e in c.entries:
        q, bq = e.report.quality, base.report.quality
        if e is not base and g.max_ppl_increase is not None:
            check("max-ppl-increase", e.label, _rel(q.val_ppl, bq.val_ppl), g.max_ppl_increase, pct)
        if e.report.latency.not_served:
            out.extend(GateResult(name, e.label, True, f"skipped: not served ({e.report.latency.not_served})", True)
                       for name in served_gates if getattr(g, name.replace("-", "_")) is not None)
            continue
        if e is not base:
            for name, attr, limit in (("max-f1-drop", "qa_f1", g.max_f1_drop), ("max-em-drop", "qa_exact_match", g.max_em_drop),
                                      ("max-mrr-drop", "mrr", g.max_mrr_drop)):
                if limit is not None:
                    new, old = getattr(q, attr), getattr(bq, attr)
                    check(name, e.label, None if new is None or old is None else old - new, limit, lambda x: f"{x:+.4f}")
            for name, metric, limit in (("max-p50-regression", "e2e_ms.p50", g.max_p50_regression),
                                        ("max-p99-regression", "e2e_ms.p99", g.max_p99_regression),
                                        ("max-ttft-regression", "ttft_ms.p50", g.max_ttft_regression)):
                if limit is None:
                    continue
                for point in c.common_points:
                    key = f"rag.{point}.{metric}"
                    check(name, f"{e.label} @ {point}", _rel(_get(e, key), _get(base, key)), limit, pct)
        if g.max_errors is not None:
            total = sum(p.errors for p in e.report.latency.points) + e.report.quality.errors
            check("max-errors", e.label, float(total), float(g.max_errors), lambda x: f"{x:.0f}")
        if g.min_f1 is not None:
            check("min-f1", e.label, None if q.qa_f1 is None else -q.qa_f1, -g.min_f1, lambda x: f"{-x:.4f}")
        if g.max_p50_ms is not None:
            for point in c.common_points:
                check("max-p50-ms", f"{e.label} @ {point}", _get(e, f"rag.{point}.e2e_ms.p50"), g.max_p50_ms,
                      lambda x: f"{x:.1f} ms")
    return out


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Labels not dominated in (latency: lower better, quality: higher better)."""
    front = []
    for a, (lat_a, q_a) in points.items():
        dominated = any(lat_b <= lat_a and q_b >= q_a and (lat_b < lat_a or q_b > q_a)
                        for b, (lat_b, q_b) in points.items() if b != a)
        if not dominated:
            front.append(a)
    return front


def quality_score(e: Entry) -> float | None:
    """The quality axis of the scatter and the Pareto front: QA token F1 (end-to-end answer quality)."""
    return e.report.quality.qa_f1


def _recommend(c: Comparison, g: Gates) -> str:
    if c.headline_point is None:
        return "No shared load point: cannot rank the variants by latency."
    key = f"rag.{c.headline_point}.e2e_ms.p50"
    ppl_budget = g.max_ppl_increase if g.max_ppl_increase is not None else DEFAULT_PPL_BUDGET
    f1_budget = g.max_f1_drop if g.max_f1_drop is not None else DEFAULT_F1_BUDGET
    bq = c.baseline.report.quality
    within = []
    for e in c.entries:
        q = e.report.quality
        inc = _rel(q.val_ppl, bq.val_ppl)
        if inc is not None and inc > ppl_budget:
            continue
        if q.qa_f1 is not None and bq.qa_f1 is not None and bq.qa_f1 - q.qa_f1 > f1_budget:
            continue
        if _get(e, key) is not None:
            within.append(e)
    if not within:
        return "No variant stays within the quality budget; keep the baseline."
    best = min(within, key=lambda e: _get(e, key))
    speedup = _get(c.baseline, key) / _get(best, key) if _get(best, key) else float("nan")
    flag = " (reports not comparable: see warnings)" if c.warnings else ""
    return (f"Recommended: {best.label} — fastest within the quality budget (perplexity +{ppl_budget:.0%}, "
            f"F1 -{f1_budget:.2f}): p50 end-to-end {_get(best, key):.0f} ms at {c.headline_point}, "
            f"{speedup:.2f}x vs baseline {c.baseline.label}{flag}.")


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
    c.rows = _metric_rows(c)
    c.gates = _evaluate_gates(c, gates)
    if headline:
        pts = {e.label: (_get(e, f"rag.{headline}.e2e_ms.p50"), quality_score(e)) for e in entries}
        c.pareto = pareto_front({k: v for k, v in pts.items() if v[0] is not None and v[1] is not None})
    c.recommendation = _recommend(c, gates)
    return c
