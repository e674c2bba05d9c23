"""Filtered retrieval: the filter is applied inside the search (FAISS ``IDSelectorBatch``), so a filtered search
returns what an exact search over only the matching chunks returns. The reference here is computed
independently: the chunks' texts are embedded again and ranked with numpy, over the subset chosen by
evaluating the filter in Python on the documents' own fields."""

import json

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.retrieval.config import FaissParams, IndexConfig
from toolkit.retrieval.index import build_index, load_index
from toolkit.retrieval.store import STORE_NAME, ChunkStore, FilterError

SCIENCE = ("photosynthesis", "volcano", "heart", "everest")
QUERIES = ("Who walked on the Moon in 1969?", "Which river flows through Egypt?", "What is a board game?",
           "How do plants make glucose?", "vector search library")
# filter -> the documents it admits, written out by hand from tests/conftest.py's corpus
FILTERS = [
    ({"topic": "science"}, lambda d: d["topic"] == "science"),
    ({"topic": ["science", "nowhere"]}, lambda d: d["topic"] == "science"),
    ({"title_prefix": "C"}, lambda d: d["title"].startswith("C")),  # Coffee, Chess: not "Apollo", case matters
    ({"title_prefix": "M", "topic": "science"}, lambda d: d["id"] == "everest"),
    ({"doc_id": ["long", "moon"]}, lambda d: d["id"] in ("long", "moon")),
    ({"rank": 3}, lambda d: d["rank"] == 3),
    ({"odd": True}, lambda d: d["odd"]),
]


@pytest.fixture(scope="module")
def docs(small_docs):
    rows = [json.loads(line) for line in small_docs.read_text().splitlines()]
    for i, d in enumerate(rows):
        d.update(topic="science" if d["id"] in SCIENCE else "other", rank=i % 4, odd=bool(i % 2))
    return rows


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, docs, embedder):
    out = tmp_path_factory.mktemp("filtered")
    built = {}
    for t in ("flat", "ivf", "ivfpq", "hnsw"):
        cfg = IndexConfig(chunk_words=24, chunk_overlap=6, faiss=FaissParams(index_type=t))
        build_index(docs, out / t, cfg, embedder=embedder, progress=False)
        built[t] = load_index(out / t, embedder=embedder)
    yield built
    for index in built.values():
        index.close()


def _exact(index, embedder, docs, admit, query, k):
    """Top-k chunk ids by inner product over the admitted documents' chunks, embedded afresh."""
    store = ChunkStore(index.path / STORE_NAME)
    try:
        chunks = store.get(range(index.results["count"]))
    finally:
        store.close()
    allowed = {d["id"] for d in docs if admit(d)}
    subset = [c for c in chunks if c.doc_id in allowed]
    if not subset:
        return []
    scores = embedder.encode([c.text for c in subset]) @ embedder.encode_query(query)[0]
    return [subset[i].chunk_id for i in np.argsort(-scores, kind="stable")[:k]]


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_filtered_search_equals_exact_search_over_the_subset(indexes, embedder, docs, index_type):
    index = indexes[index_type]
    for where, admit in FILTERS:
        for q in QUERIES:
            got = [h.chunk.chunk_id for h in index.search(q, 4, where)]
            assert got == _exact(index, embedder, docs, admit, q, 4), (where, q)


def test_filtered_ivfpq_ranks_only_the_subset(indexes, docs):
    """IVF-PQ scores approximate codes, so its order may differ from exact; it still returns only, and as many
    as it can of, the admitted chunks (k of them when the subset has k)."""
    index = indexes["ivfpq"]
    for where, admit in FILTERS:
        allowed = {d["id"] for d in docs if admit(d)}
        n = len(index.allowed_ids(where))
        hits = index.search("Who walked on the Moon in 1969?", 4, where)
        assert len(hits) == min(4, n) and {h.chunk.doc_id for h in hits} <= allowed


def test_filter_beats_over_fetching(indexes):
    """Fetching k and dropping what fails the filter would answer nothing here: the unfiltered top k holds no
    'science' chunk. The filter inside the search fills k with science chunks, ranked."""
    index = indexes["flat"]
    q = "Who walked on the Moon in 1969?"
    ranking = [h.chunk.doc_id for h in index.search(q, index.results["count"])]
    k = next(i for i, d in enumerate(ranking) if d in SCIENCE)  # science chunks all rank below position k
    assert k >= 2
    hits = index.search(q, k, {"topic": "science"})
    assert len(hits) == k and {h.chunk.doc_id for h in hits} <= set(SCIENCE)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hnsw_graph_path_with_a_filter(indexes, embedder, docs, monkeypatch):
    """Above HNSW_EXACT_MAX ids the selector goes into the graph walk; on this small graph (efSearch 64 > nodes)
    the walk reaches every node, so it too must equal the exact answer."""
    import toolkit.retrieval.faiss_backend as fb

    monkeypatch.setattr(fb, "HNSW_EXACT_MAX", 0)
    index = indexes["hnsw"]
    for where, admit in FILTERS[:3]:
        for q in QUERIES:
            got = [h.chunk.chunk_id for h in index.search(q, 4, where)]
            assert got == _exact(index, embedder, docs, admit, q, 4), (where, q)


