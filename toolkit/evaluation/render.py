"""Render a :class:`~toolkit.evaluation.compare.Comparison` as Markdown (figures as sibling PNG files) and as
one self-contained HTML file (figures embedded as base64 data URIs, inline CSS, no scripts).

Both lead with what a reader needs to decide, in this order: the verdict (recommendation, gate summary
with the failed and inconclusive gates, warnings and notes on how far to trust the numbers), the Pareto
figure of quality against capacity, goodput per variant, the stage breakdown; then every table inside a
collapsible ``<details>`` section (GitHub renders the same tags in Markdown).
"""

from __future__ import annotations

import base64
import html
from typing import Any

from toolkit.evaluation.capacity import comparable_max_loads, cv_flag, slo_text, with_ci
from toolkit.evaluation.compare import Comparison
from toolkit.evaluation.gates import FAIL, INCONCLUSIVE, summary

FIGURE_TITLES = {"pareto": "Quality vs capacity (Pareto front dashed)", "goodput": "Goodput per variant",
                 "stages": "Where the time goes (stage breakdown)", "latency_cdf": "End-to-end latency CDF",
                 "size": "Size on disk"}
LEAD, MAIN = ("pareto", "goodput"), ("stages",)  # other figures go in the last <details>
VERDICT_GATES = 6  # failed/inconclusive gates listed in the verdict; all of them are in the gates table
VERDICT_NOTES = 5  # the verdict stays short enough for the Pareto figure to show on a laptop's first screen
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


def gate_line(g) -> str:
    return f"{g.outcome} {g.gate} [{g.label}]: {g.detail}"


def verdict(c: Comparison) -> dict[str, Any]:
    """The lead of the report: recommendation, gate summary and the gates that did not pass, warnings."""
    bad = [g for g in c.gates if g.outcome == FAIL] + [g for g in c.gates if g.outcome == INCONCLUSIVE]
    lines = [gate_line(g) for g in bad[:VERDICT_GATES]]
    if len(bad) > VERDICT_GATES:
        lines.append(f"… and {len(bad) - VERDICT_GATES} more (see All gates)")
    env = c.baseline.report.environment
    notes = c.notes + [f"Not served here (quality only): {x}" for x in _not_served(c)]
    if len(notes) > VERDICT_NOTES:
        notes = notes[:VERDICT_NOTES - 1] + [f"… and {len(notes) - VERDICT_NOTES + 1} more notes (see All notes)"]
    return {"recommendation": c.recommendation, "gates": summary(c.gates) if c.gates else "", "gate_lines": lines,
            "warnings": c.warnings, "notes": notes,
            "meta": f"Baseline: {c.baseline.label}; suite '{env.suite.name}' ({env.suite.sha256}); hardware: "
                    f"{env.fingerprint}; prefix caching {'on' if env.prefix_caching else 'off'}."}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _not_served(c: Comparison) -> list[str]:
    """Variants with a quality-only report (``eval --no-serve``): why they have no latency numbers."""
    return [f"{x.label}: {x.report.latency.not_served}" for x in c.entries if x.report.latency.not_served]


# --- tables ------------------------------------------------------------------------------------------------


def capacity_table(c: Comparison) -> tuple[list[str], list[list[str]]] | None:
    """Per variant: max load under the SLO, its ratio to the baseline's, where the search stopped."""
    loads = comparable_max_loads(c)
    if not any(e.max_load for e in c.entries):
        return None
    base = loads.get(c.baseline.label)
    head = ["variant", "max load under the SLO", "vs baseline", "first failing load", "SLO", "search ended"]
    rows = []
    for e in c.entries:
        m = e.max_load
        if m is None:
            rows.append([e.label, "not searched", "–", "–", "–", "–"])
            continue
        value = f"{m.value:g} {m.unit}" if m.value is not None else "none (first load tried missed)"
        ratio = (f"{m.value / base.value:.2f}x" if e.label in loads and base and base.value and m.value is not None
                 else "not comparable" if e.label not in loads else "–")
        rows.append([e.label, value, ratio, fmt(m.first_failing), slo_text(m.slo), m.stopped or "–"])
    return head, rows


