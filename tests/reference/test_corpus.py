"""Corpus: deterministic extraction from the standard library, documents well formed, split by module."""

from __future__ import annotations

import json

import pytest

from toolkit.errors import ToolkitError
from toolkit.reference.corpus import SPLITS, build_docs, dump_stdlib, make_doc, split_by_package, write_corpus

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
