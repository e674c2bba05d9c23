"""Semantic query cache: a query close enough in embedding space to a cached one reuses its retrieval.

The exact-match LRU (:mod:`toolkit.serving.cache`) only catches the same string up to case and spacing. Users
ask the same thing in other words ("What does json.dumps do?" / "Explain json.dumps."); a semantic cache
(as in GPTCache, Bang 2023, and Redis' SemanticCache) serves such a query from the entry whose stored query
embedding has the highest cosine similarity with it, when that similarity is at least ``threshold``.

What it saves, and what it risks:

- The query is still embedded (that is how it is compared); a hit skips the vector search, and with
  ``reuse_answers`` also the generation, which on a CPU is the expensive part.
- A false hit serves another question's context (or answer). Questions about neighbouring APIs ("What does
  json.dump do?" vs "... json.dumps ...") are close in embedding space, so the threshold is a measured
  choice: :mod:`toolkit.evaluation.paraphrases` gives hit and false-hit rates per threshold on a paraphrase
  set built from the QA set, and the default threshold is the lowest one whose false-hit rate is <= 1% there.

Optional identifier guard (``match_identifiers``): a hit also needs both queries to name the same code
identifiers (:func:`identifiers`: dotted names, snake_case, CamelCase, ``f()``), case-sensitive. Sentence
embeddings weigh one differing token of ``json.dump`` / ``json.dumps`` little; the guard is an exact-match
check on exactly those tokens (the "entity match" filter of semantic caches for technical questions).
Queries naming no identifier are decided by the cosine alone.

Entries are partitioned by (index version, filter key): a rebuilt index or a different metadata filter never
compares against them. Each entry lives at most ``ttl_s`` seconds (None: no expiry) and the cache holds at
most ``size`` entries, least recently used evicted first. Thread-safe: retrieval runs in worker threads.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.serving.cache import normalise

# dotted names (json.dumps, abc.ABC.register), snake_case, CamelCase / mixedCase, and calls (``f()``)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\b[A-Za-z0-9]*_[A-Za-z0-9_]+\b"
                    r"|\b[a-z]+[A-Z][A-Za-z0-9]*\b|\b[A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*\b|\b[A-Za-z_]\w*(?=\(\))")


def identifiers(text: str) -> frozenset[str]:
    """Code identifiers a query names: ``"What does json.dumps() do?"`` → ``{"json.dumps"}``."""
    # all-single-letter dotted tokens are abbreviations ("e.g", "i.e"), not names
    # case kept: Python names are case-sensitive (re.Match is not re.match; case-folding served one for the other)
    return frozenset(m for m in _IDENT.findall(text) if max(map(len, m.split("."))) > 1)


@dataclass
class SemanticEntry:
    query: str
    embedding: np.ndarray  # (d,), unit length
    hits: list[Any]
    top_k: int
    created: float
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # generation settings -> finished answer
    idents: frozenset[str] = frozenset()  # identifiers(query), for the optional guard


@dataclass
class SemanticMatch:
    entry: SemanticEntry
    similarity: float  # cosine similarity of the looked-up query with entry.query


def _unit(vec: np.ndarray) -> np.ndarray:
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class SemanticCache:
    """``lookup`` by embedding, ``put`` after a search; see the module docstring for the method."""

    def __init__(self, size: int, threshold: float, ttl_s: float | None = None, match_identifiers: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.size, self.threshold, self.ttl_s, self._clock = size, threshold, ttl_s, clock
        self.match_identifiers = match_identifiers
        # key: (version, filter_key, normalised query); one OrderedDict for the global LRU order
        self._data: OrderedDict[tuple[str, str, str], SemanticEntry] = OrderedDict()
        # per partition, the stacked embeddings and their keys, rebuilt lazily after a put or an eviction
        self._matrix: dict[tuple[str, str], tuple[np.ndarray, list[tuple[str, str, str]]]] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _expired(self, entry: SemanticEntry, now: float) -> bool:
        return self.ttl_s is not None and now - entry.created > self.ttl_s

    def _partition(self, version: str, filter_key: str) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
        part = (version, filter_key)
        cached = self._matrix.get(part)
        if cached is None:
            keys = [k for k in self._data if k[0] == version and k[1] == filter_key]
            mat = (np.stack([self._data[k].embedding for k in keys]) if keys
                   else np.zeros((0, 1), np.float32))
            cached = self._matrix[part] = (mat, keys)
        return cached

    def _drop(self, key: tuple[str, str, str]) -> None:
        del self._data[key]
        self._matrix.pop(key[:2], None)

    def lookup(self, version: str, embedding: np.ndarray, top_k: int = 1, filter_key: str = "",
               query: str | None = None) -> SemanticMatch | None:
        """The most similar live entry of this (version, filter) if its cosine >= threshold and it holds at
        least ``top_k`` hits; else None. Expired entries met on the way are removed. With the identifier
        guard, ``query`` is required and entries naming other identifiers are passed over."""
        if self.size <= 0:
            return None
        if self.match_identifiers and query is None:
            raise ValueError("the identifier guard needs the query text")
        idents = identifiers(query) if self.match_identifiers else frozenset()
        v = _unit(embedding)
        now = self._clock()
        with self._lock:
            mat, keys = self._partition(version, filter_key)
            if not keys:
                self.misses += 1
                return None
            sims = mat @ v
            # best first; skip expired entries (dropped after the scan so the matrix stays valid meanwhile)
            order = np.argsort(-sims)
            match, dead = None, []
            for i in order:
                if sims[i] < self.threshold:
                    break
                entry = self._data[keys[i]]
                if self._expired(entry, now):
                    dead.append(keys[i])
                    continue
                if self.match_identifiers and entry.idents != idents:
                    continue  # about another API: the next most similar entry may be about this one
                if entry.top_k >= top_k:
                    match = SemanticMatch(entry, float(sims[i]))
                    self._data.move_to_end(keys[i])
                # the most similar live entry decides: a shallower one is a miss, not a reason to fall back
                # to a less similar question
                break
            for k in dead:
                self._drop(k)
            if match is None:
                self.misses += 1
            else:
                self.hits += 1
            return match

    def put(self, version: str, query: str, embedding: np.ndarray, hits: list[Any], top_k: int,
            filter_key: str = "") -> SemanticEntry:
        """Store (or refresh) the entry of ``query``; evicts the least recently used beyond ``size``."""
        entry = SemanticEntry(query, _unit(embedding), list(hits), top_k, self._clock(), idents=identifiers(query))
        if self.size <= 0:
            return entry
        key = (version, filter_key, normalise(query))
        with self._lock:
            old = self._data.get(key)
            if old is not None and old.top_k > top_k and not self._expired(old, entry.created):
                entry = old  # keep the deeper search (same race as in QueryCache.put)
            else:
                self._data[key] = entry
                self._matrix.pop(key[:2], None)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._drop(next(iter(self._data)))
        return entry

    def put_answer(self, entry: SemanticEntry, answer_key: str, answer: dict[str, Any]) -> None:
        """Attach a finished answer to ``entry`` (the endpoint's ``reuse_answers`` switch)."""
        with self._lock:
            entry.answers[answer_key] = answer

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
