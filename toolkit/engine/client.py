"""Main-environment side of vLLM offline jobs: write the job, run it with ``.venv-vllm``'s Python, read back.

Used by benchmarks (decode/prefill tokens/s of each model variant) and black-box distillation (teacher
answers through the serving engine). One subprocess per job: the engine loads once per model.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.paths import REPO_ROOT, vllm_python

DEFAULT_KV_CACHE_GIB = "1"


def engine_args(model: str | Path, **overrides: Any) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments with the toolkit's defaults (seeded, short context, modest memory)."""
    args: dict[str, Any] = {"model": str(model), "seed": 0, "dtype": "auto"}
    args.update({k: v for k, v in overrides.items() if v is not None})
    return args


def engine_env(kv_cache_gib: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", kv_cache_gib or DEFAULT_KV_CACHE_GIB)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def last_error_line(log: str) -> str:
    """The most telling line of an engine log: the last one naming an error, else the last line."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error:" in ln]
    return (errors or lines or ["no output"])[-1][:400]


def run_offline(task: str, engine: dict[str, Any], timeout_s: float = 1800, **job: Any) -> dict[str, Any]:
    """Run one offline job (``generate`` or ``throughput``) in the serving environment; return its result."""
    python = vllm_python()
    if not python.exists():
        raise ToolkitError(f"{python}: serving environment missing; run `make setup`")
    with tempfile.TemporaryDirectory(prefix="toolkit-vllm-") as tmp:
        job_path, result_path, log_path = Path(tmp, "job.json"), Path(tmp, "result.json"), Path(tmp, "engine.log")
        job_path.write_text(json.dumps({"task": task, "engine": engine, **job}))
        with open(log_path, "w") as log:
            try:
                proc = subprocess.run([str(python), "-m", "toolkit.engine.offline", str(job_path), str(result_path)],
                                      stdout=log, stderr=subprocess.STDOUT, env=engine_env(), timeout=timeout_s,
                                      cwd=REPO_ROOT)
            except subprocess.TimeoutExpired:
                raise ToolkitError(f"vLLM {task} job on {engine['model']} exceeded {timeout_s:.0f} s") from None
        if proc.returncode != 0 or not result_path.exists():
            raise ToolkitError(f"vLLM {task} job on {engine['model']} failed (exit {proc.returncode}): "
                               f"{last_error_line(log_path.read_text(errors='replace'))}")
        return json.loads(result_path.read_text())
