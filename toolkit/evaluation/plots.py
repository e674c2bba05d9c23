"""Comparison figures (matplotlib, Agg backend), returned as PNG bytes so the HTML can embed them.

- stage bars: where one request's time goes at a load point (endpoint stages, generation after the first
  token, endpoint overhead, and the client/HTTP remainder of the client-measured end-to-end time);
- latency CDF: empirical CDF of client-side end-to-end latency per variant (from the raw records);
- Pareto: QA F1 against capacity (max load under the SLO, else requests/s), axes from zero, intervals as
  error bars, the quality budget as a shaded band around the baseline's F1;
- goodput per variant and shared load point, with the interval over repeats as whiskers;
- size on disk.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.evaluation.compare import Comparison

BAND_COLOUR = "#cfe3f5"  # the zero-effect band; used nowhere else, so a screenshot test can find the figure
STAGE_PARTS = ("embed", "search", "prompt", "llm_ttft", "generation", "endpoint other", "client/HTTP")


def new_figure(width: float = 7.5, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return plt, fig, ax


def png_bytes(plt, fig) -> bytes:
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


def stage_bars(c: Comparison) -> bytes | None:
    if c.headline_point is None:
        return None
    served = [e for e in c.entries if e.point(c.headline_point)]  # quality-only reports have no points
    plt, fig, ax = new_figure(height=0.7 * len(served) + 1.8)
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
    return png_bytes(plt, fig)


def latency_cdf(c: Comparison) -> bytes | None:
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
    return png_bytes(plt, fig)


def _colours(c: Comparison) -> dict[str, Any]:
    """One colour per variant, the same in every figure."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"].colors
    return {e.label: cmap[i % 10] for i, e in enumerate(c.entries)}


