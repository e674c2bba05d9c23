"""Quantization test helpers: small calibration/eval text files and a fast-recipe factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from toolkit.paths import RECIPES_DIR


@pytest.fixture(scope="session")
def text_files(tmp_path_factory, sample_texts) -> dict[str, Path]:
    """Calibration (.jsonl) and held-out evaluation (.txt) text, disjoint halves of the sample docstrings."""
    d = tmp_path_factory.mktemp("quant-text")
    half = len(sample_texts) // 2
    calib, evalf = d / "calib.jsonl", d / "eval.txt"
    calib.write_text("\n".join(json.dumps({"text": t}) for t in sample_texts[:half]) + "\n")
    evalf.write_text("\n\n".join(sample_texts[half:]))
    return {"calib": calib, "eval": evalf}


@pytest.fixture
def small_recipe(tmp_path, text_files):
    """Write a shipped recipe shrunk for tests (few short calibration windows, tiny eval) and return its path."""

    def _make(name: str, **changes) -> Path:
        data = yaml.safe_load((RECIPES_DIR / "quantize" / f"{name}.yaml").read_text())
        data["eval"] = {"seq_len": 64, "max_windows": 4, "batch_size": 4}
        if data["algorithm"] != "rtn":
            data["calibration"] = {**data.get("calibration", {}), "dataset": str(text_files["calib"]),
                                   "num_samples": 8, "seq_len": 64}
        if data["algorithm"] == "awq":
            data["awq"] = {**data.get("awq", {}), "n_grid": 4}
        data.update(changes)
        out = tmp_path / f"{name}.yaml"
        out.write_text(yaml.safe_dump(data))
        return out

    return _make
