"""Runs inside ``.venv-vllm``: ``python -m toolkit.engine.offline JOB.json RESULT.json``.

Jobs:
- ``generate``: ``prompts`` (strings) or ``messages`` (chat conversations, the model's chat template applied
  by vLLM) with ``sampling`` ({max_tokens, temperature, top_p, seed}) → ``outputs`` (text, token counts).
- ``throughput``: for each batch size, ``batch`` prompts of ``prompt_tokens`` random token ids decode
  exactly ``new_tokens`` tokens (``ignore_eos``), timed after a warm-up → decode tokens/s; plus a prefill
  measurement (``max_tokens=1`` over long prompts) → prompt tokens/s. Repeats give the spread.

Only the standard library, vLLM and :mod:`toolkit.stats` (standard library only) are imported here: this file
must not depend on the main environment.
"""

from __future__ import annotations

import json
import random
import sys
import time

from toolkit.stats import spread


def _llm(engine: dict):
    from vllm import LLM

    return LLM(**engine)


def _generate(llm, job: dict) -> dict:
    from vllm import SamplingParams

    sp = SamplingParams(**job.get("sampling", {}))
    t = time.perf_counter()
    if "messages" in job:
        outs = llm.chat(job["messages"], sp, use_tqdm=True)
    else:
        outs = llm.generate(job["prompts"], sp, use_tqdm=True)
    elapsed = time.perf_counter() - t
    return {
        "outputs": [
            {"text": o.outputs[0].text, "prompt_tokens": len(o.prompt_token_ids or []),
             "completion_tokens": len(o.outputs[0].token_ids), "finish_reason": o.outputs[0].finish_reason}
            for o in outs
        ],
        "elapsed_s": elapsed,
    }


def _random_prompts(vocab: int, n: int, length: int, rng: random.Random) -> list[dict]:
    # Token ids from the middle of the vocabulary: avoids special tokens at either end.
    lo, hi = min(16, vocab - 1), max(17, vocab - 16)
    return [{"prompt_token_ids": [rng.randrange(lo, hi) for _ in range(length)]} for _ in range(n)]


def _throughput(llm, job: dict) -> dict:
    from vllm import SamplingParams

    rng = random.Random(job.get("seed", 0))
    vocab = llm.get_tokenizer().vocab_size
    new_tokens, prompt_tokens, repeats = job.get("new_tokens", 64), job.get("prompt_tokens", 32), job.get("repeats", 3)
    decode = SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True, temperature=0.0)
    llm.generate(_random_prompts(vocab, 2, prompt_tokens, rng), decode, use_tqdm=False)  # warm-up
    result: dict = {"decode": {}, "new_tokens": new_tokens, "prompt_tokens": prompt_tokens, "repeats": repeats}
    for batch in job.get("batch_sizes", [1, 8]):
        rates = []
        for _ in range(repeats):
            prompts = _random_prompts(vocab, batch, prompt_tokens, rng)
            t = time.perf_counter()
            outs = llm.generate(prompts, decode, use_tqdm=False)
            elapsed = time.perf_counter() - t
            rates.append(sum(len(o.outputs[0].token_ids) for o in outs) / elapsed)
        result["decode"][str(batch)] = spread(rates)
    prefill_len = job.get("prefill_tokens", 256)
    if prefill_len:
        one = SamplingParams(max_tokens=1, temperature=0.0)
        rates = []
        for _ in range(repeats):
            prompts = _random_prompts(vocab, job.get("prefill_batch", 4), prefill_len, rng)
            t = time.perf_counter()
            llm.generate(prompts, one, use_tqdm=False)
            rates.append(len(prompts) * prefill_len / (time.perf_counter() - t))
        result["prefill"] = {**spread(rates), "prompt_tokens": prefill_len}
    return result


def main(job_path: str, result_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    t = time.perf_counter()
    llm = _llm(job["engine"])
    load_s = time.perf_counter() - t
    result = {"generate": _generate, "throughput": _throughput}[job["task"]](llm, job)
    result["engine_load_s"] = load_s
    from toolkit.manifest import atomic_write_text  # stdlib-only: fine in the serving environment

    atomic_write_text(result_path, json.dumps(result))


if __name__ == "__main__":  # vLLM's engine core is a spawned process: the guard is required
    main(sys.argv[1], sys.argv[2])