def test_bad_filters_name_the_field(indexes, small_index, embedder):
    index = indexes["flat"]
    with pytest.raises(FilterError, match="filter field 'module': unknown \\(this index can filter on: doc_id, "
                                          "title_prefix, odd, rank, topic\\)"):
        index.search("q", 3, {"module": "json"})
    with pytest.raises(FilterError, match="filter field 'topic': must be a string, number, boolean"):
        index.search("q", 3, {"topic": {"$eq": "x"}})
    with pytest.raises(FilterError, match="filter field 'title_prefix': must be a non-empty string"):
        index.search("q", 3, {"title_prefix": ""})
    assert index.search("q", 3, {"topic": "no such topic"}) == []
    assert index.search("q", 3, {"title_prefix": "c"}) == []  # prefixes are case-sensitive
    plain = load_index(small_index, embedder=embedder)  # documents without metadata
    try:
        with pytest.raises(ToolkitError, match="filter field 'topic': unknown .* carry no metadata"):
            plain.search("q", 3, {"topic": "science"})
        assert {h.chunk.doc_id for h in plain.search("Moon landing", 3, {"doc_id": "moon"})} == {"moon"}
    finally:
        plain.close()


def test_the_endpoint_passes_the_filter_and_refuses_unknown_fields(indexes):
    from fastapi.testclient import TestClient

    from toolkit.serving.app import create_app
    from toolkit.serving.engine import free_port
    from toolkit.serving.llm import EngineClient
    from toolkit.serving.metrics import Metrics
    from toolkit.serving.profiles import EndpointSettings
    from toolkit.serving.rag import PromptBuilder, RagService

    es = EndpointSettings()
    rag = RagService(indexes["flat"], EngineClient(f"http://127.0.0.1:{free_port()}", "m", 5), es,
                     PromptBuilder(es.system_prompt), Metrics())
    client = TestClient(create_app(rag), raise_server_exceptions=False)
    for body, message in [({"filter": {"module": "json"}}, "field 'filter.module': unknown"),
                          ({"filter": {"topic": {"a": 1}}}, "field 'filter.topic"),
                          ({"filter": "topic=science"}, "field 'filter'")]:
        r = client.post("/v1/rag", json={"query": "Who walked on the Moon?", **body})
        assert r.status_code == 422 and message in r.json()["error"]["message"], r.text
    # a valid filter gets past retrieval to the (absent) engine
    r = client.post("/v1/rag", json={"query": "Who walked on the Moon?", "filter": {"topic": "science"}})
    assert r.status_code == 503
    plain, _, _ = rag.retrieve("Who walked on the Moon?", 3)
    science, _, cached = rag.retrieve("Who walked on the Moon?", 3, {"topic": "science"})
    assert plain[0].chunk.doc_id == "moon" and {h.chunk.doc_id for h in science} <= set(SCIENCE)
    assert cached  # the 503 request above already retrieved (and cached) this filtered query


def test_the_endpoint_refuses_filters_on_indexes_without_metadata(tmp_path, small_index, embedder):
    """Documents without metadata, and an index from before filters (no ``filter_fields``): a 422 naming the
    field, and the index directory is left byte for byte as it was."""
    import shutil

    from fastapi.testclient import TestClient

    from toolkit.manifest import MANIFEST_NAME, sha256_tree
    from toolkit.serving.app import create_app
    from toolkit.serving.engine import free_port
    from toolkit.serving.llm import EngineClient
    from toolkit.serving.metrics import Metrics
    from toolkit.serving.profiles import EndpointSettings
    from toolkit.serving.rag import PromptBuilder, RagService

    old = tmp_path / "old"
    shutil.copytree(small_index, old)
    m = json.loads((old / MANIFEST_NAME).read_text())
    del m["results"]["filter_fields"]
    (old / MANIFEST_NAME).write_text(json.dumps(m))
    es = EndpointSettings()
    for path, field, message in [(small_index, "filter.module", "carry no metadata"),
                                 (old, "filter", "built without metadata")]:
        before = sha256_tree(path)
        index = load_index(path, embedder=embedder)
        try:
            rag = RagService(index, EngineClient(f"http://127.0.0.1:{free_port()}", "m", 5), es,
                             PromptBuilder(es.system_prompt), Metrics())
            r = TestClient(create_app(rag)).post("/v1/rag", json={"query": "Moon?", "filter": {"module": "json"}})
            err = r.json()["error"]["message"]
            assert r.status_code == 422 and err.startswith(f"field '{field}': ") and message in err, r.text
            assert "\n" not in err
        finally:
            index.close()
        assert sha256_tree(path) == before
