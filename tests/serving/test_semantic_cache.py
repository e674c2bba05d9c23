"""Semantic cache semantics with real all-MiniLM-L6-v2 embeddings of hand-written sentences, and the endpoint
serving a paraphrase from it (a real app under uvicorn in front of the streaming FakeEngine).

Cosines of these sentences under the packaged model (measured once, 2026-12-01): the paraphrase pair 0.947,
the Moon question vs the Egypt question 0.108; the thresholds below sit well away from both."""

import httpx
import numpy as np
import pytest
from live_servers import FakeEngine

from toolkit.serving.cache import CacheEntry, QueryCache, filter_key
from toolkit.serving.semantic_cache import SemanticCache, identifiers

MOON = "Who walked on the Moon in 1969?"
MOON_PARA = "Who was the first person to walk on the moon in 1969?"
NILE = "Which river flows through Egypt?"


@pytest.fixture(scope="module")
def vecs(embedder):
    return dict(zip((MOON, MOON_PARA, NILE), embedder.encode([MOON, MOON_PARA, NILE])))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_threshold_separates_a_paraphrase_from_another_question(vecs):
    cache = SemanticCache(size=8, threshold=0.9)
    cache.put("v1", MOON, vecs[MOON], ["moon-hits"], top_k=3)
    m = cache.lookup("v1", vecs[MOON_PARA], top_k=3)
    assert m is not None and m.entry.query == MOON and m.entry.hits == ["moon-hits"] and 0.9 <= m.similarity < 1
    assert cache.lookup("v1", vecs[NILE]) is None
    assert cache.lookup("v1", vecs[MOON], top_k=4) is None  # the entry searched only 3 deep
    strict = SemanticCache(size=8, threshold=0.99)
    strict.put("v1", MOON, vecs[MOON], ["moon-hits"], top_k=3)
    assert strict.lookup("v1", vecs[MOON_PARA]) is None and strict.lookup("v1", vecs[MOON]) is not None
    assert (cache.hits, cache.misses) == (1, 2)


def test_most_similar_entry_wins(vecs):
    cache = SemanticCache(size=8, threshold=0.05)  # both entries pass; the closer one must be served
    cache.put("v1", NILE, vecs[NILE], ["nile"], 1)
    cache.put("v1", MOON, vecs[MOON], ["moon"], 1)
    assert cache.lookup("v1", vecs[MOON_PARA]).entry.hits == ["moon"]


def test_ttl_expires_entries(vecs):
    clock = Clock()
    cache = SemanticCache(size=8, threshold=0.9, ttl_s=10, clock=clock)
    cache.put("v1", MOON, vecs[MOON], ["moon"], 1)
    clock.now = 10.0
    assert cache.lookup("v1", vecs[MOON_PARA]) is not None  # age 10 s: still served
    clock.now = 10.5
    assert cache.lookup("v1", vecs[MOON_PARA]) is None and len(cache) == 0  # expired, and dropped


def test_size_bound_evicts_least_recently_used(vecs, embedder):
    other = "How tall is Mount Everest?"
    cache = SemanticCache(size=2, threshold=0.9)
    cache.put("v1", MOON, vecs[MOON], ["moon"], 1)
    cache.put("v1", NILE, vecs[NILE], ["nile"], 1)
    assert cache.lookup("v1", vecs[MOON_PARA]) is not None  # Moon is now the most recently used
    cache.put("v1", other, embedder.encode([other])[0], ["everest"], 1)  # evicts Nile
    assert len(cache) == 2 and cache.lookup("v1", vecs[NILE]) is None
    assert cache.lookup("v1", vecs[MOON]) is not None


def test_keyed_by_index_version_and_filter(vecs):
    cache = SemanticCache(size=8, threshold=0.9)
    cache.put("v1", MOON, vecs[MOON], ["moon"], 1)
    assert cache.lookup("v2", vecs[MOON]) is None  # a rebuilt index
    fk = filter_key({"source": "nasa"})
    assert cache.lookup("v1", vecs[MOON], filter_key=fk) is None  # a filtered query: not the unfiltered entry
    cache.put("v1", MOON, vecs[MOON], ["moon-nasa"], 1, filter_key=fk)
    assert cache.lookup("v1", vecs[MOON_PARA], filter_key=fk).entry.hits == ["moon-nasa"]
    assert cache.lookup("v1", vecs[MOON_PARA]).entry.hits == ["moon"]


