"""Corpus: deterministic extraction from the standard library, documents well formed, split by module."""

from __future__ import annotations

import json

import pytest

from toolkit.errors import ToolkitError
from toolkit.reference.corpus import SPLITS, build_docs, dump_stdlib, make_doc, split_by_package, write_corpus
from toolkit.retrieval.chunking import read_docs

MODULES = ["json", "textwrap", "string", "heapq", "bisect", "fnmatch", "shlex", "colorsys", "email"]


@pytest.fixture(scope="module")
def docs():
    return build_docs(dump_stdlib(MODULES, [], progress=False), min_doc_chars=40, max_doc_chars=1200)


def test_extraction_is_deterministic(docs):
    again = build_docs(dump_stdlib(MODULES, [], progress=False), min_doc_chars=40, max_doc_chars=1200)
    assert [d.record() for d in again] == [d.record() for d in docs]
    assert split_by_package(again, 0.2, 0.2, seed=3) == split_by_package(docs, 0.2, 0.2, seed=3)


def test_documents_are_api_objects_with_unique_ids(docs):
    ids = [d.id for d in docs]
    assert len(ids) == len(set(ids))
    titles = set(ids)
    assert {"json", "json.dumps", "json.decoder.JSONDecoder.decode", "textwrap.TextWrapper", "email.message"} <= titles
    for d in docs:
        assert d.title.split(".")[0] in MODULES
        assert d.text.startswith(d.title)
        assert len(d.text) <= 1200
        assert " at 0x" not in d.text  # object addresses in signatures would break determinism
    dumps = next(d for d in docs if d.id == "json.dumps")
    assert dumps.summary and dumps.summary in dumps.text
    assert dumps.text.startswith("json.dumps(obj, *,")


def test_split_by_module_has_no_leakage(docs, tmp_path):
    assignment = split_by_package(docs, 0.2, 0.2, seed=0)
    stats = write_corpus(tmp_path, docs, assignment)
    assert sum(s["documents"] for s in stats.values()) == len(docs)
    seen: dict[str, str] = {}
    for split in SPLITS:
        rows = [json.loads(line) for line in (tmp_path / "splits" / f"{split}.jsonl").read_text().splitlines()]
        assert rows, f"{split} split is empty"
        for row in rows:
            assert set(row) == {"text", "module"}
            top = row["module"].split(".")[0]
            assert seen.setdefault(top, split) == split, f"{top} appears in {seen[top]} and {split}"
    texts = {split: set((tmp_path / "splits" / f"{split}.jsonl").read_text().splitlines()) for split in SPLITS}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    ids = [json.loads(line)["id"] for line in (tmp_path / "docs.jsonl").read_text().splitlines()]
    assert ids == [d.id for d in docs]


def test_split_needs_three_modules(docs):
    few = [d for d in docs if d.package in ("json", "heapq")]
    with pytest.raises(ToolkitError, match="at least 3"):
        split_by_package(few, 0.1, 0.1, seed=0)


def test_signature_paragraph_is_not_the_summary():
    doc = make_doc("m", {"title": "m.f", "kind": "function", "signature": "",
                         "doc": "f(x) -> int\n\nCompute the thing from\nits argument. More words here."}, 1200)
    assert doc.summary == "Compute the thing from its argument."
    assert doc.summary in doc.text


def test_unknown_module_is_a_clear_error():
    with pytest.raises(ToolkitError, match="corpus.modules"):
        dump_stdlib(["json", "no_such_module_xyz"], [], progress=False)


def test_documents_carry_module_and_kind_as_metadata(docs, tmp_path):
    write_corpus(tmp_path, docs, split_by_package(docs, 0.2, 0.2, seed=0))
    rows = [json.loads(line) for line in (tmp_path / "docs.jsonl").read_text().splitlines()]
    assert [(r["id"], r["module"], r["kind"]) for r in rows] == [(d.id, d.module, d.kind) for d in docs]
    by_id = {d["id"]: d for d in read_docs(tmp_path / "docs.jsonl")}  # what `toolkit index build` reads
    assert by_id["json.decoder.JSONDecoder.decode"]["meta"] == {"module": "json.decoder", "kind": "method"}
    assert by_id["json"]["meta"] == {"module": "json", "kind": "module"}


def test_an_index_of_the_corpus_filters_on_module_and_kind(docs, tmp_path, embedder):
    """The documents as ``make reference`` writes them, indexed as ``make index`` does: module and kind are
    filter fields, and a filter admits exactly the documents whose own fields match."""
    from toolkit.retrieval.config import IndexConfig
    from toolkit.retrieval.index import build_index, load_index

    small = [d for d in docs if d.package != "email"]  # a few dozen documents: seconds to embed
    write_corpus(tmp_path, small, split_by_package(small, 0.2, 0.2, seed=0))
    build_index(tmp_path / "docs.jsonl", tmp_path / "ix", IndexConfig(), embedder=embedder, progress=False)
    index = load_index(tmp_path / "ix", embedder=embedder)
    try:
        assert {"module", "kind"} <= set(index.filter_fields)
        cases = [({"module": "json"}, lambda d: d.module == "json"),
                 ({"kind": "function", "module": ["bisect", "heapq"]},
                  lambda d: d.kind == "function" and d.module in ("bisect", "heapq")),
                 ({"kind": "class", "title_prefix": "json."}, lambda d: d.kind == "class" and d.id.startswith("json."))]
        for where, admit in cases:
            expected = {d.id for d in small if admit(d)}
            assert expected, where
            hits = index.search("serialize an object", len(small) * 4, where)  # k above the subset: all of it
            assert {h.chunk.doc_id for h in hits} == expected, where
        # a chunk's own text finds it unfiltered; a filter on another module ranks only that module
        text = index.search("x", 1, {"doc_id": "json.dumps"})[0].chunk.text
        assert index.search(text, 1)[0].chunk.doc_id == "json.dumps"
        assert [h.chunk.doc_id.split(".")[0] for h in index.search(text, 3, {"module": "heapq"})] == ["heapq"] * 3
    finally:
        index.close()
