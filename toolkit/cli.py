"""``toolkit`` command line: one subcommand per stage, each in ``toolkit/<stage>/cli.py``.

A stage's CLI module exposes ``configure(parser)`` (adds its arguments) and ``run(args) -> int``. Modules
are imported only for the subcommand being run, so ``toolkit --help`` stays instant and a heavy import
(torch, vLLM client, FAISS) is paid only by the command that needs it. A subcommand whose module does not
exist yet answers "not available yet" instead of pretending.

Errors meant for the user are :class:`toolkit.errors.ToolkitError`: printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import signal
import sys
from collections.abc import Callable, Sequence

from toolkit.errors import ToolkitError

# name -> (module with configure/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "env": ("toolkit.hardware_cli", "print the hardware report (CPU ISA, CUDA, precision support, versions)"),
    "reference": ("toolkit.reference.cli", "build the offline reference corpus, QA set, tokenizer and model"),
    "quantize": ("toolkit.quantize.cli", "quantize a causal LM with a recipe (AWQ, GPTQ, W8A8, FP8, RTN)"),
    "distill": ("toolkit.distill.cli", "distill a smaller student from a teacher (black- or white-box)"),
    "precision": ("toolkit.precision.cli", "measure numeric formats on this hardware and pick the fastest"),
    "index": ("toolkit.retrieval.cli", "build or inspect a FAISS/Milvus retrieval index"),
    "export-gguf": ("toolkit.engine.gguf_export", "export a checkpoint (or package a .gguf) for llama.cpp: f16, q8_0, q4_k_m"),
    "serve": ("toolkit.serving.cli", "start vLLM and the RAG endpoint in front of it"),
    "eval": ("toolkit.evaluation.cli", "measure quality and end-to-end RAG latency of one model variant"),
    "compare": ("toolkit.evaluation.compare_cli", "compare eval reports side by side, with release gates"),
    "optimize": ("toolkit.optimize.cli", "search the fastest configuration within a latency SLO and a quality budget"),
    "demo": ("toolkit.demo", "run the whole pipeline offline and print the comparison"),
}


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toolkit",
        description="Optimise an LLM-backed RAG system and prove it: quantize, distill, choose precision, "
        "serve with vLLM + FAISS, evaluate and compare.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        available = _module_exists(module)
        p = sub.add_parser(name, help=help_text if available else f"{help_text} [not available yet]",
                           description=help_text)
        if name == selected and available:
            importlib.import_module(module).configure(p)
    return parser


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (kill, CI timeouts, a supervisor) unwinds like Ctrl-C, so atomic_dir removes its temp directory.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args, unknown = parser.parse_known_args(argv)
    module = COMMANDS[args.command][0]
    if unknown and _module_exists(module):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not _module_exists(module):
        print(f"error: 'toolkit {args.command}' is not available yet in this version", file=sys.stderr)
        return 2
    return run_guarded(importlib.import_module(module).run, args)


def run_guarded(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command's ``run(args)`` as every toolkit entry point does: a :class:`ToolkitError` is one line on
    stderr and exit 2, SIGTERM and Ctrl-C unwind (so atomic writers and started engines clean up) and exit 130.
    The ``python -m toolkit.<stage>.<bench>`` modules call it too."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(run(args) or 0)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