def goodput_table(c: Comparison) -> tuple[list[str], list[list[str]]] | None:
    """Per variant and shared point: goodput [95% CI over repeats], share of good requests, SLO met or not,
    with the point's unstable flag."""
    served = c.served
    if not any(p.slo for e in served for p in e.report.latency.points):
        return None
    head = ["variant"] + [f"{name}: goodput req/s, good share, SLO" for name in c.common_points]
    rows = []
    for e in served:
        cells = [e.label]
        for name in c.common_points:
            p = e.point(name)
            if p is None or p.slo is None:
                cells.append("–")
                continue
            value, lo, hi, n = with_ci(p, "slo.goodput_req_s")
            ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""
            share = f"{p.slo.good_share:.0%}" if p.slo.good_share is not None else "–"
            flag = " " + cv_flag(p, "slo.goodput_req_s") if cv_flag(p, "slo.goodput_req_s") else ""
            cells.append(f"{fmt(value)}{ci}{flag}; {share} good; {'meets' if p.slo.meets else 'misses'} "
                         f"p{p.slo.percentile:g}" + (f" ({n} repeats)" if n > 1 else ""))
        rows.append(cells)
    return head, rows


def metric_table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    head = ["metric", "better"] + [f"{e.label}{' (baseline)' if e is c.baseline else ''}" for e in c.entries]
    rows = []
    for r in c.rows:
        cells = [r["label"], r["better"]]
        for e in c.entries:
            v = fmt(r["values"][e.label])
            if e is not c.baseline and r["deltas"][e.label] is not None:
                v += f" [{fmt_delta(r['deltas'][e.label])}]"
            if r.get("flags", {}).get(e.label):
                v += f" {r['flags'][e.label]}"
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
        head = (["variant"] + [f"{m.split('_')[0]} {s}" for m, s in PERCENTILE_COLS]
                + ["req/s", "out tok/s", "errors", "repeats", "unstable (CV > 10%)"])
        rows = []
        for e in c.entries:
            p = e.point(name, target)
            if p is None:
                continue
            rows.append([e.label] + [fmt(getattr(getattr(p, m), s)) for m, s in PERCENTILE_COLS]
                        + [fmt(p.throughput.req_s), fmt(p.throughput.output_tok_s), str(p.errors), str(p.repeats),
                           ", ".join(f"{k} {cv_flag(p, k)}" for k in p.unstable) or "–"])
        title = f"{'RAG endpoint' if target == 'rag' else 'engine alone'} — {name}"
        out.append((title, head, rows))
    return out


def gates_table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    return ["outcome", "gate", "variant", "why"], [[g.outcome, g.gate, g.label, g.detail] for g in c.gates]


def sections(c: Comparison) -> list[tuple[str, bool, list[tuple[str, list[str], list[list[str]]]]]]:
    """The collapsible sections: (summary, open?, [(subtitle, head, rows)])."""
    out = []
    cap = [("Max load under the SLO", *t) for t in [capacity_table(c)] if t]
    cap += [("Goodput per shared load point (mean [95% CI] over repeats)", *t) for t in [goodput_table(c)] if t]
    if cap:
        out.append(("Capacity and goodput per variant", True, cap))
    if c.gates:
        out.append((f"All gates ({summary(c.gates)})", False, [("", *gates_table(c))]))
    notes = c.notes + [f"Not served here (quality only): {x}" for x in _not_served(c)]
    if len(notes) > VERDICT_NOTES:
        out.append(("All notes", False, [("", ["note"], [[n] for n in notes])]))
    out.append(("Metrics (delta vs baseline in brackets)", False, [("", *metric_table(c))]))
    out.append(("Latency percentiles per load point (ms)", False, percentile_tables(c)))
    return out


