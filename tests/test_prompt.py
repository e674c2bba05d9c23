"""One RAG prompt: reference training, distillation data, the serving endpoint, evaluation and the shipped
profiles all produce the same chat messages for the same question and passages. Fails when any of them
grows its own system prompt or context layout."""

from __future__ import annotations

import pytest

from toolkit.paths import SERVE_DIR
from toolkit.prompt import SYSTEM_PROMPT, prompt_record, rag_messages

QUESTION = "What does the function json.dumps do?"
PASSAGE = "json.dumps\n\nSerialize obj to a JSON formatted str."


def test_layout_is_system_rule_then_numbered_passages_then_question():
    assert rag_messages(QUESTION, ["first", "second"]) == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Context:\n[1] first\n\n[2] second\n\nQuestion: {QUESTION}"},
    ]
    assert rag_messages(QUESTION, [])[1]["content"] == f"Question: {QUESTION}"  # RAG-OFF: no context block


def test_reference_training_renders_the_shared_prompt(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from toolkit.reference.train import IGNORE, chat_example

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    ids, labels = chat_example(tok, QUESTION, "Serialize obj.", [PASSAGE])
    prompt_len = sum(1 for x in labels if x == IGNORE)
    expected = tok.apply_chat_template(rag_messages(QUESTION, [PASSAGE]), add_generation_prompt=True, tokenize=False)
    assert tok.decode(ids[:prompt_len]) == tok.decode(tok(expected, add_special_tokens=False)["input_ids"])


def test_distillation_data_uses_the_shared_prompt():
    from toolkit.distill.data import qa_messages

    assert qa_messages(QUESTION, PASSAGE) == rag_messages(QUESTION, [PASSAGE])


def test_endpoint_and_evaluation_default_to_the_shared_prompt():
    from toolkit.serving.profiles import EndpointSettings, load_profile
    from toolkit.serving.rag import PromptBuilder

    assert EndpointSettings().system_prompt == SYSTEM_PROMPT
    builder = PromptBuilder(EndpointSettings().system_prompt)
    assert builder.messages(QUESTION, [PASSAGE]) == rag_messages(QUESTION, [PASSAGE])
    # evaluation builds engine-alone prompts with the profile's PromptBuilder: the shipped profiles keep it
    for profile in sorted(SERVE_DIR.glob("*.yaml")):
        assert load_profile(profile).endpoint.system_prompt == SYSTEM_PROMPT, profile.name


@pytest.mark.parametrize("other", ["Answer briefly.", SYSTEM_PROMPT + " "])
def test_prompt_record_changes_with_the_prompt(other):
    assert prompt_record()["system_prompt"] == SYSTEM_PROMPT
    assert prompt_record(other)["layout_sha256"] != prompt_record()["layout_sha256"]
