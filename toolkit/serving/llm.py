"""Async client for the engine's OpenAI chat API, measuring time to first token and total generation time.

Both paths stream from vLLM (``stream: true`` with ``include_usage``): TTFT is then a real measurement even
when the endpoint's caller asked for a non-streamed answer. Connection failures become
:class:`EngineUnavailable` (the endpoint answers 503) and time-outs :class:`EngineTimeout` (504); the next
request simply tries again, so the endpoint recovers without restart once the engine is back. An engine the
stack saw exit during start-up is :class:`EngineFailed` instead, carrying the stack's reason (``status_file``).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from toolkit.serving.deadline import Deadline


class EngineUnavailable(Exception):
    pass


class EngineFailed(EngineUnavailable):
    """The engine is unreachable because it exited during start-up; the message is the stack's reason."""


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
    """``status_file``: where the stack writes why the engine it started exited during start-up (one line);
    read only when the engine is unreachable, so a healthy engine costs nothing."""

    def __init__(self, base_url: str, model: str, timeout_s: float = 120.0,
                 status_file: str | Path | None = None) -> None:
        self.base_url, self.model, self.timeout_s = base_url.rstrip("/"), model, timeout_s
        self.status_file = Path(status_file) if status_file else None
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=2.0),
                                         limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))

    async def healthy(self) -> bool:
        try:
            return (await self._client.get("/health", timeout=2.0)).status_code == 200
        except httpx.HTTPError:
            return False

    def failure(self) -> str | None:
        """Why the engine could not start (the first line of ``status_file``), or None if nothing says so."""
        if self.status_file is None:
            return None
        try:
            lines = self.status_file.read_text(errors="replace").strip().splitlines()
        except OSError:  # not written: the engine did not fail (or is not ours)
            return None
        return lines[0] if lines else None

    async def stream_chat(self, messages: list[dict[str, str]], max_tokens: int, temperature: float,
                          gen: Generation, deadline: Deadline | None = None, **extra: Any) -> AsyncIterator[str]:
        """Yield text deltas; ``gen`` holds usage and timings once the iterator is exhausted.

        ``deadline`` (default: ``timeout_s`` from now) bounds the connect, the first token and every later read,
        not each read separately; past it, :class:`DeadlineExceeded` is raised. The upstream response is closed
        however the iteration ends (exhausted, error, deadline, or ``aclose()`` by a consumer whose client left),
        so vLLM stops generating for a reader that is gone."""
        deadline = deadline or Deadline(self.timeout_s)
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "stream": True, "stream_options": {"include_usage": True}, **extra}
        # httpx's own read timeout is per read; the deadline is enforced by ``deadline.limit`` instead, and
        # httpx's limit is only a backstop just behind it (connect stays short: a down engine is a fast 503)
        slack = deadline.remaining() + 1.0
        request = self._client.build_request("POST", "/v1/chat/completions", json=body,
                                             timeout=httpx.Timeout(slack, connect=min(2.0, slack)))
        t0 = time.perf_counter()
        try:
            async with deadline.limit("connecting to the LLM engine"):
                resp = await self._client.send(request, stream=True)
            try:
                if resp.status_code != 200:
                    async with deadline.limit("reading the LLM engine's error"):
                        detail = (await resp.aread()).decode(errors="replace")[:300]
                    if resp.status_code >= 500:
                        raise EngineUnavailable(f"engine error {resp.status_code}: {detail}")
                    raise EngineRejected(resp.status_code, _message(detail))
                lines = resp.aiter_lines()
                while True:
                    async with deadline.limit("generating" if gen.text else "waiting for the first token"):
                        line = await anext(lines, None)
                    if line is None:
                        break
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
            finally:
                await resp.aclose()  # closes the connection to vLLM unless the stream was read to the end
        except httpx.TimeoutException:
            if deadline.expired():
                raise deadline.exceeded("waiting for the LLM engine") from None
            raise EngineTimeout(f"engine at {self.base_url} did not answer in time") from None
        except httpx.TransportError as exc:  # refused, reset, closed mid-stream
            if reason := self.failure():
                raise EngineFailed(reason) from None
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
