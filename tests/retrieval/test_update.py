"""Adding and removing documents in a persisted index (``update_index``, ``toolkit index add|remove``): real
FAISS (every index type) and milvus-lite, real all-MiniLM-L6-v2 embeddings, the small corpus of tests/conftest.py.

The reference for "updated correctly" is an index built from scratch on the final document set: an update
must answer as that rebuild does (exactly, for the flat index, whose scores do not depend on build order)."""

import json

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.manifest import MANIFEST_NAME, sha256_tree
from toolkit.retrieval.config import FaissParams, IndexConfig
from toolkit.retrieval.index import build_index, load_index, update_index
from toolkit.retrieval.store import STORE_NAME

CFG = {"chunk_words": 24, "chunk_overlap": 6}
HELD_BACK = ("moon", "long")  # added by the update
QUESTIONS = {"Who walked on the Moon in 1969?": "moon", "Which river flows through Egypt?": "long",
             "How tall is the highest mountain on Earth?": "everest", "What stimulant does coffee contain?": "coffee"}


@pytest.fixture(scope="module")
def docs(small_docs):
    rows = [json.loads(line) for line in small_docs.read_text().splitlines()]
    for d in rows:  # metadata, as a corpus would carry it
        d["topic"] = "science" if d["id"] in ("photosynthesis", "volcano", "heart", "everest") else "other"
    return rows


def _split(docs):
    return [d for d in docs if d["id"] not in HELD_BACK], [d for d in docs if d["id"] in HELD_BACK]


def _answers(index, k=3):
    return {q: [(h.chunk.chunk_id, round(h.score, 5)) for h in index.search(q, k)] for q in QUESTIONS}


@pytest.mark.parametrize("index_type", ["flat", "ivf", "ivfpq", "hnsw"])
def test_add_and_remove_in_place(tmp_path, docs, embedder, index_type):
    base, new = _split(docs)
    cfg = IndexConfig(**CFG, faiss=FaissParams(index_type=index_type))
    before = build_index(base, tmp_path / "ix", cfg, embedder=embedder, progress=False)["results"]
    added = update_index(tmp_path / "ix", new, embedder=embedder)["results"]
    assert added["index_version"] != before["index_version"] and added["previous_version"] == before["index_version"]
    assert added["documents"] == len(docs) and added["last_update"]["added_docs"] == 2
    assert added["count"] == before["count"] + added["last_update"]["added_chunks"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic: no temp dir left
    index = load_index(tmp_path / "ix", embedder=embedder)
    try:
        found = [doc in {h.chunk.doc_id for h in index.search(q, 3)} for q, doc in QUESTIONS.items()]
        assert all(found) if index_type != "ivfpq" else sum(found) >= 3  # PQ is lossy
    finally:
        index.close()
    removed = update_index(tmp_path / "ix", remove=["coffee", "moon"], embedder=embedder)["results"]
    assert removed["documents"] == len(docs) - 2 and removed["index_version"] != added["index_version"]
    index = load_index(tmp_path / "ix", embedder=embedder)
    try:
        assert len(index.backend) == removed["count"]
        hits = {h.chunk.doc_id for q in QUESTIONS for h in index.search(q, 10)}
        assert not hits & {"coffee", "moon"} and "long" in hits
    finally:
        index.close()


def test_flat_update_answers_exactly_as_a_rebuild(tmp_path, docs, embedder):
    base, new = _split(docs)
    cfg = IndexConfig(**CFG)
    build_index(base + [{"id": "stale", "title": "Stale", "text": "An outdated page about lunar landings."}],
                tmp_path / "updated", cfg, embedder=embedder, progress=False)
    update_index(tmp_path / "updated", new, remove=["stale"], embedder=embedder)
    replacement = {**docs[0], "text": docs[0]["text"] + " It is 330 metres tall."}
    update_index(tmp_path / "updated", [replacement], embedder=embedder)  # same id: replaced
    final = [replacement if d["id"] == replacement["id"] else d for d in base + new]
    build_index(final, tmp_path / "rebuilt", cfg, embedder=embedder, progress=False)
    a, b = load_index(tmp_path / "updated", embedder=embedder), load_index(tmp_path / "rebuilt", embedder=embedder)
    try:
        assert a.results["count"] == b.results["count"] and a.results["documents"] == b.results["documents"]
        got, want = _answers(a, 5), _answers(b, 5)
        for q in QUESTIONS:  # same chunks, same scores (vectors of unchanged chunks were never re-embedded)
            assert [c for c, _ in got[q]] == [c for c, _ in want[q]], q
            assert np.allclose([s for _, s in got[q]], [s for _, s in want[q]], atol=1e-4)
        assert "330 metres" in a.search("How tall is the Eiffel Tower?", 1)[0].chunk.text
    finally:
        a.close()
        b.close()


def test_bad_updates_leave_the_index_untouched(tmp_path, docs, embedder):
    build_index(docs, tmp_path / "ix", IndexConfig(**CFG), embedder=embedder, progress=False)
    before = sha256_tree(tmp_path / "ix"), (tmp_path / "ix" / MANIFEST_NAME).read_text()
    with pytest.raises(ToolkitError, match="holds no document 'nope', 'gone'; nothing was changed"):
        update_index(tmp_path / "ix", remove=["paris", "nope", "gone"], embedder=embedder)
    with pytest.raises(ToolkitError, match="nothing to update"):
        update_index(tmp_path / "ix", [], remove=[], embedder=embedder)
    with pytest.raises(ToolkitError, match="repeat id\\(s\\) x"):
        update_index(tmp_path / "ix", [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}], embedder=embedder)
    with pytest.raises(ToolkitError, match="metadata field 'tags' must be a string, number or boolean"):
        update_index(tmp_path / "ix", [{"id": "x", "text": "a", "tags": ["a"]}], embedder=embedder)
    with pytest.raises(ToolkitError, match="metadata field 'title_prefix' is reserved"):
        update_index(tmp_path / "ix", [{"id": "x", "text": "a", "title_prefix": "a"}], embedder=embedder)
    assert (sha256_tree(tmp_path / "ix"), (tmp_path / "ix" / MANIFEST_NAME).read_text()) == before


