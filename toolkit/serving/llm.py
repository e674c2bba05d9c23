"""Async client for the engine's OpenAI chat API, measuring time to first token and total generation time.

Both paths stream from vLLM (``stream: true`` with ``include_usage``): TTFT is then a real measurement even
when the endpoint's caller asked for a non-streamed answer. Connection failures become
:class:`EngineUnavailable` (the endpoint answers 503) and time-outs :class:`EngineTimeout` (504); the next
request simply tries again, so the endpoint recovers without restart once the engine is back.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


class EngineUnavailable(Exception):
    pass


class EngineTimeout(Exception):
    pass


class EngineRejected(Exception):
    """The engine answered 4xx (e.g. prompt longer than its context); carries its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Generation:
    """Filled while streaming: text pieces, usage, and timings in ms from the request start."""

    text: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    finish_reason: str | None = None


class EngineClient:
    def __init__(self, base_url: str, model: str, timeout_s: float = 120.0) -> None:
        self.base_url, self.model = base_url.rstrip("/"), model
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=2.0),
                                         limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))

    async def healthy(self) -> bool:
        try:
            return (await self._client.get("/health", timeout=2.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def stream_chat(self, messages: list[dict[str, str]], max_tokens: int, temperature: float,
                          gen: Generation, **extra: Any) -> AsyncIterator[str]:
        """Yield text deltas; ``gen`` holds usage and timings once the iterator is exhausted."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "stream": True, "stream_options": {"include_usage": True}, **extra}
        t0 = time.perf_counter()
        try:
            async with self._client.stream("POST", "/v1/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    detail = (await resp.aread()).decode(errors="replace")[:300]
                    if resp.status_code >= 500:
                        raise EngineUnavailable(f"engine error {resp.status_code}: {detail}")
                    raise EngineRejected(resp.status_code, _message(detail))
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if event.get("usage"):
                        gen.prompt_tokens = event["usage"].get("prompt_tokens", 0)
                        gen.completion_tokens = event["usage"].get("completion_tokens", 0)
                    for choice in event.get("choices") or []:
                        gen.finish_reason = choice.get("finish_reason") or gen.finish_reason
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            if not gen.text:
                                gen.ttft_ms = (time.perf_counter() - t0) * 1000
                            gen.text.append(piece)
                            yield piece
        except httpx.TimeoutException:
            raise EngineTimeout(f"engine at {self.base_url} did not answer in time") from None
        except httpx.TransportError as exc:  # refused, reset, closed mid-stream
            raise EngineUnavailable(f"engine at {self.base_url} unreachable ({type(exc).__name__})") from None
        gen.total_ms = (time.perf_counter() - t0) * 1000
        if not gen.text:
            gen.ttft_ms = gen.total_ms

    async def aclose(self) -> None:
        await self._client.aclose()


def _message(detail: str) -> str:
    try:
        data = json.loads(detail)
        return str(data.get("error", {}).get("message") or data.get("message") or detail)
    except (json.JSONDecodeError, AttributeError):
        return detail
