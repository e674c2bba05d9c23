"""Bench: adding documents to a persisted index in place (:func:`toolkit.retrieval.index.update_index`) against
rebuilding it (:func:`toolkit.retrieval.index.build_index`) with the same documents.

Method: the reference corpus (``artifacts/reference/docs.jsonl``) is chunked finely enough that its first
documents give ``chunks`` (default 10,000) chunks; those documents form the base index, the next ``add``
(default 100) documents are the new ones. *Rebuild* = ``build_index`` of base + new (chunk, embed every chunk,
index, write), timed ``rebuild_repeats`` times (default 1: on a shared 2-core CPU one takes minutes); *add* =
``update_index`` of a fresh copy of the base index with the new documents (chunk and embed only them, copy the
directory, add to the store and the index, install), timed ``repeats`` times; *remove* = ``update_index``
removing the same documents again. Embedding dominates both, so the speedup is bounded by the ratio of chunks
embedded (rebuild chunks / added chunks), reported beside it. One embedder, loaded beforehand, serves
every run (model load is in neither figure). Figures go through :class:`toolkit.results.BenchRun` (mean, 95%
CI and CV across repeats, hardware, load average at start and end).

    python -m toolkit.retrieval.bench_update [--chunks 10000] [--add 100] [--repeats 3] [--rebuild-repeats 1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from toolkit import paths
from toolkit.errors import ToolkitError
from toolkit.results import BenchRun
from toolkit.retrieval.chunking import chunk_docs, read_docs
from toolkit.retrieval.config import FaissParams, IndexConfig


def split_corpus(docs: list[dict[str, Any]], chunks: int, add: int, words: int, overlap: int
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The first documents holding ``chunks`` chunks (at least), the ``add`` documents after them, and the
    base's actual chunk count."""
    total = 0
    for i, d in enumerate(docs):
        total += len(list(chunk_docs([d], words, overlap)))
        if total >= chunks:
            if i + 1 + add > len(docs):
                break
            return docs[:i + 1], docs[i + 1:i + 1 + add], total
    raise ToolkitError(f"the corpus has too few documents for {chunks} chunks plus {add} new documents at "
                       f"{words} words per chunk (lower --chunk-words)")


def bench_update(docs_path: Path, chunks: int = 10_000, add: int = 100, repeats: int = 3, index_type: str = "flat",
                 chunk_words: int = 24, chunk_overlap: int = 4, out: Path | None = None,
                 threads: int | None = 1, rebuild_repeats: int = 1) -> dict[str, Any]:
    """Run the comparison; write and return the results (``toolkit.results`` schema)."""
    from rich.console import Console

    from toolkit.retrieval.embedding import Embedder
    from toolkit.retrieval.index import build_index, update_index

    console = Console(stderr=True)
    docs = read_docs(docs_path)
    base, new, base_chunks = split_corpus(docs, chunks, add, chunk_words, chunk_overlap)
    cfg = IndexConfig(chunk_words=chunk_words, chunk_overlap=chunk_overlap, faiss=FaissParams(index_type=index_type))
    embedder = Embedder(cfg.embedding_model, threads=threads)
    added_chunks = len(list(chunk_docs(new, chunk_words, chunk_overlap)))
    run = BenchRun("bench-index-update", config={
        "docs": str(docs_path), "base_docs": len(base), "base_chunks": base_chunks, "added_docs": len(new),
        "added_chunks": added_chunks, "index_type": index_type, "chunk_words": chunk_words,
        "chunk_overlap": chunk_overlap, "repeats": repeats, "rebuild_repeats": rebuild_repeats,
        "embedding_model": embedder.model_id, "torch_threads": threads})
    base_s, rebuild_s, add_s, remove_s = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-index-update-") as tmp:
        work = Path(tmp)
        console.print(f"building the base index: {len(base)} docs, {base_chunks} chunks ({index_type})")
        t = time.perf_counter()
        build_index(base, work / "base", cfg, embedder=embedder, progress=False)
        base_s.append(time.perf_counter() - t)
        for r in range(rebuild_repeats):
            shutil.rmtree(work / "rebuilt", ignore_errors=True)
            t = time.perf_counter()
            build_index(base + new, work / "rebuilt", cfg, embedder=embedder, progress=False)
            rebuild_s.append(time.perf_counter() - t)
            console.print(f"rebuild {r + 1}/{rebuild_repeats}: {rebuild_s[-1]:.1f} s")
        for r in range(repeats):
            shutil.rmtree(work / "updated", ignore_errors=True)
            shutil.copytree(work / "base", work / "updated")  # the copy is setup, not part of the add
            t = time.perf_counter()
            update_index(work / "updated", new, embedder=embedder)
            add_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            update_index(work / "updated", remove=[d["id"] for d in new], embedder=embedder)
            remove_s.append(time.perf_counter() - t)
            console.print(f"repeat {r + 1}/{repeats}: add {add_s[-1]:.3f} s, remove {remove_s[-1]:.3f} s")
    labels = {"index_type": index_type}
    run.add("index_build_base_s", "s", repeats=base_s, labels=labels,
            definition=f"build_index of the {len(base)} base docs ({base_chunks} chunks)")
    run.add("index_rebuild_s", "s", repeats=rebuild_s, labels=labels,
            definition=f"build_index of {len(base) + len(new)} docs from scratch (embedding every chunk)")
    run.add("index_add_s", "s", repeats=add_s, labels=labels,
            definition=f"update_index adding {len(new)} docs to the {base_chunks}-chunk index (atomic install)")
    run.add("index_remove_s", "s", repeats=remove_s, labels=labels,
            definition=f"update_index removing the same {len(new)} docs")
    from toolkit.stats import median

    run.add("add_speedup_vs_rebuild", "ratio", value=median(rebuild_s) / median(add_s), labels=labels,
            definition="median rebuild time / median add time (goal >= 50)")
    run.add("embedded_chunks_ratio", "ratio", value=(base_chunks + added_chunks) / added_chunks, labels=labels,
            definition="chunks a rebuild embeds / chunks an add embeds: the bound on the speedup")
    out = out or paths.REPORTS_DIR / f"bench-index-update-{index_type}.json"
    run.write(out)
    return run.to_json()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", default=str(paths.REFERENCE_DOCS))
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--add", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--index-type", default="flat", choices=("flat", "ivf", "ivfpq", "hnsw"))
    ap.add_argument("--chunk-words", type=int, default=24)
    ap.add_argument("--rebuild-repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the embedder (1: the machine is "
                    "shared; two threads on a busy 2-core machine spin)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    try:
        data = bench_update(Path(args.docs), args.chunks, args.add, args.repeats, args.index_type,
                            args.chunk_words, out=Path(args.out) if args.out else None, threads=args.threads,
                            rebuild_repeats=args.rebuild_repeats)
    except ToolkitError as exc:
        print(f"error: {exc}")
        return 2
    def fmt(x: float | None, spec: str = ".4g") -> str:
        return "n/a" if x is None else format(x, spec)

    for m in data["metrics"]:
        iv = m["interval"] or {}
        print(f"{m['name']:<24} mean {fmt(m['value'])} {m['unit']}  95% CI [{fmt(iv.get('ci_low'))}, "
              f"{fmt(iv.get('ci_high'))}]  CV {fmt(iv.get('cv'), '.3f')}  values {[round(v, 4) for v in iv.get('values', [])]}")
    env = data["environment"]
    print(f"load average start {env['load_avg_start']} end {env['load_avg_end']}; wall {env['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
