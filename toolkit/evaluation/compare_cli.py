"""``toolkit compare R1.json R2.json ... --output DIR``: compare.md + compare.html side by side, with gates.

Each gate ends PASS, FAIL (worse than its limit beyond noise), INCONCLUSIVE (the noise is too large to tell)
or SKIP (:mod:`toolkit.evaluation.gates`). Exit codes: 0 no gate failed (or none given; inconclusive gates
print a warning), 1 a gate failed (each failure named on stderr) or, with ``--strict``, a gate was
inconclusive; 2 bad input (missing, corrupt or mismatched report files).
"""

from __future__ import annotations

import argparse
import sys

from toolkit.paths import REPORTS_DIR

GATE_FLAGS = [  # (flag, Gates field, kind, help)
    ("--max-ppl-increase", "max_ppl_increase", "frac", "largest allowed relative perplexity increase, e.g. 5%%"),
    ("--max-f1-drop", "max_f1_drop", "abs", "largest allowed drop of QA token F1 (absolute), e.g. 0.02"),
    ("--max-em-drop", "max_em_drop", "abs", "largest allowed drop of QA exact match (absolute)"),
    ("--max-mrr-drop", "max_mrr_drop", "abs", "largest allowed drop of retrieval MRR (absolute)"),
    ("--max-p50-regression", "max_p50_regression", "frac", "largest allowed p50 e2e latency increase per load point, e.g. 10%%"),
    ("--max-p99-regression", "max_p99_regression", "frac", "same for p99 e2e latency"),
    ("--max-ttft-regression", "max_ttft_regression", "frac", "same for p50 time to first token"),
    ("--max-errors", "max_errors", "int", "most failed requests allowed in any report"),
    ("--min-f1", "min_f1", "abs", "lowest acceptable QA token F1 of every report"),
    ("--max-p50-ms", "max_p50_ms", "abs", "highest acceptable p50 e2e latency (ms) at every load point"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reports", nargs="+", metavar="REPORT", help="eval report JSON files (toolkit eval --output)")
    parser.add_argument("--output", default=str(REPORTS_DIR / "compare"), help="output directory (default: %(default)s)")
    parser.add_argument("--baseline", help="report the others are compared against (default: the first)")
    for flag, _, _, text in GATE_FLAGS:
        parser.add_argument(flag, help=text)
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="evaluate gates even if reports come from different hardware or suites")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a gate is INCONCLUSIVE (noise too large to tell), not only on FAIL")


def gates_from_args(args: argparse.Namespace):
    from toolkit.config import parse_fraction
    from toolkit.errors import ToolkitError
    from toolkit.evaluation.gates import Gates

    values = {}
    for flag, field, kind, _ in GATE_FLAGS:
        raw = getattr(args, field)
        if raw is None:
            continue
        if kind == "int":
            try:
                values[field] = int(raw)
            except ValueError:
                raise ToolkitError(f"{flag}: expected a whole number, got '{raw}'") from None
        else:
            values[field] = parse_fraction(raw, flag)  # "5%" -> 0.05; plain numbers as given
    return Gates(allow_mismatch=args.allow_mismatch, **values)


def write_comparison(c, out) -> None:
    """The figures, ``compare.md`` and ``compare.html`` of a :class:`~toolkit.evaluation.compare.Comparison`,
    installed in ``out`` as one directory (a failed run leaves the previous one intact)."""
    from toolkit.evaluation.plots import all_figures
    from toolkit.evaluation.render import to_html, to_markdown
    from toolkit.manifest import atomic_dir

    figures = all_figures(c)
    with atomic_dir(out) as tmp:
        files = {}
        for name, png in figures.items():
            (tmp / f"{name}.png").write_bytes(png)
            files[name] = f"{name}.png"
        (tmp / "compare.md").write_text(to_markdown(c, files), encoding="utf-8")
        (tmp / "compare.html").write_text(to_html(c, figures), encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from toolkit.evaluation.compare import compare

    gates = gates_from_args(args)
    c = compare(args.reports, baseline=args.baseline, gates=gates)
    out = Path(args.output)
    write_comparison(c, out)
    for w in c.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(c.recommendation)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.html'}")
    for note in c.notes:
        print(f"note: {note}", file=sys.stderr)
    for g in c.gates:
        print(f"{g.outcome} gate {g.gate} [{g.label}]: {g.detail}",
              file=sys.stdout if g.outcome in ("PASS", "SKIP") else sys.stderr)
    if c.inconclusive:
        names = ", ".join(sorted({g.gate for g in c.inconclusive}))
        print(f"warning: {len(c.inconclusive)} gate(s) inconclusive ({names}): the noise is too large to tell; "
              "more repeats (eval --repeats) or requests narrow the intervals"
              + ("" if args.strict else "; --strict makes this fail"), file=sys.stderr)
    if c.failed:
        names = sorted({g.gate for g in c.failed})
        print(f"gate failed: {', '.join(names)}", file=sys.stderr)
        return 1
    return 1 if args.strict and c.inconclusive else 0
