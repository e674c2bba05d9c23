"""Async HTTP load generator: replays questions against the RAG endpoint (or the bare vLLM server) at fixed
concurrency levels and at a Poisson request rate, streaming every answer so that latency is measured on the
client, where a user would feel it.

Method
- Closed loop (``concurrency=C``): C workers each send the next question as soon as their previous answer
  finished. ``warmup`` requests are sent first at the same concurrency and excluded, so compile caches, the
  embedding model and HTTP connections are warm before the clock starts.
- Open loop (Poisson, ``rate_rps``): request start times are cumulative exponential gaps (seeded), sent
  regardless of how many are still in flight, so queueing shows up as latency rather than as a lower rate.
- Per request, from client-side arrival times of streamed chunks: TTFT (first non-empty token chunk), e2e,
  inter-token latencies (gaps between chunks; a chunk may carry several tokens), TPOT (vLLM's definition,
  with the server-reported completion token count), and the endpoint's own stage timings.
- A request that fails (HTTP error, broken stream, timeout) is recorded with its error and counted; it never
  aborts the run.
- With an SLO (:mod:`toolkit.evaluation.slo`), a point's summary also carries its goodput and SLO attainment.
  Repeated runs of a point are pooled by :mod:`toolkit.evaluation.repeats`; every summary, pooled or not, is
  computed by :func:`summarize_point`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.evaluation.metrics import inter_token_latencies, summarize, tpot_ms
from toolkit.evaluation.slo import attainment

STAGES = ("embed", "search", "prompt", "llm_ttft", "llm_total", "total")


@dataclass(frozen=True)
class Target:
    """Where requests go: ``rag`` = ``POST {url}/v1/rag``; ``engine`` = vLLM's ``/v1/chat/completions``."""

    kind: str
    url: str
    max_tokens: int
    temperature: float = 0.0
    top_k: int = 5
    model_name: str | None = None  # served model name, engine target only


@dataclass
class Request:
    qid: str
    question: str
    messages: list[dict[str, str]] | None = None  # engine target: the chat prompt the endpoint would send


@dataclass
class LoadPlan:
    name: str
    mode: str  # "concurrency" | "poisson"
    concurrency: int | None = None
    rate_rps: float | None = None
    requests: int = 0
    warmup: int = 0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # None: measured questions from the first, warm-up from the last (as always); a number: warm-up then measured
    # questions from there on (QuestionCursor), so a run never repeats a prompt the engine has seen
    offset: int | None = None


class QuestionCursor:
    """Hands out fresh question offsets across the load points sent to one running engine.

    With prefix caching on, vLLM keeps the KV of every prompt it computed (16-token blocks, LRU): a load point
    that re-sends a question asked before skips its whole prefill, which no real user stream does. Measuring
    prefix caching honestly means sending each question once per engine, so that only what requests really
    share (the system prompt, passages retrieved for several questions) is reused. ``take(n)`` returns the
    offset of the next ``n`` unused questions; past the end of the pool it wraps (by then the oldest prompts
    have long left a modest KV cache) and counts ``wrapped``."""

    def __init__(self, pool_size: int, start: int = 0) -> None:
        self.pool_size, self.next, self.wrapped = pool_size, start, 0

    def take(self, n: int) -> int:
        offset = self.next
        self.next += n
        if self.next > self.pool_size * (self.wrapped + 1):
            self.wrapped += 1
        return offset


def engine_messages(req: Request) -> list[dict[str, str]]:
    """Chat prompt for the bare engine: the endpoint's own prompt when known, else the bare question."""
    return req.messages or [{"role": "user", "content": req.question}]


