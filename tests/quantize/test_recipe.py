import pytest
from toolkit.config import load_recipe, validate
from toolkit.errors import ToolkitError
from toolkit.paths import RECIPES_DIR as ALL_RECIPES
from toolkit.quantize.recipe import QuantizeRecipe

RECIPES_DIR = ALL_RECIPES / "quantize"
RECIPE_NAMES = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_shipped_recipe_loads_and_documents_its_make_line(name):
    path = RECIPES_DIR / f"{name}.yaml"
    recipe = load_recipe(path, QuantizeRecipe)
    assert recipe.name == name
    header = [ln for ln in path.read_text().splitlines() if ln.startswith("#")]
    assert path.read_text().startswith("#"), "recipe must open with a comment"
    assert any(f"make quantize RECIPE=recipes/quantize/{name}.yaml" in ln for ln in header)
    assert recipe.ignore == ["lm_head"]


def test_all_five_methods_are_shipped():
    schemes = {(r.algorithm, r.scheme) for r in
               (load_recipe(RECIPES_DIR / f"{n}.yaml", QuantizeRecipe) for n in RECIPE_NAMES)}
    assert schemes == {("rtn", "W4A16_ASYM"), ("gptq", "W4A16_ASYM"), ("awq", "W4A16_ASYM"), ("gptq", "W8A8"),
                       ("rtn", "FP8_DYNAMIC")}


@pytest.mark.parametrize("data, field", [
    ({"name": "x", "algorithm": "rtn", "scheme": "W3A7"}, "scheme"),
    ({"name": "x", "algorithm": "round", "scheme": "W4A16"}, "algorithm"),
    ({"name": "x", "algorithm": "rtn", "scheme": "W4A16", "groupsize": 64}, "groupsize"),
    ({"name": "x", "algorithm": "rtn", "scheme": "W8A8", "group_size": 64}, "<root>"),
    ({"name": "x", "algorithm": "awq", "scheme": "FP8_DYNAMIC"}, "<root>"),
    ({"name": "x", "algorithm": "rtn", "scheme": "W4A16", "gptq": {}}, "<root>"),
    ({"name": "x", "algorithm": "gptq", "scheme": "W4A16", "gptq": {"dampening_frac": 2}}, "gptq.dampening_frac"),
    ({"name": "x", "algorithm": "gptq", "scheme": "W4A16", "calibration": {"num_samples": 0}},
     "calibration.num_samples"),
    ({"name": "x", "algorithm": "gptq", "scheme": "W4A16", "smoothquant": {}}, "<root>"),  # weight-only
    ({"name": "x", "algorithm": "gptq", "scheme": "W8A8", "smoothquant": {"smoothing_strength": 1.5}},
     "smoothquant.smoothing_strength"),
])
def test_invalid_recipes_name_the_field(data, field):
    with pytest.raises(ToolkitError) as exc:
        validate(QuantizeRecipe, data, "r.yaml")
    assert f"field '{field}'" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_group_size_defaults_to_preset_only_for_grouped_schemes():
    assert validate(QuantizeRecipe, {"name": "x", "algorithm": "rtn", "scheme": "W4A16"}, "r").effective_group_size == 128
    assert validate(QuantizeRecipe, {"name": "x", "algorithm": "rtn", "scheme": "W8A8"}, "r").effective_group_size is None


def test_smoothquant_runs_first_and_makes_a_data_free_scheme_need_calibration():
    from toolkit.quantize.modifiers import build_modifiers

    w8a8 = validate(QuantizeRecipe, {"name": "x", "algorithm": "gptq", "scheme": "W8A8",
                                     "smoothquant": {"smoothing_strength": 0.8}}, "r")
    assert [type(m).__name__ for m in build_modifiers(w8a8)] == ["SmoothQuantModifier", "GPTQModifier"]
    assert build_modifiers(w8a8)[0].smoothing_strength == 0.8
    fp8 = {"name": "x", "algorithm": "rtn", "scheme": "FP8_DYNAMIC"}
    assert not validate(QuantizeRecipe, fp8, "r").needs_calibration
    assert validate(QuantizeRecipe, {**fp8, "smoothquant": {}}, "r").needs_calibration
