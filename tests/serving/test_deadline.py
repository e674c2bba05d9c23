"""One deadline per request, and what happens when it passes or the client leaves: real HTTP (uvicorn) in front
of a real streaming OpenAI-compatible server whose pacing each test sets (tests/serving/live_servers.py). The
engine's own counters show whether the endpoint closed the upstream stream."""

import asyncio
import contextlib
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from live_servers import FakeEngine, scrape, wait_until

RAG = "/v1/rag"
CHAT = "/v1/chat/completions"


def _body(path: str, stream: bool, question: str = "Who walked on the Moon?") -> dict:
    if path == RAG:
        return {"query": question, "stream": stream}
    return {"messages": [{"role": "user", "content": question}], "stream": stream}


def _events(resp: httpx.Response) -> list:
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:])
            for line in resp.iter_lines() if line.startswith("data: ")]


def _settled(app, engine: FakeEngine) -> bool:
    """No request in flight at the endpoint and no stream open at the engine."""
    return wait_until(lambda: app.state.guard.in_flight == 0 and engine.open == 0)


class SlowIndex:
    """The real index with a slow query embedding (a busy embedder), to spend the budget in retrieval."""

    def __init__(self, index, delay_s: float) -> None:
        self._index, self.delay_s = index, delay_s

    def embed(self, query: str):
        time.sleep(self.delay_s)
        return self._index.embed(query)

    def __getattr__(self, name: str):
        return getattr(self._index, name)


@pytest.mark.parametrize("path", [RAG, CHAT])
def test_no_first_token_in_time_is_a_504_and_the_engine_stream_is_closed(endpoint, path):
    engine = FakeEngine(first_delay_s=30)
    with endpoint(engine, request_timeout_s=1) as (url, app):
        for n, stream in enumerate((False, True), 1):
            t = time.monotonic()
            r = httpx.post(url + path, json=_body(path, stream, f"Moon {stream}?"), timeout=30)
            took = time.monotonic() - t
            assert r.status_code == 504, r.text
            err = r.json()["error"]
            assert err["type"] == "timeout_error"
            assert err["message"].startswith("request deadline of 1 s passed while waiting for the first token")
            assert 0.9 < took < 2.5, took
            assert wait_until(lambda n=n: engine.disconnected == n) and _settled(app, engine)
        m = scrape(url)
        assert m[("rag_requests_total", (("route", path), ("status", "504")))] == 2
        assert m[("rag_rejected_total", (("reason", "deadline"),))] == 2


def test_a_stream_is_cut_at_the_deadline_with_an_error_event(endpoint):
    """Before, a stream had no limit once its first token had arrived: this one would never have ended."""
    engine = FakeEngine(tokens=None, delay_s=0.05)
    with endpoint(engine, request_timeout_s=1.5) as (url, app):
        t = time.monotonic()
        with httpx.stream("POST", url + RAG, json=_body(RAG, True), timeout=30) as r:
            assert r.status_code == 200
            events = _events(r)
        assert 1.4 < time.monotonic() - t < 3.5
        assert events[0]["type"] == "sources" and events[1]["type"] == "token" and events[-1] == "[DONE]"
        assert events[-2]["type"] == "error"
        assert events[-2]["message"].startswith("request deadline of 1.5 s passed while generating")
        assert wait_until(lambda: engine.disconnected == 1) and _settled(app, engine)

        with httpx.stream("POST", url + CHAT, json=_body(CHAT, True, "Moon again?"), timeout=30) as r:
            chunks = _events(r)
        assert chunks[1]["choices"][0]["delta"]["content"] == "w0 " and chunks[-1] == "[DONE]"
        assert chunks[-2]["error"]["type"] == "timeout_error" and "passed while generating" in \
            chunks[-2]["error"]["message"]
        assert wait_until(lambda: engine.disconnected == 2) and _settled(app, engine)

        # not streamed: the same budget, a 504 (before, the drain got a second full time-out of its own)
        t = time.monotonic()
        r = httpx.post(url + RAG, json=_body(RAG, False, "Moon once more?"), timeout=30)
        assert r.status_code == 504 and "passed while generating" in r.json()["error"]["message"]
        assert 1.4 < time.monotonic() - t < 3.5
        assert wait_until(lambda: engine.disconnected == 3) and _settled(app, engine)
        m = scrape(url)
        assert m[("rag_rejected_total", (("reason", "deadline"),))] == 3
        assert m[("rag_requests_total", (("route", RAG), ("status", "200")))] == 1  # headers went out first


