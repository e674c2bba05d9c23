"""The hot-query cache, the chunk store and retrieval as the endpoint uses them: from several worker threads at
once (``asyncio.to_thread``). A short switch interval makes the interpreter change threads every few bytecodes,
so an unlocked read-modify-write shows up as an exception or a broken invariant instead of passing by luck."""

import random
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from toolkit.retrieval.index import load_index
from toolkit.retrieval.store import STORE_NAME, ChunkStore
from toolkit.serving.cache import CacheEntry, QueryCache

THREADS = 8


@contextmanager
def fast_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def run_threads(work: Callable[[int], None], n: int = THREADS) -> list[BaseException]:
    """Start ``n`` threads together on ``work(i)``; return what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def body(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    with fast_switching():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return errors


def test_query_cache_under_concurrent_get_put_and_eviction():
    cache, size, keys = QueryCache(16), 16, [f"query {i}" for i in range(64)]

    def work(i: int) -> None:
        rng = random.Random(i)
        for _ in range(3000):
            q = rng.choice(keys)
            if rng.random() < 0.5:
                cache.put("v1", q, CacheEntry(np.zeros((1, 2), np.float32), [q], rng.randint(1, 10)))
            else:
                entry = cache.get("v1", q)
                assert entry is None or entry.hits == [q]  # never another query's entry
            assert len(cache) <= size

    assert run_threads(work) == []
    assert len(cache) == size


def test_query_cache_keeps_the_deeper_of_racing_entries():
    cache = QueryCache(4)

    def work(i: int) -> None:
        for _ in range(500):
            k = 10 if i % 2 else 3
            cache.put("v1", "same question", CacheEntry(np.zeros((1, 2), np.float32), list(range(k)), k))

    assert run_threads(work) == []
    assert cache.get("v1", "same question").top_k == 10  # a late k=3 miss does not replace a k=10 entry


def test_chunk_store_shared_by_threads(small_index):
    store = ChunkStore(small_index / STORE_NAME)
    try:
        n = len(store)
        expected = store.get(range(n))  # read once, single-threaded
        assert len(expected) == n

        def work(i: int) -> None:
            rng = random.Random(i)
            for _ in range(300):
                rows = rng.sample(range(n), rng.randint(1, 8)) + [-1]  # -1: FAISS's "no result"
                assert store.get(rows) == [expected[r] for r in rows if r >= 0]
                assert len(store) == n

        assert run_threads(work) == []
    finally:
        store.close()


@pytest.fixture(scope="module")
def service(small_index, embedder):
    from toolkit.serving.llm import EngineClient
    from toolkit.serving.metrics import Metrics
    from toolkit.serving.profiles import EndpointSettings
    from toolkit.serving.rag import PromptBuilder, RagService

    es = EndpointSettings(cache_size=8)  # smaller than the question set: entries are evicted while in use
    index = load_index(small_index, embedder=embedder)
    return RagService(index, EngineClient("http://127.0.0.1:9", "m"), es, PromptBuilder(es.system_prompt), Metrics())


def test_concurrent_retrieval_matches_sequential(service):
    """What the endpoint's worker threads do: embed, search FAISS, read the chunk store, use the cache."""
    questions = [f"{q} ({n})" for q in ("Who walked on the Moon?", "How tall is Mount Everest?",
                                        "What is FAISS?", "Which river flows through Egypt?")
                 for n in range(3)]
    expected = {q: [(h.chunk.chunk_id, h.score) for h in service.index.search(q, 5)] for q in questions}
    calls = [0] * THREADS

    def work(i: int) -> None:
        rng = random.Random(i)
        for _ in range(12):
            q, k = rng.choice(questions), rng.choice((2, 5))
            hits, _, _ = service.retrieve(q, k)
            calls[i] += 1
            got = [(h.chunk.chunk_id, h.score) for h in hits]
            assert [c for c, _ in got] == [c for c, _ in expected[q][:k]], q
            assert np.allclose([s for _, s in got], [s for _, s in expected[q][:k]], atol=1e-5)

    assert run_threads(work) == []
    m = service.metrics
    assert m.cache_hits._value.get() + m.cache_misses._value.get() == sum(calls)
    assert len(service.cache) <= 8
