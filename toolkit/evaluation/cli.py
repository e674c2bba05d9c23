"""``toolkit eval --model M [--index I] [--suite S] [--url URL] --output R.json``: measure one model variant.

Order of work, chosen so that measurements do not disturb each other: (1) validation perplexity in this
process with transformers, model freed afterwards; (2) start vLLM + the RAG endpoint (unless ``--url``);
(3) answer quality and retrieval on the QA set; (4) latency load points against the endpoint, then the same
points against the bare engine, each run ``--repeats`` times and judged against the SLO when there is one
(``toolkit.evaluation.repeats``), then the ``--find-max-load`` search (``toolkit.evaluation.maxload``); (5) write
the report and its raw-records sidecar atomically. With ``--no-serve`` (a checkpoint vLLM cannot serve on this
machine) only (1) runs: a quality-only report.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.paths import REPO_ROOT, REPORTS_DIR

DEFAULT_SUITE = REPO_ROOT / "eval" / "suites" / "default.yaml"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory (what the engine serves)")
    parser.add_argument("--index", help="retrieval index directory (toolkit index build)")
    parser.add_argument("--suite", default=str(DEFAULT_SUITE), help="eval suite YAML (default: %(default)s)")
    parser.add_argument("--profile", help="serving profile YAML passed to the stack")
    parser.add_argument("--url", help="use an already running RAG endpoint instead of starting one")
    parser.add_argument("--engine-url", help="with --url: the bare vLLM server, for the engine-alone points")
    parser.add_argument("--output", help="report path (default: artifacts/reports/<model name>.json)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the suite's RAG-OFF/oracle answers (generation.baselines) for this run")
    parser.add_argument("--no-serve", nargs="?", const=True, default=False, metavar="REASON",
                        help="quality-only report: perplexity, no engine (for a checkpoint vLLM cannot serve here); "
                        "an optional REASON is written into the report")
    parser.add_argument("--repeats", type=int, metavar="N",
                        help="runs of each load point, each with its own warm-up (default: the suite's load.repeats)")
    parser.add_argument("--slo", metavar="SPEC", help="latency objectives, e.g. ttft:500,tpot:50,e2e:2000 or "
                        "e2e_p99:3000 (default: the suite's slo section); adds goodput and SLO attainment per point")
    parser.add_argument("--find-max-load", action="store_true",
                        help="also search the highest load meeting the SLO (the suite's load.max_load settings)")


def git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def eval_profile(profile: str | None, suite, out_dir: Path) -> Path:
    """The serving profile the eval runs with: the user's (or the device default) with the suite's engine
    settings applied: prefix caching as the suite says, the hot-query and semantic caches off unless asked for
    (repeated or reworded questions would otherwise skip embedding and search), extra vLLM flags added (vLLM
    profiles only)."""
    import yaml

    from toolkit.config import dump_recipe
    from toolkit.manifest import atomic_write_text
    from toolkit.serving.profiles import load_profile

    prof = load_profile(profile)
    prof.engine.enable_prefix_caching = suite.engine.prefix_caching
    if not suite.engine.query_cache:
        prof.endpoint.cache_size = 0
    prof.endpoint.semantic_cache.enabled = suite.engine.semantic_cache
    # the suite's extra_args are vLLM flags (e.g. enforce_eager); llama.cpp has none of them
    if prof.engine.kind == "vllm":
        prof.engine.extra_args = {**prof.engine.extra_args, **suite.engine.extra_args}
    path = out_dir / "eval-profile.yaml"
    atomic_write_text(path, yaml.safe_dump(dump_recipe(prof), sort_keys=False))
    return path


@contextlib.contextmanager
def _stack(args: argparse.Namespace, suite, model: str, stack=None):
    """Yield (url, engine_url, served name, startup_s, engine pid) for a started, given or external stack."""
    if stack is not None:  # a running_stack() the caller started (one engine for several evals)
        yield stack.url, stack.engine_url, stack.served_model_name, stack.engine_startup_s, stack.engine_pid
        return
    if args.url:
        from toolkit.serving.model_ref import engine_model_id

        engine_url = args.engine_url.rstrip("/") if args.engine_url else None
        # an --engine-url that does not answer is an error, not a silently skipped measurement
        yield (args.url.rstrip("/"), engine_url, engine_model_id(engine_url) if engine_url else None, None, None)
        return
    import tempfile

    from toolkit.serving.stack import running_stack

    index = _index_dir(args)
    with tempfile.TemporaryDirectory(prefix="toolkit-eval-") as tmp:
        profile = eval_profile(args.profile, suite, Path(tmp))
        with running_stack(model, index, profile=profile, progress=True) as s:
            yield s.url, s.engine_url, s.served_model_name, s.engine_startup_s, s.engine_pid


def _index_dir(args: argparse.Namespace) -> Path:
    from toolkit.paths import INDEXES_DIR

    index = Path(args.index) if args.index else INDEXES_DIR / "flat"
    if not index.is_dir():
        raise ToolkitError(f"{index}: index not found (build one with `make index` or pass --index)")
    return index


def engine_requests(model: str, profile: str | None, rows: list[dict[str, str]], qrecords: list[dict[str, Any]],
                    max_tokens: int) -> list[Any]:
    """Load-generator requests carrying, for the engine-alone points, the exact chat prompt the endpoint
    builds (its PromptBuilder, on the passages it retrieved for that question in the quality pass)."""
    from toolkit.evaluation.loadgen import Request
    from toolkit.retrieval.chunking import Chunk
    from toolkit.retrieval.index import Hit
    from toolkit.serving.profiles import load_profile
    from toolkit.serving.rag import PromptBuilder, PromptTooLong

    builder = PromptBuilder(load_profile(profile).endpoint.system_prompt, model if Path(model).is_dir() else None)
    by_id = {r["qid"]: r for r in qrecords}
    reqs = []
    for row in rows:
        used = by_id.get(row["id"], {}).get("used_sources") or []
        hits = [Hit(float(s.get("score", 0.0)), Chunk(str(s.get("id")), str(s.get("chunk_id")), str(s.get("title", "")),
                                                      str(s.get("text", "")))) for s in used]
        try:
            messages, _ = builder.build(row["question"], hits, max_tokens)
        except PromptTooLong:
            messages = None
        reqs.append(Request(row["id"], row["question"], messages))
    return reqs


def _baselines(suite, profile: str | None, engine_url: str | None, served: str | None, rows: list[dict[str, str]],
               console) -> dict[str, Any]:
    """RAG-OFF / oracle answers from the bare engine, with the endpoint's system prompt."""
    from toolkit.evaluation.baselines import answer_baselines
    from toolkit.paths import REFERENCE_DOCS
    from toolkit.serving.profiles import load_profile

    if not (engine_url and served):
        raise ToolkitError("generation.baselines: the bare engine's URL is needed (pass --engine-url with --url)")
    gen = suite.generation
    console.print(f"[bold]baselines[/]: {', '.join(gen.baselines)} for {len(rows)} questions through {engine_url}")
    return answer_baselines(engine_url, served, rows, suite.qa.docs or REFERENCE_DOCS, gen.baselines,
                            load_profile(profile).endpoint.system_prompt, gen.max_tokens, gen.temperature,
                            suite.load.timeout_s)


