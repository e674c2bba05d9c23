"""Retrieval and endpoint benchmarks; every figure is measured in this run, ratios side by side.

``python -m toolkit.serving.bench [--chunks 10000] [--vectors 100000] [--model DIR] [--skip ...]
[--embedding-backend torch,onnx-int8]``

1. cold start: load a persisted N-chunk index vs rebuild it (chunk + embed + index + write), same corpus, same
   preloaded embedding model (its load time is printed separately; it is paid by both paths). Target ≥20×.
   The rebuild embeds in batches of 64 with one thread per core (nothing else is served during a build).
   Target ≤90 s at 10k chunks.
2. retrieval stage: embed + search p50 over distinct queries on the N-chunk flat index (cache off), wall time
   and this thread's CPU time (CPU time is what contention on a shared machine does not inflate), one embedding
   thread (as the endpoint runs it). Target ≤8 ms.
3. index types: recall@10 against flat and p50 single-query search latency for flat/ivf/ivfpq/hnsw at 100k
   synthetic 384-d vectors (a normalised Gaussian mixture, so neighbourhoods exist as in real embeddings).
4. endpoint overhead: (total − llm_total) from the endpoint's own timings, p50 over distinct queries, with vLLM
   and the endpoint started by ``running_stack`` on ``--model`` (the reference model by default). Target ≤12 ms.

``--embedding-backend`` (repeatable or a comma list, default torch; :mod:`toolkit.retrieval.embed_backends`)
runs [1], [2] and [4] once per backend, each on an index whose documents that backend embedded. Parts [2] and
[4] are interleaved (each query goes to every backend in turn, the order reversed every other query; [4] runs
one endpoint per backend on one engine), so a load that changes during the run weighs on every backend alike
and the speed-ups against the first backend (printed, ``*_speedup`` metrics) compare like with like.

The 10k-chunk corpus is synthetic: documents of sentences sampled (seeded) from Python standard-library
docstrings, chunked at ``--chunk-words`` words, because the reference corpus is smaller than 10k chunks.

Besides the printed lines, every figure goes to ``artifacts/reports/bench-serve.json`` (``--output``) in the
common results schema (:class:`toolkit.results.BenchRun`): timings with their per-sample percentiles
(``samples``; the metric's ``value`` is the p50 printed), labelled by ``chunks``, ``index_type``, ``vectors`` and
``embedding_backend``; the endpoint's figures are ``online_*`` at ``concurrency`` 1 (sequential requests).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import random
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.paths import REPORTS_DIR
from toolkit.results import BenchRun
from toolkit.stats import median as p50  # every figure here is a median (p50) of repeated timings

# OpenMP threads that busy-wait are ruinous on a shared machine: an IVF-PQ training measured 127-221 s with the
# default (active) policy vs 20 s passive on these 2 busy cores. Must be set before faiss/torch load OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MODULES = ("json", "collections", "functools", "textwrap", "pathlib", "re", "itertools", "string", "os", "shutil",
           "subprocess", "argparse", "logging", "typing", "datetime", "decimal", "fractions", "statistics",
           "random", "heapq", "bisect", "socket", "threading", "asyncio", "email", "http.client", "urllib.parse",
           "csv", "sqlite3", "zipfile", "tarfile", "tempfile", "inspect", "dataclasses", "enum", "abc", "io")


def stdlib_sentences() -> list[str]:
    out = []
    for name in MODULES:
        mod = importlib.import_module(name)
        for _, obj in inspect.getmembers(mod):
            doc = inspect.getdoc(obj) or ""
            out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())) if 6 <= len(s.split()) <= 60]
    return sorted(set(out))


def synthetic_docs(n_chunks: int, chunk_words: int, seed: int = 0) -> list[dict[str, str]]:
    """Documents of exactly 3 chunks each (sentences sampled with a fixed seed), ``n_chunks`` chunks in all."""
    rng, sentences = random.Random(seed), stdlib_sentences()
    docs = []
    for i in range((n_chunks + 2) // 3):
        words: list[str] = []
        while len(words) < 3 * chunk_words:
            words += rng.choice(sentences).split()
        docs.append({"id": f"syn-{i}", "title": f"synthetic {i}", "text": " ".join(words[:3 * chunk_words])})
    return docs


def cold_start_ratios(rebuild_s: float, load_s: float, embedder_load_s: float) -> tuple[float, float]:
    """(rebuild / load, the same with the embedding-model load added to both sides): how much a persisted
    index saves, without and with the cost both paths share."""
    return rebuild_s / load_s, (rebuild_s + embedder_load_s) / (load_s + embedder_load_s)


def recall_vs_truth(ids: Sequence[Sequence[int]], truth: Sequence[Sequence[int]]) -> float:
    """Mean over queries of |found ∩ exact| / k, k = the length of each exact row (recall@k against flat)."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, truth)]))


