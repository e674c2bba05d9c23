"""QA set: answers are quoted from their gold document, unambiguous, and follow the document's split."""

from __future__ import annotations

from collections import Counter

import pytest

from toolkit.reference.corpus import Doc, build_docs, dump_stdlib, split_by_package
from toolkit.prompt import rag_messages
from toolkit.reference.qa import build_qa

MODULES = ["json", "textwrap", "string", "functools", "heapq", "bisect", "fnmatch", "shlex", "difflib"]


@pytest.fixture(scope="module")
def corpus():
    docs = build_docs(dump_stdlib(MODULES, [], progress=False), min_doc_chars=40, max_doc_chars=1200)
    return docs, split_by_package(docs, 0.2, 0.2, seed=0)


def test_answers_come_from_the_gold_document(corpus):
    docs, assignment = corpus
    by_id = {d.id: d for d in docs}
    qa = build_qa(docs, assignment, 20, 200)
    assert len(qa) > 30
    for q in qa:
        gold = by_id[q["doc_id"]]
        assert q["answer"] in gold.text
        assert gold.title in q["question"]
        assert q["split"] == assignment[gold.package]
        assert 20 <= len(q["answer"]) <= 200
    assert len({q["id"] for q in qa}) == len(qa)
    assert {q["split"] for q in qa} == {"train", "validation", "test"}


def test_answers_are_unique_across_the_corpus(corpus):
    docs, assignment = corpus
    qa = build_qa(docs, assignment, 20, 200)
    answers = Counter(" ".join(q["answer"].lower().split()) for q in qa)
    assert max(answers.values()) == 1
    all_summaries = Counter(" ".join(d.summary.lower().split()) for d in docs if d.summary)
    assert all(all_summaries[a] == 1 for a in answers)


def test_shared_summary_is_ambiguous_and_dropped():
    def doc(title: str, summary: str) -> Doc:
        return Doc(id=title, title=title, text=f"{title}\n\n{summary}", module=title.split(".")[0],
                   kind="function", summary=summary)

    docs = [doc("a.f", "Return the value of the thing."), doc("b.g", "Return the value of the thing."),
            doc("c.h", "Compute a checksum of the given bytes."), doc("c.k", "x(a, b) -> int is a signature.")]
    qa = build_qa(docs, {"a": "train", "b": "test", "c": "test"}, 20, 200)
    assert [q["doc_id"] for q in qa] == ["c.h"]
    assert qa[0]["question"] == "What does the function c.h do?"


def test_rag_messages_render_with_the_chat_template(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    text = tok.apply_chat_template(rag_messages("What does x do?", ["doc one", "doc two"]),
                                   add_generation_prompt=True, tokenize=False)
    assert "[1] doc one" in text and "[2] doc two" in text and "Question: What does x do?" in text
    assert text.endswith("<|assistant|>\n")
