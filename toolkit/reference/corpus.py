"""The reference corpus: one document per documented standard-library API object, split by module.

Docstrings are collected by ``stdlib_dump.py`` in an isolated interpreter (``python -I -S``, fixed hash
seed): only the standard library is importable there, and import-time side effects die with that process.
Every API object with its own docstring (module, class, function, method, property) becomes a document
``{"id", "title", "text", "module", "kind"}`` whose id and title are the dotted name; the text is a header line
(name and signature) followed by the docstring, whose summary paragraph is put on one line so an answer quoted
from it is an exact substring of the document. ``module`` (the module that documents the object, e.g.
``json.decoder``) and ``kind`` are metadata: an index built from the corpus can filter on them.

Splits are by *top-level package* (``email.message`` and ``email.parser`` always land together), assigned
by a seeded shuffle that fills test, then validation, to their target share of documents; the rest is
train. No module contributes text to two splits, so perplexity on validation/test measures generalisation
to unseen modules rather than memorised text.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ToolkitError

SPLITS = ("train", "validation", "test")
# bumped when docs.jsonl rows change shape (2: module and kind metadata), so an older corpus is rebuilt
CORPUS_FORMAT = 2
DUMP_SCRIPT = Path(__file__).with_name("stdlib_dump.py")
_SIGNATURE_LINE = re.compile(r"^[\w.]+\(.*\)(\s*->\s*.*)?$", re.S)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`'\"(\[])")


@dataclass(frozen=True)
class Doc:
    """One API object: ``id``/``title`` its dotted name, ``module`` the module that documents it."""

    id: str
    title: str
    text: str
    module: str
    kind: str
    summary: str

    @property
    def package(self) -> str:
        return self.module.split(".")[0]

    def record(self) -> dict[str, str]:
        """The ``docs.jsonl`` row: top-level fields besides id/title/text are metadata an index can filter on
        (:func:`toolkit.retrieval.chunking.doc_meta`), e.g. ``{"module": "json"}``."""
        return {"id": self.id, "title": self.title, "text": self.text, "module": self.module, "kind": self.kind}


def _reflow(paragraph: str) -> str:
    return " ".join(paragraph.split())


def _summary_index(paragraphs: Sequence[str]) -> int | None:
    """Index of the first prose paragraph (old C docstrings open with a ``name(args) -> type`` line)."""
    for i, p in enumerate(paragraphs[:2]):
        flat = _reflow(p)
        if flat and not _SIGNATURE_LINE.match(flat):
            return i
    return None


def first_sentence(paragraph: str) -> str:
    """The first sentence of an already one-line paragraph (split at ``. `` before a capital letter)."""
    return _SENTENCE_END.split(paragraph, maxsplit=1)[0].strip()


def make_doc(module: str, obj: dict, max_chars: int) -> Doc:
    """Turn one dumped object into a document: header, then the docstring capped at ``max_chars``."""
    title = obj["title"]
    sig = obj.get("signature") or ""
    header = f"{title}{sig}" if sig and len(sig) <= 160 else title
    paragraphs = [p for p in re.split(r"\n\s*\n", obj["doc"].strip()) if p.strip()]
    idx = _summary_index(paragraphs)
    summary = ""
    if idx is not None:
        paragraphs[idx] = _reflow(paragraphs[idx])
        summary = first_sentence(paragraphs[idx])
    # Cap at a paragraph (or line) boundary so a document fits a small model's context with room to spare.
    body = ""
    for p in paragraphs:
        candidate = f"{body}\n\n{p}" if body else p
        if len(header) + 2 + len(candidate) > max_chars:
            if not body:
                body = p[: max(0, max_chars - len(header) - 2)].rsplit("\n", 1)[0]
            break
        body = candidate
    if summary and summary not in body:
        summary = ""
    return Doc(id=title, title=title, text=f"{header}\n\n{body}", module=module, kind=obj["kind"], summary=summary)


def dump_stdlib(modules: Sequence[str] | None, exclude: Sequence[str], progress: bool = True) -> list[tuple[str, dict]]:
    """Run the isolated dumper; return ``(module, object)`` pairs in a deterministic order."""
    from tqdm.auto import tqdm

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONHASHSEED"] = "0"
    arg = json.dumps({"modules": list(modules) if modules else None, "exclude": list(exclude)})
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(DUMP_SCRIPT), arg], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    header = proc.stdout.readline()
    if not header:
        raise ToolkitError(f"stdlib docstring dump failed: {proc.communicate()[1].strip().splitlines()[-1:]}")
    total = json.loads(header)["total"]
    pairs: list[tuple[str, dict]] = []
    skipped: list[str] = []
    with tqdm(total=total, desc="corpus: reading stdlib docstrings", unit="module", disable=not progress) as bar:
        for line in proc.stdout:
            top = json.loads(line)
            for rec in top["records"]:
                if "skipped" in rec:
                    skipped.append(rec["module"])
                    continue
                pairs.extend((rec["module"], obj) for obj in rec["objects"])
            bar.update(1)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise ToolkitError(f"stdlib docstring dump exited with {proc.returncode}: {err.strip()[-300:]}")
    if modules:
        missing = sorted(set(modules) - {m.split(".")[0] for m, _ in pairs})
        if missing:
            raise ToolkitError(f"recipe field 'corpus.modules': no documented objects in {', '.join(missing)}")
    return pairs


def build_docs(pairs: Iterable[tuple[str, dict]], min_doc_chars: int, max_doc_chars: int) -> list[Doc]:
    """Documents from dumped objects: docstrings shorter than ``min_doc_chars`` are dropped; ids unique."""
    docs: dict[str, Doc] = {}
    for module, obj in pairs:
        if len(obj["doc"].strip()) < min_doc_chars or obj["title"] in docs:
            continue
        docs[obj["title"]] = make_doc(module, obj, max_doc_chars)
    return list(docs.values())


def split_by_package(docs: Sequence[Doc], validation: float, test: float, seed: int) -> dict[str, str]:
    """``{top-level package: split}``: a seeded shuffle of packages fills test, then validation, by doc count."""
    counts: dict[str, int] = {}
    for d in docs:
        counts[d.package] = counts.get(d.package, 0) + 1
    packages = sorted(counts)
    if len(packages) < 3:
        raise ToolkitError(f"corpus: need at least 3 top-level modules to split by module, got {len(packages)}")
    random.Random(seed).shuffle(packages)
    total = sum(counts.values())
    assignment: dict[str, str] = {}
    i = 0
    for split, share, keep in (("test", test, 2), ("validation", validation, 1)):
        filled = 0  # take at least one package, and always leave ``keep`` for the splits still to fill
        while i < len(packages) - keep and (filled == 0 or filled < share * total):
            assignment[packages[i]] = split
            filled += counts[packages[i]]
            i += 1
    for pkg in packages[i:]:
        assignment[pkg] = "train"
    return assignment


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_corpus(out: Path, docs: Sequence[Doc], assignment: dict[str, str]) -> dict[str, dict[str, int]]:
    """Write ``docs.jsonl`` and ``splits/{train,validation,test}.jsonl``; return per-split counts."""
    write_jsonl(out / "docs.jsonl", (d.record() for d in docs))
    stats = {}
    for split in SPLITS:
        rows = [{"text": d.text, "module": d.module} for d in docs if assignment[d.package] == split]
        write_jsonl(out / "splits" / f"{split}.jsonl", rows)
        stats[split] = {"documents": len(rows), "chars": sum(len(r["text"]) for r in rows),
                        "packages": sum(1 for s in assignment.values() if s == split)}
    return stats

