"""``running_stack``: engine (vLLM, or llama.cpp with ``engine.kind: llamacpp``) + RAG endpoint as real HTTP
servers for the duration of a ``with`` block.

The one way the toolkit runs its serving stack: ``toolkit serve`` (until a signal), evaluation and the
benchmarks. The endpoint runs in its own Python process (``toolkit.serving.server``), so the caller's
measurements share no interpreter or GIL with the server; the engine is started from ``.venv-vllm`` (unless
``engine_url`` names one already running). The endpoint starts first: it loads the index and checks it against
its embedding model in seconds, before a minute of engine warm-up is spent on a stack that cannot serve. Both
run in their own process groups and are stopped (SIGTERM, then SIGKILL) on exit, including on exceptions and
Ctrl-C.

An engine that exits during start-up (a GGUF llama-server cannot load, a checkpoint vLLM refuses) is a one-line
:class:`ToolkitError` for evaluation and the benchmarks. With ``keep_serving`` (``toolkit serve``) the stack
instead writes that reason to the endpoint's ``--engine-status-file`` and yields, so the endpoint answers every
request with a 503 saying why (:meth:`toolkit.serving.llm.EngineClient.failure`) until the caller stops it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from toolkit.atomic import atomic_write_text
from toolkit.engine.launch import kill_group, spawn
from toolkit.errors import ToolkitError
from toolkit.serving.engine import EngineProcess, EngineStartFailed, free_port, wait_with_progress
from toolkit.serving.model_ref import engine_model_id, served_model
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
    engine_failure: str | None = None  # with keep_serving: why the engine exited during start-up (endpoint up)
    _procs: dict[str, tuple[subprocess.Popen, Path]] = field(default_factory=dict, repr=False)

    def failure(self) -> str | None:
        """Why the stack stopped serving on its own (a server it started exited), or None while all run."""
        for what, (proc, log) in self._procs.items():
            if proc.poll() is not None:
                return f"{what} exited (code {proc.returncode}): {_last_line(log)} (log: {log})"
        return None


@contextlib.contextmanager
def running_stack(model: str | Path, index: str | Path, profile: str | Path | None = None, host: str = "127.0.0.1",
                  port: int = 0, engine_port: int = 0, engine_url: str | None = None,
                  extra_engine_args: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                  progress: bool = False, keep_serving: bool = False) -> Iterator[Stack]:
    """Start endpoint (+ engine), wait until both answer, yield a :class:`Stack`, stop what was started.

    ``port``/``engine_port`` 0 = a free port; ``env``: extra variables for both processes. ``keep_serving``: an
    engine exiting during start-up yields a stack whose ``engine_failure`` says why (the endpoint answers 503
    with it) instead of raising."""
    prof = load_profile(profile)
    ref = served_model(model)
    logs = Path(tempfile.mkdtemp(prefix="toolkit-stack-"))
    engine: EngineProcess | None = None
    endpoint: subprocess.Popen | None = None
    status_file = logs / "engine-failure.txt"  # written only if the engine we start exits during start-up
    try:
        if engine_url is None:
            engine_port = engine_port or free_port(host)
            # built now (it refuses a checkpoint this machine cannot serve), started once the endpoint is up
            engine = EngineProcess(engine_command(ref.source, engine_port, ref.name, prof, host, extra_engine_args),
                                   engine_port, {**engine_environment(prof), **(env or {})}, host, logs / "engine.log",
                                   kind=prof.engine.kind)
            engine_url, name = engine.url, ref.name
        else:
            engine_url = engine_url.rstrip("/")
            name = engine_model_id(engine_url)
        port = port or free_port(host)
        cmd = [sys.executable, "-m", "toolkit.serving.server", "--index", str(index), "--engine-url", engine_url,
               "--model", ref.source, "--served-model-name", name, "--host", host, "--port", str(port)]
        if profile:
            cmd += ["--profile", str(profile)]
        if engine is not None:
            cmd += ["--engine-status-file", str(status_file)]
        endpoint = spawn(cmd, logs / "endpoint.log", env)
        url = f"http://{host}:{port}"
        _wait_endpoint(endpoint, url, logs / "endpoint.log", timeout_s=300)
        startup, failure = 0.0, None
        if engine is not None:
            try:
                startup = (wait_with_progress(engine, prof.engine.startup_timeout_s) if progress
                           else engine.start(prof.engine.startup_timeout_s))
            except EngineStartFailed as exc:
                failure = f"{engine.label} could not load {name}: {exc.reason}"
                atomic_write_text(status_file, failure + "\n")  # never half a line
                if not keep_serving:
                    raise
        procs = {"RAG endpoint": (endpoint, logs / "endpoint.log")}
        if engine is not None and engine.proc is not None and failure is None:
            procs[engine.label] = (engine.proc, engine.log_path)
        yield Stack(url, engine_url, startup, engine.pid if engine and failure is None else None, name,
                    endpoint.pid, logs / "engine.log" if engine else None, logs / "endpoint.log",
                    engine_failure=failure, _procs=procs)
    finally:
        if endpoint is not None:
            kill_group(endpoint, grace_s=10)
        if engine is not None:
            engine.stop()


def _last_line(log: Path) -> str:
    """The last line a server wrote, without the ``error: `` our own CLIs put in front of it."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        text = []
    return (text or ["no output"])[-1].removeprefix("error: ")[:300]


def _wait_endpoint(proc: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    """Ready when /healthz answers at all (503 while the engine is not up yet: the index is loaded, uvicorn serves)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            raise ToolkitError(f"RAG endpoint exited during start-up: {_last_line(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=5).status_code in (200, 503):
                return
        time.sleep(0.3)
    raise ToolkitError(f"RAG endpoint not ready after {timeout_s:.0f} s (log: {log})")
