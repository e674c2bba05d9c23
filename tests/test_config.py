from typing import Literal

import pytest

from toolkit.config import StrictModel, apply_overrides, load_recipe, parse_fraction
from toolkit.errors import ToolkitError


class Calib(StrictModel):
    num_samples: int = 16


class Recipe(StrictModel):
    scheme: Literal["W4A16", "W8A8"]
    group_size: int = 128
    calibration: Calib = Calib()


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_valid_recipe_loads_with_defaults(tmp_path):
    r = load_recipe(write(tmp_path, "scheme: W4A16\n"), Recipe)
    assert r.scheme == "W4A16" and r.group_size == 128 and r.calibration.num_samples == 16


def test_typo_in_nested_key_names_file_and_field(tmp_path):
    p = write(tmp_path, "scheme: W4A16\ncalibration:\n  num_sample: 4\n")
    with pytest.raises(ToolkitError) as e:
        load_recipe(p, Recipe)
    msg = str(e.value)
    assert str(p) in msg and "calibration.num_sample" in msg and "unknown key" in msg
    assert "\n" not in msg


def test_wrong_type_and_bad_enum(tmp_path):
    with pytest.raises(ToolkitError, match="group_size"):
        load_recipe(write(tmp_path, "scheme: W4A16\ngroup_size: big\n"), Recipe)
    with pytest.raises(ToolkitError, match="scheme"):
        load_recipe(write(tmp_path, "scheme: W3A3\n"), Recipe)


def test_missing_file_bad_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ToolkitError, match="file not found"):
        load_recipe(tmp_path / "nope.yaml", Recipe)
    with pytest.raises(ToolkitError, match="invalid YAML at line"):
        load_recipe(write(tmp_path, "scheme: [W4A16\n"), Recipe)
    with pytest.raises(ToolkitError, match="mapping"):
        load_recipe(write(tmp_path, "- a\n- b\n"), Recipe)


def test_overrides_win(tmp_path):
    r = load_recipe(write(tmp_path, "scheme: W4A16\n"), Recipe, {"calibration.num_samples": 3, "group_size": 64})
    assert r.calibration.num_samples == 3 and r.group_size == 64


def test_apply_overrides_sets_dotted_keys_in_place():
    data = {"a": {"x": 1}, "b": 2}
    out = apply_overrides(data, {"a.y": 3, "b": 4, "c.d.e": 5})
    assert out is data and data == {"a": {"x": 1, "y": 3}, "b": 4, "c": {"d": {"e": 5}}}
    assert apply_overrides({"k": 1}, None) == {"k": 1}


def test_parse_fraction_percentages_and_plain_numbers():
    assert parse_fraction("5%", "--x") == pytest.approx(0.05)
    assert parse_fraction(" 0.5 % ", "--x") == pytest.approx(0.005)
    assert parse_fraction("0.02", "--x") == 0.02 and parse_fraction(0.02, "--x") == 0.02
    assert parse_fraction(1e-05, "--x") == 1e-05  # str() of a small YAML float is "1e-05"
    assert parse_fraction("-3%", "--x") == pytest.approx(-0.03)  # range checks are the caller's
    for bad in ("five", "%", "", "nan", "inf%"):
        with pytest.raises(ToolkitError, match=r"^--x: expected a number or a percentage"):
            parse_fraction(bad, "--x")
