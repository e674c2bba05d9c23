"""Chunk texts and metadata in SQLite beside the vector index; vector id ``i`` is SQLite ``row = i``.

SQLite keeps the index directory self-contained and loads in milliseconds (no JSON parse of every chunk at
start-up); a lookup of ``top_k`` rows by primary key costs tens of microseconds.

Rows are the vector ids: a build numbers chunks 0..n-1, :func:`append_chunks` continues after the highest
row, :func:`delete_docs` leaves gaps (the FAISS index removes the same ids), so rows are never renumbered.

Filters (``{"module": "json", "title_prefix": "os."}``) are answered here as the set of allowed rows, which
the vector backend then searches inside (FAISS ``IDSelectorBatch``, a Milvus ``id in [...]`` expression): the
search ranks only allowed vectors instead of over-fetching and dropping, so a selective filter still returns
``k`` hits. Fields: ``doc_id`` (equality), ``title_prefix`` (prefix of the title) and every metadata field the
documents carry (equality; a list means "any of"). Several fields must all hold.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.retrieval.chunking import Chunk

STORE_NAME = "chunks.sqlite"
BUILTIN_FILTERS = ("doc_id", "title_prefix")


class FilterError(ToolkitError):
    """A filter the index cannot answer; ``field`` names the offending key (the endpoint answers 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"filter field '{field}': {message}" if field else f"filter: {message}")
        self.field, self.reason = field, message


def _rows(chunks: Iterable[Chunk], start: int) -> Iterable[tuple]:
    for i, c in enumerate(chunks, start):
        yield i, c.doc_id, c.chunk_id, c.title, c.text, json.dumps(c.meta, sort_keys=True) if c.meta else None


def write_store(path: Path, chunks: Iterable[Chunk]) -> int:
    con = sqlite3.connect(path)
    try:
        con.execute("CREATE TABLE chunks (row INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, chunk_id TEXT NOT NULL,"
                    " title TEXT NOT NULL, text TEXT NOT NULL, meta TEXT)")
        con.execute("CREATE INDEX chunks_doc ON chunks (doc_id)")  # add/remove look documents up by id
        con.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", _rows(chunks, 0))
        con.commit()
        return con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    finally:
        con.close()


def meta_fields(chunks: Iterable[Chunk]) -> list[str]:
    """The metadata field names present in ``chunks`` (the index's filterable fields besides the built-ins)."""
    return sorted({k for c in chunks for k in c.meta})


def _has_meta(con: sqlite3.Connection) -> bool:
    return "meta" in {r[1] for r in con.execute("PRAGMA table_info(chunks)")}


