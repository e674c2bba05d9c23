"""Fixtures for the serving tests; the servers themselves are in live_servers.py (importable by name)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from live_servers import FakeEngine, serve  # importable thanks to the line above


@pytest.fixture(scope="module")
def loaded_index(small_index, embedder):
    from toolkit.retrieval.index import load_index

    return load_index(small_index, embedder=embedder)


@pytest.fixture
def endpoint(loaded_index):
    """``endpoint(engine, index=None, **settings)``: a context manager serving the toolkit app in front of
    ``engine`` (a :class:`FakeEngine`); yields ``(url, app)``."""
    from toolkit.serving.app import create_app
    from toolkit.serving.llm import EngineClient
    from toolkit.serving.metrics import Metrics
    from toolkit.serving.profiles import EndpointSettings
    from toolkit.serving.rag import PromptBuilder, RagService

    @contextmanager
    def _endpoint(engine: FakeEngine, index: Any = None, **settings: Any) -> Iterator[tuple[str, Any]]:
        es = EndpointSettings(**settings)
        with serve(engine) as engine_url:
            client = EngineClient(engine_url, "m", es.request_timeout_s)
            rag = RagService(index or loaded_index, client, es, PromptBuilder(es.system_prompt), Metrics())
            app = create_app(rag)
            with serve(app) as url:
                yield url, app

    return _endpoint
