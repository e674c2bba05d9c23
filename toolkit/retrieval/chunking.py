"""Read ``{"id","title","text"}`` documents and cut long texts into overlapping word windows.

Word windows (not characters) keep chunks within the embedding model's 256 word-piece limit without running
its tokenizer here; the overlap keeps a sentence that straddles a boundary retrievable from either side.
Each chunk keeps its document id and title; ``chunk_id`` is ``<doc id>#<n>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.jsonl import read_jsonl


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    chunk_id: str
    title: str
    text: str


def read_docs(path: str | Path) -> list[dict[str, str]]:
    """Documents from a JSONL file; every bad line is reported with its line number."""
    rows = read_jsonl(path, "documents file not found (expected JSONL with id, title, text)",
                      require={"id": object, "text": str}, require_error="expected an object with 'id' and string 'text'")
    if not rows:
        raise ToolkitError(f"{Path(path)}: no documents")
    return [{"id": str(d["id"]), "title": str(d.get("title") or ""), "text": d["text"]} for d in rows]


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


def chunk_docs(docs: Iterable[dict[str, str]], words: int, overlap: int) -> Iterator[Chunk]:
    for doc in docs:
        for i, piece in enumerate(chunk_text(doc["text"], words, overlap)):
            yield Chunk(doc["id"], f"{doc['id']}#{i}", doc.get("title", ""), piece)
