"""``toolkit env``: print the hardware report that every manifest carries."""

from __future__ import annotations

import argparse
import json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the raw JSON report")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from toolkit.hardware import hardware_report, isa_summary

    report = hardware_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cpu = report["cpu"]
    table = Table(title="toolkit env", show_header=False)
    table.add_row("CPU", f"{cpu['model']} ({cpu['arch']}), {cpu['cores']} cores, {cpu['ram_gb']} GiB RAM")
    table.add_row("ISA", isa_summary(report) or "-")
    for d in report["cuda"]:
        table.add_row("CUDA", f"{d['name']} sm{d['compute_capability']} {d['memory_gb']} GiB")
    if not report["cuda"]:
        table.add_row("CUDA", "none")
    table.add_row("fast formats", " ".join(k for k, v in report["supports"].items() if v) or "fp32 only")
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    Console().print(table)
    return 0
