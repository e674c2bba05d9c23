"""A running endpoint follows index updates: the real app (``build_app``, as ``toolkit serve`` starts it) over a
real FAISS index, under uvicorn, while ``toolkit index add/remove`` change the index directory beside it. A
corrupt update keeps the old index serving; filters on fields the index does not carry are a 422 naming them."""

from __future__ import annotations

import json
import logging
import shutil
import time

import httpx
import pytest
from live_servers import FakeEngine, scrape, serve, wait_until

from toolkit.atomic import atomic_dir
from toolkit.cli import main
from toolkit.manifest import MANIFEST_NAME

PYRAMID = {"id": "pyramid", "title": "Great Pyramid of Giza", "module": "egypt", "kind": "monument",
           "text": "The Great Pyramid of Giza is the oldest of the Seven Wonders of the Ancient World, built as a "
                   "tomb for the pharaoh Khufu around 2560 BC."}
Q_PYRAMID = "Which pharaoh was the Great Pyramid of Giza built for?"
Q_PARIS = "Where is the Eiffel Tower?"
CHECK_S = 0.3


@pytest.fixture
def index_dir(tmp_path, small_docs, embedder):
    from toolkit.retrieval.config import IndexConfig
    from toolkit.retrieval.index import build_index

    build_index(small_docs, tmp_path / "ix", IndexConfig(chunk_words=24, chunk_overlap=6), embedder=embedder,
                progress=False)
    return tmp_path / "ix"


def _version(index_dir) -> str:
    return json.loads((index_dir / MANIFEST_NAME).read_text())["results"]["index_version"]


def _reloads(url: str, result: str) -> float:
    return scrape(url).get(("rag_index_reloads_total", (("result", result),)), 0.0)


def test_a_running_endpoint_follows_add_remove_and_survives_a_corrupt_update(index_dir, tmp_path, caplog):
    from toolkit.serving.profiles import RetrievalSettings, ServeProfile
    from toolkit.serving.server import build_app

    def ask(query: str, **extra) -> httpx.Response:
        return httpx.post(f"{url}/v1/rag", json={"query": query, "top_k": 3, **extra}, timeout=60)

    def served_version() -> str:
        return httpx.get(f"{url}/healthz", timeout=30).json()["index"]["version"]

    v0 = _version(index_dir)
    profile = ServeProfile(retrieval=RetrievalSettings(reload_check_s=CHECK_S))
    with serve(FakeEngine(tokens=2)) as engine_url:
        app = build_app(index_dir, engine_url, profile)
        with serve(app) as url:
            r = ask(Q_PYRAMID)
            assert r.status_code == 200 and "pyramid" not in [s["id"] for s in r.json()["sources"]]
            health = httpx.get(f"{url}/healthz", timeout=30).json()
            assert health["index"]["version"] == v0 and health["index_reload"]["check_s"] == CHECK_S
            # bad input: the small corpus carries no metadata, so a metadata filter is a 422 naming the field
            r = ask(Q_PYRAMID, filter={"module": "egypt"})
            assert r.status_code == 422
            assert "field 'filter.module': unknown" in r.json()["error"]["message"]
            assert "carry no metadata" in r.json()["error"]["message"]

            new_docs = tmp_path / "new.jsonl"
            new_docs.write_text(json.dumps(PYRAMID) + "\n")
            old = app.state.rag.index
            assert main(["index", "add", "--docs", str(new_docs), "--index", str(index_dir)]) == 0
            v1 = _version(index_dir)
            assert wait_until(lambda: served_version() == v1, timeout_s=30), "endpoint kept the old index"
            r = ask(Q_PYRAMID)  # asked (and cached) under v0 before: the cache keys on the version
            assert r.status_code == 200 and r.json()["sources"][0]["id"] == "pyramid" and not r.json()["cached"]
            r = ask(Q_PYRAMID, filter={"module": "egypt"})  # the new index's filter fields are served too
            assert r.status_code == 200 and {s["id"] for s in r.json()["sources"]} == {"pyramid"}
            assert _reloads(url, "ok") == 1
            # the replaced index was not closed under a request that might still hold it
            assert old.search(Q_PARIS, 1)[0].chunk.doc_id == "paris"

            assert ask(Q_PARIS).json()["sources"][0]["id"] == "paris"
            assert main(["index", "remove", "--ids", "paris", "--index", str(index_dir)]) == 0
            v2 = _version(index_dir)
            assert wait_until(lambda: served_version() == v2, timeout_s=30)
            assert "paris" not in [s["id"] for s in ask(Q_PARIS).json()["sources"]]

            # a corrupt update, installed the way updates are: the endpoint keeps serving v2
            with atomic_dir(index_dir) as tmp:
                for f in index_dir.iterdir():
                    shutil.copy2(f, tmp / f.name)
                (tmp / "index.faiss").write_bytes(b"not a faiss index" * 64)
                m = json.loads((tmp / MANIFEST_NAME).read_text())
                m["results"]["index_version"] = "corrupt00001"
                (tmp / MANIFEST_NAME).write_text(json.dumps(m))
            with caplog.at_level(logging.WARNING, logger="toolkit.serving.index_watch"):
                assert wait_until(lambda: _reloads(url, "failed") == 1, timeout_s=30)
                assert served_version() == v2
                r = ask(Q_PYRAMID)
                assert r.status_code == 200 and r.json()["sources"][0]["id"] == "pyramid"
            warnings = [rec for rec in caplog.records if rec.name == "toolkit.serving.index_watch"]
            assert len(warnings) == 1 and "still serving version " + v2 in warnings[0].getMessage()
            assert "\n" not in warnings[0].getMessage()
            health = httpx.get(f"{url}/healthz", timeout=30).json()
            assert health["index_reload"]["failures"] == 1 and "corrupt00001" in health["index_reload"]["last_error"]
            time.sleep(3 * CHECK_S)
            assert served_version() == v2  # a due check after the failure ...
            assert _reloads(url, "failed") == 1  # ... does not retry while the manifest stays the same

            # a good version installed after the bad one is picked up again
            assert main(["index", "build", "--docs", str(new_docs), "--output", str(index_dir)]) == 0
            v3 = _version(index_dir)
            assert wait_until(lambda: served_version() == v3, timeout_s=60)
            assert {s["id"] for s in ask(Q_PARIS).json()["sources"]} == {"pyramid"}
            assert _reloads(url, "ok") == 3


def test_reload_check_zero_turns_following_off(index_dir, embedder):
    from toolkit.retrieval.index import load_index
    from toolkit.serving.index_watch import watch_index
    from toolkit.serving.llm import EngineClient
    from toolkit.serving.metrics import Metrics
    from toolkit.serving.profiles import EndpointSettings
    from toolkit.serving.rag import PromptBuilder, RagService

    es = EndpointSettings()
    index = load_index(index_dir, embedder=embedder)
    try:
        rag = RagService(index, EngineClient("http://127.0.0.1:9", "m", 5), es, PromptBuilder(es.system_prompt),
                         Metrics())
        assert watch_index(rag, index_dir, lambda cur: load_index(index_dir, embedder=cur.embedder), 0) is None
        assert rag.watch is None and rag.current_index() is index
    finally:
        index.close()