def pareto_axes(c: Comparison):
    """The Pareto figure, not yet rendered: ``(plt, fig, ax)`` or None without data. QA F1 (y) against the
    capacity axis (x) of :func:`toolkit.evaluation.capacity.capacity`; both axes start at zero so a small
    difference looks small, and the band of baseline F1 ± the F1 budget shows where a change is within the
    quality budget. Error bars: F1's bootstrap interval over questions; requests/s' t interval over repeats,
    or for a max load the search bracket (last load meeting the SLO to the first load missing it)."""
    from toolkit.evaluation.capacity import capacity, quality_interval
    from toolkit.evaluation.compare import quality_score

    axis, xs = capacity(c)
    by_label = {e.label: e for e in c.entries}
    pts = {k: v for k, v in xs.items() if quality_score(by_label[k]) is not None}
    if not pts:
        return None
    plt, fig, ax = new_figure(height=4.2)
    colours = _colours(c)
    max_load = axis.startswith("max load")
    base_f1 = quality_score(c.baseline)
    tops = [0.05]
    if base_f1 is not None:
        ax.axhspan(max(0.0, base_f1 - c.f1_budget), base_f1 + c.f1_budget, color=BAND_COLOUR, zorder=0, lw=0,
                   label=f"baseline F1 ± {c.f1_budget:.2f} (quality budget)")
        tops.append(base_f1 + c.f1_budget)
    rights = [0.0]
    for label, (x, lo, hi) in pts.items():
        e = by_label[label]
        y, (ylo, yhi) = quality_score(e), quality_interval(e)
        yerr = [[y - ylo], [yhi - y]] if ylo is not None else None
        xerr = [[x - lo], [hi - x]] if lo is not None and hi is not None and not max_load else None
        on = label in c.pareto
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o" if on else "x", ms=8 if on else 6, capsize=3,
                    color=colours[label], zorder=3, clip_on=False)  # a point at F1 = 0 sits on the axis
        if max_load and hi is not None:  # the knee lies somewhere in the bracket
            ax.hlines(y, x, hi, colors=colours[label], linestyles=":", zorder=2)
            ax.plot([hi], [y], "|", ms=10, color=colours[label], zorder=2)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
        tops.append(yhi if yhi is not None else y)
        rights.append(max(v for v in (x, hi if hi is not None else x) if v is not None))
    front = sorted((pts[k][0], quality_score(by_label[k])) for k in c.pareto if k in pts)
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="gray", zorder=1, label="Pareto front")
    if max_load:
        ax.plot([], [], ":", color="gray", label="search bracket (to first failing load)")
    ax.set_xlim(0, max(rights) * 1.15 or 1.0)
    ax.set_ylim(0, min(1.0, max(tops) * 1.25))
    ax.set_xlabel(axis)
    ax.set_ylabel("QA token F1")
    ax.set_title("Quality vs capacity (higher is better on both axes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return plt, fig, ax


def pareto_plot(c: Comparison) -> bytes | None:
    made = pareto_axes(c)
    return None if made is None else png_bytes(made[0], made[1])


def goodput_bars(c: Comparison) -> bytes | None:
    """Goodput (requests/s meeting the SLO) per variant at each shared load point, whiskers = 95% t interval
    over repeats, hatched where the repeats disagree (CV > 10%). Without an SLO: requests/s, so titled."""
    from toolkit.evaluation.capacity import slo_text, with_ci

    points = c.common_points[:6]
    served = [e for e in c.served if any(e.point(p) for p in points)]
    if not points or not served:
        return None
    has_slo = any(p.slo is not None for e in served for p in e.report.latency.points)
    key = "slo.goodput_req_s" if has_slo else "throughput.req_s"
    plt, fig, ax = new_figure(height=4.2)
    colours = _colours(c)
    width = 0.8 / len(served)
    reps = 1
    for i, e in enumerate(served):
        xs, hs, errs, hatches = [], [], [[], []], []
        for j, name in enumerate(points):
            p = e.point(name)
            value, lo, hi, n = with_ci(p, key) if p is not None else (None, None, None, 1)
            if value is None:
                continue
            reps = max(reps, n)
            xs.append(j - 0.4 + width * (i + 0.5))
            hs.append(value)
            errs[0].append(value - lo if lo is not None else 0.0)
            errs[1].append(hi - value if hi is not None else 0.0)
            hatches.append("//" if key in p.unstable else "")
        whiskers = errs if any(errs[0]) or any(errs[1]) else None  # single runs: no interval to draw
        bars = ax.bar(xs, hs, width=width * 0.95, yerr=whiskers, capsize=3, color=colours[e.label], label=e.label)
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
    ax.set_xticks(range(len(points)), points)
    ax.set_ylim(bottom=0)
    slo = next((e.report.latency.slo for e in served if e.report.latency.slo), None)
    ax.set_ylabel("requests/s meeting the SLO" if has_slo else "requests/s")
    ax.set_title(f"Goodput under the SLO ({slo_text(slo)})" if has_slo else "Throughput (no SLO in these reports)",
                 fontsize=10)
    note = f"whiskers: 95% CI over {reps} repeats; hatched: CV > 10%" if reps > 1 else "single runs: no interval"
    ax.text(0.99, 0.98, note, transform=ax.transAxes, ha="right", va="top", fontsize=7, color="#555")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="lower right")
    return png_bytes(plt, fig)


def size_bars(c: Comparison) -> bytes | None:
    sizes = {e.label: e.report.resources.size_on_disk_bytes for e in c.entries}
    if all(v is None for v in sizes.values()):
        return None
    plt, fig, ax = new_figure(height=0.5 * len(sizes) + 1.6)
    ax.barh(list(sizes), [(v or 0) / 2**20 for v in sizes.values()], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("model size on disk (MiB)")
    ax.set_title("Size on disk")
    return png_bytes(plt, fig)


def all_figures(c: Comparison) -> dict[str, bytes]:
    """name -> PNG bytes, for the figures that have data."""
    figs = {"pareto": pareto_plot(c), "goodput": goodput_bars(c), "stages": stage_bars(c),
            "latency_cdf": latency_cdf(c), "size": size_bars(c)}
    return {k: v for k, v in figs.items() if v is not None}