def endpoint_overhead_ms(timings: Mapping[str, float]) -> float:
    """What the endpoint adds to generation: its total time minus the engine's, from its own ``timings``."""
    return timings["total"] - timings["llm_total"]


def _timings(run: BenchRun, name: str, samples: list[float], labels: dict, definition: str = "") -> None:
    """A timing metric: per-sample percentiles, its value the p50 that is printed."""
    run.add(name, "ms", value=p50(samples), samples=samples, labels=labels, definition=definition)


def parse_backends(values: Sequence[str] | None) -> list[str]:
    """``--embedding-backend a,b --embedding-backend c`` → ``[a, b, c]`` (known and installed, no repeats);
    default ``[torch]``. A bad name is a one-line :class:`ToolkitError` naming the flag."""
    from toolkit.retrieval.embed_backends import check_backend, require

    names = [n.strip() for v in (values or ["torch"]) for n in v.split(",") if n.strip()]
    for n in names:
        check_backend(n, "--embedding-backend")
        require(n)
    if not names:
        raise ToolkitError("--embedding-backend: no backend named")
    return list(dict.fromkeys(names))


def alternate(items: Mapping[str, Any], i: int) -> list[tuple[str, Any]]:
    """The backends in order for even query ``i``, reversed for odd ones (ABBA): neither always goes first."""
    pairs = list(items.items())
    return pairs if i % 2 == 0 else pairs[::-1]


