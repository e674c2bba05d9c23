"""The eval report: a versioned pydantic schema, atomic writing, and reading with one-line errors.

``R.json`` holds the summaries (quality, latency per load point, resources, environment); the raw
per-request records go to a sidecar ``R.records.jsonl`` (one JSON object per line) for later analysis.
Both are written to a temporary sibling and renamed into place, so a crash never leaves half a report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from toolkit.config import describe_validation_error
from toolkit.errors import ToolkitError
from toolkit.jsonl import read_jsonl
from toolkit.manifest import atomic_write_text

SCHEMA = "toolkit.eval.report/1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Summary(_Model):
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None  # SLOs are usually stated at p95 (absent from reports written before it was added)
    p99: float | None = None
    n: int = 0


class Throughput(_Model):
    req_s: float | None = None
    output_tok_s: float | None = None


class Interval(_Model):
    """A figure over repeated runs (toolkit.stats.interval): mean, t-based 95% CI of the mean, CV."""

    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    cv: float | None = None
    n: int = 0
    values: list[float] = []


class SLOAttainment(_Model):
    """toolkit.evaluation.slo.attainment of one load point."""

    percentile: float
    thresholds: dict[str, float]
    goodput_req_s: float | None = None
    good_share: float | None = None
    met_share: dict[str, float | None] = {}
    at_percentile: dict[str, float | None] = {}
    meets: bool


class LoadPoint(_Model):
    name: str
    target: str  # "rag" | "engine"
    mode: str  # "concurrency" | "poisson"
    concurrency: int | None = None
    rate_rps: float | None = None
    requests: int
    errors: int
    cached: int = 0  # answers the endpoint served from its response cache (not engine work)
    error_examples: list[str] = []
    duration_s: float
    throughput: Throughput
    ttft_ms: Summary
    tpot_ms: Summary
    itl_ms: Summary
    e2e_ms: Summary
    stages: dict[str, Summary] = {}
    slo: SLOAttainment | None = None  # pooled over the repeats
    repeats: int = 1  # summaries above pool every repeat's requests; intervals are across repeats
    intervals: dict[str, Interval] = {}  # "e2e_ms.p50", "throughput.req_s", "slo.goodput_req_s", ...
    unstable: list[str] = []  # interval keys whose CV exceeds toolkit.stats.UNSTABLE_CV


class MaxLoadTrial(_Model):
    load: float
    meets: bool
    slo: SLOAttainment
    e2e_ms: Summary
    req_s: float | None = None
    errors: int = 0


class MaxLoad(_Model):
    """The highest load meeting the SLO (``eval --find-max-load``) and the trials around the knee."""

    mode: str  # "concurrency" | "poisson"
    unit: str  # "concurrent requests" | "req/s"
    value: float | None = None  # None: even the first load tried missed the SLO
    first_failing: float | None = None  # the lowest load tried that missed it (None: never missed up to limit)
    slo: dict[str, Any]
    trials: list[MaxLoadTrial] = []
    stopped: str = ""  # why the search ended (bracket narrow enough, limit reached, time budget spent)
    wall_s: float | None = None


class ModelInfo(_Model):
    path: str
    name: str
    manifest: dict[str, Any] | None = None


class Quality(_Model):
    val_ppl: float | None = None
    val_ppl_error: str | None = None
    val_ppl_tokens: int = 0
    val_ppl_dtype: str | None = None  # compute dtype of the perplexity pass (toolkit.hardware.compute_dtype)
    val_text: str | None = None
    qa_exact_match: float | None = None
    qa_f1: float | None = None
    context_overlap: float | None = None
    recall_at_k: dict[str, float] = {}
    mrr: float | None = None
    questions: int = 0
    errors: int = 0
    # RAG-OFF and oracle answers ({"closed_book"|"oracle": {qa_f1, qa_exact_match, questions, errors}})
    baselines: dict[str, dict[str, Any]] = {}


class Latency(_Model):
    points: list[LoadPoint] = []
    engine_alone: list[LoadPoint] = []
    not_served: str | None = None  # why there are no points (``eval --no-serve``: a quality-only report)
    slo: dict[str, Any] | None = None  # the suite's SLO section the points were judged against
    max_load: MaxLoad | None = None


class Resources(_Model):
    size_on_disk_bytes: int | None = None
    engine_startup_s: float | None = None
    engine_peak_rss_mb: float | None = None
    gpu_memory_mb: float | None = None
    note: str | None = None


class SuiteInfo(_Model):
    name: str
    path: str
    sha256: str


class Environment(_Model):
    hardware: dict[str, Any]
    fingerprint: str
    git_commit: str | None = None
    suite: SuiteInfo
    prefix_caching: bool
    url: str | None = None
    started_by_eval: bool
    created: str
    wall_s: float | None = None
    load_avg_start: list[float] | None = None  # os.getloadavg() when the eval started / ended: other work on
    load_avg_end: list[float] | None = None  # the machine inflates every latency


class Report(_Model):
    schema_: str = SCHEMA
    model: ModelInfo
    quality: Quality
    latency: Latency
    resources: Resources
    environment: Environment
    records_file: str | None = None

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["schema"] = data.pop("schema_")
        return data


def records_path(report_path: str | Path) -> Path:
    p = Path(report_path)
    return p.with_name(p.name.removesuffix(".json") + ".records.jsonl")


def write_report(report: Report, path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write the sidecar records, then the report (which names them), each atomically."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolkitError(f"{p.parent}: cannot create output directory ({exc.strerror})") from None
    side = records_path(p)
    atomic_write_text(side, "".join(json.dumps(r, default=str) + "\n" for r in records))
    report.records_file = side.name
    atomic_write_text(p, json.dumps(report.to_json(), indent=2) + "\n")
    return p


def read_report(path: str | Path) -> Report:
    """Load and validate a report; any problem is a one-line :class:`ToolkitError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ToolkitError(f"{p}: report not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ToolkitError(f"{p}: corrupt report (not valid JSON{where})") from None
    if not isinstance(data, dict) or "schema" not in data:
        raise ToolkitError(f"{p}: not a toolkit eval report (no 'schema' field)")
    if data["schema"] != SCHEMA:
        raise ToolkitError(f"{p}: report schema '{data['schema']}' is not supported (expected '{SCHEMA}')")
    data = dict(data)
    data["schema_"] = data.pop("schema")
    try:
        return Report.model_validate(data)
    except ValidationError as exc:
        raise ToolkitError(describe_validation_error(str(p), exc)) from None


def read_records(report_path: str | Path, report: Report) -> list[dict[str, Any]]:
    """The sidecar records of a report ([] when the file is gone: plots that need them are skipped)."""
    if not report.records_file:
        return []
    side = Path(report_path).with_name(report.records_file)
    return read_jsonl(side) if side.is_file() else []
