"""Embedding backend selection: measure every installed backend here and pick the fastest within a recall budget.

``python -m toolkit.retrieval.embed_select`` (or ``toolkit index select-backend``) measures, for each installed
backend of :mod:`toolkit.retrieval.embed_backends`:

- query latency at batch 1 (``encode_query`` of real questions), p50/p95 over all samples and the interval of
  the per-round p50 across repeats (:func:`toolkit.stats.interval`). Rounds interleave the backends, rotating
  their order, so a burst of load from a neighbour hits all of them alike;
- indexing throughput at batch 64 (chunks/s over a fixed sample of corpus chunks), interleaved the same way;
- recall@1/5/10 of the gold document over the whole chunked corpus (exact inner-product search, so the figure
  is the embedder's, not an ANN index's) for every (documents backend, query backend) pair, with
  :func:`toolkit.evaluation.metrics.recall_at_k`, the definition the QA evaluation uses.

The choice: the backend with the lowest query p50 whose own pair (documents and queries embedded by it) keeps
recall@5 within ``budget`` points of fp32 torch. The result file (:class:`toolkit.results.BenchRun` schema,
CPU flags and load average included) lists every measured pair and whether it is within the budget;
:func:`pair_allowed` reads it when an index built with one backend is queried with another.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import paths
from toolkit.errors import ToolkitError

DEFAULT_OUTPUT = paths.REPORTS_DIR / "embed-select.json"
KS = (1, 5, 10)
BENCH = "embed-select"


# --- reading a selection result --------------------------------------------------------------------------


def load_selection(path: str | Path | None = None) -> dict[str, Any] | None:
    """The selection section of a result file (default :data:`DEFAULT_OUTPUT`); None when there is none."""
    from toolkit.results import read_results

    p = Path(path) if path else DEFAULT_OUTPUT
    if not p.is_file():
        return None
    data = read_results(p)
    if data.get("bench") != BENCH or "selection" not in data:
        raise ToolkitError(f"{p}: not an embedding backend selection result")
    return data["selection"]


def pair_allowed(selection: dict[str, Any] | None, model_id: str, docs_backend: str, query_backend: str) -> bool:
    """Whether the selection measured documents embedded by ``docs_backend`` searched with queries embedded by
    ``query_backend`` (same model) and found that pair within its recall budget."""
    if docs_backend == query_backend:
        return True
    if not selection or selection.get("model_id") != model_id:
        return False
    return any(p["docs"] == docs_backend and p["query"] == query_backend and p["within_budget"]
               for p in selection.get("pairs", []))


# --- measuring -------------------------------------------------------------------------------------------


def _questions(qa_path: Path, split: str | None) -> list[tuple[str, str]]:
    from toolkit.jsonl import read_jsonl

    rows = read_jsonl(qa_path, "QA file not found (run `make reference`)",
                      require={"question": str, "doc_id": object})
    pairs = [(r["question"], str(r["doc_id"])) for r in rows if split is None or r.get("split") == split]
    if not pairs:
        raise ToolkitError(f"{qa_path}: no QA pairs in split {split!r}")
    return pairs


def recall_table(doc_vecs: np.ndarray, chunk_doc_ids: list[str], q_vecs: np.ndarray,
                 gold: list[str]) -> dict[str, float]:
    """recall@k (k in :data:`KS`) of the gold document among the top-k chunks by inner product."""
    from toolkit.evaluation.metrics import recall_at_k

    k = max(KS)
    top = np.argsort(-(q_vecs @ doc_vecs.T), axis=1)[:, :k]
    ranked = [([chunk_doc_ids[i] for i in row], g) for row, g in zip(top, gold)]
    return {str(k): recall_at_k(ranked, k) for k in KS}


def choose(backends: dict[str, dict[str, Any]], reference: str, budget: float) -> str:
    """Fastest query p50 among backends whose own recall@5 is within ``budget`` points of ``reference``'s."""
    floor = backends[reference]["recall_at_k"]["5"] - budget / 100
    ok = [b for b, m in backends.items() if m["recall_at_k"]["5"] >= floor - 1e-12]
    return min(ok, key=lambda b: backends[b]["query_p50_ms"])


def _rounds(names: list[str], repeats: int):
    """Backend order per round, rotated so none always runs first (after a cache-cold neighbour)."""
    for r in range(repeats):
        k = r % len(names)
        yield r, names[k:] + names[:k]


