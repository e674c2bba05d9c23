"""JSON Lines input with errors that name the file and line (shared by every stage that reads ``.jsonl``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError


def read_jsonl(path: str | Path, not_found: str = "file not found", require: dict[str, type] | None = None,
               require_error: str | None = None) -> list[dict[str, Any]]:
    """Every non-blank line of ``path`` as a JSON object; a bad line is a one-line error ``path:N: ...``.

    ``require`` maps field names to the type each row must hold there (``object``: present, any type);
    ``require_error`` replaces the default "missing field" message when one does not.
    """
    p = Path(path)
    if not p.is_file():
        raise ToolkitError(f"{p}: {not_found}")
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ToolkitError(f"{p}:{n}: invalid JSON line") from None
        if not isinstance(row, dict):
            raise ToolkitError(f"{p}:{n}: expected a JSON object")
        for key, kind in (require or {}).items():
            if not isinstance(row.get(key), kind) or key not in row:
                raise ToolkitError(f"{p}:{n}: " + (require_error or
                                                  f"missing {'string ' if kind is str else ''}field '{key}'"))
        rows.append(row)
    return rows
