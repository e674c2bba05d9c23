"""Comparison figures (matplotlib, Agg backend), returned as PNG bytes so the HTML can embed them.

- stage bars: where one request's time goes at a load point (endpoint stages, generation after the first
  token, endpoint overhead, and the client/HTTP remainder of the client-measured end-to-end time);
- latency CDF: empirical CDF of client-side end-to-end latency per variant (from the raw records);
- quality vs latency: each variant as a point, the Pareto front joined by a line;
- size on disk.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.evaluation.compare import Comparison

STAGE_PARTS = ("embed", "search", "prompt", "llm_ttft", "generation", "endpoint other", "client/HTTP")


def _figure(width: float = 7.5, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def stage_parts(point) -> dict[str, float]:
    """Mean time per part (ms) at one load point, parts summing to the mean client e2e latency."""
    st = {k: (v.mean or 0.0) for k, v in point.stages.items()}
    parts = {k: st.get(k, 0.0) for k in ("embed", "search", "prompt", "llm_ttft")}
    parts["generation"] = max(0.0, st.get("llm_total", 0.0) - st.get("llm_ttft", 0.0))
    parts["endpoint other"] = max(0.0, st.get("total", 0.0) - sum(parts.values()))
    parts["client/HTTP"] = max(0.0, (point.e2e_ms.mean or 0.0) - st.get("total", 0.0))
    return parts


def stage_bars(c: "Comparison") -> bytes | None:
    if c.headline_point is None:
        return None
    served = [e for e in c.entries if e.point(c.headline_point)]  # quality-only reports have no points
    plt, fig, ax = _figure(height=0.7 * len(served) + 1.8)
    labels = [e.label for e in served]
    left = [0.0] * len(labels)
    colors = plt.get_cmap("tab10").colors
    for i, part in enumerate(STAGE_PARTS):
        widths = [stage_parts(e.point(c.headline_point))[part] for e in served]
        ax.barh(labels, widths, left=left, label=part, color=colors[i % 10])
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel(f"mean time per request at {c.headline_point} (ms)")
    ax.set_title("Where the time goes")
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.08))
    return _png(plt, fig)


def latency_cdf(c: "Comparison") -> bytes | None:
    points = c.common_points[:4]
    if not points or not any(e.records for e in c.entries):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(points), figsize=(3.6 * len(points) + 0.5, 3.4), dpi=100, squeeze=False)
    for ax, point in zip(axes[0], points):
        for e in c.entries:
            xs = sorted(r["e2e_ms"] for r in e.records
                        if r.get("point") == point and r.get("target") == "rag" and r.get("ok"))
            if xs:
                ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=e.label)
        ax.set_title(point)
        ax.set_xlabel("end-to-end latency (ms)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of requests")
    axes[0][-1].legend(fontsize=7)
    return _png(plt, fig)


def quality_vs_latency(c: "Comparison") -> bytes | None:
    from toolkit.evaluation.compare import _get, quality_score

    if c.headline_point is None:
        return None
    key = f"rag.{c.headline_point}.e2e_ms.p50"
    pts = {e.label: (_get(e, key), quality_score(e)) for e in c.entries}
    pts = {k: v for k, v in pts.items() if v[0] is not None and v[1] is not None}
    if not pts:
        return None
    plt, fig, ax = _figure()
    for label, (x, y) in pts.items():
        on = label in c.pareto
        ax.scatter([x], [y], s=60 if on else 30, marker="o" if on else "x", zorder=3)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    front = sorted((pts[k] for k in c.pareto if k in pts), key=lambda p: p[0])
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="gray", label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"p50 end-to-end latency at {c.headline_point} (ms)")
    ax.set_ylabel("QA token F1")
    ax.set_title("Quality vs latency")
    ax.grid(alpha=0.3)
    return _png(plt, fig)


def size_bars(c: "Comparison") -> bytes | None:
    sizes = {e.label: e.report.resources.size_on_disk_bytes for e in c.entries}
    if all(v is None for v in sizes.values()):
        return None
    plt, fig, ax = _figure(height=0.5 * len(sizes) + 1.6)
    ax.barh(list(sizes), [(v or 0) / 2**20 for v in sizes.values()], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("model size on disk (MiB)")
    ax.set_title("Size on disk")
    return _png(plt, fig)


def all_figures(c: "Comparison") -> dict[str, bytes]:
    """name -> PNG bytes, for the figures that have data."""
    figs = {"stages": stage_bars(c), "latency_cdf": latency_cdf(c), "quality_vs_latency": quality_vs_latency(c),
            "size": size_bars(c)}
    return {k: v for k, v in figs.items() if v is not None}
