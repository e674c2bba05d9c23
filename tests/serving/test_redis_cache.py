"""The query cache in a real Redis (Debian's ``redis-server`` on a free port, no persistence): the exact and
semantic caches across two clients, and two real endpoint apps (uvicorn, one streaming FakeEngine) sharing
one Redis — a question answered by one is a hit on the other; killing Redis under load costs no request;
a restarted Redis serves hits again."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from live_servers import FakeEngine, scrape, serve, wait_until

from toolkit.errors import ToolkitError
from toolkit.serving.cache import CacheEntry, QueryCache, filter_key
from toolkit.serving.engine import free_port
from toolkit.serving.metrics import Metrics
from toolkit.serving.profiles import load_profile

redis = pytest.importorskip("redis", reason="redis-py not installed (pip install redis==8.1.0)")
REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server missing (apt-get install redis-server; "
                                "scripts/setup.sh installs it)")

from toolkit.serving.redis_cache import RedisLink, RedisQueryCache, RedisSemanticCache  # noqa: E402

MOON = "Who walked on the Moon in 1969?"
MOON_PARA = "Who was the first person to walk on the moon in 1969?"
NILE = "Which river flows through Egypt?"


class RedisServer:
    """A throw-away ``redis-server`` on a fixed port: ``start``/``stop`` may be repeated (a restart)."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir, self.proc = free_port(), workdir, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        ok = wait_until(lambda: self._ping(client), timeout_s=10)
        client.close()
        assert ok, "redis-server did not start"

    @staticmethod
    def _ping(client: Any) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # a crash, not a shutdown: clients see connections reset
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def _link(url: str, metrics: Metrics | None = None) -> RedisLink:
    return RedisLink(url, 50, (metrics or Metrics()).cache_errors)


def _errors(metrics: Metrics) -> float:
    return metrics.cache_errors._value.get()


def test_exact_cache_is_shared_keyed_by_version_and_filter(redis_server, loaded_index):
    vec = loaded_index.embed(MOON)
    hits = loaded_index.search_vector(vec, 3)
    a = RedisQueryCache(_link(redis_server.url), size=16, ttl_s=60)
    b = RedisQueryCache(_link(redis_server.url), size=16, ttl_s=60)  # another replica
    assert b.get("v1", MOON) is None
    a.put("v1", MOON, CacheEntry(vec, hits, 3))
    got = b.get("v1", "  who walked on the MOON in 1969? ")  # normalised like the memory cache
    assert got is not None and got.hits == hits and got.top_k == 3
    assert got.embedding.dtype == np.float32 and np.array_equal(got.embedding, vec)
    assert [h.score for h in got.hits] == [h.score for h in hits]
    assert b.get("v2", MOON) is None  # a rebuilt index
    assert b.get("v1", MOON, filter_key({"doc_id": "3"})) is None  # a filtered query is another question
    client = redis.Redis.from_url(redis_server.url)
    key = RedisQueryCache.key("v1", MOON)
    assert key.startswith("toolkit:v1::") and len(key.rsplit(":", 1)[1]) == 64  # sha256 of the query
    assert 0 < client.pttl(key) <= 60_000
    # a shallower search finishing later does not replace a deeper one
    b.put("v1", MOON, CacheEntry(vec, hits[:1], 1))
    assert a.get("v1", MOON).top_k == 3


def test_exact_cache_ttl_and_size_bound(redis_server, loaded_index):
    vec = loaded_index.embed(NILE)
    cache = RedisQueryCache(_link(redis_server.url), size=3, ttl_s=0.3)
    cache.put("v1", NILE, CacheEntry(vec, [], 1))
    assert cache.get("v1", NILE) is not None
    time.sleep(0.5)
    assert cache.get("v1", NILE) is None  # expired in Redis
    for i in range(5):
        cache.put("v1", f"question {i}", CacheEntry(vec, [], 1))
    assert len(cache) == 3  # the two oldest writes were evicted
    assert cache.get("v1", "question 0") is None and cache.get("v1", "question 1") is None
    assert cache.get("v1", "question 4") is not None


def test_memory_cache_honours_the_same_ttl():
    now = [0.0]
    cache = QueryCache(4, ttl_s=10, clock=lambda: now[0])
    cache.put("v1", "q", CacheEntry(np.zeros((1, 4), np.float32), [], 1))
    now[0] = 10.0
    assert cache.get("v1", "q") is not None
    now[0] = 10.5
    assert cache.get("v1", "q") is None and len(cache) == 0


@pytest.fixture(scope="module")
def vecs(embedder):
    return dict(zip((MOON, MOON_PARA, NILE), embedder.encode([MOON, MOON_PARA, NILE])))