def rows_of_docs(path: Path, doc_ids: Sequence[str]) -> dict[str, list[int]]:
    """Rows of each listed document that the store holds (documents it does not hold are absent)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: dict[str, list[int]] = {}
        for start in range(0, len(doc_ids), 500):  # SQLite's bound-parameter limit
            part = list(doc_ids[start:start + 500])
            marks = ",".join("?" * len(part))
            for row, doc in con.execute(f"SELECT row, doc_id FROM chunks WHERE doc_id IN ({marks})", part):
                out.setdefault(doc, []).append(int(row))
        return out
    finally:
        con.close()


def update_store(path: Path, remove_rows: Sequence[int], chunks: Sequence[Chunk]) -> list[int]:
    """Delete ``remove_rows`` and append ``chunks`` after the highest row ever used; return the new rows.

    Called on the temporary copy of an index directory, so a failure leaves the installed index as it was. A
    store built before metadata existed gains the ``meta`` column here (its old rows have none)."""
    con = sqlite3.connect(path)
    try:
        if not _has_meta(con):
            con.execute("ALTER TABLE chunks ADD COLUMN meta TEXT")
        con.executemany("DELETE FROM chunks WHERE row = ?", ((int(r),) for r in remove_rows))
        # the next row is one past the highest ever used: ids of removed chunks are not reused, so a vector id
        # always means the same chunk
        top = con.execute("SELECT MAX(row) FROM chunks").fetchone()[0]
        start = max(-1 if top is None else int(top), _high_water(con)) + 1
        con.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", _rows(chunks, start))
        con.execute("CREATE TABLE IF NOT EXISTS store_info (key TEXT PRIMARY KEY, value INTEGER)")
        con.execute("INSERT OR REPLACE INTO store_info VALUES ('high_water', ?)", (start + len(chunks) - 1,))
        con.commit()
        return list(range(start, start + len(chunks)))
    finally:
        con.close()


def _high_water(con: sqlite3.Connection) -> int:
    try:
        got = con.execute("SELECT value FROM store_info WHERE key = 'high_water'").fetchone()
    except sqlite3.OperationalError:  # no store_info table: never updated
        return -1
    return -1 if got is None else int(got[0])


class ChunkStore:
    """Read-only view, shareable across threads (one connection guarded by a lock)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ToolkitError(f"{path}: chunk store missing (rebuild the index)")
        self.path = path
        self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        self.has_meta = _has_meta(self._con)
        self._cols = "row, doc_id, chunk_id, title, text" + (", meta" if self.has_meta else "")

    def __len__(self) -> int:
        with self._lock:
            return self._con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def _chunk(self, r: tuple) -> Chunk:
        meta = json.loads(r[5]) if self.has_meta and r[5] else {}
        return Chunk(r[1], r[2], r[3], r[4], meta)

    def get(self, rows: Sequence[int]) -> list[Chunk]:
        """Chunks for vector ids, in the order given (ids of -1, FAISS's 'no result', are dropped)."""
        wanted = [int(r) for r in rows if r >= 0]
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        with self._lock:
            got = {r[0]: self._chunk(r) for r in self._con.execute(
                f"SELECT {self._cols} FROM chunks WHERE row IN ({marks})", wanted)}
        return [got[r] for r in wanted if r in got]

    def documents(self) -> int:
        with self._lock:
            return self._con.execute("SELECT COUNT(DISTINCT doc_id) FROM chunks").fetchone()[0]

    def all_rows(self) -> np.ndarray:
        with self._lock:
            return np.fromiter((r[0] for r in self._con.execute("SELECT row FROM chunks ORDER BY row")), np.int64)

    def select(self, where: dict[str, Any], fields: Sequence[str] | None) -> np.ndarray:
        """Rows (int64) matching filter ``where``; ``fields`` = the index's metadata fields (its manifest's
        ``filter_fields``), None for an index built before they were recorded, which cannot be filtered."""
        if fields is None:
            raise FilterError("", "this index was built without metadata (before filters existed); rebuild it "
                                  "with `toolkit index build` to filter")
        sql, args = where_sql(where, fields)
        with self._lock:
            return np.fromiter((r[0] for r in self._con.execute(f"SELECT row FROM chunks WHERE {sql}", args)),
                               np.int64)

    def close(self) -> None:
        with self._lock:  # not while another thread is mid-query on the shared connection
            self._con.close()


def where_sql(where: dict[str, Any], fields: Sequence[str]) -> tuple[str, list[Any]]:
    """A WHERE clause and its parameters for a filter; unknown fields and bad values are a :class:`FilterError`.

    Field names never reach the SQL text: metadata fields go through ``json_extract(meta, ?)`` with the path
    as a parameter, after being checked against the index's own field list."""
    if not isinstance(where, dict) or not where:
        raise FilterError("", "must be a non-empty object of field: value")
    clauses, args = [], []
    for key, value in where.items():
        if key not in BUILTIN_FILTERS and key not in fields:
            known = ", ".join([*BUILTIN_FILTERS, *fields])
            extra = "" if fields else " (this index's documents carry no metadata)"
            raise FilterError(key, f"unknown (this index can filter on: {known}){extra}")
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
            raise FilterError(key, "must be a string, number, boolean or a non-empty list of them")
        if key == "title_prefix":
            if not all(isinstance(v, str) and v for v in values):
                raise FilterError(key, "must be a non-empty string (or list of them)")
            # substr, not LIKE: LIKE ignores ASCII case and gives '%' / '_' a meaning
            clauses.append("(" + " OR ".join(["substr(title, 1, ?) = ?"] * len(values)) + ")")
            args += [a for v in values for a in (len(v), v)]
            continue
        column = "doc_id" if key == "doc_id" else "json_extract(meta, ?)"
        if key != "doc_id":
            args.append(f'$."{key}"')
        # SQLite stores JSON true/false as 1/0
        clauses.append(f"{column} IN ({','.join('?' * len(values))})")
        args += [int(v) if isinstance(v, bool) else v for v in values]
    return " AND ".join(clauses), args
