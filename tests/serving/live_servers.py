"""Real HTTP servers for the serving tests: a small OpenAI-compatible streaming engine (stands in for vLLM, which
needs minutes to start) and the toolkit endpoint, each under uvicorn on a free loopback port in a thread of the
test process. The engine counts the streams it opens, finishes and sees abandoned, so a test can check that the
endpoint really closed its upstream connection. Imported by name (tests/serving/conftest.py puts this
directory on ``sys.path``)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from toolkit.serving.engine import free_port


class FakeEngine:
    """Streams ``tokens`` chat-completion chunks (``None``: until the client leaves), ``delay_s`` apart, after
    ``first_delay_s``; token ``i`` is ``"w{i} "`` (plus ``padding`` x's); ends with a usage chunk and ``[DONE]``
    like vLLM. A request whose last message contains ``endless_marker`` streams until the client leaves, whatever
    ``tokens`` says (so a test's leaving client is seen leaving however slowly it reads). Raw ASGI, so nothing
    here hides a disconnect: a watcher on ``receive`` sees it the moment the endpoint closes the connection."""

    def __init__(self, tokens: int | None = 5, delay_s: float = 0.01, first_delay_s: float = 0.0,
                 padding: int = 0, endless_marker: str | None = None) -> None:
        self.tokens, self.delay_s, self.first_delay_s = tokens, delay_s, first_delay_s
        self.endless_marker = endless_marker
        self.padding = "x" * padding  # appended to each token: a fast way to fill socket buffers
        self.started = self.completed = self.disconnected = self.open = self.max_open = 0
        self._lock = threading.Lock()  # counters are read from the test's thread

    def _count(self, **delta: int) -> None:
        with self._lock:
            for k, v in delta.items():
                setattr(self, k, getattr(self, k) + v)
            self.max_open = max(self.max_open, self.open)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/v1/chat/completions":
            status = 200 if scope["path"] in ("/health", "/v1/models") else 404
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b'{"data": [{"id": "m"}]}'})
            return
        body, more = b"", True
        while more:
            msg = await receive()
            body, more = body + msg.get("body", b""), msg.get("more_body", False)
        request = json.loads(body)
        model, tokens = request["model"], self.tokens
        if self.endless_marker and self.endless_marker in str(request["messages"][-1]["content"]):
            tokens = None
        self._count(started=1, open=1)
        gone = asyncio.ensure_future(self._disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            if await self._wait(gone, self.first_delay_s):
                return
            i = 0
            while tokens is None or i < tokens:
                chunk = {"id": "c", "object": "chat.completion.chunk", "model": model,
                         "choices": [{"index": 0, "delta": {"content": f"w{i} {self.padding}"}, "finish_reason": None}]}
                await send({"type": "http.response.body", "body": _sse(chunk), "more_body": True})
                i += 1
                if await self._wait(gone, self.delay_s):
                    return
            done = {"id": "c", "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
            usage = {"id": "c", "object": "chat.completion.chunk", "model": model, "choices": [],
                     "usage": {"prompt_tokens": 10, "completion_tokens": i}}
            tail = _sse(done) + _sse(usage) + b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            self._count(completed=1)
        finally:
            gone.cancel()
            self._count(open=-1)

    async def _wait(self, gone: asyncio.Future, seconds: float) -> bool:
        """Sleep ``seconds`` unless the client leaves first; True (and counted) if it left."""
        await asyncio.wait((gone,), timeout=seconds)
        if gone.done():
            self._count(disconnected=1)
            return True
        return False

    @staticmethod
    async def _disconnect(receive: Callable) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in a thread; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll ``predicate`` (the servers settle on their own threads); True once it holds."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` as ``{(sample name, sorted labels): value}``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
