"""``toolkit quantize --recipe R --model M [--output DIR]``: see :mod:`toolkit.quantize.run`."""

from __future__ import annotations

import argparse
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, help="recipes/quantize/<name>.yaml")
    parser.add_argument("--model", required=True, help="model directory (or hub id when the hub is reachable)")
    parser.add_argument("--output", help="output directory (default artifacts/models/<recipe name>)")
    parser.add_argument("--calibration-data", help="override calibration.dataset: a .jsonl (field 'text') or "
                        ".txt file, 'reference', or hf:<dataset id>")
    parser.add_argument("--num-samples", type=int, help="override calibration.num_samples")
    parser.add_argument("--seq-len", type=int, help="override calibration.seq_len")
    parser.add_argument("--eval-data", help="held-out text for perplexity (.jsonl/.txt; default: the reference "
                        "validation split)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any recipe field, dotted (e.g. --set group_size=64 --set gptq.dampening_frac=0.05)")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from toolkit.errors import ToolkitError

    out: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ToolkitError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    for flag, key in (("calibration_data", "calibration.dataset"), ("num_samples", "calibration.num_samples"),
                      ("seq_len", "calibration.seq_len")):
        if getattr(args, flag) is not None:
            out[key] = getattr(args, flag)
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from toolkit.config import load_recipe
    from toolkit.paths import MODELS_DIR
    from toolkit.quantize.recipe import QuantizeRecipe
    from toolkit.quantize.run import quantize

    recipe = load_recipe(args.recipe, QuantizeRecipe, overrides_from_args(args))
    output = Path(args.output) if args.output else MODELS_DIR / recipe.name
    result = quantize(recipe, args.model, output, eval_data=args.eval_data, recipe_source=str(args.recipe))
    res = result.manifest["results"]
    ppl, size = res["perplexity"], res["size_bytes"]
    before = f"{size['source'] / 1e6:.1f} MB → " if size["source"] else ""
    print(f"{recipe.name}: wrote {result.output}  ({before}{size['quantized'] / 1e6:.1f} MB; perplexity "
          f"{ppl['source']:.3f} → {ppl['quantized']:.3f}; quantization {result.manifest['timings_s']['quantize']:.1f} s)")
    return 0