def evaluate(args: argparse.Namespace, stack=None) -> tuple[Any, list[dict[str, Any]]]:
    """Run the suite; return (Report, raw records). ``stack``: an already running
    :func:`toolkit.serving.stack.running_stack` to measure instead of starting one (its start-up time and
    process are still reported)."""
    from rich.console import Console

    from toolkit.evaluation.quality import read_qa, validation_perplexity
    from toolkit.evaluation.report import Environment, Latency, ModelInfo, Quality, Report, Resources, SuiteInfo
    from toolkit.evaluation.suite import load_suite
    from toolkit.hardware import hardware_fingerprint, hardware_report
    from toolkit.manifest import read_manifest, size_on_disk
    from toolkit.modeling import resolve_model
    from toolkit.paths import REFERENCE_QA, reference_split

    console = Console(stderr=True)
    t_start, load_start = time.perf_counter(), list(os.getloadavg())
    suite = load_suite(args.suite)
    settings = load_settings(args, suite)
    model = resolve_model(args.model)
    rows = read_qa(suite.qa.path or REFERENCE_QA, suite.qa.split, suite.qa.limit)
    hw = hardware_report()
    not_served = _not_served_reason(args, model, stack)  # fail before the slow parts

    quality: dict[str, Any] = {}
    if suite.perplexity.enabled:
        text = suite.perplexity.text or reference_split("validation")
        console.print(f"[bold]perplexity[/] of {model} on {text}")
        ppl = validation_perplexity(model, text, suite.perplexity.seq_len, suite.perplexity.max_windows)
        quality.update(val_ppl=ppl["value"], val_ppl_error=ppl["error"], val_ppl_tokens=ppl["tokens"],
                       val_ppl_dtype=ppl["compute_dtype"], val_text=str(text))
        if ppl["error"]:
            console.print(f"[yellow]perplexity not measured:[/] {ppl['error']}")

    if not not_served and not args.url:
        from toolkit.serving.profiles import load_profile

        engine = "llama.cpp" if load_profile(args.profile).engine.kind == "llamacpp" else "vLLM"
    console.print(f"[yellow]not served[/]: {not_served}" if not_served else f"[bold]using[/] endpoint {args.url}"
                  if args.url else f"[bold]starting[/] {engine} + RAG endpoint")
    served = (_NOT_SERVED if not_served else
              _serve_and_measure(args, suite, settings, model, stack, rows, hw, console))
    quality.update(served["quality"])
    points, engine_points, records = served["points"], served["engine_points"], served["records"]
    startup_s, note = served["startup_s"], served["note"]
    started = not not_served and (stack is not None or not args.url)
    report = Report(
        model=ModelInfo(path=str(Path(model).resolve()) if Path(model).exists() else model, name=Path(model).name,
                        manifest=read_manifest(model) if Path(model).is_dir() else None),
        quality=Quality(**quality),
        latency=Latency(points=points, engine_alone=engine_points, not_served=not_served,
                        slo=None if not_served else settings["slo"],
                        max_load=served["max_load"]),
        resources=Resources(size_on_disk_bytes=size_on_disk(model) if Path(model).exists() else None,
                            engine_startup_s=startup_s, engine_peak_rss_mb=served["peak_rss_mb"],
                            gpu_memory_mb=served["peak_gpu_mb"],
                            note=note or (None if started or not_served else
                                          "external stack: start-up time and memory not measured")),
        environment=Environment(hardware=hw, fingerprint=hardware_fingerprint(hw), git_commit=git_commit(),
                                suite=SuiteInfo(name=suite.name, path=str(args.suite), sha256=suite.digest()),
                                prefix_caching=suite.engine.prefix_caching, url=args.url, started_by_eval=started,
                                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                wall_s=round(time.perf_counter() - t_start, 1), load_avg_start=load_start,
                                load_avg_end=list(os.getloadavg())),
    )
    return report, records


