"""The precision budget goes through the shared percentage parser and adds its own range check."""

import pytest

from toolkit.errors import ToolkitError
from toolkit.precision.settings import PrecisionRecipe, parse_budget


def test_budget_parses_percentages_and_fractions():
    assert parse_budget("1%") == pytest.approx(0.01)
    assert parse_budget("0.5%") == pytest.approx(0.005)
    assert parse_budget(0.02) == 0.02 and parse_budget("0%") == 0.0


def test_bad_budgets_name_the_flag():
    with pytest.raises(ToolkitError, match="^--budget: expected a number or a percentage"):
        parse_budget("lots")
    for out_of_range in ("-1%", "1000%", "12"):
        with pytest.raises(ToolkitError, match="^--budget: must be between 0% and 1000%"):
            parse_budget(out_of_range)


def test_recipe_budget_is_validated_with_the_same_parser():
    from pydantic import ValidationError

    assert PrecisionRecipe(budget="2%").budget == "2%"
    with pytest.raises(ValidationError, match="expected a number or a percentage"):
        PrecisionRecipe(budget="lots")
