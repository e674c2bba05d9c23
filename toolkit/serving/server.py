"""Run the RAG endpoint (uvicorn) in front of an engine that is already up.

``python -m toolkit.serving.server --index I --engine-url U [--model DIR] [--profile P] [--host] [--port]``:
the process :func:`toolkit.serving.stack.running_stack` starts. :func:`build_app` is shared with
``toolkit serve``, which runs uvicorn in its own process after launching the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from toolkit.errors import ToolkitError


def build_app(index: str | Path, engine_url: str, profile, model: str | Path | None = None,
              served_model_name: str | None = None, index_obj=None):
    """Load the index (with its model/dimension checks) and return the FastAPI app."""
    from toolkit.retrieval.config import FaissParams, IndexConfig
    from toolkit.retrieval.index import load_index
    from toolkit.serving.app import create_app
    from toolkit.serving.llm import EngineClient, served_model_id
    from toolkit.serving.metrics import Metrics
    from toolkit.serving.rag import PromptBuilder, RagService

    es, rs = profile.endpoint, profile.retrieval
    if index_obj is None:
        knobs = {k: v for k, v in {"nprobe": rs.nprobe, "ef_search": rs.ef_search}.items() if v is not None}
        config = IndexConfig(faiss=FaissParams(device=rs.device, **knobs)) if knobs or rs.device != "auto" else None
        index_obj = load_index(index, config=config, threads=es.embed_threads)
    if served_model_name is None:
        served_model_name = asyncio.run(served_model_id(engine_url))
    local = Path(model) if model and Path(model).is_dir() else None
    prompt = PromptBuilder(es.system_prompt, local, profile.engine.max_model_len)
    engine = EngineClient(engine_url, served_model_name, es.request_timeout_s)
    rag = RagService(index_obj, engine, es, prompt, Metrics())
    return create_app(rag, os.environ.get(es.api_key_env) or None, served_model_name)


def serve_app(app, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5)


def main(argv: list[str] | None = None) -> int:
    from toolkit.serving.profiles import load_profile

    p = argparse.ArgumentParser(prog="python -m toolkit.serving.server")
    p.add_argument("--index", required=True)
    p.add_argument("--engine-url", required=True)
    p.add_argument("--model")
    p.add_argument("--served-model-name")
    p.add_argument("--profile")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args(argv)
    try:
        app = build_app(args.index, args.engine_url, load_profile(args.profile), args.model, args.served_model_name)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve_app(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
