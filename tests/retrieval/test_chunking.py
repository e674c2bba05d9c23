import json

import pytest

from toolkit.errors import ToolkitError
from toolkit.retrieval.chunking import chunk_docs, chunk_text, read_docs


def test_chunks_overlap_and_cover_the_text():
    words = [f"w{i}" for i in range(50)]
    chunks = chunk_text(" ".join(words), words=20, overlap=5)
    assert [c.split()[0] for c in chunks] == ["w0", "w15", "w30"]
    assert chunks[-1].split()[-1] == "w49"
    assert chunks[0].split()[-5:] == chunks[1].split()[:5]


def test_chunks_keep_document_id_and_title():
    docs = [{"id": "a", "title": "A", "text": " ".join(["x"] * 30)}, {"id": "b", "title": "B", "text": "short"}]
    chunks = list(chunk_docs(docs, words=12, overlap=2))
    assert [c.chunk_id for c in chunks] == ["a#0", "a#1", "a#2", "b#0"]
    assert {c.title for c in chunks if c.doc_id == "a"} == {"A"}


def test_overlap_not_smaller_than_window_is_refused():
    with pytest.raises(ToolkitError, match="chunk_overlap"):
        chunk_text("a b c", words=4, overlap=4)


def test_bad_documents_name_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"id": 1, "text": "ok"}) + "\n{not json\n")
    with pytest.raises(ToolkitError, match=r"d.jsonl:2: invalid JSON"):
        read_docs(p)
    p.write_text(json.dumps({"title": "no id"}) + "\n")
    with pytest.raises(ToolkitError, match=r"d.jsonl:1: expected an object"):
        read_docs(p)
    with pytest.raises(ToolkitError, match="not found"):
        read_docs(tmp_path / "missing.jsonl")
