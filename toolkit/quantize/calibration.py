"""Calibration data: text from the reference corpus, a local file or an HF dataset, cut into token windows.

Texts are concatenated (EOS-separated) and cut into full windows of ``seq_len`` tokens
(:func:`toolkit.modeling.token_windows`), so every calibration sample is exactly as long as asked and no
padding enters the activation statistics. The windows are handed to llm-compressor as an already-tokenized
``datasets.Dataset`` (``input_ids`` + ``attention_mask``), which it uses as is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.modeling import read_texts, token_windows
from toolkit.paths import reference_split
from toolkit.quantize.recipe import CalibrationSpec


@dataclass
class CalibrationSet:
    windows: list[list[int]]
    source: dict[str, Any]  # what it was read from, for the manifest

    def describe(self) -> dict[str, Any]:
        n = len(self.windows)
        digest = hashlib.sha256(json.dumps(self.windows).encode()).hexdigest()
        return {**self.source, "samples": n, "seq_len": len(self.windows[0]) if n else 0,
                "tokens": sum(len(w) for w in self.windows), "token_sha256": digest}

    def to_dataset(self):
        from datasets import Dataset

        return Dataset.from_dict({"input_ids": self.windows,
                                  "attention_mask": [[1] * len(w) for w in self.windows]})


def _hf_texts(spec: CalibrationSpec, dataset_id: str) -> list[str]:
    """Texts of an HF hub dataset; a clear error when the hub cannot be reached or the field is missing."""
    try:
        from datasets import load_dataset

        ds = load_dataset(dataset_id, spec.hf_config, split=spec.split)
    except Exception as exc:  # offline, unknown id, unknown split: all surface as assorted exception types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ToolkitError(f"calibration.dataset 'hf:{dataset_id}': cannot load split '{spec.split}' from the "
                           f"HF hub ({first[:200]}); use a local .jsonl/.txt file when offline") from None
    if spec.text_field not in ds.column_names:
        raise ToolkitError(f"calibration.dataset 'hf:{dataset_id}': no column '{spec.text_field}' "
                           f"(columns: {', '.join(ds.column_names)}); set calibration.text_field")
    return [t for t in ds[spec.text_field] if isinstance(t, str) and t.strip()]


def read_calibration_texts(spec: CalibrationSpec) -> tuple[list[str], dict[str, Any]]:
    """The raw texts named by ``spec.dataset`` and a description of their source."""
    ds = spec.dataset
    if ds.startswith("hf:"):
        dataset_id = ds[3:]
        return _hf_texts(spec, dataset_id), {"dataset": ds, "split": spec.split}
    if ds == "reference":
        path = reference_split(spec.split)
        if not path.is_file():
            raise ToolkitError(f"{path}: reference {spec.split} split not found (run `make reference`, or set "
                               "calibration.dataset / --calibration-data to a .jsonl or .txt file)")
    else:
        path = Path(ds).expanduser()
    from toolkit.manifest import describe_input

    return read_texts(path, spec.text_field), {"dataset": ds, **describe_input(path)}


def load_calibration(spec: CalibrationSpec, tokenizer) -> CalibrationSet:
    """Up to ``spec.num_samples`` windows of ``spec.seq_len`` tokens; an error when not even one fits."""
    texts, source = read_calibration_texts(spec)
    if not any(t.strip() for t in texts):
        raise ToolkitError(f"calibration data '{spec.dataset}' is empty")
    windows = token_windows(tokenizer, texts, spec.seq_len, spec.num_samples)
    if not windows:
        total = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
        raise ToolkitError(f"calibration data '{spec.dataset}' is too short: {total} tokens, one window needs "
                           f"calibration.seq_len={spec.seq_len}")
    return CalibrationSet(windows, source)
