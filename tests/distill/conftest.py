"""Small text files and recipes for distillation tests (no artifacts/ needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session")
def distill_texts(tmp_path_factory, sample_texts) -> tuple[Path, Path]:
    """(train.jsonl, validation.jsonl) cut from the shared docstring sample."""
    d = tmp_path_factory.mktemp("distill-text")
    cut = int(len(sample_texts) * 0.8)
    for name, part in (("train", sample_texts[:cut]), ("validation", sample_texts[cut:])):
        (d / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
    return d / "train.jsonl", d / "validation.jsonl"


@pytest.fixture
def write_recipe(tmp_path):
    def _write(data: dict, name: str = "recipe.yaml") -> Path:
        p = tmp_path / name
        p.write_text(yaml.safe_dump(data))
        return p

    return _write


def _whitebox_recipe(train: Path, valid: Path, **loss) -> dict:
    """A white-box recipe small enough for a few seconds of training; a small training set the student can fit."""
    return {
        "method": "whitebox-kd",
        "data": {"train": str(train), "validation": str(valid), "seq_len": 64, "max_train_windows": 8,
                 "max_validation_windows": 4},
        "loss": {"alpha": 0.5, "temperature": 2.0, "divergence": "forward", "beta": 0.1, **loss},
        "training": {"max_steps": 8, "batch_size": 4, "learning_rate": 3.0e-3, "logging_steps": 1,
                     "save_steps": 4, "warmup_ratio": 0.0, "lr_scheduler": "constant"},
    }


@pytest.fixture
def whitebox_recipe():
    return _whitebox_recipe
