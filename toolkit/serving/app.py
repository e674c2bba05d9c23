"""FastAPI RAG endpoint: ``POST /v1/rag``, OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models``,
``GET /healthz``, ``GET /metrics``.

``GET /v1/models`` lists the one served model in OpenAI's shape, so OpenAI-compatible clients (the ``openai``
package, vLLM's ``bench serve``, guidellm) can discover the name to request. It also carries vLLM's ``root``
field, which vLLM's benchmark client reads when no ``--model`` is given (``get_first_model_from_server``).

Reliability: optional API key (``Authorization: Bearer`` or ``X-API-Key``; 401 without it), strict request
models (wrong types, unknown fields, top_k outside 1..100 → 422 naming the field; unparsable JSON → 400;
empty or oversized query → 422), a concurrency limit answering 429 beyond it, engine unreachable → 503 and
engine time-out → 504 with a message (every request retries the engine, so it recovers without restart); an
engine that exited during start-up → 503 with its reason, and ``/healthz`` says ``"engine": "failed"``.
Every error body is OpenAI-shaped ``{"error": {"message", "type", "code"}}`` so the ``openai`` client raises a
readable exception.

Time and abandonment: one :class:`Deadline` of ``request_timeout_s`` is fixed when a request arrives and bounds
retrieval, prompt, engine connect, first token and every streamed chunk together; past it the answer is a 504,
or an error event when a stream has already begun. A client that disconnects (before or during its stream)
and a deadline that passes both close the upstream vLLM stream, so the engine stops generating, and the
concurrency slot is released once that is done; one that leaves before its answer starts is counted as 499.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from toolkit.retrieval.store import FilterError
from toolkit.serving.deadline import Deadline, DeadlineExceeded
from toolkit.serving.llm import EngineFailed, EngineRejected, EngineTimeout, EngineUnavailable
from toolkit.serving.rag import PromptTooLong, RagRun, RagService

OPEN_PATHS = {"/healthz", "/metrics"}
CLIENT_GONE = 499  # nginx's "client closed request": counted in metrics, never seen by the client
T = TypeVar("T")


FilterValue = StrictStr | StrictInt | StrictFloat | StrictBool


class RagRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: StrictStr
    top_k: StrictInt = Field(5, ge=1, le=100)
    max_tokens: StrictInt = Field(64, ge=1, le=4096)
    stream: StrictBool = False
    temperature: StrictFloat | StrictInt = Field(0.0, ge=0.0, le=2.0)
    min_tokens: StrictInt = Field(0, ge=0, le=4096, description="vLLM extension: tokens before EOS may stop")
    # metadata filter applied inside the vector search ({"module": "json"}, {"title_prefix": "os."}); fields the
    # index does not know are a 422 naming the field (toolkit.retrieval.store.where_sql)
    filter: dict[StrictStr, FilterValue | list[FilterValue]] | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat request the endpoint honours; others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: StrictStr | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(None, ge=1, le=4096)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=4096)
    temperature: StrictFloat | StrictInt | None = Field(None, ge=0.0, le=2.0)
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    top_k: StrictInt | None = Field(None, ge=1, le=100)
    min_tokens: StrictInt = Field(0, ge=0, le=4096)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)


def _server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{k};dur={v:.3f}" for k, v in timings.items())


def _sse(data: Any) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


class ClosingStreamingResponse(StreamingResponse):
    """A stream bounded by the request's deadline that closes its body generator however it ends.

    The engine reads inside the generator already stop at the deadline (and send an error event); the cut
    here, ``GRACE_S`` later, is for a client that stops reading without disconnecting, whose blocked sends would
    otherwise hold a concurrency slot forever. On a client disconnect Starlette cancels the sending task but
    may leave the generator suspended until garbage collection, and with it the open vLLM stream."""

    GRACE_S = 1.0

    def __init__(self, content: AsyncIterator[bytes], deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.deadline = deadline

    async def __call__(self, scope, receive, send) -> None:
        try:
            with anyio.move_on_after(self.deadline.remaining() + self.GRACE_S):
                await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):  # also when the request task itself is being cancelled
                await self.body_iterator.aclose()


class Guard:
    """ASGI middleware: request deadline, API key, concurrency limit, in-flight gauge and request counter. Pure
    ASGI (not ``BaseHTTPMiddleware``) so a streamed answer counts as in flight until its last byte is sent."""

    def __init__(self, app: Any, limit: int, metrics: Any, api_key: str | None, timeout_s: float) -> None:
        self.app, self.limit, self.metrics, self.api_key, self.in_flight = app, limit, metrics, api_key, 0
        self.timeout_s = timeout_s

    @staticmethod
    def factory(app: Any, guard: "Guard") -> "Guard":
        guard.app = app
        return guard

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        # the request's one deadline, from arrival: body parsing and every later stage count against it
        scope.setdefault("state", {})["deadline"] = Deadline(self.timeout_s)
        path, headers = scope["path"], {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if self.api_key:
            given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
            if given != self.api_key:
                self.metrics.rejected.labels("auth").inc()
                self.metrics.requests.labels(path, "401").inc()
                return await _error(401, "missing or wrong API key (Authorization: Bearer <key>)",
                                    "authentication_error")(scope, receive, send)
        if self.in_flight >= self.limit:  # check and increment with no await between: atomic in the loop
            self.metrics.rejected.labels("concurrency").inc()
            self.metrics.requests.labels(path, "429").inc()
            return await _error(429, f"too many requests in flight (limit {self.limit}); retry shortly",
                                "rate_limit_error", {"Retry-After": "1"})(scope, receive, send)
        status = {"code": 500}

        async def tracking_send(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, tracking_send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(path, str(status["code"])).inc()


def create_app(rag: RagService, api_key: str | None = None, served_model_name: str = "rag") -> FastAPI:
    settings, metrics = rag.settings, rag.metrics
    created = int(time.time())  # the model card's "created": when this endpoint started serving it
    app = FastAPI(title="toolkit RAG endpoint", docs_url=None, redoc_url=None)
    app.state.rag = rag
    app.state.guard = guard = Guard(app, settings.max_concurrency, metrics, api_key, settings.request_timeout_s)
    app.add_middleware(Guard.factory, guard=guard)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return _error(400, f"request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})",
                          "invalid_request_error")
        field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        msg = "unknown field" if first.get("type") == "extra_forbidden" else first.get("msg", "invalid value")
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return _error(422, f"field '{field}': {msg}{more}", "invalid_request_error")

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind)

    def check_query(query: str) -> str:
        if not query.strip():
            raise ApiError(422, "field 'query': must not be empty")
        if len(query) > settings.max_query_chars:
            raise ApiError(422, f"field 'query': {len(query)} characters, limit {settings.max_query_chars}")
        return query

    async def next_piece(agen: AsyncIterator[str], deadline: Deadline, stage: str) -> str | None:
        """The engine's next text piece (None at the end), within the deadline whatever the engine does with
        it (:class:`EngineClient` enforces it too, per read; an engine meeting the Protocol might not)."""
        async with deadline.limit(stage):
            return await anext(agen, None)

    async def guarded(request: Request, work: Awaitable[T]) -> T:
        """Run the part before the response; engine and deadline failures become 4xx/5xx with a message. If the
        client disconnects meanwhile, the work is cancelled (which closes the engine stream) and awaited, so
        the slot is only released once the engine has been told."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if gone.done() and not gone.cancelled():
                gone.exception()  # retrieved, so a failed receive is not logged as "never retrieved"
            if not task.done():
                task.cancel()
                await asyncio.wait((task,))
        if task.cancelled():
            raise ApiError(CLIENT_GONE, "client closed the request", "client_closed")
        try:
            return task.result()
        except DeadlineExceeded as exc:
            metrics.rejected.labels("deadline").inc()
            raise ApiError(504, str(exc), "timeout_error") from None
        except EngineUnavailable as exc:
            metrics.rejected.labels("engine").inc()
            # an engine that exited during start-up will not come back by itself: its reason, not "retry"
            message = str(exc) if isinstance(exc, EngineFailed) else \
                f"LLM engine unavailable: {exc}; retry when it is back"
            raise ApiError(503, message, "engine_unavailable") from None
        except EngineTimeout as exc:
            raise ApiError(504, str(exc), "timeout_error") from None
        except EngineRejected as exc:
            raise ApiError(400 if exc.status < 500 else 502, f"engine rejected the request: {exc}") from None
        except FilterError as exc:
            raise ApiError(422, f"field 'filter{'.' + exc.field if exc.field else ''}': {exc.reason}") from None
        except PromptTooLong as exc:
            raise ApiError(422, f"field 'query': {exc}") from None

    def deadline_of(request: Request) -> Deadline:
        return getattr(request.state, "deadline", None) or Deadline(settings.request_timeout_s)

    async def start(deadline: Deadline, query: str, top_k: int, max_tokens: int, temperature: float,
                    min_tokens: int = 0, history: list[dict[str, str]] | None = None,
                    filter: dict[str, Any] | None = None) -> tuple[RagRun, AsyncIterator[str], str | None]:
        run = await rag.prepare(query, top_k, max_tokens, history, deadline, filter)
        extra = {"min_tokens": min(min_tokens, max_tokens)} if min_tokens else {}
        agen = rag.generate(run, max_tokens, float(temperature), deadline, **extra)
        # the first token before answering, so an engine failure is a 503/504, not a broken 200 stream
        return run, agen, await next_piece(agen, deadline, "waiting for the first token")

    async def answer(deadline: Deadline, *args: Any) -> tuple[RagRun, dict[str, float]]:
        """A whole non-streamed answer; the engine stream is closed even when cancelled half-way."""
        run, agen, piece = await start(deadline, *args)
        try:
            while piece is not None:
                piece = await next_piece(agen, deadline, "generating")
        finally:
            await _close(agen)
        timings = run.finish()
        metrics.observe_timings(timings)
        return run, timings

    def stream_error(failure: Exception) -> str:
        """The message of an error event for a stream that already sent its headers."""
        if isinstance(failure, DeadlineExceeded):
            metrics.rejected.labels("deadline").inc()
            return str(failure)
        return f"LLM engine failed mid-answer: {failure}"

    @app.post("/v1/rag")
    async def rag_endpoint(req: RagRequest, request: Request):
        query = check_query(req.query)
        deadline = deadline_of(request)
        args = (query, req.top_k, req.max_tokens, req.temperature, req.min_tokens, None, req.filter)
        if not req.stream:
            run, timings = await guarded(request, answer(deadline, *args))
            body = {"answer": "".join(run.gen.text), "sources": run.sources(), "timings": timings,
                    "usage": run.usage(), "cached": run.cached, "context_chunks": run.context_chunks}
            return JSONResponse(body, headers={"Server-Timing": _server_timing(timings)})
        run, agen, first = await guarded(request, start(deadline, *args))

        async def events():
            try:
                yield _sse({"type": "sources", "sources": run.sources(), "cached": run.cached})
                piece = first
                while piece is not None:
                    yield _sse({"type": "token", "text": piece})
                    piece = await next_piece(agen, deadline, "generating")
                timings = run.finish()
                metrics.observe_timings(timings)
                yield _sse({"type": "done", "timings": timings, "usage": run.usage()})
            except (EngineUnavailable, EngineTimeout, EngineRejected, DeadlineExceeded) as exc:
                yield _sse({"type": "error", "message": stream_error(exc)})
            finally:
                await _close(agen)  # a no-op when read to the end; else closes the engine stream
            yield _sse("[DONE]")

        return ClosingStreamingResponse(events(), deadline, media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise ApiError(422, "field 'messages': needs at least one message with role 'user'")
        query = check_query(_text(users[-1].content))
        cut = len(req.messages) - 1 - req.messages[::-1].index(users[-1])
        history = [{"role": m.role, "content": _text(m.content)} for m in req.messages[:cut]]
        max_tokens = req.max_completion_tokens or req.max_tokens or settings.max_tokens
        deadline = deadline_of(request)
        args = (query, req.top_k or settings.top_k, max_tokens, req.temperature or 0.0, req.min_tokens, history)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        base = {"id": cid, "created": created, "model": served_model_name}
        if not req.stream:
            run, timings = await guarded(request, answer(deadline, *args))
            u = run.usage()
            body = {**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": "".join(run.gen.text)},
                "finish_reason": run.gen.finish_reason or "stop"}],
                "usage": {**u, "total_tokens": u["prompt_tokens"] + u["completion_tokens"]},
                "sources": run.sources(), "timings": timings}
            return JSONResponse(body, headers={"Server-Timing": _server_timing(timings)})
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        run, agen, first = await guarded(request, start(deadline, *args))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _sse({**base, "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        async def events():
            try:
                yield chunk({"role": "assistant", "content": ""})
                piece = first
                while piece is not None:
                    yield chunk({"content": piece})
                    piece = await next_piece(agen, deadline, "generating")
                metrics.observe_timings(run.finish())
                yield chunk({}, run.gen.finish_reason or "stop")
                if include_usage:
                    u = run.usage()
                    yield _sse({**base, "object": "chat.completion.chunk", "choices": [],
                                "usage": {**u, "total_tokens": u["prompt_tokens"] + u["completion_tokens"]}})
            except (EngineUnavailable, EngineTimeout, EngineRejected, DeadlineExceeded) as exc:
                kind = "timeout_error" if isinstance(exc, DeadlineExceeded) else "engine_error"
                yield _sse({"error": {"message": stream_error(exc), "type": kind}})
            finally:
                await _close(agen)
            yield _sse("[DONE]")

        return ClosingStreamingResponse(events(), deadline, media_type="text/event-stream")

    @app.get("/v1/models")
    async def models():
        # behind the API key like the other /v1 routes (the Guard answers 401 before this runs)
        card = {"id": served_model_name, "object": "model", "created": created, "owned_by": "toolkit",
                "root": served_model_name, "parent": None}
        return JSONResponse({"object": "list", "data": [card]})

    @app.get("/healthz")
    async def healthz():
        engine_ok = await rag.engine.healthy()
        # why an unreachable engine failed to start, if the stack said so (an optional ChatEngine member)
        failure = None if engine_ok else getattr(rag.engine, "failure", lambda: None)()
        index = rag.current_index()  # also a check for an updated index (toolkit.serving.index_watch)
        state = "ok" if engine_ok else "failed" if failure else "unreachable"
        body = {"status": "ok" if engine_ok else "degraded", "engine": state,
                **({"engine_failure": failure} if failure else {}), "engine_url": rag.engine.base_url,
                "index": index.info(), "cache_entries": len(rag.cache), "in_flight": guard.in_flight,
                "index_reload": rag.watch.status() if rag.watch else None}
        return JSONResponse(body, 200 if engine_ok else 503)

    @app.get("/metrics")
    async def prometheus():
        rag.current_index()  # a scrape checks for an updated index too, so an idle endpoint follows updates
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


async def _close(agen: AsyncIterator[str]) -> None:
    """Close an engine's async generator (and so its upstream stream); a plain async iterator has nothing to."""
    aclose = getattr(agen, "aclose", None)
    if aclose is not None:
        await aclose()


async def _disconnected(request: Request) -> None:
    """Return when the client goes away. The body has been read, so ``receive`` now only reports that."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _text(content: str | list[dict[str, Any]] | None) -> str:
    """OpenAI content may be a string or a list of parts; the text parts are joined."""
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text", "")) for p in content or [] if p.get("type", "text") == "text")
