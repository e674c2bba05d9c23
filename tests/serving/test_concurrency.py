"""The concurrency limit under real concurrency: 200 simultaneous streaming requests over loopback at an endpoint
(uvicorn, real index and embedder) limited to 8 in flight, in front of a real streaming OpenAI-compatible server
(tests/serving/live_servers.py); some clients walk away mid-stream. Nothing is set by hand: the limit, the gauge
and the counters are whatever the requests made them."""

import asyncio
import random

import httpx
from live_servers import FakeEngine, scrape, wait_until

LIMIT, REQUESTS = 8, 200
LEAVES = "[leaves early]"  # in a question: the engine streams until that client leaves (FakeEngine endless_marker)


async def _burst(url: str) -> tuple[list[list[tuple[str, int, str]]], list[str]]:
    """Fire all requests at once. A client refused with 429 retries once, at a random moment of the next
    1.5 s (so slots are freed and taken again while others arrive); every 5th client (i = 1, 6, ...) closes
    its stream after the second event, the others read to the end. A leaving client's question is marked, and
    the engine streams it until the client is gone: however late a loaded machine lets it leave, the engine
    sees the disconnect (with 30 tokens it could finish first). Returns ``(route, status, how it ended)`` per
    attempt, per client, and any client-side failures."""
    go, failures, rng = asyncio.Event(), [], random.Random(13)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def attempt(i: int) -> tuple[str, int, str]:
            route = "/v1/rag" if i % 2 else "/v1/chat/completions"
            abandon = i % 5 == 1
            question = f"Question {i}: who walked on the Moon?" + (f" {LEAVES}" if abandon else "")
            body = {"query": question, "stream": True, "max_tokens": 64} if i % 2 else \
                {"messages": [{"role": "user", "content": question}], "stream": True}
            try:
                async with client.stream("POST", route, json=body) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        return route, resp.status_code, \
                            f'{resp.json()["error"]["type"]}, retry after {resp.headers.get("retry-after")}'
                    events = []
                    async for line in resp.aiter_lines():
                        if line.startswith("data: "):
                            events.append(line[6:])
                            if abandon and len(events) == 2:
                                return route, 200, "abandoned"  # leaving the block closes the connection
                    assert events[-1] == "[DONE]" and "error" not in events[-2], events[-3:]
                    return route, 200, "complete"
            except Exception as exc:  # noqa: BLE001 - collected and reported by the test
                failures.append(f"{route} #{i}: {type(exc).__name__}: {exc}")
                return route, -1, "failed"

        async def one(i: int) -> list[tuple[str, int, str]]:
            await go.wait()
            first = await attempt(i)
            if first[1] != 429:
                return [first]
            await asyncio.sleep(rng.uniform(0, 1.5))
            return [first, await attempt(i)]

        tasks = [asyncio.ensure_future(one(i)) for i in range(REQUESTS)]
        await asyncio.sleep(0.2)  # every task is waiting on the start signal
        go.set()
        return list(await asyncio.gather(*tasks)), failures


def test_200_simultaneous_streams_against_a_limit_of_8(endpoint):
    # 30 chunks 10 ms apart: a stream outlives the burst's arrival (all 200 within ~0.2 s), so the limit is
    # really contended, and a client that leaves after its second event leaves long before the engine is done
    engine = FakeEngine(tokens=30, delay_s=0.01, endless_marker=LEAVES)
    with endpoint(engine, max_concurrency=LIMIT) as (url, app):
        clients, failures = asyncio.run(_burst(url))
        assert not failures, failures[:5]
        results = [a for attempts in clients for a in attempts]
        assert all(len(a) == 1 or a[0][1] == 429 for a in clients)  # retried only when refused
        statuses = [status for _, status, _ in results]
        assert set(statuses) <= {200, 429}, sorted(set(statuses))
        ok, refused = statuses.count(200), statuses.count(429)
        abandoned = sum(end == "abandoned" for *_, end in results)
        assert ok > LIMIT and refused > 0 and abandoned >= 2, (ok, refused, abandoned)
        assert all(end == "rate_limit_error, retry after 1" for _, status, end in results if status == 429)

        guard = app.state.guard
        assert wait_until(lambda: guard.in_flight == 0 and engine.open == 0), (guard.in_flight, engine.open)
        # the limit held at the engine too, every stream that got through opened exactly one engine stream,
        # and every abandoned one was closed upstream instead of generating to the end for nobody
        assert engine.max_open <= LIMIT and engine.started == ok
        assert engine.disconnected == abandoned and engine.completed == ok - abandoned

        m = scrape(url)
        by_status: dict[str, float] = {}
        for (name, labels), value in m.items():
            if name == "rag_requests_total":
                by_status[dict(labels)["status"]] = by_status.get(dict(labels)["status"], 0) + value
        assert by_status == {"200": ok, "429": refused}, by_status
        for route in ("/v1/rag", "/v1/chat/completions"):
            for status in (200, 429):
                sent = sum(1 for r, s, _ in results if r == route and s == status)
                got = m.get(("rag_requests_total", (("route", route), ("status", str(status)))), 0)
                assert got == sent, (route, status, got, sent)
        assert m[("rag_rejected_total", (("reason", "concurrency"),))] == refused
        assert m[("rag_in_flight_requests", ())] == 0
        # stage timings are recorded for answers that finished, not for abandoned ones
        assert m[("rag_stage_latency_seconds_count", (("stage", "total"),))] == ok - abandoned
        assert m[("rag_cache_hits_total", ())] + m[("rag_cache_misses_total", ())] == ok

        # nothing leaked: a request after the burst gets a slot and a complete answer
        r = httpx.post(f"{url}/v1/rag", json={"query": "Who walked on the Moon?"}, timeout=30)
        assert r.status_code == 200 and r.json()["answer"].startswith("w0 ")
