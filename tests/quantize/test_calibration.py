import json

import pytest

from toolkit.errors import ToolkitError
from toolkit.modeling import load_tokenizer
from toolkit.quantize.calibration import load_calibration
from toolkit.quantize.recipe import CalibrationSpec


@pytest.fixture(scope="module")
def tok(tiny_llama):
    return load_tokenizer(tiny_llama)


def test_jsonl_gives_full_windows_and_a_stable_hash(tok, text_files):
    spec = CalibrationSpec(dataset=str(text_files["calib"]), num_samples=5, seq_len=32)
    a, b = load_calibration(spec, tok), load_calibration(spec, tok)
    assert len(a.windows) == 5 and all(len(w) == 32 for w in a.windows)
    desc = a.describe()
    assert desc["samples"] == 5 and desc["tokens"] == 160 and desc["sha256"]
    assert desc["token_sha256"] == b.describe()["token_sha256"]
    ds = a.to_dataset()
    assert ds.column_names == ["input_ids", "attention_mask"] and len(ds) == 5


def test_txt_is_accepted(tok, text_files, tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text(text_files["eval"].read_text())
    calib = load_calibration(CalibrationSpec(dataset=str(txt), num_samples=3, seq_len=16), tok)
    assert len(calib.windows) == 3


def test_fewer_windows_than_asked_uses_what_there_is(tok, tmp_path):
    f = tmp_path / "short.jsonl"
    f.write_text(json.dumps({"text": "def f(x): return x + 1. " * 20}) + "\n")
    calib = load_calibration(CalibrationSpec(dataset=str(f), num_samples=100, seq_len=16), tok)
    assert 1 <= len(calib.windows) < 100


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    (json.dumps({"text": "   "}) + "\n", "is empty"),
    (json.dumps({"text": "tiny"}) + "\n", "too short"),
    (json.dumps({"body": "no text field"}) + "\n", "missing string field 'text'"),
])
def test_bad_calibration_files(tok, tmp_path, content, message):
    f = tmp_path / "c.jsonl"
    f.write_text(content)
    with pytest.raises(ToolkitError, match=message):
        load_calibration(CalibrationSpec(dataset=str(f), seq_len=64), tok)


def test_missing_file_and_unreachable_hub(tok, tmp_path, monkeypatch):
    with pytest.raises(ToolkitError, match="file not found"):
        load_calibration(CalibrationSpec(dataset=str(tmp_path / "nope.jsonl")), tok)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ToolkitError, match="cannot load split 'train' from the HF hub"):
        load_calibration(CalibrationSpec(dataset="hf:toolkit-test/does-not-exist"), tok)