def test_a_crash_during_the_update_leaves_the_previous_version(tmp_path, docs, embedder, monkeypatch):
    """The process dies (KeyboardInterrupt stands in for a kill) after the store copy was changed and before
    the new version is installed: the installed index is the old one, byte for byte, and still loads."""
    import toolkit.retrieval.index as index_module

    build_index(docs, tmp_path / "ix", IndexConfig(**CFG), embedder=embedder, progress=False)
    before = sha256_tree(tmp_path / "ix"), (tmp_path / "ix" / MANIFEST_NAME).read_text()
    real = index_module.update_store

    def dies_after(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module, "update_store", dies_after)
    with pytest.raises(KeyboardInterrupt):
        update_index(tmp_path / "ix", remove=["paris"], embedder=embedder)
    assert (sha256_tree(tmp_path / "ix"), (tmp_path / "ix" / MANIFEST_NAME).read_text()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]
    index = load_index(tmp_path / "ix", embedder=embedder)
    try:
        assert index.search("Eiffel Tower in Paris", 1)[0].chunk.doc_id == "paris"
    finally:
        index.close()


def test_index_written_before_ids_existed_is_migrated_on_update(tmp_path, docs, embedder):
    """Older builds wrote a bare ``IndexFlatIP`` (implicit ids 0..n-1), no meta column, no filter_fields."""
    import sqlite3

    import faiss

    base, new = _split(docs)
    build_index(base, tmp_path / "ix", IndexConfig(**CFG), embedder=embedder, progress=False)
    f = str(tmp_path / "ix" / "index.faiss")
    idmap = faiss.read_index(f)
    old = faiss.IndexFlatIP(idmap.d)
    old.add(faiss.downcast_index(idmap.index).reconstruct_n(0, idmap.ntotal))
    faiss.write_index(old, f)
    con = sqlite3.connect(tmp_path / "ix" / STORE_NAME)
    con.execute("ALTER TABLE chunks DROP COLUMN meta")
    con.commit()
    con.close()
    m = json.loads((tmp_path / "ix" / MANIFEST_NAME).read_text())
    del m["results"]["filter_fields"]
    (tmp_path / "ix" / MANIFEST_NAME).write_text(json.dumps(m))
    index = load_index(tmp_path / "ix", embedder=embedder)
    with pytest.raises(ToolkitError, match="built without metadata"):
        index.search("Moon", 3, {"topic": "other"})
    index.close()
    r = update_index(tmp_path / "ix", new, remove=["coffee"], embedder=embedder)["results"]
    assert r["filter_fields"] == ["topic"]
    index = load_index(tmp_path / "ix", embedder=embedder)
    try:
        assert type(index.backend.index).__name__ == "IndexIDMap2"
        assert index.search("Who walked on the Moon in 1969?", 1)[0].chunk.doc_id == "moon"
        # only the new documents carry metadata; the old rows match no metadata filter
        assert {h.chunk.doc_id for h in index.search("anything", 20, {"topic": "other"})} == set(HELD_BACK)
    finally:
        index.close()


def test_milvus_lite_add_remove_and_filter(tmp_path, docs, embedder):
    base, new = _split(docs)
    cfg = IndexConfig(backend="milvus", **CFG, faiss=FaissParams(index_type="flat"))
    v0 = build_index(base, tmp_path / "mv", cfg, embedder=embedder, progress=False)["results"]["index_version"]
    r = update_index(tmp_path / "mv", new, remove=["coffee"], embedder=embedder)["results"]
    assert r["index_version"] != v0 and r["documents"] == len(docs) - 1
    index = load_index(tmp_path / "mv", embedder=embedder)
    try:
        assert len(index.backend) == r["count"]
        assert index.search("Who walked on the Moon in 1969?", 1)[0].chunk.doc_id == "moon"
        assert "coffee" not in {h.chunk.doc_id for h in index.search("coffee caffeine", 10)}
        hits = index.search("Who walked on the Moon in 1969?", 3, {"topic": "science"})
        assert len(hits) == 3 and {h.chunk.doc_id for h in hits} <= {"photosynthesis", "volcano", "heart", "everest"}
    finally:
        index.close()


def test_cli_add_and_remove(tmp_path, docs, embedder, capsys):
    from toolkit.cli import main

    base, new = _split(docs)
    build_index(base, tmp_path / "ix", IndexConfig(**CFG), embedder=embedder, progress=False)
    extra = tmp_path / "new.jsonl"
    extra.write_text("".join(json.dumps(d) + "\n" for d in new))
    assert main(["index", "add", "--docs", str(extra), "--index", str(tmp_path / "ix")]) == 0
    out = capsys.readouterr().out
    assert "docs=11" in out and "'added_docs': 2" in out
    before = sha256_tree(tmp_path / "ix")
    assert main(["index", "remove", "--ids", "moon,nope", "--index", str(tmp_path / "ix")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no document 'nope'" in err and len(err.splitlines()) == 1
    assert sha256_tree(tmp_path / "ix") == before
    assert main(["index", "remove", "--ids", "moon", "long", "--index", str(tmp_path / "ix")]) == 0
    assert "docs=9" in capsys.readouterr().out
