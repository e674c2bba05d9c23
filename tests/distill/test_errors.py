"""Bad input fails before any training with one line naming the fault, and CLI exit code 2."""

from __future__ import annotations

import shutil

import pytest

from toolkit.cli import main
from toolkit.distill.recipe import load_distill_recipe
from toolkit.errors import ToolkitError


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(["distill", *map(str, argv)])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("alpha", [1.5, -0.1])
def test_alpha_outside_unit_interval(alpha, tiny_llama, distill_texts, write_recipe, whitebox_recipe, tmp_path, capsys):
    recipe = write_recipe(whitebox_recipe(*distill_texts, alpha=alpha))
    code, err = _run(capsys, "--recipe", recipe, "--teacher", tiny_llama, "--output", tmp_path / "o")
    assert code == 2
    assert err.startswith("error: ") and "field 'loss.alpha'" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_missing_teacher(distill_texts, write_recipe, whitebox_recipe, tmp_path, capsys):
    recipe = write_recipe(whitebox_recipe(*distill_texts))
    code, err = _run(capsys, "--recipe", recipe, "--teacher", tmp_path / "no-such-model", "--output", tmp_path / "o")
    assert code == 2 and "--teacher" in err and "no-such-model" in err and "not found" in err


def test_tokenizer_mismatch(tiny_llama, distill_texts, write_recipe, whitebox_recipe, tmp_path, capsys):
    from toolkit.reference.tokenizer import train_tokenizer

    student = tmp_path / "other-tokenizer-student"
    shutil.copytree(tiny_llama, student)
    for f in student.glob("tokenizer*"):
        f.unlink()
    train_tokenizer(["completely different text " * 20, "another corpus entirely, with numbers 12345"] * 50,
                    vocab_size=300, out_dir=student)
    recipe = write_recipe(whitebox_recipe(*distill_texts))
    code, err = _run(capsys, "--recipe", recipe, "--teacher", tiny_llama, "--student", student,
                     "--output", tmp_path / "o")
    assert code == 2 and "tokenizer mismatch" in err and str(student) in err
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.checkpoints").exists()  # failed before training


def test_recipe_rejects_unknown_keys_and_bad_values(write_recipe):
    with pytest.raises(ToolkitError, match="field 'loss.temprature': unknown key"):
        load_distill_recipe(write_recipe({"method": "whitebox-kd", "loss": {"temprature": 2}}))
    with pytest.raises(ToolkitError, match="field 'loss.divergence'"):
        load_distill_recipe(write_recipe({"method": "whitebox-kd", "loss": {"divergence": "sideways"}}))
    with pytest.raises(ToolkitError, match="needs 'url'"):
        load_distill_recipe(write_recipe({"method": "blackbox-sft", "blackbox": {"source": "openai"}}))
    r = load_distill_recipe(write_recipe({"method": "whitebox-kd"}), {"training.max_steps": 7})
    assert r.training.max_steps == 7 and 0 <= r.loss.alpha <= 1


def test_shipped_recipes_load():
    from toolkit.paths import RECIPES_DIR

    for name in ("blackbox-sft", "whitebox-kd"):
        path = RECIPES_DIR / "distill" / f"{name}.yaml"
        assert load_distill_recipe(path).method == name
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and f"make distill RECIPE=recipes/distill/{name}.yaml" in path.read_text()


def test_student_keeps_every_kth_teacher_layer():
    from toolkit.distill.recipe import StudentSpec
    from toolkit.distill.student import default_layers

    assert default_layers(30, 3) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]  # SmolLM2 recipes: 10 of 30 layers
    assert default_layers(5) == [0, 2, 4]
    assert StudentSpec().keep_every == 2
    with pytest.raises(ValueError):
        StudentSpec(keep_every=0)
