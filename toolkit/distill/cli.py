"""``toolkit distill``: train a smaller student from a teacher with a recipe (black- or white-box).

Runs the same under ``torchrun --nproc_per_node N -m toolkit distill ...`` or ``accelerate launch -m toolkit
distill ...`` (data parallel over N processes: NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

import argparse
import json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, help="recipes/distill/<name>.yaml")
    parser.add_argument("--teacher", required=True, help="teacher model directory (or hub id)")
    parser.add_argument("--student", help="student model directory or config.json (default: the recipe's "
                                          "student section, a subset of the teacher's layers, weights copied)")
    parser.add_argument("--output", help="output directory (default artifacts/models/<teacher>-<method>)")
    parser.add_argument("--max-steps", type=int, help="override training.max_steps")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint of an "
                                                              "interrupted run with the same output")


def run(args: argparse.Namespace) -> int:
    from toolkit.distill.recipe import load_distill_recipe
    from toolkit.distill.run import distill

    recipe = load_distill_recipe(args.recipe, {"training.max_steps": args.max_steps})
    manifest = distill(recipe, args.teacher, args.output, args.student, args.resume, args.recipe)
    if manifest:
        r = manifest["results"]
        ppl = r["validation_perplexity"]
        print(json.dumps({"output": r["output"], "steps": r["steps"], "final_losses": r["final_losses"],
                          "validation_perplexity": ppl}, indent=2))
    return 0
