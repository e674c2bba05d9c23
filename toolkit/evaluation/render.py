"""Render a :class:`~toolkit.evaluation.compare.Comparison` as Markdown (figures as sibling PNG files) and as
one self-contained HTML file (figures embedded as base64 data URIs, inline CSS, no scripts)."""

from __future__ import annotations

import base64
import html
from typing import Any

from toolkit.evaluation.compare import Comparison

FIGURE_TITLES = {"stages": "Stage time (stacked)", "latency_cdf": "End-to-end latency CDF",
                 "quality_vs_latency": "Quality vs latency (Pareto front dashed)", "size": "Size on disk"}
PERCENTILE_COLS = [("ttft_ms", "p50"), ("ttft_ms", "p90"), ("ttft_ms", "p99"), ("tpot_ms", "p50"), ("itl_ms", "p50"),
                   ("e2e_ms", "mean"), ("e2e_ms", "p50"), ("e2e_ms", "p90"), ("e2e_ms", "p99")]


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v.is_integer():
            return f"{int(v):,}"
        return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def fmt_delta(d: dict[str, float | None] | None) -> str:
    if d is None:
        return "–"
    rel = d.get("rel")
    return f"{fmt(d['abs']) if d['abs'] < 0 else '+' + fmt(d['abs'])}" + (f" ({rel:+.1%})" if rel is not None else "")


def metric_table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    head = ["metric", "better"] + [f"{e.label}{' (baseline)' if e is c.baseline else ''}" for e in c.entries]
    rows = []
    for r in c.rows:
        cells = [r["label"], r["better"]]
        for e in c.entries:
            v = fmt(r["values"][e.label])
            if e is not c.baseline and r["deltas"][e.label] is not None:
                v += f" [{fmt_delta(r['deltas'][e.label])}]"
            cells.append(v)
        rows.append(cells)
    return head, rows


def percentile_tables(c: Comparison) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    names = []
    for e in c.entries:
        for p in [*e.report.latency.points, *e.report.latency.engine_alone]:
            if (p.target, p.name) not in names:
                names.append((p.target, p.name))
    for target, name in names:
        head = ["variant"] + [f"{m.split('_')[0]} {s}" for m, s in PERCENTILE_COLS] + ["req/s", "out tok/s", "errors"]
        rows = []
        for e in c.entries:
            p = e.point(name, target)
            if p is None:
                continue
            rows.append([e.label] + [fmt(getattr(getattr(p, m), s)) for m, s in PERCENTILE_COLS]
                        + [fmt(p.throughput.req_s), fmt(p.throughput.output_tok_s), str(p.errors)])
        title = f"{'RAG endpoint' if target == 'rag' else 'engine alone'} — {name}"
        out.append((title, head, rows))
    return out


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _gate_lines(c: Comparison) -> list[str]:
    return [f"{'SKIP' if g.skipped else 'PASS' if g.ok else 'FAIL'} {g.gate} [{g.label}]: {g.detail}" for g in c.gates]


def _header(c: Comparison) -> list[str]:
    env = c.baseline.report.environment
    return [f"Baseline: {c.baseline.label}; suite '{env.suite.name}' ({env.suite.sha256}); "
            f"hardware: {env.fingerprint}; prefix caching {'on' if env.prefix_caching else 'off'}."]


def _not_served(c: Comparison) -> list[str]:
    """Variants with a quality-only report (``eval --no-serve``): why they have no latency numbers."""
    return [f"{x.label}: {x.report.latency.not_served}" for x in c.entries if x.report.latency.not_served]


def to_markdown(c: Comparison, figure_files: dict[str, str]) -> str:
    parts = ["# Eval comparison", "", *_header(c), "", f"**{c.recommendation}**", ""]
    if _not_served(c):
        parts += ["Not served here (quality only):", ""] + [f"- {x}" for x in _not_served(c)] + [""]
    if c.warnings:
        parts += ["## Warnings: not like-for-like", ""] + [f"- {w}" for w in c.warnings] + [""]
    if c.gates:
        parts += ["## Gates", ""] + [f"- {line}" for line in _gate_lines(c)] + [""]
    parts += ["## Metrics (delta vs baseline in brackets)", "", _md_table(*metric_table(c)), ""]
    parts += ["## Latency percentiles per load point (ms)", ""]
    for title, head, rows in percentile_tables(c):
        parts += [f"### {title}", "", _md_table(head, rows), ""]
    if c.pareto:
        parts += [f"Pareto front (quality vs latency): {', '.join(c.pareto)}", ""]
    for name, file in figure_files.items():
        parts += [f"## {FIGURE_TITLES.get(name, name)}", "", f"![{name}]({file})", ""]
    return "\n".join(parts)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#eef}.warn{background:#fff3cd;padding:0.5em 1em;border:1px solid #e0c060}
.fail{color:#b00020;font-weight:bold}.pass{color:#1b7f2a}.skip{color:#777}.rec{font-size:1.1em;background:#e8f5e9;padding:0.6em 1em;border-left:4px solid #2e7d32}
img{max-width:100%;border:1px solid #ddd;margin-bottom:1.5em}"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{e(x)}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def to_html(c: Comparison, figures: dict[str, bytes]) -> str:
    e = html.escape
    body = ["<h1>Eval comparison</h1>", *(f"<p>{e(x)}</p>" for x in _header(c)), f"<p class='rec'>{e(c.recommendation)}</p>"]
    if _not_served(c):
        body.append("<p>Not served here (quality only):</p><ul>" + "".join(f"<li>{e(x)}</li>" for x in _not_served(c))
                    + "</ul>")
    if c.warnings:
        body.append("<div class='warn'><h2>Warnings: not like-for-like</h2><ul>"
                    + "".join(f"<li>{e(w)}</li>" for w in c.warnings) + "</ul></div>")
    if c.gates:
        body.append("<h2>Gates</h2><ul>" + "".join(
            f"<li class='{'skip' if g.skipped else 'pass' if g.ok else 'fail'}'>{e(line)}</li>" for g, line in zip(c.gates, _gate_lines(c))) + "</ul>")
    body += ["<h2>Metrics (delta vs baseline in brackets)</h2>", _html_table(*metric_table(c)),
             "<h2>Latency percentiles per load point (ms)</h2>"]
    for title, head, rows in percentile_tables(c):
        body += [f"<h3>{e(title)}</h3>", _html_table(head, rows)]
    if c.pareto:
        body.append(f"<p>Pareto front (quality vs latency): {e(', '.join(c.pareto))}</p>")
    for name, png in figures.items():
        data = base64.b64encode(png).decode()
        body += [f"<h2>{e(FIGURE_TITLES.get(name, name))}</h2>", f"<img alt='{e(name)}' src='data:image/png;base64,{data}'>"]
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Eval comparison</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
