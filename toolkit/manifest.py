"""Atomic artifact directories and their provenance manifest (``toolkit_manifest.json``).

An artifact is built in a temporary sibling directory and installed in one atomic step only when complete, so
an interrupted or failed run leaves the previous artifact untouched and no partial directory behind; the
writers (:func:`atomic_dir`, :func:`atomic_write_text`, :func:`atomic_write_bytes`) live in
:mod:`toolkit.atomic` and are re-exported here, the one place every stage imports them from. The
manifest records what went in (paths and content hashes), the resolved recipe, library versions, hardware,
wall time, peak RSS and size on disk, so any number in a report can be traced to its inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from toolkit.atomic import atomic_dir, atomic_write_bytes, atomic_write_text, clean_stale
from toolkit.errors import ToolkitError

__all__ = ["MANIFEST_NAME", "RunRecord", "atomic_dir", "atomic_write_bytes", "atomic_write_text", "clean_stale",
           "describe_input", "peak_rss_mb", "read_manifest", "sha256_file", "sha256_tree", "size_on_disk"]

MANIFEST_NAME = "toolkit_manifest.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Content hash of a file or of a directory (relative paths + contents, manifests excluded)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file() and q.name != MANIFEST_NAME):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def describe_input(path_or_id: str | Path) -> dict[str, Any]:
    """``{"path", "sha256", "bytes"}`` for a local input; ``{"id"}`` for something not on disk (a hub id)."""
    p = Path(path_or_id)
    if not p.exists():
        return {"id": str(path_or_id)}
    return {"path": str(p.resolve()), "sha256": sha256_tree(p), "bytes": size_on_disk(p)}


def size_on_disk(path: str | Path) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def peak_rss_mb() -> float:
    """Peak resident set size of this process and its waited-for children, in MiB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)


class RunRecord:
    """Collects provenance while a stage runs; :meth:`write` stores it as the artifact's manifest."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.started = time.time()
        self._t0 = time.perf_counter()
        self.inputs: dict[str, Any] = {}
        self.recipe: dict[str, Any] | None = None
        self.timings: dict[str, float] = {}
        self.results: dict[str, Any] = {}

    def add_input(self, name: str, path_or_id: str | Path) -> None:
        self.inputs[name] = describe_input(path_or_id)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - t, 3)

    def to_dict(self, out_dir: Path) -> dict[str, Any]:
        from toolkit.hardware import hardware_report  # lazy: probes CUDA

        return {
            "stage": self.stage,
            "created_unix": round(self.started, 3),
            "inputs": self.inputs,
            "recipe": self.recipe,
            "results": self.results,
            "timings_s": {**self.timings, "wall": round(time.perf_counter() - self._t0, 3)},
            "peak_rss_mb": peak_rss_mb(),
            "size_on_disk_bytes": size_on_disk(out_dir),
            "hardware": hardware_report(),
        }

    def write(self, out_dir: str | Path) -> dict[str, Any]:
        out = Path(out_dir)
        data = self.to_dict(out)
        atomic_write_text(out / MANIFEST_NAME, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        return data


def read_manifest(artifact_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of an artifact directory, or None when it has none (e.g. a hub model)."""
    p = Path(artifact_dir) / MANIFEST_NAME
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ToolkitError(f"{p}: corrupt manifest ({exc.msg} at line {exc.lineno})") from None
