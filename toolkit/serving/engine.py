"""The engine's OpenAI server (vLLM, or llama.cpp's llama-server) as a child process: start, wait for
readiness with progress, stop without orphans.

Launched through :mod:`toolkit.engine.launch` (its own session, its environment given explicitly, SIGTERM if we
die), so one ``killpg`` reaches the API server *and* the engine-core processes it spawns.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from toolkit.engine.client import last_error_line
from toolkit.engine.launch import kill_group, spawn
from toolkit.engine.llamacpp import llamacpp_load_error
from toolkit.errors import ToolkitError


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free now (small race until the server binds it; acceptable locally)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EngineStartFailed(ToolkitError):
    """The engine process exited during start-up; ``reason`` is the one log line that says why."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class EngineProcess:
    """One engine server. ``start()`` returns once ``ready_path`` answers 200; ``stop()`` is idempotent.

    ``cmd``: from :func:`toolkit.serving.profiles.engine_command`; ``env``: variables for the engine only, on
    top of a copy of this process's environment (:func:`toolkit.engine.launch.engine_env`). ``ready_path``:
    vLLM's ``/v1/models`` answers once the model is loaded; llama-server's ``/health`` is 503 while it loads the
    GGUF and 200 after (:data:`READY`). ``label`` names the engine in messages."""

    READY = {"vllm": ("vLLM", "/v1/models"), "llamacpp": ("llama.cpp", "/health")}

    def __init__(self, cmd: list[str], port: int, env: dict[str, str] | None = None, host: str = "127.0.0.1",
                 log_path: Path | None = None, kind: str = "vllm") -> None:
        self.cmd, self.port, self.host, self.kind = cmd, port, host, kind
        self.label, self.ready_path = self.READY[kind]
        self.url = f"http://{host}:{port}"
        self.env = dict(env or {})
        self.log_path = log_path or Path(tempfile.mkdtemp(prefix="toolkit-engine-")) / "engine.log"
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout_s: float = 600, on_tick: Callable[[float, str], None] | None = None) -> float:
        """Launch and wait until the OpenAI API answers; returns the start-up time in seconds."""
        t0 = time.perf_counter()
        self.proc = spawn(self.cmd, self.log_path, self.env)
        try:
            self._wait_ready(t0, timeout_s, on_tick)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0
        return self.startup_s

    def _wait_ready(self, t0: float, timeout_s: float, on_tick: Callable[[float, str], None] | None) -> None:
        with httpx.Client(timeout=2.0) as client:
            while True:
                elapsed = time.perf_counter() - t0
                if self.proc.poll() is not None:
                    reason = self.failure_reason()
                    raise EngineStartFailed(f"{self.label} exited during start-up (code {self.proc.returncode}): "
                                            f"{reason} (log: {self.log_path})", reason)
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}{self.ready_path}").status_code == 200:
                        return
                if elapsed > timeout_s:
                    raise ToolkitError(f"{self.label} not ready after {timeout_s:.0f} s (log: {self.log_path}): "
                                       f"{last_error_line(self.log())}")
                if on_tick:
                    on_tick(elapsed, self._last_line())
                time.sleep(0.5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def failure_reason(self) -> str:
        """The log line saying why the engine failed: for llama-server its model-load error (see
        :func:`toolkit.engine.llamacpp.llamacpp_load_error`), else the last line naming an error."""
        log = self.log()
        return (self.kind == "llamacpp" and llamacpp_load_error(log)) or last_error_line(log)

    def _last_line(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, 2) - 2048))
                lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][-120:] if lines else ""

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)


def wait_with_progress(engine: EngineProcess, timeout_s: float, label: str | None = None) -> float:
    """Start ``engine`` showing a spinner with elapsed time and the engine's latest log line (stderr)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    label = label or engine.label
    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                  TextColumn("{task.fields[line]}"), console=console, transient=True) as progress:
        task = progress.add_task(f"starting {label} on {engine.url}", line="")
        startup = engine.start(timeout_s, lambda _t, line: progress.update(task, line=line[-80:]))
    console.print(f"{label} ready on {engine.url} in {startup:.1f} s")
    return startup
