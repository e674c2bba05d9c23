"""The endpoint with a real index and no engine behind it (a closed port): validation, auth, limits, 503s,
cache path and metrics. FastAPI's TestClient drives the real app; nothing is mocked."""

import pytest
from fastapi.testclient import TestClient

from toolkit.retrieval.index import load_index
from toolkit.serving.app import create_app
from toolkit.serving.engine import free_port
from toolkit.serving.llm import EngineClient
from toolkit.serving.metrics import Metrics
from toolkit.serving.profiles import EndpointSettings
from toolkit.serving.rag import PromptBuilder, RagService


@pytest.fixture(scope="module")
def index(small_index, embedder):
    return load_index(small_index, embedder=embedder)


def make_client(index, tiny_llama=None, api_key=None, **settings):
    es = EndpointSettings(**settings)
    rag = RagService(index, EngineClient(f"http://127.0.0.1:{free_port()}", "m", 5), es,
                     PromptBuilder(es.system_prompt, tiny_llama), Metrics())
    return TestClient(create_app(rag, api_key=api_key), raise_server_exceptions=False), rag


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"query": ""}', 422, "field 'query': must not be empty"),
    (b'{"query": "   "}', 422, "must not be empty"),
    (b'{"query": "' + b"x" * 2001 + b'"}', 422, "2001 characters, limit 2000"),
    (b'{"query": "q", "top_k": 0}', 422, "field 'top_k'"),
    (b'{"query": "q", "top_k": 101}', 422, "field 'top_k'"),
    (b'{"query": "q", "top_k": "5"}', 422, "field 'top_k': Input should be a valid integer"),
    (b'{"query": 42}', 422, "field 'query': Input should be a valid string"),
    (b'{"query": "q", "stream": "yes"}', 422, "field 'stream'"),
    (b'{"query": "q", "max_tokens": -1}', 422, "field 'max_tokens'"),
    (b'{"query": "q", "colour": 1}', 422, "field 'colour': unknown field"),
    (b'{}', 422, "field 'query': Field required"),
    (b'[1, 2]', 422, ""),
])
def test_malformed_rag_requests_are_4xx(index, body, status, message):
    client, _ = make_client(index)
    r = client.post("/v1/rag", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_malformed_chat_requests_are_4xx(index):
    client, _ = make_client(index)
    for body in ({"messages": []}, {"messages": [{"role": "system", "content": "hi"}]}, {"model": "m"},
                 {"messages": [{"role": "user", "content": ""}]}, {"messages": "hello"}):
        r = client.post("/v1/chat/completions", json=body)
        assert 400 <= r.status_code < 500, (body, r.text)
        assert r.json()["error"]["message"]


def test_engine_down_is_503_with_message_and_health_says_so(index):
    client, rag = make_client(index)
    r = client.post("/v1/rag", json={"query": "Who walked on the Moon?"})
    assert r.status_code == 503 and "engine unavailable" in r.json()["error"]["message"]
    r = client.post("/v1/rag", json={"query": "Who walked on the Moon?", "stream": True})
    assert r.status_code == 503
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Moon?"}]})
    assert r.status_code == 503
    h = client.get("/healthz")
    assert h.status_code == 503 and h.json()["engine"] == "unreachable" and h.json()["index"]["count"] > 0


def test_retrieval_cache_hit_path(index):
    client, rag = make_client(index)
    hits, timings, cached = rag.retrieve("Who walked on the Moon in 1969?", 3)
    assert not cached and timings["embed"] > 0 and hits[0].chunk.doc_id == "moon"
    again, timings2, cached2 = rag.retrieve("  who WALKED on the moon in 1969? ", 2)  # normalised key, smaller k
    assert cached2 and timings2 == {"embed": 0.0, "search": 0.0} and again == hits[:2]
    more, timings3, cached3 = rag.retrieve("Who walked on the Moon in 1969?", 5)  # larger k: reuse embedding
    assert cached3 and timings3["embed"] == 0.0 and timings3["search"] > 0 and len(more) == 5
    metrics = client.get("/metrics").text
    assert "rag_cache_hits_total 2.0" in metrics and "rag_cache_misses_total 1.0" in metrics


def test_cache_is_keyed_by_index_version_and_bounded():
    import numpy as np

    from toolkit.serving.cache import CacheEntry, QueryCache

    cache = QueryCache(2)
    entry = CacheEntry(np.zeros((1, 4), np.float32), [], 5)
    cache.put("v1", "a", entry)
    cache.put("v1", "b", entry)
    assert cache.get("v2", "a") is None and cache.get("v1", " A ") is entry  # "a" is now most recent
    cache.put("v1", "c", entry)  # evicts the least recently used: "b"
    assert cache.get("v1", "a") is not None and cache.get("v1", "b") is None and len(cache) == 2


def test_api_key(index):
    """The concurrency limit is tested under real load in test_concurrency.py."""
    client, _ = make_client(index, api_key="s3cret", max_concurrency=1)
    r = client.post("/v1/rag", json={"query": "q"})
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert client.get("/healthz").status_code in (200, 503)  # health and metrics stay open
    ok = {"Authorization": "Bearer s3cret"}
    assert client.post("/v1/rag", json={"query": ""}, headers=ok).status_code == 422
    assert client.post("/v1/rag", json={"query": "q"}, headers={"X-API-Key": "s3cret"}).status_code == 503
    metrics = client.get("/metrics").text
    assert 'rag_rejected_total{reason="auth"} 1.0' in metrics and "rag_in_flight_requests 0.0" in metrics


def test_prompt_fits_the_model_context(index, tiny_llama):
    builder = PromptBuilder("Answer from the context.", tiny_llama)
    assert builder.context_len == 512
    hits = index.search("Which river flows through Egypt?", 20)
    messages, used = builder.build("Which river flows through Egypt?", hits, max_tokens=64)
    assert 0 < used < len(hits) and builder._count(messages) <= 512 - 64
    assert "Which river flows through Egypt?" in messages[-1]["content"] and messages[0]["role"] == "system"


def test_models_route_with_the_openai_client(index):
    """``GET /v1/models`` through the real ``openai`` client against the app under uvicorn: the served name is
    discoverable, and behind the API key like the other /v1 routes."""
    import time

    import openai
    from live_servers import serve

    es = EndpointSettings()
    rag = RagService(index, EngineClient(f"http://127.0.0.1:{free_port()}", "m", 5), es,
                     PromptBuilder(es.system_prompt), Metrics())
    before = int(time.time())
    with serve(create_app(rag, api_key="s3cret", served_model_name="smol-rag")) as url:
        models = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0).models.list()
        assert [(m.id, m.object, m.owned_by) for m in models.data] == [("smol-rag", "model", "toolkit")]
        assert models.object == "list" and before - 1 <= models.data[0].created <= int(time.time())
        with pytest.raises(openai.AuthenticationError, match="API key"):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    client, _ = make_client(index)  # no key configured: open, under the default served name
    r = client.get("/v1/models")
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "rag" and r.json()["data"][0]["root"] == "rag"
