"""Trial records on disk: what makes a search resumable.

Every finished unit of work is one JSON file under ``artifacts/optimize/<name>/trials/``, written atomically
(:func:`toolkit.atomic.atomic_write_text`), so an interrupted search leaves only whole records:

- ``screen-<variant id>.json``: the perplexity screen of one model variant;
- ``r<rung>-<config id>.json``: one configuration's measurement at one rung of successive halving, finished
  (``status: done``) or failed (``status: failed`` with the reason; a failed trial is not retried on a re-run).

``context.json`` holds what the measurements depend on (SLO, suite digest, index, search settings). A re-run
with the same context loads every record and runs only what is missing; a different context is refused, since
trials judged against another SLO cannot be ranked together.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from toolkit.atomic import atomic_write_text
from toolkit.errors import ToolkitError


def variant_id(variant: str) -> str:
    return hashlib.sha256(str(variant).encode()).hexdigest()[:12]


class TrialStore:
    """Read and write the records of one search directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / "trials"

    def check_context(self, context: dict[str, Any]) -> None:
        """Write ``context.json`` on the first run; refuse a re-run whose context differs."""
        path = self.dir / "context.json"
        text = json.dumps(context, sort_keys=True, indent=1)
        if path.is_file():
            old = json.loads(path.read_text())
            if old != json.loads(text):
                changed = sorted(k for k in set(old) | set(context) if old.get(k) != context.get(k))
                raise ToolkitError(f"{path}: the trials here were measured with other settings ({', '.join(changed)}"
                                   "); use another --name or remove that directory")
            return
        atomic_write_text(path, text + "\n")

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ToolkitError(f"{path}: unreadable trial record ({exc})") from None

    def screen(self, variant: str) -> dict[str, Any] | None:
        path = self.dir / f"screen-{variant_id(variant)}.json"
        return self._read(path) if path.is_file() else None

    def save_screen(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.dir / f"screen-{variant_id(record['variant'])}.json", json.dumps(record, indent=1))

    def trials(self) -> dict[tuple[int, str], dict[str, Any]]:
        """Every trial record, keyed by (rung, config id). F1 is measured at rung 0 only (answers do not depend on
        the load), so a later rung's record without one carries its rung-0 figure."""
        out = {}
        for path in sorted(self.dir.glob("r*-*.json")):
            rec = self._read(path)
            out[(int(rec["rung"]), str(rec["config_id"]))] = rec
        for (rung, cid), rec in out.items():
            if rung > 0 and rec.get("f1") is None and (first := out.get((0, cid))) is not None:
                rec["f1"] = first.get("f1")
        return out

    def save_trial(self, record: dict[str, Any]) -> Path:
        path = self.dir / f"r{record['rung']}-{record['config_id']}.json"
        atomic_write_text(path, json.dumps(record, indent=1))
        return path