def load_settings(args: argparse.Namespace, suite) -> dict[str, Any]:
    """``{"repeats", "slo", "find_max_load"}``: the flags over the suite's settings, checked before any slow work.
    ``slo`` is the dict the points are judged against (``{metric: ms, "percentile": P}``) or None."""
    from toolkit.evaluation.maxload import bounds
    from toolkit.evaluation.slo import parse_slo, thresholds
    from toolkit.evaluation.suite import MaxLoadSection

    repeats = getattr(args, "repeats", None)
    if repeats is not None and repeats < 1:
        raise ToolkitError(f"--repeats: {repeats} is not a positive number of runs")
    if getattr(args, "slo", None):
        slo = parse_slo(args.slo)
    else:
        slo = {**thresholds(suite.slo), "percentile": suite.slo.percentile} if suite.slo is not None else None
    find = bool(getattr(args, "find_max_load", False))
    if find:
        if slo is None:
            raise ToolkitError(f"--find-max-load: no SLO to meet (add an slo: section to {args.suite} or pass --slo)")
        if getattr(args, "no_serve", False):
            raise ToolkitError("--find-max-load: cannot be combined with --no-serve (nothing is served)")
        ml = suite.load.max_load or MaxLoadSection()
        bounds(ml.start, ml.limit, ml.resolution, ml.mode == "concurrency")
    return {"repeats": repeats or suite.load.repeats, "slo": slo, "find_max_load": find}


