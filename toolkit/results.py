"""One schema for every benchmark's results file, and its one atomic writer.

Modelled on vLLM's ``BenchmarkMetrics`` (benchmarks/serve.py): every figure is a named metric with a unit and,
where it comes from many samples, its percentiles; where it comes from repeated runs, its mean, 95% CI and CV
(:func:`toolkit.stats.interval`). Each file also says where and under what load it was measured: the hardware
report (CPU flags, library versions) and the load average at start and end.

Naming rule: offline throughput at a fixed **batch size** (``labels={"batch_size": 8}``, metric names
``offline_*``) and online throughput at a client **concurrency** (``labels={"concurrency": 8}``, metric names
``online_*``) are different experiments and never share a name. :meth:`BenchRun.add` refuses a metric with
both labels, an ``offline_*`` name with a concurrency (or ``online_*`` with a batch size), and a name already
used for the other kind of experiment.

Usage::

    run = BenchRun("bench-quantize", config={...})      # captures hardware + load average now
    run.add("perplexity", "ppl", value=21.56, labels={"variant": "source"})
    run.add("online_e2e_ms", "ms", samples=[...], labels={"concurrency": 4})  # -> percentile summary
    run.add("offline_decode_tok_s", "tok/s", repeats=[...], labels={"batch_size": 8})  # -> mean, CI, CV
    run.write("artifacts/reports/bench-quantize.json", extra={...})       # load average at end, atomic

The eval report (:mod:`toolkit.evaluation.report`) carries the same pieces: percentile summaries per load
point, intervals across repeats, hardware and load average in ``environment``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "toolkit.results/1"


@dataclass
class Metric:
    name: str
    unit: str  # "ms", "s", "tok/s", "req/s", "ppl", "bytes", "ratio", "share", ...
    value: float | None = None  # a single figure (or the mean of ``repeats``)
    summary: dict[str, Any] | None = None  # per-sample percentiles: toolkit.evaluation.metrics.summarize
    interval: dict[str, Any] | None = None  # across repeats: toolkit.stats.interval
    labels: dict[str, Any] = field(default_factory=dict)  # variant, batch_size | concurrency, point, ...
    definition: str = ""


def environment() -> dict[str, Any]:
    """Hardware report (CPU model and ISA flags, CUDA devices, library versions) and the load average now."""
    from toolkit.hardware import hardware_report

    return {"hardware": hardware_report(), "load_avg_start": list(os.getloadavg()),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


class BenchRun:
    """Collects the metrics of one benchmark run; :meth:`write` stores them in the common schema."""

    def __init__(self, bench: str, config: dict[str, Any] | None = None) -> None:
        self.bench, self.config = bench, dict(config or {})
        self.env = environment()
        self.metrics: list[Metric] = []
        self._t0 = time.perf_counter()

    def add(self, name: str, unit: str, *, value: float | None = None, samples: Sequence[float] | None = None,
            repeats: Sequence[float] | None = None, labels: dict[str, Any] | None = None,
            definition: str = "") -> Metric:
        """Add one metric from a single value, per-request ``samples`` (percentiles) or ``repeats`` (interval)."""
        labels = dict(labels or {})
        kind = _kind(name, labels)
        other = kind and next((m for m in self.metrics if m.name == name and _kind(name, m.labels) not in (None, kind)),
                              None)
        if other:  # one name for two experiments: a reader filtering by name would mix them
            raise ValueError(f"{name}: already used with labels {other.labels}; offline (batch_size) and online "
                             "(concurrency) figures need different names (offline_* / online_*)")
        m = Metric(name, unit, value=value, labels=labels, definition=definition)
        if samples is not None:
            from toolkit.evaluation.metrics import summarize

            m.summary = summarize(samples)
        if repeats is not None:
            from toolkit.stats import interval

            m.interval = interval(repeats)
            m.value = m.interval["mean"] if value is None else value
        self.metrics.append(m)
        return m

    def to_json(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        clash = sorted(set(extra or {}) & {"schema", "bench", "config", "environment", "metrics"})
        if clash:
            raise ValueError(f"extra keys {clash} would replace the schema's own")
        env = {**self.env, "load_avg_end": list(os.getloadavg()),
               "wall_s": round(time.perf_counter() - self._t0, 2)}
        return {"schema": SCHEMA, "bench": self.bench, "config": self.config, "environment": env,
                "metrics": [asdict(m) for m in self.metrics], **(extra or {})}

    def write(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write atomically (:func:`toolkit.atomic.atomic_write_text`); ``extra`` keeps bench-specific detail."""
        from toolkit.atomic import atomic_write_text

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps(self.to_json(extra), indent=2, default=str) + "\n")
        return p


def _kind(name: str, labels: dict[str, Any]) -> str | None:
    """``"offline"``, ``"online"`` or None (neither label); ValueError when the name and labels disagree."""
    offline, online = "batch_size" in labels, "concurrency" in labels
    if offline and online:
        raise ValueError(f"{name}: a metric is offline (batch_size) or online (concurrency), not both")
    if (offline and name.startswith("online_")) or (online and name.startswith("offline_")):
        raise ValueError(f"{name}: the name says {name.split('_')[0]} but the labels say "
                         f"{'batch_size' if offline else 'concurrency'}")
    return "offline" if offline else "online" if online else None


def find(data: dict[str, Any], name: str, **labels: Any) -> list[dict[str, Any]]:
    """The metrics of a results file (or :meth:`BenchRun.to_json`) called ``name`` whose labels include
    ``labels``, in the order they were added."""
    return [m for m in data.get("metrics", []) if m["name"] == name
            and all(m["labels"].get(k) == v for k, v in labels.items())]


def read_results(path: str | Path) -> dict[str, Any]:
    """Load a results file; a one-line :class:`ToolkitError` naming the file when it is not one."""
    from toolkit.errors import ToolkitError

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolkitError(f"{p}: results file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ToolkitError(f"{p}: corrupt results file (not valid JSON)") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ToolkitError(f"{p}: not a toolkit results file (schema '{SCHEMA}' expected)")
    return data
