"""Training data for distillation: prompt sets for the teacher, and token examples for the student.

- Prompts (black-box): the reference QA questions with their gold document as context (the retrieval stage
  is not used here, so the teacher sees the passage that holds the answer), or any ``.jsonl`` prompts file
  with ``"prompt"`` (a user message) or ``"messages"`` (a chat conversation) per line.
- Plain-text examples (white-box): the corpus cut into full token windows, every token a target.
- Chat examples (black-box SFT, optional white-box extra): the prompt rendered with the tokenizer's chat
  template, the answer appended with EOS; only answer tokens are targets (prompt labels are -100), so the
  student learns to answer, not to reproduce prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.jsonl import read_jsonl
from toolkit.paths import REFERENCE_DOCS, REFERENCE_QA

Messages = list[dict[str, str]]


def qa_messages(question: str, context: str, context_chars: int = 1200) -> Messages:
    """The RAG prompt (:func:`toolkit.prompt.rag_messages`, the layout every stage uses) with the gold
    document, cut at a word boundary to ``context_chars``, as the context. Used for teacher answers, QA chat
    examples and the benchmark's F1."""
    from toolkit.prompt import rag_messages

    ctx = context[:context_chars].rsplit(" ", 1)[0] if len(context) > context_chars else context
    return rag_messages(question, [ctx])


def reference_qa(split: str = "train", qa_path: Path = REFERENCE_QA, docs_path: Path = REFERENCE_DOCS) -> list[dict[str, Any]]:
    """QA rows of ``split`` with the gold document text attached as ``context``."""
    if not qa_path.is_file() or not docs_path.is_file():
        raise ToolkitError(f"{qa_path}: reference QA set not found; run `make reference` or give a prompts file")
    docs = {d["id"]: d.get("text", "") for d in read_jsonl(docs_path)}
    rows = []
    for row in read_jsonl(qa_path):
        if row.get("split", split) != split:
            continue
        if row.get("doc_id") not in docs:
            raise ToolkitError(f"{qa_path}: question {row.get('id')} cites unknown doc_id {row.get('doc_id')!r}")
        rows.append({**row, "context": docs[row["doc_id"]]})
    if not rows:
        raise ToolkitError(f"{qa_path}: no questions in split '{split}'")
    return rows


def fit_qa_messages(tokenizer, question: str, context: str, max_prompt_tokens: int, context_chars: int = 1200) -> Messages:
    """:func:`qa_messages` with the context shortened (in tokens) until the rendered prompt fits the budget."""
    messages = qa_messages(question, context, context_chars)
    excess = len(tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]) - max_prompt_tokens
    if excess <= 0:
        return messages
    ctx_ids = tokenizer(context[:context_chars], add_special_tokens=False)["input_ids"]
    keep = max(0, len(ctx_ids) - excess - 4)  # a few tokens of slack: re-tokenising a cut text can merge differently
    return qa_messages(question, tokenizer.decode(ctx_ids[:keep]), context_chars)


def prompt_tokens(tokenizer, messages: Messages) -> int:
    return len(tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"])


def load_prompts(path: str | Path | None, context_chars: int = 1200, limit: int | None = None, tokenizer=None,
                 max_prompt_tokens: int | None = None) -> list[Messages]:
    """Chat conversations to send to the teacher: a prompts file, or the reference QA train split.

    With ``tokenizer`` and ``max_prompt_tokens``, reference QA contexts are shortened to fit, and prompts from
    a file that do not fit are dropped (with a note), so the engine never rejects the batch.
    """
    fit = tokenizer is not None and max_prompt_tokens is not None
    if path is None:
        rows = reference_qa("train")[:limit] if limit else reference_qa("train")
        if fit:
            return [fit_qa_messages(tokenizer, r["question"], r["context"], max_prompt_tokens, context_chars) for r in rows]
        convs = [qa_messages(r["question"], r["context"], context_chars) for r in rows]
    else:
        convs = []
        for n, row in enumerate(read_jsonl(path), 1):
            if isinstance(row.get("messages"), list) and all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in row["messages"]) and row["messages"]:
                convs.append(row["messages"])
            elif isinstance(row.get("prompt"), str):
                convs.append([{"role": "user", "content": row["prompt"]}])
            else:
                raise ToolkitError(f"{path}: line {n}: needs a string 'prompt' or a list of chat 'messages' "
                                   f"({{'role', 'content'}})")
        if not convs:
            raise ToolkitError(f"{path}: no prompts")
        if fit:
            kept = [c for c in convs if prompt_tokens(tokenizer, c) <= max_prompt_tokens]
            if len(kept) < len(convs):
                print(f"{path}: {len(convs) - len(kept)} prompts longer than {max_prompt_tokens} tokens skipped")
            if not kept:
                raise ToolkitError(f"{path}: every prompt is longer than {max_prompt_tokens} tokens "
                                   f"(the teacher's context minus blackbox.max_new_tokens)")
            convs = kept
    return convs[:limit] if limit else convs


def render_prompt(tokenizer, messages: Messages) -> str:
    """The prompt text the model sees; a plain ``role: content`` layout when the tokenizer has no template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def text_examples(tokenizer, texts: Sequence[str], seq_len: int, max_windows: int | None = None) -> list[dict[str, list[int]]]:
    """Full ``seq_len`` token windows of the concatenated texts; every token is a target."""
    from toolkit.modeling import token_windows

    windows = token_windows(tokenizer, texts, seq_len, max_windows)
    if not windows:
        raise ToolkitError(f"training text too short for one window of {seq_len} tokens")
    return [{"input_ids": w, "labels": list(w)} for w in windows]


def chat_examples(tokenizer, conversations: Sequence[Messages], answers: Sequence[str], seq_len: int) -> list[dict[str, list[int]]]:
    """Prompt + answer + EOS examples, targets on the answer only; long prompts are cut from the left."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    out = []
    for conv, answer in zip(conversations, answers, strict=True):
        answer_ids = tokenizer(answer.strip(), add_special_tokens=False)["input_ids"][:seq_len // 2] + eos
        prompt_ids = tokenizer(render_prompt(tokenizer, conv), add_special_tokens=False)["input_ids"]
        prompt_ids = prompt_ids[-(seq_len - len(answer_ids)):]
        out.append({"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids})
    return out


class ListDataset:
    """A list of examples as a map-style dataset (what ``Trainer`` and its samplers expect)."""

    def __init__(self, items: list[dict[str, list[int]]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


class PadCollator:
    """Right-pads a batch: ``attention_mask`` 0 and ``labels`` -100 on padding, so losses ignore it."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