def _not_served_reason(args: argparse.Namespace, model: str, stack) -> str | None:
    """Why this eval measures quality only (``--no-serve``), or None; raises if serving is impossible here."""
    from toolkit.engine.kernels import serving_blocker
    from toolkit.serving.profiles import load_profile

    if getattr(args, "no_serve", False):
        if args.url or stack is not None:
            raise ToolkitError("--no-serve: cannot be combined with --url (nothing would be measured there)")
        why = serving_blocker(model, load_profile(args.profile).device)
        if isinstance(args.no_serve, str):  # the caller's reason (e.g. the demo's), beside the engine's own
            why = "; ".join(w for w in (why, args.no_serve) if w)
        return f"--no-serve: {why}" if why else "--no-serve: quality-only report (perplexity), no engine started"
    if stack is None and not args.url:
        _index_dir(args)
        if blocker := serving_blocker(model, load_profile(args.profile).device):
            raise ToolkitError(f"{blocker}; run `toolkit eval --no-serve` for its perplexity only")
    return None


_NOT_SERVED: dict[str, Any] = {"quality": {}, "points": [], "engine_points": [], "records": [], "startup_s": None,
                               "peak_rss_mb": None, "peak_gpu_mb": None, "note": None, "max_load": None}


def _serve_and_measure(args: argparse.Namespace, suite, settings: dict[str, Any], model: str, stack,
                       rows: list[dict[str, str]], hw, console) -> dict[str, Any]:
    """Answer quality and retrieval through the endpoint, then the latency points (endpoint, bare engine), then
    the max-load search (endpoint only)."""
    from toolkit.evaluation import loadgen
    from toolkit.evaluation.maxload import find_max_load
    from toolkit.evaluation.quality import rag_quality
    from toolkit.evaluation.repeats import measure_rounds
    from toolkit.evaluation.report import LoadPoint
    from toolkit.evaluation.resources import PeakSampler

    records: list[dict[str, Any]] = []
    points, engine_points, note, max_load = [], [], None, None
    with _stack(args, suite, model, stack) as (url, engine_url, served, startup_s, pid):
        with PeakSampler(pid, cuda=hw["device"] == "cuda") as sampler:
            gen = suite.generation
            console.print(f"[bold]quality[/]: {len(rows)} questions through {url}/v1/rag")
            qmetrics, qrecords = rag_quality(url, rows, suite.retrieval.ks, gen.top_k, gen.max_tokens,
                                             gen.temperature, suite.load.timeout_s)
            records += [{"phase": "quality", **{k: v for k, v in r.items() if k != "used_sources"},
                         "used_source_ids": [x.get("chunk_id") for x in r.get("used_sources", [])]} for r in qrecords]
            if gen.baselines and not getattr(args, "no_baselines", False):
                qmetrics["baselines"] = _baselines(suite, args.profile, engine_url, served, rows, console)
            reqs = engine_requests(model, args.profile, rows, qrecords, gen.max_tokens)
            targets = [loadgen.Target("rag", url, gen.max_tokens, gen.temperature, gen.top_k)]
            if suite.load.engine_alone:
                if engine_url and served:
                    targets.append(loadgen.Target("engine", engine_url, gen.max_tokens, gen.temperature,
                                                  model_name=served))
                else:
                    note = "engine-alone points skipped: no engine URL (pass --engine-url with --url)"
            jobs = [(target, plan) for target in targets for plan in loadgen.plans_for(suite.load)]
            measured = measure_rounds(jobs, reqs, suite.load.timeout_s, settings["repeats"], settings["slo"], console)
            for (target, _), (summary, recs) in zip(jobs, measured):
                (points if target.kind == "rag" else engine_points).append(LoadPoint(**summary))
                records += [{"phase": "load", **r} for r in recs]
            if settings["find_max_load"]:
                max_load, recs = find_max_load(targets[0], reqs, suite.load, settings["slo"], console)
                records += recs
    return {"quality": qmetrics, "points": points, "engine_points": engine_points, "records": records,
            "startup_s": startup_s, "peak_rss_mb": sampler.peak_rss_mb, "peak_gpu_mb": sampler.peak_gpu_mb,
            "note": note, "max_load": max_load}


