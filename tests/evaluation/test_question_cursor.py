"""Fresh questions per engine (``QuestionCursor``): with prefix caching on, a load point that re-sends a question
would skip its whole prefill, so the max-load search and optimize's confirmation send each question once. Checked
on what a real HTTP server receives from the real load generator."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from toolkit.evaluation.loadgen import LoadPlan, QuestionCursor, Request, Target, run_point_sync
from toolkit.evaluation.maxload import trial_plan
from toolkit.evaluation.suite import LoadSection, MaxLoadSection

sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
from live_servers import FakeEngine, serve  # noqa: E402  (the serving tests' real streaming server)


class Recording:
    """The fake engine, noting the user message of every chat request it gets."""

    def __init__(self) -> None:
        self.engine, self.questions = FakeEngine(tokens=2, delay_s=0.0), []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            body, more = b"", True
            while more:
                msg = await receive()
                body, more = body + msg.get("body", b""), msg.get("more_body", False)
            self.questions.append(json.loads(body)["messages"][-1]["content"])
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()
            return await self.engine(scope, replay, send)
        return await self.engine(scope, receive, send)


def test_the_cursor_hands_out_consecutive_ranges_and_counts_wraps():
    c = QuestionCursor(10, start=4)
    assert [c.take(3), c.take(3), c.take(3)] == [4, 7, 10] and c.wrapped == 1
    section = LoadSection(concurrency=[1], warmup=2, max_load=MaxLoadSection(requests=4))
    cur = QuestionCursor(100)
    plans = [trial_plan(section, load, cur) for load in (1, 2, 8)]
    assert [p.offset for p in plans] == [0, 6, 12] and cur.next == 22  # warm-up + max(requests, concurrency)
    assert trial_plan(section, 1).offset is None  # without a cursor: as before


def test_points_with_a_cursor_never_repeat_a_question_to_the_same_engine():
    rec = Recording()
    reqs = [Request(f"q{i}", f"question {i}") for i in range(40)]
    cursor = QuestionCursor(len(reqs))
    with serve(rec) as url:
        target = Target("engine", url, max_tokens=2, model_name="m")
        for c in (1, 2, 4):
            plan = LoadPlan(name=f"c{c}", mode="concurrency", concurrency=c, requests=6, warmup=2,
                            offset=cursor.take(8))
            summary, records = run_point_sync(target, reqs, plan, timeout_s=30)
            assert summary["errors"] == 0 and len(records) == 6
        assert len(rec.questions) == 24 == len(set(rec.questions))  # warm-ups included: all distinct
        assert sorted(rec.questions, key=lambda q: int(q.split()[1])) == [f"question {i}" for i in range(24)]
        rec.questions.clear()
        old = LoadPlan(name="c1", mode="concurrency", concurrency=1, requests=6, warmup=2)
        run_point_sync(target, reqs, old, timeout_s=30)
        run_point_sync(target, reqs, old, timeout_s=30)  # without a cursor the same questions come back
        assert len(set(rec.questions)) == 8 and len(rec.questions) == 16
