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

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from toolkit.errors import ToolkitError
from toolkit.evaluation.metrics import exact_match, token_f1
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


async def _chat_all(engine_url: str, model: str, conversations: list[list[dict]], max_tokens: int,
                    temperature: float, concurrency: int, timeout_s: float) -> list[dict[str, Any]]:
    import httpx

    sem = asyncio.Semaphore(concurrency)

    async def ask(client: httpx.AsyncClient, messages: list[dict]) -> dict[str, Any]:
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        async with sem:
            try:
                r = await client.post(f"{engine_url}/v1/chat/completions", json=body)
                r.raise_for_status()
                return {"answer": r.json()["choices"][0]["message"].get("content") or ""}
            except Exception as exc:  # noqa: BLE001 - one failed question is counted, not fatal
                return {"error": f"{type(exc).__name__}: {exc}"[:300]}

    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s)) as client:
        return list(await asyncio.gather(*(ask(client, m) for m in conversations)))


def score(rows: Sequence[dict[str, str]], answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean exact match and token F1 over the questions that got an answer, and how many failed."""
    ok = [(row, a["answer"]) for row, a in zip(rows, answers) if "error" not in a]
    n = len(ok)
    return {"questions": len(rows), "errors": len(rows) - n,
            "qa_exact_match": sum(exact_match(a, r["answer"]) for r, a in ok) / n if n else None,
            "qa_f1": sum(token_f1(a, r["answer"]) for r, a in ok) / n if n else None}


def answer_baselines(engine_url: str, model: str, rows: Sequence[dict[str, str]], docs_path: str | Path,
                     modes: Sequence[Mode], system_prompt: str, max_tokens: int, temperature: float,
                     timeout_s: float, concurrency: int = 4) -> dict[str, dict[str, Any]]:
    """``{mode: {qa_exact_match, qa_f1, questions, errors}}`` for each requested baseline."""
    docs = gold_documents(docs_path, rows) if "oracle" in modes else {}
    out = {}
    for mode in modes:
        conversations = [baseline_messages(mode, row, docs, system_prompt) for row in rows]
        answers = asyncio.run(_chat_all(engine_url, model, conversations, max_tokens, temperature, concurrency,
                                        timeout_s))
        out[mode] = score(rows, answers)
    return out
