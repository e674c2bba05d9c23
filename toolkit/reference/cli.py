"""``toolkit reference [--recipe R] [--output DIR] [--force]``: build the offline reference data and model."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.paths import RECIPES_DIR, REFERENCE_DIR

DEFAULT_RECIPE = RECIPES_DIR / "reference" / "default.yaml"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE,
                        help=f"reference recipe YAML (default: {DEFAULT_RECIPE.relative_to(RECIPES_DIR.parent)})")
    parser.add_argument("--output", type=Path, default=REFERENCE_DIR,
                        help="output directory (default: artifacts/reference)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: all cores; 1 is faster when other jobs share the cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from toolkit.config import load_recipe
    from toolkit.errors import ToolkitError
    from toolkit.reference.build import build_reference
    from toolkit.reference.recipe import ReferenceRecipe

    recipe = load_recipe(args.recipe, ReferenceRecipe)
    if args.threads is not None:
        if args.threads < 1:
            raise ToolkitError(f"--threads: must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    # SIGTERM unwinds like Ctrl-C (toolkit.cli), so a killed build leaves no temporary directory.
    build_reference(recipe, args.output, args.recipe, force=args.force, progress=not args.no_progress)
    return 0