def run_selection(backends: list[str], docs: Path, qa: Path, *, split: str | None = "test", budget: float = 1.0,
                  repeats: int = 5, latency_queries: int = 40, throughput_chunks: int = 256, threads: int = 1,
                  max_questions: int | None = None, cache_dir: Path | None = None, output: Path = DEFAULT_OUTPUT,
                  seed: int = 0) -> dict[str, Any]:
    """Measure ``backends`` (``torch`` is always included: it is the reference) and write the result file."""
    from rich.progress import Progress

    from toolkit.results import BenchRun
    from toolkit.retrieval import embed_backends as eb
    from toolkit.retrieval.chunking import chunk_docs, read_docs
    from toolkit.retrieval.config import IndexConfig
    from toolkit.retrieval.embedding import Embedder
    from toolkit.stats import interval, percentile

    names = ["torch", *[eb.check_backend(b, "--backends") for b in backends if b != "torch"]]
    for b in names:
        eb.require(b)
    cfg = IndexConfig()
    chunks = list(chunk_docs(read_docs(docs), cfg.chunk_words, cfg.chunk_overlap))
    questions = _questions(qa, split)
    rng = random.Random(seed)
    if max_questions and len(questions) > max_questions:
        questions = rng.sample(questions, max_questions)
    lat_queries = [q for q, _ in rng.sample(questions, min(latency_queries, len(questions)))]
    tput_texts = [c.text for c in rng.sample(chunks, min(throughput_chunks, len(chunks)))]
    run = BenchRun(BENCH, config={"backends": names, "docs": str(docs), "qa": str(qa), "split": split,
                                  "budget_recall_at_5_points": budget, "repeats": repeats, "threads": threads,
                                  "chunks": len(chunks), "questions": len(questions),
                                  "latency_queries": len(lat_queries), "throughput_chunks": len(tput_texts)})
    calibration = [c.text for c in chunks[:: max(1, len(chunks) // eb.CALIBRATION_SIZE)]][: eb.CALIBRATION_SIZE]
    embedders: dict[str, Embedder] = {}
    for b in names:
        t0 = time.perf_counter()
        embedders[b] = Embedder(cfg.embedding_model, threads=threads, backend=b, cache_dir=cache_dir,
                                calibration=calibration)
        run.add("embedder_load_s", "s", value=time.perf_counter() - t0, labels={"backend": b},
                definition="load (and, the first time, export) of the embedder")
        embedders[b].encode(lat_queries[:5], batch_size=1)  # warm-up: first calls allocate
    model_id = embedders["torch"].model_id
    lat: dict[str, list[float]] = {b: [] for b in names}
    round_p50: dict[str, list[float]] = {b: [] for b in names}
    tput: dict[str, list[float]] = {b: [] for b in names}
    with Progress(transient=True) as progress:
        task = progress.add_task("latency + throughput rounds", total=repeats * len(names))
        for _, order in _rounds(names, repeats):
            for b in order:
                e, xs = embedders[b], []
                for q in lat_queries:
                    t = time.perf_counter()
                    e.encode_query(q)
                    xs.append((time.perf_counter() - t) * 1000)
                lat[b] += xs
                round_p50[b].append(percentile(xs, 50))
                t = time.perf_counter()
                e.encode(tput_texts, batch_size=64)
                tput[b].append(len(tput_texts) / (time.perf_counter() - t))
                progress.advance(task)
        doc_vecs, q_vecs = {}, {}
        task = progress.add_task("embedding the corpus per backend (recall)", total=len(names))
        for b in names:
            doc_vecs[b] = embedders[b].encode([c.text for c in chunks], batch_size=64)
            q_vecs[b] = embedders[b].encode([q for q, _ in questions], batch_size=64)
            progress.advance(task)
    chunk_ids, gold = [c.doc_id for c in chunks], [g for _, g in questions]
    pairs = [{"docs": d, "query": q, "recall_at_k": recall_table(doc_vecs[d], chunk_ids, q_vecs[q], gold)}
             for d in names for q in names]
    ref5 = next(p for p in pairs if p["docs"] == p["query"] == "torch")["recall_at_k"]["5"]
    for p in pairs:
        p["within_budget"] = p["recall_at_k"]["5"] >= ref5 - budget / 100 - 1e-12
        for k, v in p["recall_at_k"].items():
            run.add("recall_at_k", "share", value=v, labels={"docs_backend": p["docs"], "query_backend": p["query"],
                                                               "k": int(k)},
                    definition="gold document among the top-k chunks, exact inner-product search, mean")
    summary: dict[str, dict[str, Any]] = {}
    for b in names:
        run.add("offline_query_embed_ms", "ms", samples=lat[b], labels={"backend": b, "batch_size": 1},
                definition="encode_query of one question, per request")
        run.add("offline_query_embed_p50_ms", "ms", repeats=round_p50[b], labels={"backend": b, "batch_size": 1},
                definition="p50 of one round's queries, across rounds")
        run.add("offline_index_embed_chunks_s", "chunks/s", repeats=tput[b], labels={"backend": b, "batch_size": 64},
                definition="chunks embedded per second at batch 64, one value per round")
        own = next(p for p in pairs if p["docs"] == p["query"] == b)
        summary[b] = {"query_p50_ms": percentile(lat[b], 50), "query_p95_ms": percentile(lat[b], 95),
                      "query_p50_ci_ms": [interval(round_p50[b])["ci_low"], interval(round_p50[b])["ci_high"]],
                      "chunks_per_s": interval(tput[b])["mean"], "recall_at_k": own["recall_at_k"],
                      "export": eb.export_info(embedders[b].export_path)}
    chosen = choose(summary, "torch", budget)
    selection = {"model_id": model_id, "chosen": chosen, "reference": "torch", "budget_recall_at_5_points": budget,
                 "criterion": "lowest query p50 (batch 1) among backends whose recall@5 is within the budget",
                 "backends": summary, "pairs": pairs, "threads": threads}
    run.write(output, extra={"selection": selection})
    return selection


def _table(sel: dict[str, Any]) -> str:
    rows = ["backend        query p50 ms  p95 ms   chunks/s@64  R@1    R@5    R@10"]
    for b, m in sel["backends"].items():
        r = m["recall_at_k"]
        rows.append(f"{b:14s} {m['query_p50_ms']:11.2f} {m['query_p95_ms']:7.2f} {m['chunks_per_s']:12.1f}  "
                    f"{r['1']:.3f}  {r['5']:.3f}  {r['10']:.3f}{'  <- chosen' if b == sel['chosen'] else ''}")
    return "\n".join(rows)


def configure(p: argparse.ArgumentParser) -> None:
    from toolkit.retrieval.embed_backends import BACKENDS

    p.add_argument("--backends", default=None, help=f"comma-separated subset of {','.join(BACKENDS)} "
                   "(default: every installed one)")
    p.add_argument("--docs", default=str(paths.REFERENCE_DOCS), help="corpus JSONL (default: reference docs)")
    p.add_argument("--qa", default=str(paths.REFERENCE_QA), help="QA JSONL with question/doc_id (reference QA)")
    p.add_argument("--split", default="test", help="QA split to use ('all': every pair)")
    p.add_argument("--budget", type=float, default=1.0, help="allowed recall@5 drop vs fp32 torch, in points")
    p.add_argument("--repeats", type=int, default=5, help="interleaved latency/throughput rounds")
    p.add_argument("--latency-queries", type=int, default=40, help="questions timed per backend per round")
    p.add_argument("--max-questions", type=int, default=None, help="cap on QA pairs for recall (default: all)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per embedder (the endpoint uses 1)")
    p.add_argument("--cache-dir", default=None, help="export cache (default: artifacts/embedders)")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT))


def run_cli(args: argparse.Namespace) -> int:
    from toolkit.retrieval.embed_backends import installed_backends

    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else installed_backends()
    if args.repeats < 2:
        raise ToolkitError("--repeats: at least 2 (an interval needs two rounds)")
    sel = run_selection(backends, Path(args.docs), Path(args.qa), split=None if args.split == "all" else args.split,
                        budget=args.budget, repeats=args.repeats, latency_queries=args.latency_queries,
                        threads=args.threads, max_questions=args.max_questions,
                        cache_dir=Path(args.cache_dir) if args.cache_dir else None, output=Path(args.output))
    print(_table(sel))
    print(f"chosen: {sel['chosen']} (set `retrieval.embedding_backend: {sel['chosen']}` in the serve profile and "
          f"build indexes with `toolkit index build --embedding-backend {sel['chosen']}`); result: {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from toolkit.cli import run_guarded

    p = argparse.ArgumentParser(prog="python -m toolkit.retrieval.embed_select", description=__doc__.split("\n")[0])
    configure(p)
    return run_guarded(run_cli, p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