def test_semantic_cache_across_replicas(redis_server, loaded_index, vecs):
    hits = loaded_index.search(MOON, 3)
    a = RedisSemanticCache(_link(redis_server.url), size=8, threshold=0.9, ttl_s=60)
    b = RedisSemanticCache(_link(redis_server.url), size=8, threshold=0.9, ttl_s=60)
    assert b.lookup("v1", vecs[MOON_PARA], 3) is None  # empty: B now mirrors an empty list
    stored = a.put("v1", MOON, vecs[MOON], hits, 3)
    m = b.lookup("v1", vecs[MOON_PARA], 3)  # B fetches only what A pushed since
    assert m is not None and m.entry.query == MOON and m.entry.hits == hits and 0.9 <= m.similarity < 1
    assert b.lookup("v1", vecs[NILE]) is None  # another question, under the threshold
    assert b.lookup("v1", vecs[MOON], 4) is None  # the entry searched only 3 deep
    assert b.lookup("v2", vecs[MOON]) is None  # a rebuilt index
    assert b.lookup("v1", vecs[MOON], filter_key=filter_key({"doc_id": "1"})) is None
    strict = RedisSemanticCache(_link(redis_server.url), size=8, threshold=0.99)
    assert strict.lookup("v1", vecs[MOON_PARA]) is None and strict.lookup("v1", vecs[MOON]) is not None
    # an answer attached through one replica is replayed by the other
    a.put_answer(stored, "k", {"pieces": ["w0 "], "finish_reason": "stop", "completion_tokens": 1})
    assert b.lookup("v1", vecs[MOON_PARA]).entry.answers == {
        "k": {"pieces": ["w0 "], "finish_reason": "stop", "completion_tokens": 1}}
    assert (b.hits, b.misses) == (2, 5)


def test_semantic_cache_cap_and_ttl(redis_server, embedder, vecs):
    cache = RedisSemanticCache(_link(redis_server.url), size=2, threshold=0.9, ttl_s=0.3)
    cache.put("v1", MOON, vecs[MOON], [], 1)
    assert cache.lookup("v1", vecs[MOON_PARA]) is not None
    time.sleep(0.5)
    assert cache.lookup("v1", vecs[MOON_PARA]) is None  # expired
    others = ["How tall is Mount Everest?", "What is the speed of light?"]
    cache.ttl_ms = 60_000
    cache.put("v1", MOON, vecs[MOON], [], 1)
    for q, v in zip(others, embedder.encode(others)):
        cache.put("v1", q, v, [], 1)
    assert len(cache) == 2 and cache.lookup("v1", vecs[MOON]) is None  # capped: the oldest write went


def test_redis_down_is_a_counted_miss(loaded_index):
    metrics = Metrics()
    link = _link(f"redis://127.0.0.1:{free_port()}/0", metrics)  # nothing listens there
    cache = RedisQueryCache(link, size=8, ttl_s=60)
    t = time.perf_counter()
    assert cache.get("v1", MOON) is None
    cache.put("v1", MOON, CacheEntry(loaded_index.embed(MOON), [], 1))
    assert time.perf_counter() - t < 1 and _errors(metrics) == 1  # then not asked again for RETRY_AFTER_S
    assert len(cache) == 0


def test_hung_redis_costs_one_socket_timeout(redis_server, loaded_index):
    metrics = Metrics()
    link = _link(redis_server.url, metrics)
    cache = RedisQueryCache(link, size=8, ttl_s=60)
    cache.put("v1", MOON, CacheEntry(loaded_index.embed(MOON), [], 1))
    redis_server.proc.send_signal(signal.SIGSTOP)  # alive but not answering: the socket timeout decides
    try:
        t = time.perf_counter()
        assert cache.get("v1", MOON) is None
        first = time.perf_counter() - t
        t = time.perf_counter()
        assert cache.get("v1", MOON) is None  # within RETRY_AFTER_S: not asked at all
        second = time.perf_counter() - t
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    assert 0.04 <= first < 0.5 and second < 0.01 and _errors(metrics) == 1
    time.sleep(link.RETRY_AFTER_S)
    assert cache.get("v1", MOON) is not None  # the same client, reconnected


