"""Main-environment side of vLLM offline jobs: write the job, run it with ``.venv-vllm``'s Python, read back.

Used by benchmarks (decode/prefill tokens/s of each model variant) and black-box distillation (teacher
answers through the serving engine). One subprocess per job: the engine loads once per model.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit.engine.launch import kill_group, spawn, vllm_command
from toolkit.errors import ToolkitError


def engine_args(model: str | Path, **overrides: Any) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments with the toolkit's defaults (seeded, short context, modest memory)."""
    args: dict[str, Any] = {"model": str(model), "seed": 0, "dtype": "auto"}
    args.update({k: v for k, v in overrides.items() if v is not None})
    return args


def last_error_line(log: str) -> str:
    """The most telling line of an engine log: the last one naming an error, else the last line."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error:" in ln]
    return (errors or lines or ["no output"])[-1][:400]


def run_offline(task: str, engine: dict[str, Any], timeout_s: float = 1800, env: Mapping[str, str] | None = None,
                **job: Any) -> dict[str, Any]:
    """Run one offline job (``generate`` or ``throughput``) in the serving environment; return its result.

    ``env``: variables for the engine process only (see :func:`toolkit.engine.launch.engine_env`)."""
    with tempfile.TemporaryDirectory(prefix="toolkit-vllm-") as tmp:
        job_path, result_path, log_path = Path(tmp, "job.json"), Path(tmp, "result.json"), Path(tmp, "engine.log")
        job_path.write_text(json.dumps({"task": task, "engine": engine, **job}))
        proc = spawn(vllm_command("toolkit.engine.offline", str(job_path), str(result_path)), log_path, env)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ToolkitError(f"vLLM {task} job on {engine['model']} exceeded {timeout_s:.0f} s") from None
        finally:  # the whole group: vLLM's engine-core processes too, on time-out, error or Ctrl-C
            kill_group(proc, grace_s=10)
        if proc.returncode != 0 or not result_path.exists():
            raise ToolkitError(f"vLLM {task} job on {engine['model']} failed (exit {proc.returncode}): "
                               f"{last_error_line(log_path.read_text(errors='replace'))}")
        return json.loads(result_path.read_text())
