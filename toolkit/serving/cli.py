"""``toolkit serve``: start vLLM with a profile, then the RAG endpoint in front of it, until Ctrl-C/SIGTERM.

The index is loaded (and checked against its embedding model) before the engine starts, so a bad index fails
in seconds rather than after a minute of engine warm-up. Stopping the command stops the engine's whole
process group; nothing is left running.
"""

from __future__ import annotations

import argparse


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
    from pathlib import Path

    from toolkit import paths
    from toolkit.errors import ToolkitError
    from toolkit.serving.profiles import load_profile

    profile = load_profile(args.profile)
    if args.model is None:
        chosen = Path(profile.model) if profile.model else paths.REFERENCE_MODEL
        args.model = str(chosen if chosen.is_absolute() or chosen.exists() else paths.REPO_ROOT / chosen)
    index_dir = Path(args.index) if args.index else paths.INDEXES_DIR / "flat"
    model = Path(args.model)
    looks_like_hub_id = args.model.count("/") == 1 and not args.model.startswith((".", "/", "~"))
    if not model.exists() and not looks_like_hub_id:
        raise ToolkitError(f"--model {args.model}: no such directory")

    def terminate(signum, _frame):  # during engine start-up: unwind through the finally below
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return _serve(args, profile, index_dir)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(args: argparse.Namespace, profile, index_dir) -> int:
    from toolkit.retrieval.config import FaissParams, IndexConfig
    from toolkit.retrieval.index import load_index
    from toolkit.serving.engine import EngineProcess, wait_with_progress
    from toolkit.serving.profiles import engine_command, engine_environment
    from toolkit.serving.server import build_app, serve_app
    from toolkit.serving.stack import served_name

    rs = profile.retrieval
    knobs = {k: v for k, v in {"nprobe": rs.nprobe, "ef_search": rs.ef_search}.items() if v is not None}
    index = load_index(index_dir, config=IndexConfig(faiss=FaissParams(device=rs.device, **knobs)),
                       threads=profile.endpoint.embed_threads)
    print(f"index {index_dir}: {index.info()['count']} chunks ({index.info()['index_type']}, "
          f"{index.info()['device']})")
    engine = None
    try:
        name = served_name(args.model)
        engine_url = args.engine_url
        if engine_url is None:
            cmd = engine_command(args.model, args.engine_port, name, profile, args.host)
            engine = EngineProcess(cmd, args.engine_port, engine_environment(profile), args.host)
            print(f"engine log: {engine.log_path}")
            wait_with_progress(engine, profile.engine.startup_timeout_s)
            engine_url = engine.url
        app = build_app(index_dir, engine_url, profile, args.model, name if engine else None, index_obj=index)
        print(f"RAG endpoint: http://{args.host}:{args.port}/v1/rag  (OpenAI: http://{args.host}:{args.port}/v1, "
              f"health: /healthz, metrics: /metrics)  engine: {engine_url}")
        serve_app(app, args.host, args.port)
    finally:
        if engine is not None:
            print("stopping engine…")
            engine.stop()
    return 0