def test_profile_needs_a_url_for_redis(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("endpoint:\n  cache:\n    backend: redis\n")
    with pytest.raises(ToolkitError, match=r"p.yaml: field 'endpoint.cache.url': required with backend: redis"):
        load_profile(p)
    p.write_text("endpoint:\n  cache:\n    url: redis://127.0.0.1:6379/0\n")
    with pytest.raises(ToolkitError, match=r"field 'endpoint.cache.url': only used with backend: redis"):
        load_profile(p)
    p.write_text("endpoint:\n  cache_size: 64\n  cache:\n    backend: redis\n    url: redis://h:6379/0\n"
                 "    socket_timeout_ms: 20\n")
    cache = load_profile(p).endpoint.cache
    assert (cache.backend, cache.url, cache.socket_timeout_ms) == ("redis", "redis://h:6379/0", 20)


@contextmanager
def replicas(loaded_index, engine: FakeEngine, n: int, **settings: Any) -> Iterator[list[tuple[str, Any]]]:
    """``n`` endpoint apps (each its own RagService and metrics, as separate processes would have) in front of
    one engine; yields ``[(url, app)]``."""
    from toolkit.serving.app import create_app
    from toolkit.serving.llm import EngineClient
    from toolkit.serving.profiles import EndpointSettings
    from toolkit.serving.rag import PromptBuilder, RagService

    es = EndpointSettings(**settings)
    with ExitStack() as stack:
        engine_url = stack.enter_context(serve(engine))
        out = []
        for _ in range(n):
            rag = RagService(loaded_index, EngineClient(engine_url, "m", es.request_timeout_s), es,
                             PromptBuilder(es.system_prompt), Metrics())
            app = create_app(rag)
            out.append((stack.enter_context(serve(app)), app))
        yield out


def _ask(url: str, query: str) -> dict:
    r = httpx.post(url + "/v1/rag", json={"query": query, "top_k": 3, "max_tokens": 4}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _redis(url: str, **extra: Any) -> dict[str, Any]:
    return {"cache": {"backend": "redis", "url": url, **extra}}


def test_two_replicas_share_the_cache(redis_server, loaded_index):
    settings = {**_redis(redis_server.url), "semantic_cache": {"enabled": True, "threshold": 0.9}}
    with replicas(loaded_index, FakeEngine(tokens=2, delay_s=0.0), 2, **settings) as [(a, _), (b, app_b)]:
        first = _ask(a, MOON)
        assert not first["cached"] and first["timings"]["search"] > 0
        again = _ask(b, MOON)  # the other replica: neither embedded nor searched
        assert again["cached"] and again["timings"]["embed"] == again["timings"]["search"] == 0
        assert again["sources"] == first["sources"]
        para = _ask(b, MOON_PARA)  # a paraphrase: embedded, then served from A's semantic entry
        assert para["cached"] and para["timings"]["search"] == 0 and para["sources"] == first["sources"]
        assert not _ask(b, NILE)["cached"]
        assert app_b.state.rag.semantic.hits == 2
        assert scrape(b)[("toolkit_cache_errors_total", ())] == 0
        assert httpx.get(b + "/healthz").json()["cache_entries"] >= 2


def test_an_answer_generated_by_one_replica_is_replayed_by_the_other(redis_server, loaded_index):
    engine = FakeEngine(tokens=3, delay_s=0.0)
    settings = {**_redis(redis_server.url), "semantic_cache": {"enabled": True, "threshold": 0.9,
                                                                "reuse_answers": True}}
    with replicas(loaded_index, engine, 2, **settings) as [(a, _), (b, _)]:
        first = _ask(a, MOON)
        para = _ask(b, MOON_PARA)
        assert engine.started == 1 and para["answer"] == first["answer"] == "w0 w1 w2 "


def test_redis_killed_under_load_then_restarted(redis_server, loaded_index):
    questions = [f"question number {i} about the moon" for i in range(12)]
    with replicas(loaded_index, FakeEngine(tokens=2, delay_s=0.005), 2, **_redis(redis_server.url)) as apps:
        urls = [u for u, _ in apps]
        statuses: list[int] = []
        stop = threading.Event()

        def load(i: int) -> None:
            while not stop.is_set():
                q = questions[i % len(questions)]
                r = httpx.post(urls[i % 2] + "/v1/rag", json={"query": q, "top_k": 2, "max_tokens": 2}, timeout=30)
                statuses.append(r.status_code)
                i += 3

        with ThreadPoolExecutor(4) as pool:
            for i in range(4):
                pool.submit(load, i)
            assert wait_until(lambda: len(statuses) >= 20, timeout_s=30)
            redis_server.stop()  # mid-load
            n = len(statuses)
            assert wait_until(lambda: len(statuses) >= n + 40, timeout_s=60)
            stop.set()
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        errors = [scrape(u)[("toolkit_cache_errors_total", ())] for u in urls]
        assert sum(errors) >= 1 and all(e >= 0 for e in errors)
        # Redis comes back (empty): after the back-off, a question answered by one replica is a hit on the other
        redis_server.start()
        time.sleep(RedisLink.RETRY_AFTER_S + 0.2)
        _ask(urls[0], NILE)
        assert _ask(urls[1], NILE)["cached"]
