"""Run the RAG endpoint (uvicorn) in front of an engine at ``--engine-url`` (up already, or starting).

``python -m toolkit.serving.server --index I --engine-url U [--model M] [--served-model-name N] [--profile P]
[--engine-status-file F] [--host] [--port]``: the process :func:`toolkit.serving.stack.running_stack` starts, for ``toolkit serve``,
evaluation and the benchmarks alike.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import ToolkitError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from toolkit.retrieval.config import IndexConfig
    from toolkit.serving.profiles import RetrievalSettings, ServeProfile


def index_config(retrieval: RetrievalSettings) -> IndexConfig:
    """The run-time index knobs of a profile's ``retrieval`` section (only those it sets override the built ones)."""
    from toolkit.retrieval.config import FaissParams, IndexConfig

    knobs = {k: v for k, v in {"nprobe": retrieval.nprobe, "ef_search": retrieval.ef_search}.items() if v is not None}
    return IndexConfig(faiss=FaissParams(device=retrieval.device, **knobs))


def build_app(index: str | Path, engine_url: str, profile: ServeProfile, model: str | Path | None = None,
              served_model_name: str | None = None, engine_status_file: str | Path | None = None) -> FastAPI:
    """Load the index (with its model/dimension checks) and return the FastAPI app.

    ``model``: what the engine serves (its directory's tokenizer budgets prompts); ``served_model_name``:
    the name to request it under (default: the one the engine reports); ``engine_status_file``: where the
    stack writes why the engine exited during start-up (the 503s and ``/healthz`` then carry that reason)."""
    from toolkit.retrieval.index import load_index
    from toolkit.serving.app import create_app
    from toolkit.serving.llm import EngineClient
    from toolkit.serving.metrics import Metrics
    from toolkit.serving.model_ref import engine_model_id, served_model
    from toolkit.serving.rag import PromptBuilder, RagService

    es = profile.endpoint
    local = served_model(model).local_dir if model else None
    index_obj = load_index(index, config=index_config(profile.retrieval), threads=es.embed_threads,
                           embedding_backend=profile.retrieval.embedding_backend)
    served_model_name = served_model_name or engine_model_id(engine_url)
    prompt = PromptBuilder(es.system_prompt, local, profile.engine.max_model_len)
    engine = EngineClient(engine_url, served_model_name, es.request_timeout_s, engine_status_file)
    rag = RagService(index_obj, engine, es, prompt, Metrics())
    if profile.retrieval.reload_check_s:  # follow `toolkit index add/remove` without a restart
        from toolkit.serving.index_watch import watch_index

        cfg = index_config(profile.retrieval)
        watch_index(rag, index, lambda current: load_index(index, config=cfg, embedder=current.embedder),
                    profile.retrieval.reload_check_s)
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
    p.add_argument("--engine-status-file", help="one line saying why the engine failed to start, once written")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args(argv)
    try:
        app = build_app(args.index, args.engine_url, load_profile(args.profile), args.model, args.served_model_name,
                        args.engine_status_file)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve_app(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