def auth_headers() -> dict[str, str]:
    """Bearer token when the endpoint requires one (serving profiles read it from TOOLKIT_API_KEY)."""
    key = os.environ.get("TOOLKIT_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def request_body(target: Target, req: Request) -> tuple[str, dict[str, Any]]:
    if target.kind == "rag":
        return f"{target.url}/v1/rag", {"query": req.question, "top_k": target.top_k, "max_tokens": target.max_tokens,
                                        "temperature": target.temperature, "stream": True}
    return f"{target.url}/v1/chat/completions", {
        "model": target.model_name, "messages": engine_messages(req), "max_tokens": target.max_tokens,
        "temperature": target.temperature, "stream": True, "stream_options": {"include_usage": True}}


def record_from_events(kind: str, t0: float, events: Sequence[tuple[float, Any]], t_end: float) -> dict[str, Any]:
    """Turn one streamed response into a record. ``events`` are (perf_counter time, parsed ``data:`` payload);
    ``t0`` is when the request was sent and ``t_end`` when the stream closed. Times come out in ms."""
    arrivals: list[float] = []
    texts: list[str] = []
    usage: dict[str, Any] = {}
    stages: dict[str, float] = {}
    sources: list[dict[str, Any]] = []
    cached = None
    for t, ev in events:
        if not isinstance(ev, dict):
            continue
        if kind == "rag":
            typ = ev.get("type")
            if typ == "token" and ev.get("text"):
                arrivals.append(t)
                texts.append(ev["text"])
            elif typ == "sources":
                sources = ev.get("sources") or []
                cached = ev.get("cached")
            elif typ == "done":
                usage = ev.get("usage") or {}
                stages = {k: float(v) for k, v in (ev.get("timings") or {}).items() if k in STAGES and v is not None}
            elif typ == "error":
                raise RuntimeError(f"endpoint error mid-stream: {ev.get('message')}")
        else:
            if ev.get("error"):
                raise RuntimeError(f"engine error mid-stream: {(ev['error'] or {}).get('message')}")
            for choice in ev.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    arrivals.append(t)
                    texts.append(text)
            if ev.get("usage"):
                usage = ev["usage"]
    if not arrivals:
        raise ValueError("stream ended without any token")
    ttft = (arrivals[0] - t0) * 1000
    e2e = (t_end - t0) * 1000
    out_tokens = int(usage.get("completion_tokens") or len(arrivals))
    return {
        "ok": True, "error": None, "ttft_ms": ttft, "e2e_ms": e2e,
        "itl_ms": inter_token_latencies([a * 1000 for a in arrivals]),
        "tpot_ms": tpot_ms(e2e, ttft, out_tokens), "output_tokens": out_tokens,
        "prompt_tokens": usage.get("prompt_tokens"), "stages": stages, "answer": "".join(texts),
        "source_ids": [s.get("id") for s in sources], "cached": cached,
    }


async def send_one(client, target: Target, req: Request) -> dict[str, Any]:
    """Send one streaming request; never raises (errors become ``ok: False`` records)."""
    url, body = request_body(target, req)
    events: list[tuple[float, Any]] = []
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                detail = (await resp.aread()).decode(errors="replace")[:200]
                raise RuntimeError(f"HTTP {resp.status_code}: {detail}")
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                events.append((time.perf_counter(), json.loads(data)))
        rec = record_from_events(target.kind, t0, events, time.perf_counter())
    except Exception as exc:  # noqa: BLE001 - any failure is a measured error, not a crash
        rec = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300], "e2e_ms": (time.perf_counter() - t0) * 1000}
    rec.update({"qid": req.qid, "target": target.kind, "start_s": t0})
    return rec


async def _closed_loop(client, target: Target, reqs: Sequence[Request], concurrency: int) -> list[dict[str, Any]]:
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for r in reqs:
        queue.put_nowait(r)
    out: list[dict[str, Any]] = []

    async def worker() -> None:
        while not queue.empty():
            out.append(await send_one(client, target, queue.get_nowait()))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(reqs)))))
    return out


