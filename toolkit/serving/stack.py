"""``running_stack``: vLLM + RAG endpoint as real HTTP servers for the duration of a ``with`` block.

Used by evaluation and benchmarks. The engine is started from ``.venv-vllm`` (unless ``engine_url`` names
one already running) and the endpoint runs in its own Python process (``toolkit.serving.server``), so the
caller's measurements share no interpreter or GIL with the server. Both run in their own process groups and
are stopped (SIGTERM, then SIGKILL) on exit, including on exceptions and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from toolkit.errors import ToolkitError
from toolkit.paths import REPO_ROOT
from toolkit.serving.engine import EngineProcess, _die_with_parent, free_port, kill_group
from toolkit.serving.profiles import engine_command, engine_environment, load_profile


@dataclass
class Stack:
    url: str
    engine_url: str
    engine_startup_s: float
    engine_pid: int | None
    served_model_name: str
    endpoint_pid: int | None = None
    engine_log: Path | None = None
    endpoint_log: Path | None = None


def served_name(model: str | Path) -> str:
    p = Path(model)
    return p.name if p.exists() else str(model)


@contextlib.contextmanager
def running_stack(model: str | Path, index: str | Path, profile: str | Path | None = None, host: str = "127.0.0.1",
                  port: int = 0, engine_port: int = 0, engine_url: str | None = None,
                  extra_engine_args: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                  progress: bool = False) -> Iterator[Stack]:
    """Start (engine +) endpoint, wait until both answer, yield a :class:`Stack`, stop what was started."""
    prof = load_profile(profile)
    logs = Path(tempfile.mkdtemp(prefix="toolkit-stack-"))
    engine: EngineProcess | None = None
    endpoint: subprocess.Popen | None = None
    name = served_name(model)
    try:
        startup = 0.0
        if engine_url is None:
            engine_port = engine_port or free_port(host)
            cmd = engine_command(model, engine_port, name, prof, host, extra_engine_args)
            engine = EngineProcess(cmd, engine_port, {**engine_environment(prof), **(env or {})}, host,
                                   logs / "engine.log")
            if progress:
                from toolkit.serving.engine import wait_with_progress

                startup = wait_with_progress(engine, prof.engine.startup_timeout_s)
            else:
                startup = engine.start(prof.engine.startup_timeout_s)
            engine_url = engine.url
        else:
            engine_url = engine_url.rstrip("/")
            name = _model_id(engine_url)
        port = port or free_port(host)
        cmd = [sys.executable, "-m", "toolkit.serving.server", "--index", str(index), "--engine-url", engine_url,
               "--served-model-name", name, "--host", host, "--port", str(port)]
        if Path(model).is_dir():
            cmd += ["--model", str(model)]
        if profile:
            cmd += ["--profile", str(profile)]
        endpoint_env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO_ROOT)}
        with open(logs / "endpoint.log", "ab") as log:
            endpoint = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=endpoint_env, cwd=REPO_ROOT,
                                        start_new_session=True, preexec_fn=_die_with_parent)
        url = f"http://{host}:{port}"
        _wait_endpoint(endpoint, url, logs / "endpoint.log", timeout_s=300)
        yield Stack(url, engine_url, startup, engine.pid if engine else None, name,
                    endpoint.pid, logs / "engine.log" if engine else None, logs / "endpoint.log")
    finally:
        if endpoint is not None:
            kill_group(endpoint, grace_s=10)
        if engine is not None:
            engine.stop()


def _model_id(engine_url: str) -> str:
    try:
        return httpx.get(f"{engine_url}/v1/models", timeout=5).json()["data"][0]["id"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        raise ToolkitError(f"engine_url {engine_url}: no OpenAI model list ({type(exc).__name__})") from None


def _wait_endpoint(proc: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    """Ready when /healthz answers at all (200 or 503: the index is loaded and uvicorn is serving)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            text = log.read_text(errors="replace").strip().splitlines()
            raise ToolkitError(f"RAG endpoint exited during start-up: {(text or ['no output'])[-1][:300]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=5).status_code in (200, 503):
                return
        time.sleep(0.3)
    raise ToolkitError(f"RAG endpoint not ready after {timeout_s:.0f} s (log: {log})")
