"""Which engine and setting to deploy at each concurrency: the plain recommendation ``make bench-engines`` prints.

Read from the eval reports of one bench run (names ``vllm-*`` / ``llamacpp-*``, as :mod:`bench_engines` writes
them). The rule, per closed-loop concurrency level ``c``:

* only variants whose answer F1 is within ``f1_margin`` of the best variant's count (16-48 questions: F1
  differences below ~0.05 are noise, larger ones are a quality loss the speed must not hide);
* at ``c = 1`` the lowest p50 end-to-end latency wins (a single user waits for one answer);
* at ``c > 1`` the highest goodput under the suite's SLO wins, then req/s (a server's capacity), which is the
  issue's criterion: "ahead in req/s at concurrency >= 4 at equal or better answer F1".

Each level also states the best vLLM and the best llama.cpp variant side by side with their ratio, and the
95% interval of req/s across repeats where the report has one (``LoadPoint.intervals``).
"""

from __future__ import annotations

from dataclasses import dataclass
from toolkit.evaluation.report import LoadPoint, Report

ENGINES = {"vllm": "vLLM", "llamacpp": "llama.cpp"}


@dataclass
class Entry:
    name: str
    engine: str  # "vllm" | "llamacpp"
    f1: float
    point: LoadPoint

    @property
    def goodput(self) -> float:
        return (self.point.slo.goodput_req_s or 0.0) if self.point.slo else 0.0

    @property
    def req_s(self) -> float:
        return self.point.throughput.req_s or 0.0

    def describe(self) -> str:
        ci = self.point.intervals.get("throughput.req_s")
        spread = f" [{ci.ci_low:.2f}, {ci.ci_high:.2f}]" if ci and ci.ci_low is not None else ""
        return (f"{self.name} (p50 e2e {self.point.e2e_ms.p50:,.0f} ms, {self.req_s:.2f} req/s{spread}, goodput "
                f"{self.goodput:.2f}, F1 {self.f1:.3f})")


def engine_of(name: str) -> str | None:
    return next((e for e in ENGINES if name.startswith(f"{e}-")), None)


def _key(c: int):
    """What wins at concurrency ``c``: lowest p50 e2e at 1, else goodput then req/s."""
    if c == 1:
        return lambda e: -(e.point.e2e_ms.p50 or float("inf"))
    return lambda e: (e.goodput, e.req_s)


def recommend(reports: dict[str, Report], f1_margin: float = 0.05) -> list[str]:
    """Markdown lines: per concurrency level, the variant to deploy and vLLM's best against llama.cpp's."""
    scored = {n: r for n, r in reports.items() if engine_of(n) and r.quality.qa_f1 is not None}
    if not scored:
        return ["no served variant with an answer F1: nothing to recommend"]
    best_f1 = max(r.quality.qa_f1 for r in scored.values())
    eligible = {n: r for n, r in scored.items() if r.quality.qa_f1 >= best_f1 - f1_margin}
    left_out = sorted(set(scored) - set(eligible))
    lines = [f"Eligible: answer F1 within {f1_margin} of the best ({best_f1:.3f})"
             + (f"; left out for quality: {', '.join(left_out)}" if left_out else "") + "."]
    levels = sorted({p.concurrency for r in eligible.values() for p in r.latency.points
                     if p.mode == "concurrency" and p.target == "rag" and p.concurrency})
    for c in levels:
        entries = [Entry(n, engine_of(n), r.quality.qa_f1, p) for n, r in eligible.items() for p in r.latency.points
                   if p.mode == "concurrency" and p.target == "rag" and p.concurrency == c]
        if not entries:
            continue
        key = _key(c)
        top = max(entries, key=key)
        by_engine = {e: max((x for x in entries if x.engine == e), key=key, default=None) for e in ENGINES}
        lines.append(f"- **at {c} concurrent stream{'s' if c > 1 else ''}: use {top.describe()}**")
        v, ll = by_engine["vllm"], by_engine["llamacpp"]
        if v and ll:
            if c == 1:
                ratio = f"llama.cpp/vLLM p50 latency {ll.point.e2e_ms.p50 / v.point.e2e_ms.p50:.2f}x"
            else:
                ratio = f"vLLM/llama.cpp req/s {v.req_s / ll.req_s:.2f}x" if ll.req_s else "llama.cpp served none"
            lines.append(f"  - best vLLM {v.describe()}; best llama.cpp {ll.describe()}; {ratio}")
    return lines
