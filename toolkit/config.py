"""Strict YAML recipes: pydantic models that reject unknown keys, and a loader whose errors fit one line.

Every recipe (quantize, distill, serving profile, eval suite) is a subclass of :class:`StrictModel`; a typo
in a key is an error, not a silently ignored setting. :func:`load_recipe` names the file and the dotted field.
Values typed on a command line go through the same two helpers everywhere: :func:`apply_overrides` (dotted
keys) and :func:`parse_fraction` (``5%`` or ``0.05``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from toolkit.errors import ToolkitError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def describe_validation_error(source: str, exc: ValidationError) -> str:
    """``source: field 'a.b': message`` for the first error, with a count of the rest."""
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "<root>"
    msg = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        msg = "unknown key (check the spelling)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: field '{field}': {msg}{more}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML mapping, turning every failure into a one-line :class:`ToolkitError`."""
    p = Path(path)
    if not p.is_file():
        raise ToolkitError(f"{p}: file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ToolkitError(f"{p}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError:
        raise ToolkitError(f"{p}: not a UTF-8 text file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ToolkitError(f"{p}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def validate(model_cls: type[M], data: dict[str, Any], source: str) -> M:
    """Validate ``data`` against ``model_cls``; errors name ``source`` and the field."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ToolkitError(describe_validation_error(source, exc)) from None


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Set each dotted key of ``overrides`` in ``data`` (``{"a.b": 1}`` -> ``data["a"]["b"] = 1``, creating the
    parents); returns ``data``, changed in place."""
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return data


def load_recipe(path: str | Path, model_cls: type[M], overrides: dict[str, Any] | None = None) -> M:
    """Load and validate a recipe file; ``overrides`` (dotted keys) win over the file, e.g. from the CLI."""
    return validate(model_cls, apply_overrides(read_yaml(path), overrides), str(path))


def parse_fraction(value: str | float, flag: str) -> float:
    """``"5%"`` -> 0.05, ``"0.05"`` or ``0.05`` -> 0.05; anything else (NaN and infinities too) is a one-line
    :class:`ToolkitError` naming ``flag``. Range checks belong to the caller."""
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        x = float(text[:-1].strip() if percent else text)
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        raise ToolkitError(f"{flag}: expected a number or a percentage like 5%, got '{text}'")
    return x / 100 if percent else x


def dump_recipe(recipe: BaseModel) -> dict[str, Any]:
    """The resolved recipe as plain data, for manifests."""
    return recipe.model_dump(mode="json")
