"""End to end: ``toolkit reference`` with the tiny recipe produces every output with manifests; bad recipes
are rejected in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.manifest import MANIFEST_NAME, read_manifest
from toolkit.paths import RECIPES_DIR
from toolkit.reference.build import OUTPUTS

TINY = RECIPES_DIR / "reference" / "tiny.yaml"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "reference"
    assert main(["reference", "--recipe", str(TINY), "--output", str(out), "--no-progress"]) == 0
    return out


def test_all_outputs_and_manifests(built):
    for rel in OUTPUTS:
        assert (built / rel).is_file(), rel
    for sub in ("", "tokenizer", "model"):
        assert (built / sub / MANIFEST_NAME).is_file()
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    manifest = read_manifest(built)
    model = manifest["results"]["model"]
    assert math.isfinite(model["validation_perplexity"]) and model["validation_perplexity"] > 1
    assert math.isfinite(model["unigram_validation_perplexity"]) and model["unigram_validation_perplexity"] > 1
    assert model["chat_examples"] > 0 and model["lm_windows"] > 0
    assert manifest["results"]["qa_pairs"]["test"] >= 3
    assert set(manifest["timings_s"]) >= {"corpus", "tokenizer", "training", "evaluation", "wall"}
    model_manifest = read_manifest(built / "model")
    assert model_manifest["results"]["validation_perplexity"] == model["validation_perplexity"]
    assert model_manifest["inputs"]["train_split"]["path"] == str((built / "splits" / "train.jsonl").resolve())


def test_qa_and_docs_are_consistent(built):
    docs = {json.loads(line)["id"]: json.loads(line) for line in (built / "docs.jsonl").read_text().splitlines()}
    qa = [json.loads(line) for line in (built / "qa.jsonl").read_text().splitlines()]
    assert qa and all(set(q) == {"id", "question", "answer", "doc_id", "split"} for q in qa)
    assert all(q["answer"] in docs[q["doc_id"]]["text"] for q in qa)
    # module and kind ride along as metadata an index can filter on
    assert all(d["id"].startswith(d["module"]) and d["kind"] for d in docs.values())
    test_modules = {json.loads(line)["module"].split(".")[0]
                    for line in (built / "splits" / "test.jsonl").read_text().splitlines()}
    assert all(q["doc_id"].split(".")[0] in test_modules for q in qa if q["split"] == "test")


def test_model_is_a_standard_checkpoint(built):
    import torch

    from toolkit.modeling import load_causal_lm, load_tokenizer
    from toolkit.prompt import rag_messages

    config = json.loads((built / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "bfloat16"
    gen = json.loads((built / "model" / "generation_config.json").read_text())
    tok = load_tokenizer(built / "model")
    assert gen["eos_token_id"] == tok.eos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    model = load_causal_lm(built / "model")
    ids = tok.apply_chat_template(rag_messages("What is json?", ["json\n\nJSON encoder."]),
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1] and out.dtype == torch.long


def test_rerun_with_same_recipe_is_up_to_date(built, capsys):
    before = (built / MANIFEST_NAME).read_text()
    assert main(["reference", "--recipe", str(TINY), "--output", str(built)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (built / MANIFEST_NAME).read_text() == before


def test_a_corpus_from_before_metadata_is_not_up_to_date(built, tmp_path):
    """A reference built before documents carried module/kind (no ``corpus_format``) is rebuilt by a re-run."""
    import shutil

    from toolkit.config import load_recipe
    from toolkit.reference.build import up_to_date
    from toolkit.reference.recipe import ReferenceRecipe

    recipe = load_recipe(TINY, ReferenceRecipe)
    old = tmp_path / "reference"
    shutil.copytree(built, old)
    assert up_to_date(old, recipe)
    m = json.loads((old / MANIFEST_NAME).read_text())
    del m["results"]["corpus_format"]
    (old / MANIFEST_NAME).write_text(json.dumps(m))
    assert not up_to_date(old, recipe)


@pytest.mark.parametrize("yaml_text, field", [
    ("corpus:\n  modulez: [json]\n", "corpus.modulez"),
    ("training:\n  max_steps: lots\n", "training.max_steps"),
    ("model:\n  hidden_size: 100\n  num_attention_heads: 3\n", "model"),
])
def test_bad_recipe_rejected_in_one_line(tmp_path, capsys, yaml_text, field):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml_text)
    out = tmp_path / "never"
    assert main(["reference", "--recipe", str(recipe), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and str(recipe) in err
    assert f"field '{field}" in err
    assert not out.exists()


def test_missing_recipe_file(tmp_path, capsys):
    assert main(["reference", "--recipe", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err
