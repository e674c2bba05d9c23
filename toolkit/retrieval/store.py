"""Chunk texts and metadata in SQLite beside the vector index; FAISS row ``i`` is SQLite ``row = i``.

SQLite keeps the index directory self-contained and loads in milliseconds (no JSON parse of every chunk at
start-up); a lookup of ``top_k`` rows by primary key costs tens of microseconds.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.retrieval.chunking import Chunk

STORE_NAME = "chunks.sqlite"


def write_store(path: Path, chunks: Iterable[Chunk]) -> int:
    con = sqlite3.connect(path)
    try:
        con.execute("CREATE TABLE chunks (row INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, chunk_id TEXT NOT NULL,"
                    " title TEXT NOT NULL, text TEXT NOT NULL)")
        con.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)",
                        ((i, c.doc_id, c.chunk_id, c.title, c.text) for i, c in enumerate(chunks)))
        con.commit()
        return con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    finally:
        con.close()


class ChunkStore:
    """Read-only view, shareable across threads (one connection guarded by a lock)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ToolkitError(f"{path}: chunk store missing (rebuild the index)")
        self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return self._con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def get(self, rows: Sequence[int]) -> list[Chunk]:
        """Chunks for FAISS rows, in the order given (rows of -1, FAISS's 'no result', are dropped)."""
        wanted = [int(r) for r in rows if r >= 0]
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        with self._lock:
            got = {r[0]: Chunk(r[1], r[2], r[3], r[4]) for r in self._con.execute(
                f"SELECT row, doc_id, chunk_id, title, text FROM chunks WHERE row IN ({marks})", wanted)}
        return [got[r] for r in wanted if r in got]

    def close(self) -> None:
        with self._lock:  # not while another thread is mid-query on the shared connection
            self._con.close()
