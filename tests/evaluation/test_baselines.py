"""RAG-OFF / oracle baselines: which context each asks with, and how answers are scored (the engine round trip
runs in tests/evaluation/test_eval_stack.py)."""

from __future__ import annotations

import json

import pytest

from toolkit.errors import ToolkitError
from toolkit.evaluation.baselines import baseline_messages, gold_documents, score
from toolkit.prompt import SYSTEM_PROMPT

ROWS = [{"id": "q1", "question": "What does json.dumps do?", "answer": "Serialize obj to a JSON formatted str.",
         "doc_id": "json.dumps"},
        {"id": "q2", "question": "What is heapq for?", "answer": "Heap queue algorithm.", "doc_id": "heapq"}]


@pytest.fixture
def docs_file(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in [
        {"id": "json.dumps", "text": "json.dumps\n\nSerialize obj to a JSON formatted str."},
        {"id": "heapq", "text": "heapq\n\nHeap queue algorithm (a.k.a. priority queue)."},
        {"id": "other", "text": "not asked about"}]))
    return path


def test_closed_book_has_no_context_and_oracle_only_the_gold_document(docs_file):
    docs = gold_documents(docs_file, ROWS)
    assert set(docs) == {"json.dumps", "heapq"}  # only the gold documents are kept
    off = baseline_messages("closed_book", ROWS[0], docs, SYSTEM_PROMPT)
    assert off[1]["content"] == "Question: What does json.dumps do?"
    oracle = baseline_messages("oracle", ROWS[1], docs, SYSTEM_PROMPT)
    assert oracle[0]["content"] == SYSTEM_PROMPT
    assert oracle[1]["content"] == ("Context:\n[1] heapq\n\nHeap queue algorithm (a.k.a. priority queue).\n\n"
                                    "Question: What is heapq for?")


def test_missing_gold_document_is_an_error_naming_the_file(tmp_path, docs_file):
    rows = [*ROWS, {"id": "q3", "question": "?", "answer": "x", "doc_id": "nowhere"}]
    with pytest.raises(ToolkitError, match=r"docs\.jsonl: 1 gold document\(s\) of the QA set missing \(first: nowhere\)"):
        gold_documents(docs_file, rows)
    with pytest.raises(ToolkitError, match="documents file not found"):
        gold_documents(tmp_path / "none.jsonl", ROWS)


def test_score_averages_over_answered_questions_and_counts_failures():
    answers = [{"answer": "Serialize obj to a JSON formatted str."}, {"error": "ReadTimeout"}]
    assert score(ROWS, answers) == {"questions": 2, "errors": 1, "qa_exact_match": 1.0, "qa_f1": 1.0}
    # "heap queue" vs "Heap queue algorithm.": 2 shared tokens, precision 2/2, recall 2/3 -> F1 0.8
    s = score(ROWS[1:], [{"answer": "heap queue"}])
    assert s["qa_exact_match"] == 0.0 and s["qa_f1"] == pytest.approx(0.8)
    assert score(ROWS[:1], [{"error": "x"}])["qa_f1"] is None
