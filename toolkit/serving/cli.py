"""``toolkit serve``: start vLLM with a profile, then the RAG endpoint in front of it, until Ctrl-C/SIGTERM.

It runs exactly the stack evaluation and the benchmarks measure (:func:`toolkit.serving.stack.running_stack`),
and waits on a signal. The endpoint starts first and loads the index (checked against its embedding model),
so a bad index fails in seconds rather than after a minute of engine warm-up. Stopping the command stops the
endpoint and the engine's whole process group; nothing is left running.

An engine that exits during start-up (a GGUF llama-server cannot load) does not take the endpoint down: it
answers every request with 503 and the engine's reason (so clients see why), the command prints that reason as
one ``error:`` line, and exits 2 once stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.serving.stack import Stack


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model directory (or id) for vLLM (default: the profile's `model`, else "
                        "artifacts/reference/model)")
    parser.add_argument("--index", help="index directory (default: artifacts/indexes/flat)")
    parser.add_argument("--profile", help="serving profile YAML (default: serve/cpu.yaml, or serve/cuda.yaml "
                        "on a CUDA machine)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address of both servers (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="RAG endpoint port (default 8080)")
    parser.add_argument("--engine-port", type=int, default=8000, help="vLLM port (default 8000)")
    parser.add_argument("--engine-url", help="use an already-running OpenAI-compatible engine instead")


def run(args: argparse.Namespace) -> int:
    import signal
    import time

    from toolkit import paths
    from toolkit.errors import ToolkitError
    from toolkit.serving.model_ref import served_model
    from toolkit.serving.profiles import load_profile
    from toolkit.serving.stack import running_stack

    profile = load_profile(args.profile)
    model, where = args.model, "--model"
    if model is None:  # the profile's checkpoint (relative to the repository root), else the reference model
        model, where = profile.model or str(paths.REFERENCE_MODEL), "profile 'model'"
        if not Path(model).is_absolute() and not Path(model).exists() and (paths.REPO_ROOT / model).exists():
            model = str(paths.REPO_ROOT / model)
    try:
        served_model(model)  # the stack resolves it again; this only names the option in the error
    except ToolkitError as exc:
        raise ToolkitError(f"{where} {exc}") from None
    index_dir = Path(args.index) if args.index else paths.INDEXES_DIR / "flat"

    state = {"ready": False, "stop": 0}

    def on_signal(signum: int, _frame: object) -> None:
        first, state["stop"] = not state["stop"], signum
        if first and not state["ready"]:  # during start-up: unwind through the stack's clean-up
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        # once serving (or already stopping): the wait below ends and the stack shuts down, uninterrupted

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with running_stack(model, index_dir, profile=args.profile, host=args.host, port=args.port,
                           engine_port=args.engine_port, engine_url=args.engine_url, progress=True,
                           keep_serving=True) as stack:
            state["ready"] = True
            _announce(stack, index_dir)
            if stack.engine_failure:
                print(f"error: {stack.engine_failure}; the endpoint answers 503 with it until stopped (Ctrl-C)",
                      file=sys.stderr, flush=True)
            while not state["stop"]:
                if failure := stack.failure():
                    raise ToolkitError(failure)
                time.sleep(0.5)
            print("stopping…", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 2 if stack.engine_failure else 0  # the start-up failure was reported above; a stop does not clear it


def _announce(stack: Stack, index_dir: Path) -> None:
    """What is being served, where, and where the servers log (the endpoint reports its index)."""
    import contextlib

    import httpx

    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):  # the URLs matter more
        info = httpx.get(f"{stack.url}/healthz", timeout=30).json()["index"]
        print(f"index {index_dir}: {info['count']} chunks ({info['index_type']}, {info['device']})")
    print(f"RAG endpoint: {stack.url}/v1/rag  (OpenAI: {stack.url}/v1, health: /healthz, metrics: /metrics)  "
          f"engine: {stack.engine_url}")
    print(f"logs: {stack.endpoint_log}" + (f", {stack.engine_log}" if stack.engine_log else ""), flush=True)