async def _open_loop(client, target: Target, reqs: Sequence[Request], rate: float, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = time.perf_counter()
    offsets, t = [], 0.0
    for _ in reqs:
        offsets.append(t)
        t += rng.expovariate(rate)

    async def fire(offset: float, req: Request) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        return await send_one(client, target, req)

    return list(await asyncio.gather(*(fire(o, r) for o, r in zip(offsets, reqs))))


def cycle(reqs: Sequence[Request], n: int, offset: int = 0) -> list[Request]:
    """``n`` requests taken round-robin from ``reqs`` starting at ``offset`` (questions repeat if n > len)."""
    return [reqs[(offset + i) % len(reqs)] for i in range(n)]


async def run_point(target: Target, reqs: Sequence[Request], plan: LoadPlan, timeout_s: float,
                    slo: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one load point (after its own warm-up); return (summary, per-request records). ``slo``: the
    objectives its summary is judged against (:func:`summarize_point`), or None."""
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits, headers=auth_headers()) as client:
        # other questions than the measured ones, so a cache cannot serve those: without an offset the last ones
        warm, first = (-plan.warmup, 0) if plan.offset is None else (plan.offset, plan.offset + plan.warmup)
        if plan.warmup:
            await _closed_loop(client, target, cycle(reqs, plan.warmup, warm), plan.concurrency or 1)
        measured = cycle(reqs, plan.requests, first)
        t = time.perf_counter()
        if plan.mode == "poisson":
            records = await _open_loop(client, target, measured, plan.rate_rps or 1.0, plan.seed)
        else:
            records = await _closed_loop(client, target, measured, plan.concurrency or 1)
        duration = time.perf_counter() - t
    for r in records:
        r["point"] = plan.name
        r["start_s"] = round(r["start_s"] - t, 6)
    return summarize_point(plan, target.kind, records, duration, slo), records


def summarize_point(plan: LoadPlan, kind: str, records: Sequence[dict[str, Any]], duration_s: float,
                    slo: Any = None) -> dict[str, Any]:
    """The summary of one load point (the report's ``LoadPoint`` fields): per-request percentiles of the ok
    requests, throughput = ok requests (and their output tokens) / ``duration_s`` of measured wall time, and,
    with an ``slo``, its goodput and attainment over every request (failures count against it). For repeated
    runs ``records`` pools every repeat and ``duration_s`` is the sum of their durations."""
    ok = [r for r in records if r.get("ok")]
    out_tokens = sum(r["output_tokens"] for r in ok)
    stages = {s: summarize(r["stages"].get(s) for r in ok) for s in STAGES} if kind == "rag" else {}
    return {
        "name": plan.name, "target": kind, "mode": plan.mode, "concurrency": plan.concurrency,
        "rate_rps": plan.rate_rps, "requests": len(records), "errors": len(records) - len(ok),
        "cached": sum(1 for r in ok if r.get("cached")),
        "error_examples": sorted({r["error"] for r in records if not r.get("ok")})[:3],
        "duration_s": duration_s,
        "throughput": {"req_s": len(ok) / duration_s if duration_s > 0 else None,
                       "output_tok_s": out_tokens / duration_s if duration_s > 0 else None},
        "ttft_ms": summarize(r["ttft_ms"] for r in ok),
        "tpot_ms": summarize(r["tpot_ms"] for r in ok),
        "itl_ms": summarize(x for r in ok for x in r["itl_ms"]),
        "e2e_ms": summarize(r["e2e_ms"] for r in ok),
        "stages": stages,
        "slo": attainment(records, slo, duration_s) if slo is not None else None,
    }


def plans_for(load, seed: int = 0) -> list[LoadPlan]:
    """Load points of a suite's ``load`` section: one per concurrency level, then the Poisson point."""
    plans = [LoadPlan(name=f"c{c}", mode="concurrency", concurrency=c, requests=load.requests_per_level,
                      warmup=load.warmup) for c in load.concurrency]
    if load.poisson is not None:
        p = load.poisson
        plans.append(LoadPlan(name=f"poisson{p.rate_rps:g}", mode="poisson", rate_rps=p.rate_rps, requests=p.requests,
                              warmup=load.warmup, seed=p.seed))
    return plans


def run_point_sync(target: Target, reqs: Sequence[Request], plan: LoadPlan, timeout_s: float,
                   slo: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """:func:`run_point` for synchronous callers (one event loop per load point)."""
    return asyncio.run(run_point(target, reqs, plan, timeout_s, slo))
