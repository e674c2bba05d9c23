"""Where things live by default. Everything generated goes under ``artifacts/`` (gitignored)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("TOOLKIT_ARTIFACTS", REPO_ROOT / "artifacts"))
REFERENCE_DIR = ARTIFACTS / "reference"
REFERENCE_MODEL = REFERENCE_DIR / "model"
REFERENCE_DOCS = REFERENCE_DIR / "docs.jsonl"
REFERENCE_QA = REFERENCE_DIR / "qa.jsonl"
MODELS_DIR = ARTIFACTS / "models"
INDEXES_DIR = ARTIFACTS / "indexes"
REPORTS_DIR = ARTIFACTS / "reports"
RECIPES_DIR = REPO_ROOT / "recipes"
SERVE_DIR = REPO_ROOT / "serve"
VLLM_VENV = Path(os.environ.get("TOOLKIT_VLLM_VENV", REPO_ROOT / ".venv-vllm"))


def reference_split(split: str) -> Path:
    """Plain-text corpus split (``train``/``validation``/``test``) of the reference build."""
    return REFERENCE_DIR / "splits" / f"{split}.jsonl"


def vllm_python() -> Path:
    """Interpreter of the serving environment (vLLM pins versions the quantization stack cannot share)."""
    return VLLM_VENV / "bin" / "python"
