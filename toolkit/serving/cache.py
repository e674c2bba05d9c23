"""Hot-query LRU: normalised query + index version + filter → (query embedding, retrieved hits).

Repeated questions (FAQ traffic, retries, the openai client's re-sends) skip both the embedding forward pass
and the vector search. Keying on the index version means a rebuilt index never serves stale neighbours. A
hit for a smaller ``top_k`` than cached is sliced; a larger one reuses the cached embedding and re-searches.
A query restricted by a metadata filter is another question: the key carries :func:`filter_key` of it, so a
filtered query is never served an unfiltered entry (or one of another filter). Paraphrases are the job of the
optional :mod:`toolkit.serving.semantic_cache`.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np


def normalise(query: str) -> str:
    """Case- and whitespace-insensitive key: 'What is  JSON?' and 'what is json?' share an entry."""
    return " ".join(query.lower().split())


def filter_key(filter: dict[str, Any] | None) -> str:
    """Canonical JSON of a retrieval filter ('' for none): key order and spacing do not matter, values do."""
    if not filter:
        return ""
    return json.dumps(filter, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass
class CacheEntry:
    embedding: np.ndarray
    hits: list[Any]
    top_k: int


class QueryCache:
    """Thread-safe: retrieval runs in worker threads (``asyncio.to_thread``), several at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str, str], CacheEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str, query: str, filter_key: str = "") -> CacheEntry | None:
        if self.size <= 0:
            return None
        key = (version, filter_key, normalise(query))
        with self._lock:
            entry = self._data.get(key)
            if entry is not None:
                self._data.move_to_end(key)
            return entry

    def put(self, version: str, query: str, entry: CacheEntry, filter_key: str = "") -> None:
        if self.size <= 0:
            return
        key = (version, filter_key, normalise(query))
        with self._lock:
            old = self._data.get(key)
            # two threads that missed the same query race here; keep whichever searched deeper, so a k=3 miss
            # finishing last does not make the next k=10 request search again
            if old is None or entry.top_k >= old.top_k:
                self._data[key] = entry
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
