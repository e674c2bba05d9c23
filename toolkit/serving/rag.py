"""The RAG pipeline behind the endpoint: retrieve (with the hot-query cache), build the prompt, generate.

Prompt: a system message telling the model to answer from the context, then one user message holding the
numbered retrieved chunks and the question; it goes to vLLM's ``/v1/chat/completions`` so the model's own chat
template applies. When a tokenizer is at hand (local model directory), the context is trimmed to fit the
engine's context length minus ``max_tokens`` (lowest-ranked chunks go first, then the last one is cut), so a
long retrieval never turns into an engine 400. Timings are milliseconds per stage.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.prompt import rag_messages
from toolkit.retrieval.index import Hit, RetrievalIndex
from toolkit.serving.cache import CacheEntry, filter_key, make_caches
from toolkit.serving.deadline import Deadline
from toolkit.serving.engine_api import ChatEngine
from toolkit.serving.llm import Generation
from toolkit.serving.metrics import Metrics
from toolkit.serving.profiles import EndpointSettings
from toolkit.serving.semantic_cache import SemanticEntry

if TYPE_CHECKING:
    from toolkit.serving.index_watch import IndexWatch


class PromptTooLong(Exception):
    pass


class PromptBuilder:
    SEP_MARGIN = 8

    def __init__(self, system_prompt: str, model_dir: str | Path | None = None, context_len: int | None = None):
        self.system_prompt = system_prompt
        self.tokenizer, self.context_len = None, context_len
        self._token_cache: dict[str, list[int]] = {}
        if model_dir and Path(model_dir, "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            if context_len is None:
                import json

                cfg = json.loads(Path(model_dir, "config.json").read_text())
                self.context_len = cfg.get("max_position_embeddings")

    def messages(self, question: str, contexts: list[str], history: list[dict[str, str]] | None = None):
        return rag_messages(question, contexts, self.system_prompt, history)

    def _count(self, messages: list[dict[str, str]]) -> int:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _chunk_tokens(self, text: str) -> list[int]:
        ids = self._token_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(self._token_cache) > 50_000:
                self._token_cache.clear()
            self._token_cache[text] = ids
        return ids

    def build(self, question: str, hits: list[Hit], max_tokens: int,
              history: list[dict[str, str]] | None = None) -> tuple[list[dict[str, str]], int]:
        """Messages that fit the context window, and how many retrieved chunks they carry.

        Cost control: the template + question are tokenized once per request, chunk token counts come from a
        per-text cache (chunks repeat across queries), and each chunk is charged a margin of
        ``SEP_MARGIN`` tokens for its ``[n]`` label and the boundary merges BPE may do differently in context.
        """
        contexts = [h.chunk.text for h in hits]
        if self.tokenizer is None or not self.context_len:
            return self.messages(question, contexts, history), len(contexts)
        budget = self.context_len - max_tokens
        used = self._count(self.messages(question, [], history)) + self.SEP_MARGIN
        if used > budget:
            raise PromptTooLong(f"query is {used} tokens with the prompt; the model allows {budget} "
                                f"(context {self.context_len} minus max_tokens {max_tokens})")
        kept: list[str] = []
        for text in contexts:
            ids = self._chunk_tokens(text)
            room = budget - used - self.SEP_MARGIN
            if len(ids) <= room:
                kept.append(text)
                used += len(ids) + self.SEP_MARGIN
                continue
            if room > 16:  # a useful part of the chunk still fits: cut it there
                kept.append(self.tokenizer.decode(ids[:room]))
            break
        return self.messages(question, kept, history), len(kept)


@dataclass
class RagRun:
    hits: list[Hit]
    messages: list[dict[str, str]]
    cached: bool
    context_chunks: int
    timings: dict[str, float] = field(default_factory=dict)
    gen: Generation = field(default_factory=Generation)
    t0: float = 0.0
    semantic: SemanticEntry | None = None  # semantic-cache entry whose answers this run may reuse or fill
    answer_cached: bool = False  # the answer was replayed from the semantic cache, not generated

    def sources(self) -> list[dict[str, Any]]:
        return [h.as_source() for h in self.hits]

    def finish(self) -> dict[str, float]:
        self.timings["llm_ttft"] = self.gen.ttft_ms
        self.timings["llm_total"] = self.gen.total_ms
        self.timings["total"] = (time.perf_counter() - self.t0) * 1000
        self.timings = {k: round(v, 3) for k, v in self.timings.items()}
        return self.timings

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.gen.prompt_tokens, "completion_tokens": self.gen.completion_tokens}


class RagService:
    def __init__(self, index: RetrievalIndex, engine: ChatEngine, settings: EndpointSettings,
                 prompt: PromptBuilder, metrics: Metrics) -> None:
        self.index, self.engine, self.settings, self.prompt, self.metrics = index, engine, settings, prompt, metrics
        self.watch: IndexWatch | None = None  # set by toolkit.serving.index_watch.watch_index to follow updates
        # in this process, or in a Redis shared by every replica (endpoint.cache.backend)
        self.cache, self.semantic = make_caches(settings, metrics)

    def current_index(self) -> RetrievalIndex:
        """The index to answer with (after a cheap check for an updated one, when watched). Callers read it
        once per request, so a reload swapping ``self.index`` meanwhile never mixes two versions in one answer."""
        if self.watch is not None:
            self.watch.poll()
        return self.index

    def retrieve(self, query: str, top_k: int, filter: dict[str, Any] | None = None
                 ) -> tuple[list[Hit], dict[str, float], bool]:
        """Hits and ``{"embed","search"}`` ms; a cache hit costs neither (or only the search if k grew)."""
        hits, timings, cached, _ = self.retrieve_entry(query, top_k, filter)
        return hits, timings, cached

    def retrieve_entry(self, query: str, top_k: int, filter: dict[str, Any] | None = None
                       ) -> tuple[list[Hit], dict[str, float], bool, tuple[SemanticEntry, bool] | None]:
        """:meth:`retrieve`, plus the semantic cache's entry for this query and whether it was a semantic hit
        (None with the semantic cache off). Order: exact LRU, then (after embedding) the semantic cache, then
        the search, whose result fills both. Both caches key on the filter: a filtered query is another
        question than the unfiltered one."""
        timings = {"embed": 0.0, "search": 0.0}
        fkey = filter_key(filter)
        index = self.current_index()  # one version for the whole lookup: cache keys match what is searched
        entry = self.cache.get(index.version, query, fkey)
        if entry is not None:  # an exact hit: the cached embedding, and the hits when k did not grow
            self.metrics.cache_hits.inc()
            vec = entry.embedding
            if entry.top_k >= top_k and self.semantic is None:
                return entry.hits[:top_k], timings, True, None
        else:
            self.metrics.cache_misses.inc()
            t = time.perf_counter()
            vec = index.embed(query)
            timings["embed"] = (time.perf_counter() - t) * 1000
        if self.semantic is not None:
            # a paraphrase (or the query itself, cosine 1): its retrieval, no search
            if match := self.semantic.lookup(index.version, vec, top_k, fkey, query):
                return match.entry.hits[:top_k], timings, True, (match.entry, True)
            if entry is not None and entry.top_k >= top_k:  # aged out of the semantic cache only: refill it
                sem = self.semantic.put(index.version, query, vec, entry.hits, entry.top_k, fkey)
                return entry.hits[:top_k], timings, True, (sem, False)
        t = time.perf_counter()
        hits = index.search_vector(vec, top_k, filter)  # the filter applies inside the search
        timings["search"] = (time.perf_counter() - t) * 1000
        self.cache.put(index.version, query, CacheEntry(vec, hits, top_k), fkey)
        if self.semantic is None:
            return hits, timings, entry is not None, None
        return hits, timings, entry is not None, (self.semantic.put(index.version, query, vec, hits, top_k,
                                                                    fkey), False)

    async def prepare(self, query: str, top_k: int, max_tokens: int,
                      history: list[dict[str, str]] | None = None, deadline: Deadline | None = None,
                      filter: dict[str, Any] | None = None) -> RagRun:
        """Retrieve (only chunks matching ``filter``, if given) and build the prompt within ``deadline`` (default:
        the endpoint's ``request_timeout_s``)."""
        deadline = deadline or Deadline(self.settings.request_timeout_s)
        t0 = time.perf_counter()
        # on time-out the worker thread finishes on its own (threads cannot be cancelled); its result is dropped
        async with deadline.limit("retrieving context"):
            hits, timings, cached, sem = await asyncio.to_thread(self.retrieve_entry, query, top_k, filter)
        t = time.perf_counter()
        messages, used = self.prompt.build(query, hits, max_tokens, history)
        timings["prompt"] = (time.perf_counter() - t) * 1000
        deadline.check("building the prompt")
        # an answer depends on the chat history too: only history-free runs share answers
        return RagRun(hits, messages, cached, used, timings, t0=t0, semantic=sem[0] if sem and not history else None)

    def generate(self, run: RagRun, max_tokens: int, temperature: float, deadline: Deadline | None = None,
                 **extra: Any) -> AsyncIterator[str]:
        """The engine's stream; with ``semantic_cache.reuse_answers``, a greedy (temperature 0) run replays the
        answer its semantic entry holds for the same generation settings, or stores the one it generates."""
        reuse = run.semantic is not None and self.settings.semantic_cache.reuse_answers and temperature == 0
        key = json.dumps({"max_tokens": max_tokens, **extra}, sort_keys=True, default=str)
        if reuse and (answer := run.semantic.answers.get(key)) is not None:
            run.answer_cached = True
            return self._replay(run, answer)
        stream = self.engine.stream_chat(run.messages, max_tokens, temperature, run.gen, deadline, **extra)
        return self._fill(run, key, stream) if reuse else stream

    @staticmethod
    async def _replay(run: RagRun, answer: dict[str, Any]) -> AsyncIterator[str]:
        t0 = time.perf_counter()
        run.gen.completion_tokens, run.gen.finish_reason = answer["completion_tokens"], answer["finish_reason"]
        for piece in answer["pieces"]:
            if not run.gen.text:
                run.gen.ttft_ms = (time.perf_counter() - t0) * 1000
            run.gen.text.append(piece)
            yield piece
        run.gen.total_ms = (time.perf_counter() - t0) * 1000

    async def _fill(self, run: RagRun, key: str, agen: AsyncIterator[str]) -> AsyncIterator[str]:
        try:
            async for piece in agen:
                yield piece
        finally:
            await agen.aclose()  # a consumer that stops early closes us; close the engine stream with us
        if run.gen.finish_reason in ("stop", "length"):  # only whole answers are reused
            answer = {"pieces": list(run.gen.text), "finish_reason": run.gen.finish_reason,
                      "completion_tokens": run.gen.completion_tokens}
            # a thread: with the Redis backend this is a network write, kept off the event loop
            await asyncio.to_thread(self.semantic.put_answer, run.semantic, key, answer)