def run(args: argparse.Namespace) -> int:
    from toolkit.evaluation.report import write_report

    output = Path(args.output) if args.output else REPORTS_DIR / f"{Path(args.model).name}.json"
    report, records = evaluate(args)
    path = write_report(report, output, records)
    print_summary(report, path)
    return 0


def print_summary(report, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(v, nd=1):
        return "–" if v is None else f"{v:.{nd}f}"

    import sys

    q = report.quality
    console = Console(width=None if sys.stdout.isatty() else 130)
    console.print(f"wrote {path} (+ {report.records_file})")
    recall = " ".join(f"R@{k}={v:.2f}" for k, v in q.recall_at_k.items())
    console.print(f"quality: val ppl {f(q.val_ppl, 2)}{' (' + q.val_ppl_error + ')' if q.val_ppl_error else ''}; "
                  f"EM {f(q.qa_exact_match, 3)}  F1 {f(q.qa_f1, 3)}  context overlap {f(q.context_overlap, 3)}; "
                  f"{recall}  MRR {f(q.mrr, 3)}  ({q.questions} questions, {q.errors} errors)")
    for mode, b in q.baselines.items():
        console.print(f"baseline {mode}: EM {f(b['qa_exact_match'], 3)}  F1 {f(b['qa_f1'], 3)}  "
                      f"({b['questions']} questions, {b['errors']} errors)")
    lat = report.latency
    all_points = lat.points + lat.engine_alone
    most = max((p.repeats for p in all_points), default=1)
    pooled = f", pooled over {most} repeats" if most > 1 else ""
    table = Table(title=f"latency (ms) per load point{pooled}")
    cols = ["target", "point", "TTFT p50", "TPOT p50", "e2e p50", "e2e p90", "e2e p99", "req/s", "out tok/s", "errors"]
    for col in cols + (["goodput req/s", "SLO (good)"] if lat.slo else []):
        table.add_column(col, justify="right")
    for p in all_points:
        slo = [] if not lat.slo else ["–", "–"] if p.slo is None else [
            f(p.slo.goodput_req_s, 2), f"{'met' if p.slo.meets else 'missed'} {f((p.slo.good_share or 0) * 100, 0)}%"]
        table.add_row(p.target, p.name, f(p.ttft_ms.p50), f(p.tpot_ms.p50), f(p.e2e_ms.p50), f(p.e2e_ms.p90),
                      f(p.e2e_ms.p99), f(p.throughput.req_s, 2), f(p.throughput.output_tok_s), str(p.errors), *slo)
    if lat.slo:
        from toolkit.evaluation.maxload import slo_label

        console.print(f"SLO: {slo_label(lat.slo)}; goodput: requests/s meeting every threshold (good: their share)")
    console.print(table)
    if most > 1:
        from toolkit.evaluation.repeats import interval_table

        console.print(interval_table(all_points))
    if lat.max_load is not None:
        from toolkit.evaluation.maxload import describe

        console.print(f"[bold]{describe(lat.max_load)}[/]")
        ml = lat.max_load
        console.print(f"  {len(ml.trials)} trials in {f(ml.wall_s)} s; stopped: {ml.stopped}")
    r = report.resources
    console.print(f"resources: {f((r.size_on_disk_bytes or 0) / 2**20)} MiB on disk; engine start-up "
                  f"{f(r.engine_startup_s)} s; engine peak RSS {f(r.engine_peak_rss_mb, 0)} MiB"
                  + (f"; GPU {f(r.gpu_memory_mb, 0)} MiB" if r.gpu_memory_mb is not None else ""))
