"""Quality side of an eval: validation perplexity of the checkpoint, and RAG answer/retrieval quality
measured through the running endpoint on the QA set.

- Perplexity is computed in this (main) environment with transformers, on the same token windows for every
  variant (:func:`toolkit.modeling.perplexity`). A checkpoint transformers cannot load (e.g. a quantization
  format it has no kernel or decompressor for) yields ``val_ppl: null`` plus the reason, not a crash.
- Answers: one non-streamed request per question (temperature from the suite, 0 by default), scored with
  SQuAD exact match / token F1 against the reference answer, and ``context_overlap`` = share of answer tokens
  found in the passages the endpoint retrieved (a cheap groundedness signal).
- Retrieval: recall@k and MRR of the gold document among the endpoint's sources. When the largest k exceeds
  the generation ``top_k``, a second pass asks for ``max(ks)`` passages with a one-token answer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.evaluation.metrics import context_overlap, exact_match, mean_reciprocal_rank, recall_at_k, token_f1
from toolkit.jsonl import read_jsonl


def read_qa(path: str | Path, split: str | None, limit: int | None) -> list[dict[str, str]]:
    """QA rows ``{id, question, answer, doc_id}`` (optionally one split, first ``limit``), validated."""
    p = Path(path)
    fields = ("id", "question", "answer", "doc_id")
    rows = [{k: str(row[k]) for k in fields}
            for row in read_jsonl(p, "QA file not found (build it with `make reference` or set qa.path in the suite)",
                                  require=dict.fromkeys(fields, object))
            if split is None or row.get("split") == split]
    if not rows:
        raise ToolkitError(f"{p}: no QA rows" + (f" in split '{split}'" if split else ""))
    return rows[:limit] if limit else rows


def validation_perplexity(model: str | Path, text: str | Path, seq_len: int, max_windows: int | None) -> dict[str, Any]:
    """``{"value", "tokens", "text", "seq_len", "error", "compute_dtype"}``; ``value`` is None with ``error`` set
    when it cannot be measured."""
    from toolkit.modeling import load_tokenizer, perplexity, read_texts, token_windows

    out: dict[str, Any] = {"value": None, "tokens": 0, "text": str(text), "seq_len": seq_len, "error": None,
                           "compute_dtype": None}
    texts = read_texts(text)  # a missing/bad text file is the user's error: raise
    try:
        tok = load_tokenizer(model)
        windows = token_windows(tok, texts, seq_len, max_windows)
        lm = _load_for_perplexity(model)
        out["compute_dtype"] = str(lm.dtype).removeprefix("torch.")  # recorded in the report as val_ppl_dtype
        out["value"] = perplexity(lm, windows, progress="perplexity")
        out["tokens"] = len(windows) * (seq_len - 1)
    except Exception as exc:  # noqa: BLE001 - report why, keep the rest of the eval
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        out["error"] = f"transformers could not evaluate this checkpoint: {first[:300]}"
    return out


def _load_for_perplexity(model: str | Path):
    """Every variant in the same compute dtype, so perplexity differences come from the weights:
    :func:`toolkit.hardware.compute_dtype` of the checkpoint's stored dtype (fp32 where the hardware would
    emulate bf16/fp16: slower, and its own rounding). compressed-tensors checkpoints (llm-compressor output)
    load through transformers' compressed-tensors integration, which decompresses the quantized weights
    straight into that dtype."""
    from toolkit.hardware import compute_dtype, hardware_report
    from toolkit.modeling import load_causal_lm, stored_dtype

    cuda = hardware_report()["device"] == "cuda"
    return load_causal_lm(model, dtype=compute_dtype(stored_dtype(model)), device="cuda" if cuda else None)


def post_all(url: str, bodies: list[dict[str, Any]], concurrency: int, timeout_s: float,
             headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """POST every body to ``url``, ``concurrency`` at a time; each answer's JSON, or ``{"error": ...}`` for a
    request that failed (one failed question is counted, not fatal)."""
    import httpx

    async def run() -> list[dict[str, Any]]:
        sem = asyncio.Semaphore(concurrency)

        async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
            async with sem:
                try:
                    r = await client.post(url, json=body)
                    r.raise_for_status()
                    return r.json()
                except Exception as exc:  # noqa: BLE001
                    return {"error": f"{type(exc).__name__}: {exc}"[:300]}

        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), headers=headers or {}) as client:
            return list(await asyncio.gather(*(post(client, b) for b in bodies)))

    return asyncio.run(run())


def _ask_all(url: str, rows: list[dict[str, str]], top_k: int, max_tokens: int, temperature: float,
             concurrency: int, timeout_s: float) -> list[dict[str, Any]]:
    from toolkit.evaluation.loadgen import auth_headers

    bodies = [{"query": row["question"], "top_k": top_k, "max_tokens": max_tokens, "temperature": temperature,
               "stream": False} for row in rows]
    return post_all(f"{url}/v1/rag", bodies, concurrency, timeout_s, auth_headers())


def rag_quality(url: str, rows: list[dict[str, str]], ks: list[int], top_k: int, max_tokens: int,
                temperature: float, timeout_s: float, concurrency: int = 4) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Answer every question through the endpoint; return (quality metrics, per-question records)."""
    answers = _ask_all(url, rows, top_k, max_tokens, temperature, concurrency, timeout_s)
    retrieved = answers
    if max(ks) > top_k:  # recall@k needs k passages: ask for them without paying for a full answer
        retrieved = _ask_all(url, rows, max(ks), 1, 0.0, concurrency, timeout_s)
    records, ranked = [], []
    for row, ans, ret in zip(rows, answers, retrieved):
        rec: dict[str, Any] = {"qid": row["id"], "gold_doc": row["doc_id"], "reference": row["answer"],
                               "error": ans.get("error") or ret.get("error")}
        if rec["error"] is None:
            answer = ans.get("answer", "")
            # only the chunks that went into the prompt (the endpoint trims to fit the context window)
            used = ans.get("sources", [])[:ans.get("context_chunks", len(ans.get("sources", [])))]
            context = "\n".join(s.get("text", "") for s in used)
            ids = [str(s.get("id")) for s in ret.get("sources", [])]
            rec.update({"answer": answer, "source_ids": ids, "em": exact_match(answer, row["answer"]),
                        "f1": token_f1(answer, row["answer"]), "context_overlap": context_overlap(answer, context),
                        "used_sources": used})
            ranked.append((ids, row["doc_id"]))
        records.append(rec)
    ok = [r for r in records if r["error"] is None]
    mean = (lambda key: sum(r[key] for r in ok) / len(ok)) if ok else (lambda key: None)
    metrics = {
        "questions": len(rows), "errors": len(rows) - len(ok),
        "qa_exact_match": mean("em"), "qa_f1": mean("f1"), "context_overlap": mean("context_overlap"),
        "recall_at_k": {str(k): recall_at_k(ranked, k) for k in ks} if ranked else {},
        "mrr": mean_reciprocal_rank(ranked) if ranked else None,
    }
    return metrics, records
