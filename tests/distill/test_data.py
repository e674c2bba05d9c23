"""Prompt sets and token examples: reference QA with gold context, prompts files, answer-only targets, padding."""

from __future__ import annotations

import json

import pytest

from toolkit.distill.data import PadCollator, chat_examples, load_prompts, reference_qa, render_prompt
from toolkit.errors import ToolkitError
from toolkit.modeling import load_tokenizer


def test_reference_qa_attaches_gold_context(tmp_path):
    docs, qa = tmp_path / "docs.jsonl", tmp_path / "qa.jsonl"
    docs.write_text(json.dumps({"id": "d1", "title": "t", "text": "json.dumps serialises obj to a JSON str."}) + "\n")
    qa.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "q1", "question": "What does json.dumps do?", "answer": "serialises", "doc_id": "d1", "split": "train"},
        {"id": "q2", "question": "held out", "answer": "x", "doc_id": "d1", "split": "test"}]))
    rows = reference_qa("train", qa, docs)
    assert [r["id"] for r in rows] == ["q1"] and rows[0]["context"].startswith("json.dumps serialises")
    qa.write_text(json.dumps({"id": "q3", "question": "?", "answer": "a", "doc_id": "nope", "split": "train"}) + "\n")
    with pytest.raises(ToolkitError, match="unknown doc_id 'nope'"):
        reference_qa("train", qa, docs)


def test_prompts_file_forms_and_errors(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text('{"prompt": "hi"}\n{"messages": [{"role": "user", "content": "yo"}]}\n')
    assert load_prompts(p) == [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]]
    p.write_text('{"prompt": "hi"}\n{"text": "no prompt here"}\n')
    with pytest.raises(ToolkitError, match="line 2: needs a string 'prompt'"):
        load_prompts(p)


def test_chat_examples_train_on_answers_only_and_padding_is_masked(tiny_llama):
    tok = load_tokenizer(tiny_llama)
    conv = [{"role": "user", "content": "What does json.dumps do? " * 20}]
    ex = chat_examples(tok, [conv, conv[:]], ["It serialises an object.", "A JSON string."], seq_len=48)
    for e, answer in zip(ex, ["It serialises an object.", "A JSON string."]):
        assert len(e["input_ids"]) <= 48  # long prompt cut from the left, answer kept whole
        targets = [t for t in e["labels"] if t != -100]
        assert tok.decode(targets[:-1]) == answer and targets[-1] == tok.eos_token_id
        n_prompt = e["labels"].count(-100)
        assert e["input_ids"][n_prompt:] == targets
    assert render_prompt(tok, conv).endswith("<|assistant|>\n")
    batch = PadCollator(tok.pad_token_id)(ex)
    short = min(range(2), key=lambda i: len(ex[i]["input_ids"]))
    n = len(ex[short]["input_ids"])
    assert batch["attention_mask"][short, n:].sum() == 0 and (batch["labels"][short, n:] == -100).all()
