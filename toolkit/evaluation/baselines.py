"""What retrieval is worth: the same questions answered with no context (RAG-OFF) and with only the gold
document (oracle), beside the endpoint's own answers (RAG-ON).

The three are asked of the same engine with the same prompt (:func:`toolkit.prompt.rag_messages`, the
profile's system prompt) and scored with the same SQuAD exact match / token F1, so

- RAG-ON − RAG-OFF is what retrieval adds over the model's own knowledge, and
- oracle − RAG-ON is what is lost to retrieval misses and distracting passages,

the comparison NVIDIA's RAG benchmarking calls RAG-ON / RAG-OFF. The bare engine is asked directly
(``/v1/chat/completions``), one non-streamed request per question.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from toolkit.errors import ToolkitError
from toolkit.evaluation.metrics import exact_match, token_f1
from toolkit.evaluation.quality import post_all
from toolkit.jsonl import read_jsonl
from toolkit.prompt import rag_messages

Mode = Literal["closed_book", "oracle"]
MODES: tuple[Mode, ...] = ("closed_book", "oracle")


def gold_documents(docs_path: str | Path, rows: Sequence[dict[str, str]]) -> dict[str, str]:
    """``doc_id -> text`` for the questions' gold documents; a QA row whose document is missing is an error."""
    wanted = {r["doc_id"] for r in rows}
    rows_in = read_jsonl(docs_path, "documents file not found (the oracle baseline needs the QA set's documents: "
                         "set qa.docs in the suite)", require={"id": object})
    docs = {str(d["id"]): str(d.get("text", "")) for d in rows_in if str(d["id"]) in wanted}
    missing = sorted(wanted - docs.keys())
    if missing:
        raise ToolkitError(f"{docs_path}: {len(missing)} gold document(s) of the QA set missing (first: {missing[0]})")
    return docs


def baseline_messages(mode: Mode, row: dict[str, str], docs: dict[str, str], system_prompt: str) -> list[dict]:
    contexts = [docs[row["doc_id"]]] if mode == "oracle" else []
    return rag_messages(row["question"], contexts, system_prompt)


def score(rows: Sequence[dict[str, str]], answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean exact match and token F1 over the questions that got an answer, and how many failed."""
    ok = [(row, a["answer"]) for row, a in zip(rows, answers) if "error" not in a]
    n = len(ok)
    return {"questions": len(rows), "errors": len(rows) - n,
            "qa_exact_match": sum(exact_match(a, r["answer"]) for r, a in ok) / n if n else None,
            "qa_f1": sum(token_f1(a, r["answer"]) for r, a in ok) / n if n else None}


def _answer(reply: dict[str, Any]) -> dict[str, Any]:
    """``{"answer": text}`` of an OpenAI chat completion, or the request's / the shape's error."""
    if "error" in reply:
        return reply
    try:
        return {"answer": reply["choices"][0]["message"].get("content") or ""}
    except (KeyError, IndexError, TypeError, AttributeError):
        return {"error": f"not an OpenAI chat completion: {str(reply)[:200]}"}


def answer_baselines(engine_url: str, model: str, rows: Sequence[dict[str, str]], docs_path: str | Path,
                     modes: Sequence[Mode], system_prompt: str, max_tokens: int, temperature: float,
                     timeout_s: float, concurrency: int = 4) -> dict[str, dict[str, Any]]:
    """``{mode: {qa_exact_match, qa_f1, questions, errors}}`` for each requested baseline."""
    docs = gold_documents(docs_path, rows) if "oracle" in modes else {}
    out = {}
    for mode in modes:
        bodies = [{"model": model, "messages": baseline_messages(mode, row, docs, system_prompt),
                   "max_tokens": max_tokens, "temperature": temperature} for row in rows]
        replies = post_all(f"{engine_url}/v1/chat/completions", bodies, concurrency, timeout_s)
        out[mode] = score(rows, [_answer(r) for r in replies])
    return out
