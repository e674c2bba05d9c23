"""The one RAG prompt: system rule, numbered context passages, question.

Reference training, distillation data, the serving endpoint and evaluation all build their chat messages
here, so a model is always served and scored with the layout it was trained or distilled on. The system
prompt is recorded in the reference model's manifest (``results.prompt``) and is the serving profile's
default (``endpoint.system_prompt``); :func:`prompt_record` is what gets written.

The messages go through the tokenizer's own chat template (``apply_chat_template(...,
add_generation_prompt=True)``) or vLLM's ``/v1/chat/completions``, which applies the same template.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

# The QA answers are docstring summary sentences, so the model is asked to quote one; the second sentence
# makes a retrieval miss (or no context at all) an explicit "I do not know" rather than a guess.
SYSTEM_PROMPT = ("Answer the question with one sentence quoted from the context. If the context does not "
                 "contain the answer, say that you do not know.")

Message = dict[str, str]


def format_context(contexts: Sequence[str]) -> str:
    """``[1] first passage\\n\\n[2] second ...``: numbered so an answer can cite its source."""
    return "\n\n".join(f"[{i}] {c}" for i, c in enumerate(contexts, 1))


def user_message(question: str, contexts: Sequence[str]) -> str:
    if not contexts:
        return f"Question: {question}"
    return f"Context:\n{format_context(contexts)}\n\nQuestion: {question}"


def rag_messages(question: str, contexts: Sequence[str], system_prompt: str = SYSTEM_PROMPT,
                 history: Sequence[Message] | None = None) -> list[Message]:
    """System rule, optional earlier turns, then one user message with the passages and the question."""
    return [{"role": "system", "content": system_prompt}, *(history or []),
            {"role": "user", "content": user_message(question, contexts)}]


def prompt_record(system_prompt: str = SYSTEM_PROMPT) -> dict[str, str]:
    """What a manifest stores about the prompt: the system prompt and a hash of the whole layout."""
    sample = rag_messages("<question>", ["<passage 1>", "<passage 2>"], system_prompt)
    digest = hashlib.sha256(repr(sample).encode()).hexdigest()[:16]
    return {"system_prompt": system_prompt, "layout_sha256": digest}