def build_threads() -> int:
    """Cores this process may use: the rebuild has them all (nothing is served while an index is built)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_embedders(backend: str, threads: int) -> tuple[Any, Any, float]:
    """(query embedder with 1 thread, as the endpoint runs it; build embedder with ``threads``; load seconds of
    the query one). ONNX Runtime and OpenVINO fix their threads per session, hence two embedders."""
    from toolkit.retrieval.config import default_embedding_model
    from toolkit.retrieval.embedding import Embedder

    t = time.perf_counter()
    query = Embedder(default_embedding_model(), threads=1, backend=backend)
    load_s = time.perf_counter() - t
    build = Embedder(default_embedding_model(), threads=threads, backend=backend)  # torch: sets its threads
    return query, build, load_s


def bench_cold_start(args, backend: str, embedder, build_embedder, embedder_load_s: float, run: BenchRun) -> Path:
    """[1] for one embedding backend: rebuild (batched, ``build_threads`` threads) vs load; returns the index."""
    import torch

    from toolkit.retrieval.config import IndexConfig
    from toolkit.retrieval.index import build_index, load_index

    docs = synthetic_docs(args.chunks, args.chunk_words)
    out = Path(args.workdir) / f"bench-{args.chunks}-{backend}"
    cfg = IndexConfig(chunk_words=args.chunk_words, chunk_overlap=0, batch_size=64)
    threads = build_threads()
    torch.set_num_threads(threads)  # tokenizer tensors and pooling run in torch for every backend
    t = time.perf_counter()
    r = build_index(docs, out, cfg, embedder=build_embedder, progress=True)["results"]
    rebuild = time.perf_counter() - t
    torch.set_num_threads(1)
    loads = []
    for _ in range(5):
        t = time.perf_counter()
        index = load_index(out, embedder=embedder)
        loads.append(time.perf_counter() - t)
        index.close()
    load = p50(loads)
    print(f"\n[1] cold start, {r['count']} chunks ({args.chunk_words} words each, flat, {r['dimension']}-d), "
          f"embedding backend {backend}")
    print(f"    rebuild (chunk+embed+index+write): {rebuild:8.2f} s   ({r['count'] / rebuild:.0f} chunks/s, "
          f"batch 64, {threads} threads; target <= 90 s at 10k)")
    print(f"    load persisted (p50 of 5):         {load * 1000:8.1f} ms")
    ratio, ratio_with_model = cold_start_ratios(rebuild, load, embedder_load_s)
    print(f"    ratio rebuild/load:                {ratio:8.0f}x   (target >= 20x)")
    print(f"    embedding model load (paid by both, not in either): {embedder_load_s:.2f} s -> "
          f"ratio with it on both sides {ratio_with_model:.1f}x")
    lab = {"chunks": r["count"], "index_type": "flat", "dim": r["dimension"], "embedding_backend": backend}
    run.add("index_rebuild_s", "s", value=rebuild, labels={**lab, "threads": threads, "embed_batch": 64},
            definition="chunk + embed + index + write")
    run.add("index_build_chunks_s", "chunks/s", value=r["count"] / rebuild,
            labels={**lab, "threads": threads, "embed_batch": 64}, definition="chunks / rebuild s")
    _timings(run, "index_load_ms", [x * 1000 for x in loads], lab, "load the persisted index")
    run.add("embedder_load_s", "s", value=embedder_load_s, labels={"embedding_backend": backend},
            definition="paid by both paths, in neither")
    run.add("cold_start_ratio", "ratio", value=ratio, labels=lab, definition="rebuild s / p50 load s")
    run.add("cold_start_ratio_with_model", "ratio", value=ratio_with_model, labels=lab,
            definition="(rebuild + embedder load) / (p50 load + embedder load)")
    return out


def bench_retrieval(args, indexes: Mapping[str, Any], queries: list[str], run: BenchRun) -> None:
    """[2], interleaved: each query is embedded and searched by every backend in turn, 1 thread."""
    import torch

    torch.set_num_threads(1)
    times = {b: {"embed": [], "search": [], "total": [], "cpu": []} for b in indexes}
    for index in indexes.values():
        index.search(queries[0], 10)  # warm-up
    for i, q in enumerate(queries):
        for b, index in alternate(indexes, i):
            c0, t0 = time.thread_time(), time.perf_counter()
            vec = index.embed(q)
            t1 = time.perf_counter()
            index.search_vector(vec, 5)
            t2 = time.perf_counter()
            m = times[b]
            m["cpu"].append((time.thread_time() - c0) * 1000)
            m["embed"].append((t1 - t0) * 1000), m["search"].append((t2 - t1) * 1000)
            m["total"].append((t2 - t0) * 1000)
    count = next(iter(indexes.values())).results["count"]
    print(f"\n[2] retrieval stage on {count} chunks, {len(queries)} distinct queries, 1 embedding thread, top_k=5"
          + (f", backends interleaved: {', '.join(indexes)}" if len(indexes) > 1 else ""))
    base = next(iter(indexes))
    for b, m in times.items():
        name = f"    {b:13s} " if len(indexes) > 1 else "    "
        print(f"{name}embed p50 {p50(m['embed']):6.2f} ms   search p50 {p50(m['search']):6.3f} ms   "
              f"embed+search p50 {p50(m['total']):6.2f} ms wall, {p50(m['cpu']):6.2f} ms CPU   (target <= 8 ms)")
        lab = {"chunks": count, "index_type": "flat", "dim": indexes[b].dimension, "embedding_backend": b,
               "top_k": 5, "threads": 1}
        _timings(run, "retrieval_embed_ms", m["embed"], lab, "query embedding, one query")
        _timings(run, "retrieval_search_ms", m["search"], lab, "vector search, one query")
        _timings(run, "retrieval_ms", m["total"], lab, "embed + search, wall time")
        _timings(run, "retrieval_cpu_ms", m["cpu"], lab, "embed + search, this thread's CPU time")
        if b != base:
            speed = p50(times[base]["total"]) / p50(m["total"])
            print(f"    {'':13s} {base} / {b} embed+search p50: {speed:.2f}x")
            run.add("retrieval_speedup", "ratio", value=speed, labels={**lab, "baseline": base},
                    definition=f"p50 embed+search of {base} / of this backend, interleaved")


def bench_index_types(args, run: BenchRun) -> None:
    import faiss

    from toolkit.retrieval.config import FaissParams
    from toolkit.retrieval.faiss_backend import build_faiss, effective_params

    rng = np.random.default_rng(0)
    d, n, nq = 384, args.vectors, args.queries
    centres = rng.standard_normal((1000, d)).astype(np.float32)
    x = centres[rng.integers(0, 1000, n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.integers(0, n, nq)] + 0.1 * rng.standard_normal((nq, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    print(f"\n[3] index types at {n} synthetic {d}-d vectors, {nq} queries, single-query latency, recall@10 vs flat")
    flat10k = faiss.IndexFlatIP(d)
    flat10k.add(x[:10_000])
    lat10k = []
    for i in range(nq):
        t = time.perf_counter()
        flat10k.search(q[i:i + 1], 10)
        lat10k.append((time.perf_counter() - t) * 1000)
    print(f"    (flat search p50 at 10k vectors: {p50(lat10k):.3f} ms: the search part of the retrieval stage at 10k)")
    _timings(run, "search_ms", lat10k, {"index_type": "flat", "vectors": 10_000, "dim": d}, "one query, top 10")
    truth = None
    for kind in ("flat", "ivf", "ivfpq", "hnsw"):
        eff = effective_params(FaissParams(index_type=kind, nlist=args.nlist), n, d)
        t = time.perf_counter()
        index = build_faiss(x, eff)
        build_s = time.perf_counter() - t
        _, ids = index.search(q, 10)
        truth = ids if truth is None else truth
        recall = recall_vs_truth(ids, truth)
        lat = []
        for i in range(nq):
            t = time.perf_counter()
            index.search(q[i:i + 1], 10)
            lat.append((time.perf_counter() - t) * 1000)
        size = faiss.serialize_index(index).nbytes
        mem = size / 2**20
        knobs = ", ".join(f"{k}={v}" for k, v in eff.items() if k != "index_type")
        print(f"    {kind:6s} recall@10 {recall:5.3f}   p50 {p50(lat):7.3f} ms   build {build_s:6.1f} s   "
              f"size {mem:6.1f} MiB   {knobs}")
        lab = {"index_type": kind, "vectors": n, "dim": d, **{k: v for k, v in eff.items() if k != "index_type"}}
        run.add("recall_at_10", "share", value=recall, labels=lab, definition="|found ∩ exact (flat)| / 10, mean")
        _timings(run, "search_ms", lat, lab, "one query, top 10")
        run.add("index_build_s", "s", value=build_s, labels=lab)
        run.add("index_size", "bytes", value=size, labels=lab)


def bench_endpoint(args, index_dirs: Mapping[str, Path], queries: list[str], run: BenchRun) -> None:
    """[4]: one engine, one endpoint per embedding backend (each on its own index), requests interleaved."""
    import httpx

    from toolkit.paths import REFERENCE_MODEL
    from toolkit.serving.stack import running_stack

    model = Path(args.model) if args.model else REFERENCE_MODEL
    names = list(index_dirs)
    print(f"\n[4] endpoint overhead: vLLM-CPU on {model} + RAG endpoint"
          f"{' per embedding backend (' + ', '.join(names) + ', interleaved)' if len(names) > 1 else ''}, "
          f"{len(queries)} distinct queries, max_tokens 8, sequential")
    with ExitStack() as stack:
        first = stack.enter_context(running_stack(model, index_dirs[names[0]], profile=args.profile,
                                                  engine_url=args.engine_url, progress=True))
        stacks = {names[0]: first}
        for b in names[1:]:  # the same engine: only the endpoint (and its embedder) differs
            stacks[b] = stack.enter_context(running_stack(model, index_dirs[b], profile=args.profile,
                                                          engine_url=first.engine_url))
        over = {b: [] for b in names}
        client_over = {b: [] for b in names}
        with httpx.Client(timeout=300) as c:
            for s in stacks.values():
                c.post(f"{s.url}/v1/rag", json={"query": "warm-up", "max_tokens": 8})
            for i, qtext in enumerate(queries):
                for b, s in alternate(stacks, i):
                    t = time.perf_counter()
                    body = c.post(f"{s.url}/v1/rag", json={"query": qtext, "max_tokens": 8}).json()
                    wall = (time.perf_counter() - t) * 1000
                    tm = body["timings"]
                    over[b].append(endpoint_overhead_ms(tm))
                    client_over[b].append(wall - tm["llm_total"])
        print(f"    engine start-up {first.engine_startup_s:.1f} s")
        run.add("engine_startup_s", "s", value=first.engine_startup_s, labels={"model": str(model)})
        for b in names:
            name = f" [{b}]" if len(names) > 1 else ""
            print(f"    overhead p50 (server total - llm_total){name}: {p50(over[b]):6.2f} ms   (target <= 12 ms)")
            print(f"    overhead p50 seen by the client (incl. HTTP + JSON){name}: {p50(client_over[b]):6.2f} ms")
            lab = {"concurrency": 1, "max_tokens": 8, "model": str(model), "embedding_backend": b}
            _timings(run, "online_endpoint_overhead_ms", over[b], lab, "server total - llm_total (endpoint's timings)")
            _timings(run, "online_client_overhead_ms", client_over[b], lab,
                     "client wall - llm_total (incl. HTTP + JSON)")
            if b != names[0]:
                speed = p50(over[names[0]]) / p50(over[b])
                print(f"    {names[0]} / {b} overhead p50: {speed:.2f}x")
                run.add("online_endpoint_overhead_speedup", "ratio", value=speed, labels={**lab, "baseline": names[0]},
                        definition=f"p50 endpoint overhead of {names[0]} / of this backend, interleaved")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m toolkit.serving.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--chunk-words", type=int, default=32)
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--model", help="model for the endpoint benchmark (default: artifacts/reference/model)")
    ap.add_argument("--profile", help="serving profile (default serve/cpu.yaml)")
    ap.add_argument("--engine-url", help="reuse a running engine for [4]")
    ap.add_argument("--skip", nargs="*", default=[], choices=("cold", "types", "endpoint"))
    ap.add_argument("--embedding-backend", action="append", dest="embedding_backend", metavar="NAME[,NAME]",
                    help="embedding backend(s) for [1], [2] and [4], repeatable or comma-separated (default torch; "
                    "toolkit.retrieval.embed_backends)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--output", "--report", dest="output", default=str(REPORTS_DIR / "bench-serve.json"),
                    help="results file (common schema, toolkit.results)")
    args = ap.parse_args(argv)
    try:
        args.embedding_backend = parse_backends(args.embedding_backend)
    except ToolkitError as exc:
        ap.error(str(exc))  # one line, exit 2
    run = BenchRun("bench-serve", config={k: v for k, v in vars(args).items() if k not in ("output", "workdir")})
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="toolkit-bench-serve-")
    hw = run.env["hardware"]
    print(f"machine: {hw.get('cpu', {}).get('model')} ({hw.get('cpu', {}).get('cores')} cores), "
          f"load average {run.env['load_avg_start'][0]:.1f} at start, {run.env['started_utc']}")
    rng = random.Random(1)
    queries = [" ".join(s.split()[:12]) for s in rng.sample(stdlib_sentences(), args.queries)]
    index_dirs: dict[str, Path] = {}
    if "cold" not in args.skip or "endpoint" not in args.skip:
        from toolkit.retrieval.index import load_index

        embedders = {}
        for b in args.embedding_backend:
            embedders[b], build_embedder, load_s = load_embedders(b, build_threads())
            index_dirs[b] = bench_cold_start(args, b, embedders[b], build_embedder, load_s, run)
            del build_embedder
        indexes = {b: load_index(index_dirs[b], embedder=embedders[b]) for b in index_dirs}
        try:
            bench_retrieval(args, indexes, queries, run)
        finally:
            for index in indexes.values():
                index.close()
    if "types" not in args.skip:
        bench_index_types(args, run)
    if "endpoint" not in args.skip:
        bench_endpoint(args, index_dirs, queries[:30], run)
    out = run.write(args.output)
    load_end = json.loads(out.read_text())["environment"]["load_avg_end"][0]
    print(f"\nload average {load_end:.1f} at end (other jobs share these cores: wall times are inflated)")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