def test_filter_key_is_canonical_and_keys_the_exact_cache():
    assert filter_key(None) == filter_key({}) == ""
    assert filter_key({"a": 1, "b": [2, 3]}) == filter_key({"b": [2, 3], "a": 1}) != filter_key({"a": 2, "b": [2, 3]})
    cache = QueryCache(4)
    entry = CacheEntry(np.zeros((1, 4), np.float32), [], 5)
    cache.put("v1", "q", entry)
    assert cache.get("v1", "q", filter_key({"doc": "x"})) is None and cache.get("v1", "q") is entry


def test_identifiers():
    assert identifiers("Explain what json.dumps() does.") == {"json.dumps"}
    assert identifiers("what does getattr() do, e.g. on a snake_case_name or an OrderedDict") == {
        "getattr", "snake_case_name", "OrderedDict"}
    assert identifiers("What is re.Match?") != identifiers("What is re.match?")
    assert identifiers("What is the capital of France?") == frozenset()


def test_identifier_guard_rejects_a_neighbouring_api(embedder):
    dump, dumps, para = "What does the function json.dump do?", "What does the function json.dumps do?", \
        "Explain what json.dump() does."
    v = dict(zip((dump, dumps, para), embedder.encode([dump, dumps, para])))
    plain = SemanticCache(size=4, threshold=0.8)
    guarded = SemanticCache(size=4, threshold=0.8, match_identifiers=True)
    for cache in (plain, guarded):
        cache.put("v1", dump, v[dump], ["json.dump"], 1)
    assert plain.lookup("v1", v[dumps]) is not None  # the neighbour embeds within 0.8 of the cached question
    assert guarded.lookup("v1", v[dumps], query=dumps) is None
    assert guarded.lookup("v1", v[para], query=para).entry.hits == ["json.dump"]
    with pytest.raises(ValueError, match="query text"):
        guarded.lookup("v1", v[para])


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        SemanticCache(size=1, threshold=0)


def _ask(url: str, query: str) -> dict:
    r = httpx.post(url + "/v1/rag", json={"query": query, "top_k": 3, "max_tokens": 8, "temperature": 0},
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_endpoint_serves_a_paraphrase_from_the_semantic_cache(endpoint):
    engine = FakeEngine(tokens=4, delay_s=0.0)
    with endpoint(engine, semantic_cache={"enabled": True, "threshold": 0.9}) as (url, app):
        first = _ask(url, MOON)
        assert not first["cached"] and first["timings"]["search"] > 0
        para = _ask(url, MOON_PARA)
        # embedded (that is how it was compared), not searched; the same sources as the original question
        assert para["cached"] and para["timings"]["embed"] > 0 and para["timings"]["search"] == 0
        assert para["sources"] == first["sources"]
        assert not _ask(url, NILE)["cached"]
        assert engine.started == 3  # retrieval reuse only: every answer was generated
        assert (app.state.rag.semantic.hits, app.state.rag.semantic.misses) == (1, 2)


def test_endpoint_semantic_cache_is_off_by_default(endpoint):
    with endpoint(FakeEngine(tokens=2, delay_s=0.0)) as (url, app):
        _ask(url, MOON)
        assert not _ask(url, MOON_PARA)["cached"] and app.state.rag.semantic is None


def test_endpoint_reuses_answers_behind_their_switch(endpoint):
    engine = FakeEngine(tokens=4, delay_s=0.0)
    settings = {"enabled": True, "threshold": 0.9, "reuse_answers": True}
    with endpoint(engine, semantic_cache=settings) as (url, _):
        first = _ask(url, MOON)
        para = _ask(url, MOON_PARA)
        assert engine.started == 1  # the paraphrase's answer came from the cache, not the engine
        assert para["answer"] == first["answer"] == "w0 w1 w2 w3 " and para["usage"]["completion_tokens"] == 4
        r = httpx.post(url + "/v1/rag", json={"query": MOON_PARA, "top_k": 3, "max_tokens": 8,
                                                "temperature": 0.7}, timeout=60)
        assert r.status_code == 200 and engine.started == 2  # sampling: never replayed
        _ask(url, MOON_PARA.replace("1969", "1969 exactly"))  # same settings, another paraphrase: replayed
        assert engine.started == 2
