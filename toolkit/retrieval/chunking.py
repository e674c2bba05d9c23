"""Read ``{"id","title","text"}`` documents and cut long texts into overlapping word windows.

Word windows (not characters) keep chunks within the embedding model's 256 word-piece limit without running
its tokenizer here; the overlap keeps a sentence that straddles a boundary retrievable from either side.
Each chunk keeps its document id and title; ``chunk_id`` is ``<doc id>#<n>``. Any other top-level field of
a document (``{"id", "title", "text", "module": "json", "kind": "function"}``) is metadata: a string, number or
boolean kept with every chunk of the document, so retrieval can be filtered on it
(:mod:`toolkit.retrieval.store`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.jsonl import read_jsonl


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    chunk_id: str
    title: str
    text: str
    # metadata of the document (filterable fields); not part of equality so a store read without it compares equal
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


DOC_FIELDS = ("id", "title", "text")
# names the filter language gives a meaning of its own (toolkit.retrieval.store.BUILTIN_FILTERS)
RESERVED_META = ("doc_id", "title_prefix", "chunk_id")


def doc_meta(doc: dict[str, Any], where: str = "document") -> dict[str, Any]:
    """The metadata of a document: every field but id/title/text (or its ``meta`` dict when given one)."""
    meta = doc["meta"] if isinstance(doc.get("meta"), dict) else {
        k: v for k, v in doc.items() if k not in DOC_FIELDS and k != "meta"}
    for k, v in meta.items():
        if k in RESERVED_META:
            raise ToolkitError(f"{where}: metadata field '{k}' is reserved for filters; rename it")
        if not isinstance(v, (str, int, float, bool)):
            raise ToolkitError(f"{where}: metadata field '{k}' must be a string, number or boolean "
                               f"(got {type(v).__name__})")
    return meta


def read_docs(path: str | Path) -> list[dict[str, Any]]:
    """Documents from a JSONL file; every bad line is reported with its line number."""
    rows = read_jsonl(path, "documents file not found (expected JSONL with id, title, text)",
                      require={"id": object, "text": str}, require_error="expected an object with 'id' and string 'text'")
    if not rows:
        raise ToolkitError(f"{Path(path)}: no documents")
    return [{"id": str(d["id"]), "title": str(d.get("title") or ""), "text": d["text"],
             "meta": doc_meta(d, f"{Path(path)}: document '{d['id']}'")} for d in rows]


def chunk_text(text: str, words: int, overlap: int) -> list[str]:
    if overlap >= words:
        raise ToolkitError(f"chunk_overlap ({overlap}) must be smaller than chunk_words ({words})")
    tokens = text.split()
    if len(tokens) <= words:
        return [" ".join(tokens)] if tokens else []
    step = words - overlap
    out = []
    for start in range(0, len(tokens), step):
        out.append(" ".join(tokens[start:start + words]))
        if start + words >= len(tokens):
            break
    return out


def chunk_docs(docs: Iterable[dict[str, Any]], words: int, overlap: int) -> Iterator[Chunk]:
    for doc in docs:
        meta = doc_meta(doc, f"document '{doc['id']}'")
        for i, piece in enumerate(chunk_text(doc["text"], words, overlap)):
            yield Chunk(doc["id"], f"{doc['id']}#{i}", doc.get("title", ""), piece, meta)
