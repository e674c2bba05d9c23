"""Black-box teacher answers: the teacher is only queried for text, through a serving engine.

``vllm`` runs the teacher in vLLM offline batch mode (continuous batching, the same engine that serves it;
one engine start per prompt set). ``openai`` sends each conversation to any OpenAI-compatible
``/chat/completions`` endpoint (a vLLM server, a hosted API), a few requests in flight at once.

Answers are cached as ``answers.jsonl`` plus a manifest under a key hashed from the teacher's content (or
URL + model name), the prompts and the sampling settings: rerunning a recipe, resuming after a crash or
training several students on the same teacher answers costs no generation.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from toolkit.distill.data import Messages
from toolkit.distill.recipe import BlackboxSpec
from toolkit.errors import ToolkitError
from toolkit.jsonl import read_jsonl
from toolkit.manifest import RunRecord, atomic_dir, sha256_tree
from toolkit.paths import ARTIFACTS

ANSWERS = "answers.jsonl"


def sampling_of(spec: BlackboxSpec) -> dict[str, Any]:
    sampling = {"max_tokens": spec.max_new_tokens, "temperature": spec.temperature, "top_p": spec.top_p,
                "seed": spec.seed}
    if spec.min_new_tokens and spec.source == "vllm":
        sampling["min_tokens"] = spec.min_new_tokens
    return sampling


def cache_key(teacher_id: str, conversations: list[Messages], sampling: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps({"teacher": teacher_id, "prompts": conversations, "sampling": sampling},
                                  sort_keys=True).encode())
    return h.hexdigest()[:20]


def _generate_vllm(teacher: str, conversations: list[Messages], sampling: dict[str, Any],
                   spec: BlackboxSpec) -> list[str]:
    from toolkit.engine.client import engine_args, run_offline

    engine = engine_args(teacher, max_model_len=spec.max_model_len, enforce_eager=spec.enforce_eager)
    result = run_offline("generate", engine, messages=conversations, sampling=sampling)
    return [o["text"] for o in result["outputs"]]


def _generate_openai(spec: BlackboxSpec, conversations: list[Messages], sampling: dict[str, Any]) -> list[str]:
    import httpx
    from tqdm.auto import tqdm

    url = spec.url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {os.environ[spec.api_key_env]}"} if os.environ.get(spec.api_key_env) else {}
    body = {"model": spec.api_model or "default", "max_tokens": sampling["max_tokens"],
            "temperature": sampling["temperature"], "top_p": sampling["top_p"], "seed": sampling["seed"]}

    with httpx.Client(timeout=300.0, headers=headers) as client:
        def ask(messages: Messages) -> str:
            try:
                r = client.post(url, json={**body, "messages": messages})
            except httpx.HTTPError as exc:
                raise ToolkitError(f"{url}: request failed ({type(exc).__name__}: {exc})") from None
            if r.status_code != 200:
                raise ToolkitError(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
            try:
                return r.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                raise ToolkitError(f"{url}: response is not an OpenAI chat completion: {r.text[:200]}") from None

        with ThreadPoolExecutor(spec.concurrency) as pool:
            return list(tqdm(pool.map(ask, conversations), total=len(conversations), desc="teacher answers",
                             unit="prompt"))


def teacher_answers(teacher: str | Path, conversations: list[Messages], spec: BlackboxSpec) -> tuple[list[str], Path]:
    """Answers of the teacher to ``conversations`` (cached); returns them and the cache directory."""
    sampling = sampling_of(spec)
    teacher_id = (f"{spec.url}|{spec.api_model}" if spec.source == "openai" else sha256_tree(teacher))
    key = cache_key(teacher_id, conversations, sampling)
    cache = Path(spec.cache_dir) if spec.cache_dir else ARTIFACTS / "distill" / "cache"
    entry = cache / key
    if (entry / ANSWERS).is_file():
        rows = read_jsonl(entry / ANSWERS)
        if len(rows) == len(conversations):
            print(f"teacher answers: {len(rows)} from cache {entry}")
            return [r["answer"] for r in rows], entry
    record = RunRecord("distill-teacher-answers")
    record.add_input("teacher", spec.url if spec.source == "openai" else teacher)
    record.recipe = spec.model_dump(mode="json")
    with record.timed("generate"):
        if spec.source == "vllm":
            answers = _generate_vllm(str(teacher), conversations, sampling, spec)
        else:
            answers = _generate_openai(spec, conversations, sampling)
    if len(answers) != len(conversations):
        raise ToolkitError(f"teacher returned {len(answers)} answers for {len(conversations)} prompts")
    record.results = {"prompts": len(conversations), "empty_answers": sum(not a.strip() for a in answers),
                      "cache_key": key}
    with atomic_dir(entry) as tmp:
        with open(tmp / ANSWERS, "w", encoding="utf-8") as f:
            for conv, answer in zip(conversations, answers):
                f.write(json.dumps({"messages": conv, "answer": answer}, ensure_ascii=False) + "\n")
        record.write(tmp)
    return answers, entry
