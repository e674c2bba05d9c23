"""The endpoint needs only the ChatEngine Protocol: a scripted in-process engine (no HTTP, no vLLM) answers
/v1/rag through the real app and index, and the shipped HTTP client meets the same Protocol."""

from fastapi.testclient import TestClient

from toolkit.retrieval.index import load_index
from toolkit.serving.app import create_app
from toolkit.serving.engine_api import ChatEngine
from toolkit.serving.llm import EngineClient
from toolkit.serving.metrics import Metrics
from toolkit.serving.profiles import EndpointSettings
from toolkit.serving.rag import PromptBuilder, RagService


class ScriptedEngine:
    """Answers every chat with the same pieces; records the prompts it was given."""

    base_url = "inproc://scripted"

    def __init__(self, pieces: list[str]) -> None:
        self.pieces, self.prompts = pieces, []

    async def healthy(self) -> bool:
        return True

    async def stream_chat(self, messages, max_tokens, temperature, gen, deadline=None, **extra):
        self.prompts.append(messages)
        for piece in self.pieces:
            gen.text.append(piece)
            yield piece
        gen.prompt_tokens, gen.completion_tokens, gen.ttft_ms, gen.total_ms = 9, len(self.pieces), 1.0, 2.0


def test_both_engines_meet_the_protocol():
    assert isinstance(ScriptedEngine([]), ChatEngine)
    assert isinstance(EngineClient("http://127.0.0.1:1", "m"), ChatEngine)


def test_rag_endpoint_runs_on_any_chat_engine(small_index, embedder):
    index = load_index(small_index, embedder=embedder)
    engine, es = ScriptedEngine(["About ", "8,849 m."]), EndpointSettings()
    rag = RagService(index, engine, es, PromptBuilder(es.system_prompt), Metrics())
    try:
        client = TestClient(create_app(rag))
        r = client.post("/v1/rag", json={"query": "How tall is the highest mountain on Earth?", "max_tokens": 8})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["answer"] == "About 8,849 m." and body["usage"]["completion_tokens"] == 2
        assert body["sources"][0]["id"] == "everest"
        assert "How tall is the highest mountain" in engine.prompts[0][-1]["content"]  # the question reached it
        health = client.get("/healthz").json()
        assert health["engine"] == "ok" and health["engine_url"] == "inproc://scripted"
    finally:
        index.close()
