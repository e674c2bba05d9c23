"""Service-level objectives, goodput and SLO attainment of a load point.

Definitions (DistServe, Zhong et al. 2024, as in vLLM's ``bench serve --goodput``):
- An SLO is a latency threshold per metric: ``ttft_ms`` (time to first token), ``tpot_ms`` (time per output
  token after the first, vLLM's definition), ``e2e_ms`` (request sent to last chunk, client side) and, for
  the RAG endpoint, ``retrieval_ms`` (the endpoint's embed + search stages).
- A request is *good* when it succeeded and met every threshold; **goodput** is good requests per second of
  the load point's wall time. A failed request meets nothing. A one-token answer has no TPOT and meets the
  TPOT threshold (vLLM counts its TPOT as 0).
- A load point **meets the SLO at percentile P** when, for every metric, at least P% of its requests met that
  metric's threshold (equivalently: the metric's P-th percentile, counting failures as infinitely slow, is
  within the threshold). ``toolkit eval --find-max-load`` searches the highest load that does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.stats import percentile

METRICS = ("ttft_ms", "tpot_ms", "e2e_ms", "retrieval_ms")
_ALIASES = {"ttft": "ttft_ms", "tpot": "tpot_ms", "e2e": "e2e_ms", "e2el": "e2e_ms", "retrieval": "retrieval_ms"}
_ITEM = re.compile(r"^(?P<name>[a-z0-9]+?)(?:_ms)?(?:_p(?P<pct>\d+(?:\.\d+)?))?$")


def parse_slo(text: str, default_percentile: float = 95.0) -> dict[str, Any]:
    """``"ttft:500,tpot:50,e2e:2000"`` or ``"e2e_p95:2000,ttft_p95:800"`` -> the suite's ``slo`` section as a
    dict (thresholds in ms, one percentile). One-line :class:`ToolkitError` naming the bad item."""
    out: dict[str, Any] = {}
    pct: float | None = None
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = item.partition(":")
        m = _ITEM.match(name.strip().lower())
        metric = _ALIASES.get(m.group("name")) if m else None
        if not sep or metric is None:
            raise ToolkitError(f"--slo: '{item}' is not METRIC:MS with METRIC one of ttft, tpot, e2e, retrieval "
                               "(optionally suffixed _pNN, e.g. e2e_p95:2000)")
        try:
            ms = float(value)
        except ValueError:
            raise ToolkitError(f"--slo: '{item}': threshold '{value}' is not a number of milliseconds") from None
        if ms <= 0:
            raise ToolkitError(f"--slo: '{item}': threshold must be > 0 ms")
        if m.group("pct") is not None:
            p = float(m.group("pct"))
            if not 0 < p <= 100:
                raise ToolkitError(f"--slo: '{item}': percentile must be in (0, 100]")
            if pct is not None and p != pct:
                raise ToolkitError(f"--slo: '{item}': one percentile per SLO (already p{pct:g})")
            pct = p
        out[metric] = ms
    if not out:
        raise ToolkitError("--slo: give at least one threshold, e.g. ttft:500,tpot:50,e2e:2000")
    out["percentile"] = pct if pct is not None else default_percentile
    return out


def thresholds(slo: Any) -> dict[str, float]:
    """{metric: ms} of an SLO section (pydantic model or dict), unset metrics left out."""
    data = slo.model_dump() if hasattr(slo, "model_dump") else dict(slo)
    return {m: float(data[m]) for m in METRICS if data.get(m) is not None}


def request_values(record: dict[str, Any]) -> dict[str, float | None]:
    """The SLO metrics of one load-generator record (None where the record has no such value)."""
    stages = record.get("stages") or {}
    retrieval = (stages["embed"] + stages["search"]) if "embed" in stages and "search" in stages else None
    return {"ttft_ms": record.get("ttft_ms"), "tpot_ms": record.get("tpot_ms"), "e2e_ms": record.get("e2e_ms"),
            "retrieval_ms": retrieval}


def request_meets(record: dict[str, Any], limits: dict[str, float]) -> dict[str, bool]:
    """Per metric: did this request meet its threshold? (False for a failed request.)"""
    if not record.get("ok"):
        return {m: False for m in limits}
    values = request_values(record)
    # a metric the record cannot have (TPOT of a one-token answer, retrieval at the bare engine) is met
    return {m: values[m] is None or values[m] <= limit for m, limit in limits.items()}


def attainment(records: Sequence[dict[str, Any]], slo: Any, duration_s: float) -> dict[str, Any]:
    """SLO attainment of one load point: the report's ``LoadPoint.slo`` (see the module docstring)."""
    data = slo.model_dump() if hasattr(slo, "model_dump") else dict(slo)
    pct = float(data.get("percentile", 95.0))
    limits = thresholds(data)
    meets = [request_meets(r, limits) for r in records]
    n = len(records)
    good = sum(all(m.values()) for m in meets)
    met_share = {m: (sum(x[m] for x in meets) / n if n else None) for m in limits}
    ok = [request_values(r) for r in records if r.get("ok")]
    at_pct = {m: (percentile(vals, pct) if (vals := [v[m] for v in ok if v[m] is not None]) else None)
              for m in limits}
    return {"percentile": pct, "thresholds": limits, "goodput_req_s": good / duration_s if duration_s > 0 else None,
            "good_share": good / n if n else None, "met_share": met_share, "at_percentile": at_pct,
            "meets": bool(n) and all(s is not None and s >= pct / 100 for s in met_share.values())}
