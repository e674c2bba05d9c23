import json
import math

import pytest

from toolkit.errors import ToolkitError
from toolkit.modeling import load_causal_lm, load_tokenizer, perplexity, read_texts, resolve_model, token_windows


def test_resolve_model_rejects_bad_paths(tmp_path):
    with pytest.raises(ToolkitError, match="model path not found"):
        resolve_model(tmp_path / "missing")
    with pytest.raises(ToolkitError, match="no config.json"):
        resolve_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(ToolkitError, match="not a causal LM"):
        resolve_model(tmp_path)
    assert resolve_model("org/model") == "org/model"  # a hub id passes through


def test_perplexity_of_random_model_is_near_vocab_size(tiny_model, sample_texts):
    tok = load_tokenizer(tiny_model)
    model = load_causal_lm(tiny_model, dtype="float32")
    windows = token_windows(tok, sample_texts, seq_len=64, max_windows=8)
    assert len(windows) == 8 and all(len(w) == 64 for w in windows)
    ppl = perplexity(model, windows, batch_size=4)
    # An untrained model is close to uniform over the vocabulary.
    assert 0.5 * len(tok) < ppl < 2 * len(tok) and math.isfinite(ppl)


def test_read_texts_formats_and_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert read_texts(tmp_path / "a.jsonl") == ["one", "two"]
    (tmp_path / "b.txt").write_text("para one\n\npara two\n")
    assert read_texts(tmp_path / "b.txt") == ["para one", "para two"]
    (tmp_path / "c.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(ToolkitError, match="c.jsonl:1: missing string field 'text'"):
        read_texts(tmp_path / "c.jsonl")
    with pytest.raises(ToolkitError, match="too short"):
        perplexity(None, [])