# --- Markdown ----------------------------------------------------------------------------------------------


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: s.replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(c: Comparison, figure_files: dict[str, str]) -> str:
    v = verdict(c)
    parts = ["# Eval comparison", "", f"**{v['recommendation']}**", ""]
    if v["gates"]:
        parts += [f"**{_cap(v['gates'])}**", ""] + [f"- {line}" for line in v["gate_lines"]] + [""]
    if v["warnings"]:
        parts += ["**Warnings: not like-for-like**", ""] + [f"- {w}" for w in v["warnings"]] + [""]
    if v["notes"]:
        parts += ["**Notes: how far to trust these numbers**", ""] + [f"- {n}" for n in v["notes"]] + [""]
    parts += [v["meta"], ""]
    for name in (*LEAD, *MAIN):
        if name in figure_files:
            parts += [f"![{FIGURE_TITLES[name]}]({figure_files[name]})", ""]
    if c.pareto:
        parts += [f"Pareto front (quality vs capacity): {', '.join(c.pareto)}", ""]
    for title, is_open, tables in sections(c):
        parts += [f"<details{' open' if is_open else ''}><summary>{title}</summary>", ""]
        for sub, head, rows in tables:
            parts += ([f"**{sub}**", ""] if sub else []) + [_md_table(head, rows), ""]
        parts += ["</details>", ""]
    more = [n for n in figure_files if n not in (*LEAD, *MAIN)]
    if more:
        parts += ["<details><summary>More figures</summary>", ""]
        parts += [f"![{FIGURE_TITLES.get(n, n)}]({figure_files[n]})\n" for n in more] + ["</details>", ""]
    return "\n".join(parts)


# --- HTML --------------------------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;margin:1em 2em;color:#222;max-width:1240px}h1{margin:0.2em 0 0.4em;font-size:1.6em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#eef}.warn{background:#fff3cd;padding:0.3em 1em;border:1px solid #e0c060;margin:0.4em 0}
.fail{color:#b00020;font-weight:bold}.inconclusive{color:#8a5a00;font-weight:bold}.rec{font-size:1.1em;background:#e8f5e9;padding:0.5em 1em;border-left:4px solid #2e7d32;margin:0.3em 0}
#verdict ul{margin:0.2em 0;padding-left:1.4em;font-size:14px}.meta{color:#555;font-size:13px;margin:0.3em 0}.summary{margin:0.4em 0;font-weight:bold}
.figs{display:flex;flex-wrap:wrap;gap:1em;margin-top:0.6em}figure{margin:0;flex:1 1 520px;min-width:0}
img{max-width:100%;border:1px solid #ddd;margin-bottom:0.8em}details{margin:0.6em 0}summary{font-weight:bold;font-size:1.1em;cursor:pointer}"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{e(x)}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    alt = html.escape(FIGURE_TITLES.get(name, name))
    return f"<figure id='fig-{name}'><img alt='{alt}' src='data:image/png;base64,{data}'></figure>"


def to_html(c: Comparison, figures: dict[str, bytes]) -> str:
    e, v = html.escape, verdict(c)
    lead = [f"<p class='rec'>{e(v['recommendation'])}</p>"]
    if v["gates"]:
        lead.append(f"<p class='summary'>{e(_cap(v['gates']))}</p>")
        lead.append("<ul>" + "".join(f"<li class='{line.split(' ', 1)[0].lower()}'>{e(line)}</li>"
                                     for line in v["gate_lines"]) + "</ul>")
    if v["warnings"]:
        lead.append("<div class='warn'><b>Warnings: not like-for-like</b><ul>"
                    + "".join(f"<li>{e(w)}</li>" for w in v["warnings"]) + "</ul></div>")
    if v["notes"]:
        lead.append("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in v["notes"]) + "</ul>")
    lead.append(f"<p class='meta'>{e(v['meta'])}</p>")
    body = ["<h1>Eval comparison</h1>", f"<section id='verdict'>{''.join(lead)}</section>"]
    body.append("<div class='figs'>" + "".join(_img(n, figures[n]) for n in LEAD if n in figures) + "</div>")
    body += [_img(n, figures[n]) for n in MAIN if n in figures]
    if c.pareto:
        body.append(f"<p class='meta'>Pareto front (quality vs capacity): {e(', '.join(c.pareto))}</p>")
    for title, is_open, tables in sections(c):
        inner = "".join((f"<h3>{e(sub)}</h3>" if sub else "") + _html_table(head, rows) for sub, head, rows in tables)
        body.append(f"<details{' open' if is_open else ''}><summary>{e(title)}</summary>{inner}</details>")
    more = [n for n in figures if n not in (*LEAD, *MAIN)]
    if more:
        body.append("<details><summary>More figures</summary>" + "".join(
            f"<h3>{e(FIGURE_TITLES.get(n, n))}</h3>" + _img(n, figures[n]) for n in more) + "</details>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Eval comparison</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