def test_every_stage_draws_on_one_budget(endpoint, loaded_index):
    # 0.6 s to the first token, then 0.8 s of tokens: each part fits in 1 s, the whole does not
    engine = FakeEngine(tokens=8, delay_s=0.1, first_delay_s=0.6)
    with endpoint(engine, request_timeout_s=1.0) as (url, app):
        t = time.monotonic()
        r = httpx.post(url + RAG, json=_body(RAG, False), timeout=30)
        assert r.status_code == 504 and "passed while generating" in r.json()["error"]["message"], r.text
        assert time.monotonic() - t < 2.0
        assert _settled(app, engine)

    # 0.6 s of retrieval leaves 0.4 s for a first token that takes 0.6 s
    engine = FakeEngine(tokens=2, first_delay_s=0.6)
    with endpoint(engine, index=SlowIndex(loaded_index, 0.6), request_timeout_s=1.0) as (url, app):
        r = httpx.post(url + RAG, json=_body(RAG, True, "Slow retrieval, slow engine?"), timeout=30)
        assert r.status_code == 504 and "waiting for the first token" in r.json()["error"]["message"], r.text
        assert _settled(app, engine)

    # retrieval alone outlasts the budget: the engine is never asked
    engine = FakeEngine()
    with endpoint(engine, index=SlowIndex(loaded_index, 1.0), request_timeout_s=0.5) as (url, app):
        t = time.monotonic()
        r = httpx.post(url + CHAT, json=_body(CHAT, False, "Very slow retrieval?"), timeout=30)
        assert r.status_code == 504, r.text
        assert r.json()["error"]["message"].startswith("request deadline of 0.5 s passed while retrieving context")
        assert time.monotonic() - t < 1.5 and engine.started == 0
        assert _settled(app, engine)


def test_a_client_that_stops_reading_is_cut_off_after_the_deadline(endpoint):
    """Blocked sends to a client that neither reads nor leaves would hold a slot forever; the stream is cut."""
    engine = FakeEngine(tokens=None, delay_s=0.001, padding=16_000)
    with endpoint(engine, request_timeout_s=1.0) as (url, app):
        body = json.dumps(_body(RAG, True)).encode()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((urlsplit(url).hostname, urlsplit(url).port))
            sock.sendall(b"POST /v1/rag HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            t = time.monotonic()
            assert sock.recv(64).startswith(b"HTTP/1.1 200")  # the stream has begun; now stop reading
            assert wait_until(lambda: app.state.guard.in_flight == 0, 6.0)
            assert time.monotonic() - t < 1.0 + 1.0 + 1.5  # deadline + grace + slack for a busy machine
            assert wait_until(lambda: engine.disconnected == 1) and engine.open == 0
        assert scrape(url)[("rag_in_flight_requests", ())] == 0


class StalledEngine:
    """Meets the ChatEngine Protocol but ignores the deadline: yields ``pieces``, then never another."""

    base_url = "inproc://stalled"

    def __init__(self, pieces: list[str]) -> None:
        self.pieces, self.closed = pieces, 0

    async def healthy(self) -> bool:
        return True

    async def stream_chat(self, messages, max_tokens, temperature, gen, deadline=None, **extra):
        try:
            for piece in self.pieces:
                gen.text.append(piece)
                yield piece
            await asyncio.sleep(3600)
        finally:
            self.closed += 1


@pytest.mark.parametrize("pieces, stream", [([], False), (["Armstrong "], True)])
def test_the_app_holds_the_deadline_for_an_engine_that_ignores_it(loaded_index, pieces, stream):
    from fastapi.testclient import TestClient

    from toolkit.serving.app import create_app
    from toolkit.serving.metrics import Metrics
    from toolkit.serving.profiles import EndpointSettings
    from toolkit.serving.rag import PromptBuilder, RagService

    engine, es = StalledEngine(pieces), EndpointSettings(request_timeout_s=0.5)
    client = TestClient(create_app(RagService(loaded_index, engine, es, PromptBuilder(es.system_prompt), Metrics())))
    t = time.monotonic()
    r = client.post(RAG, json=_body(RAG, stream))
    assert time.monotonic() - t < 2.0
    if not pieces:
        assert r.status_code == 504 and "waiting for the first token" in r.json()["error"]["message"]
    else:
        events = _events(r)
        assert events[1] == {"type": "token", "text": "Armstrong "} and "while generating" in events[-2]["message"]
    assert engine.closed == 1


@pytest.mark.parametrize("path", [RAG, CHAT])
def test_a_client_leaving_mid_stream_closes_the_engine_stream(endpoint, path):
    engine = FakeEngine(tokens=None, delay_s=0.02)
    with endpoint(engine) as (url, app):
        with httpx.stream("POST", url + path, json=_body(path, True), timeout=30) as r:
            assert r.status_code == 200
            data = (line for line in r.iter_lines() if line.startswith("data: "))
            assert [next(data) for _ in range(3)]  # headers, then a few events: mid-stream
        # the endpoint noticed, closed its engine stream (which would otherwise never end) and freed the slot
        assert wait_until(lambda: engine.disconnected == 1), engine.disconnected
        assert _settled(app, engine) and engine.completed == 0
        assert scrape(url)[("rag_in_flight_requests", ())] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_leaving_before_the_first_token_closes_the_engine_stream(endpoint, stream):
    """A long prefill the client gave up on: the engine is told at once, not when its first token comes."""
    engine = FakeEngine(first_delay_s=30)

    async def leave(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            request = asyncio.ensure_future(client.post(RAG, json=_body(RAG, stream)))
            assert await asyncio.to_thread(wait_until, lambda: engine.started == 1)
            request.cancel()  # closes the connection
            with contextlib.suppress(asyncio.CancelledError):
                await request

    with endpoint(engine) as (url, app):
        t = time.monotonic()
        asyncio.run(leave(url))
        assert wait_until(lambda: engine.disconnected == 1, 3.0) and time.monotonic() - t < 5
        assert _settled(app, engine)
        m = scrape(url)
        assert m[("rag_requests_total", (("route", RAG), ("status", "499")))] == 1
        assert m[("rag_in_flight_requests", ())] == 0
