"""Hot-query LRU: normalised query + index version + filter → (query embedding, retrieved hits).

Repeated questions (FAQ traffic, retries, the openai client's re-sends) skip both the embedding forward pass
and the vector search. Keying on the index version means a rebuilt index never serves stale neighbours. A
hit for a smaller ``top_k`` than cached is sliced; a larger one reuses the cached embedding and re-searches.
A query restricted by a metadata filter is another question: the key carries :func:`filter_key` of it, so a
filtered query is never served an unfiltered entry (or one of another filter). Paraphrases are the job of the
optional :mod:`toolkit.serving.semantic_cache`.

Both caches live in the process by default; ``endpoint.cache.backend: redis`` puts them in a Redis server that
every replica shares (:mod:`toolkit.serving.redis_cache`). :class:`ExactCache` and :class:`SemanticStore` are
the interfaces the RAG service uses, whichever backend serves them; :func:`make_caches` picks it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from toolkit.serving.metrics import Metrics
    from toolkit.serving.profiles import EndpointSettings
    from toolkit.serving.semantic_cache import SemanticEntry, SemanticMatch


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
    created: float = field(default=0.0, compare=False)  # QueryCache's clock at put, for its TTL


class ExactCache(Protocol):
    """The exact-match cache the RAG service uses: :class:`QueryCache` or ``RedisQueryCache``."""

    def get(self, version: str, query: str, filter_key: str = "") -> CacheEntry | None: ...

    def put(self, version: str, query: str, entry: CacheEntry, filter_key: str = "") -> None: ...

    def __len__(self) -> int: ...


class SemanticStore(Protocol):
    """The semantic cache the RAG service uses: ``SemanticCache`` or ``RedisSemanticCache``."""

    hits: int
    misses: int

    def lookup(self, version: str, embedding: np.ndarray, top_k: int = 1, filter_key: str = "",
               query: str | None = None) -> SemanticMatch | None: ...

    def put(self, version: str, query: str, embedding: np.ndarray, hits: list[Any], top_k: int,
            filter_key: str = "") -> SemanticEntry: ...

    def put_answer(self, entry: SemanticEntry, answer_key: str, answer: dict[str, Any]) -> None: ...

    def __len__(self) -> int: ...


def make_caches(settings: EndpointSettings, metrics: Metrics) -> tuple[ExactCache, SemanticStore | None]:
    """The endpoint's exact cache and (when enabled) semantic cache, in memory or in Redis per ``settings.cache``."""
    sc = settings.semantic_cache
    if settings.cache.backend == "redis":
        from toolkit.serving.redis_cache import RedisLink, RedisQueryCache, RedisSemanticCache

        link = RedisLink(settings.cache.url or "", settings.cache.socket_timeout_ms, metrics.cache_errors)
        semantic: SemanticStore | None = (RedisSemanticCache(link, sc.size, sc.threshold, sc.ttl_s,
                                                             sc.match_identifiers) if sc.enabled else None)
        return RedisQueryCache(link, settings.cache_size, settings.cache.ttl_s), semantic
    from toolkit.serving.semantic_cache import SemanticCache

    semantic = SemanticCache(sc.size, sc.threshold, sc.ttl_s, sc.match_identifiers) if sc.enabled else None
    return QueryCache(settings.cache_size, settings.cache.ttl_s), semantic


class QueryCache:
    """Thread-safe: retrieval runs in worker threads (``asyncio.to_thread``), several at a time. An entry older
    than ``ttl_s`` (None: no expiry) is a miss and is dropped."""

    def __init__(self, size: int, ttl_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.ttl_s, self._clock = size, ttl_s, clock
        self._data: OrderedDict[tuple[str, str, str], CacheEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str, query: str, filter_key: str = "") -> CacheEntry | None:
        if self.size <= 0:
            return None
        key = (version, filter_key, normalise(query))
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and self.ttl_s is not None and self._clock() - entry.created > self.ttl_s:
                del self._data[key]
                return None
            if entry is not None:
                self._data.move_to_end(key)
            return entry

    def put(self, version: str, query: str, entry: CacheEntry, filter_key: str = "") -> None:
        if self.size <= 0:
            return
        key = (version, filter_key, normalise(query))
        entry.created = self._clock()
        with self._lock:
            old = self._data.get(key)
            if old is not None and self.ttl_s is not None and entry.created - old.created > self.ttl_s:
                old = None  # expired: never kept for its depth
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
