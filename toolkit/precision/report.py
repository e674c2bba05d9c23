"""Terminal tables for a precision run: the measured candidates with their spread, and the raw kernels."""

from __future__ import annotations

from typing import Any

from toolkit.precision.select import pct, speed


def _spread(s: dict[str, float] | None, fmt: str = "{:.1f}") -> str:
    if not s:
        return "-"
    return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}–{fmt.format(s['max'])}]"


def candidates_table(result: dict[str, Any]):
    """One row per candidate: status, decode per batch, prefill, perplexity and its change, verdict."""
    from rich.markup import escape
    from rich.table import Table

    rows, sel = result["candidates"], result["selection"]
    batches = sorted({int(b) for r in rows for b in ((r.get("throughput") or {}).get("decode") or {})})
    repeats = next((r["throughput"]["repeats"] for r in rows if r.get("throughput")), "?")
    t = Table(title=escape(f"precision on {result['hardware_summary']} — median [min–max] of {repeats} runs; "
                           f"budget |Δppl| ≤ {pct(sel['budget'])}"))
    t.add_column("format")
    t.add_column("status")
    for b in batches:
        t.add_column(f"decode b{b} tok/s", justify="right")
    t.add_column("prefill tok/s", justify="right")
    ratios, base = winner_speedups(result)
    t.add_column(f"speed vs {base}" if base else "speed ratio", justify="right")
    t.add_column("perplexity", justify="right")
    t.add_column("Δppl", justify="right")
    t.add_column("note")
    for r in rows:
        tp = r.get("throughput") or {}
        decode = tp.get("decode") or {}
        delta = r.get("ppl_delta")
        if sel and r["name"] == sel["winner"]:
            note = "[bold green]chosen[/]" if sel["within_budget"] else "[bold yellow]chosen (most accurate)[/]"
        elif r.get("error"):
            note = f"[red]failed: {escape(r['error'][:80])}[/]"
        elif r["status"] == "skipped":
            note = r["reason"]
        elif delta is not None and sel and abs(delta) > sel["budget"]:
            note = "over budget"
        else:
            note = r["reason"] if r["status"] == "emulated" else ""
        t.add_row(r["label"], r["status"], *[_spread(decode.get(str(b))) for b in batches],
                  _spread(tp.get("prefill")), f"{ratios[r['name']]:.2f}×" if r["name"] in ratios else "-",
                  f"{r['perplexity']:.3f}" if r.get("perplexity") is not None else "-",
                  pct(delta, True) if delta is not None else "-", note)
    return t


def microbench_table(micro: dict[str, dict[str, Any]], device: str):
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"raw kernels on {device} (torch) — median [min–max]"))
    for col, just in (("format", "left"), ("kernel", "left"), ("matmul GFLOP/s", "right"),
                      ("attention ms", "right"), ("shape m×k×n", "left")):
        t.add_column(col, justify=just)
    for name, m in micro.items():
        if "error" in m:
            t.add_row(name, "-", "-", "-", f"[red]{escape(m['error'])}[/]")
            continue
        t.add_row(name, m["kernel"], _spread(m["matmul_gflops"], "{:.2f}"), _spread(m["attention_ms"], "{:.2f}"),
                  "×".join(str(x) for x in m["shape"]["matmul"]))
    return t


def winner_speedups(result: dict[str, Any]) -> tuple[dict[str, float], str | None]:
    """Median ranking speed of each candidate over FP32's (else BF16's), measured side by side in this run."""
    rows = {r["name"]: r for r in result["candidates"]}
    rank_by = result["selection"]["rank_by"]
    base = next((n for n in ("fp32", "bf16") if n in rows and speed(rows[n], rank_by)), None)
    if base is None:
        return {}, None
    ref = speed(rows[base], rank_by)["median"]
    return {n: speed(r, rank_by)["median"] / ref for n, r in rows.items() if speed(r, rank_by)}, rows[base]["label"]
