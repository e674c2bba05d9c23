"""What the RAG endpoint needs from an LLM engine client: the :class:`ChatEngine` Protocol.

:class:`toolkit.serving.llm.EngineClient` (vLLM's OpenAI-compatible chat API over HTTP) is the implementation
shipped; :class:`toolkit.serving.rag.RagService` and the app only use the members below, so another engine
(another server's streaming API, an in-process engine) is one new module with a class meeting this Protocol,
constructed in :func:`toolkit.serving.server.build_app`. Failures are reported with the exceptions of
:mod:`toolkit.serving.llm` (``EngineUnavailable`` → 503, ``EngineTimeout`` → 504, ``EngineRejected`` → 4xx),
which the app maps to HTTP answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from toolkit.serving.deadline import Deadline
    from toolkit.serving.llm import Generation


@runtime_checkable
class ChatEngine(Protocol):
    base_url: str  # reported by /healthz

    async def healthy(self) -> bool:
        """Whether the engine answers now (a cheap probe; never raises)."""
        ...

    def stream_chat(self, messages: list[dict[str, str]], max_tokens: int, temperature: float, gen: Generation,
                    deadline: Deadline | None = None, **extra: Any) -> AsyncIterator[str]:
        """Yield text deltas of the answer to chat ``messages``; fill ``gen`` (usage, TTFT and total ms)."""
        ...
