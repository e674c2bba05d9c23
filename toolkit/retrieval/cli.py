"""``toolkit index build|add|remove|info``: build a retrieval index from a JSONL corpus, add or remove documents
in place, or print an index's manifest.

``toolkit index build [--docs D] [--output DIR] [--index-type flat|ivf|ivfpq|hnsw] [--backend faiss|milvus]``
Defaults: the reference corpus (artifacts/reference/docs.jsonl) → artifacts/indexes/<index type>.
``toolkit index add --docs new.jsonl [--index DIR]``: embed only the new documents (same id = replace).
``toolkit index remove --ids ID [ID ...] [--index DIR]``: ids separated by spaces or commas; an unknown id is
an error and the index is left untouched. Both write a new ``index_version`` (default index:
artifacts/indexes/flat).
``toolkit index build --embedding-backend onnx-int8`` embeds with another runtime (recorded in the manifest);
``toolkit index select-backend`` measures the installed embedding backends and picks one
(:mod:`toolkit.retrieval.embed_select`).
"""

from __future__ import annotations

import argparse
import json

from toolkit.retrieval.backend import BACKENDS
from toolkit.retrieval.config import INDEX_TYPES


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="chunk, embed and index documents")
    b.add_argument("--docs", help="JSONL of {id,title,text} (default: artifacts/reference/docs.jsonl)")
    b.add_argument("--output", help="index directory (default: artifacts/indexes/<index type>)")
    b.add_argument("--index-type", choices=INDEX_TYPES, default=None)
    b.add_argument("--backend", choices=tuple(BACKENDS), default=None)
    b.add_argument("--config", help="YAML with IndexConfig keys (chunking, faiss knobs, milvus uri)")
    b.add_argument("--embedding-model", help="sentence-transformers model directory (default: all-MiniLM-L6-v2)")
    b.add_argument("--milvus-uri", help="Milvus standalone/distributed URI (default: milvus-lite file in --output)")
    b.add_argument("--embedding-backend", default="torch", help="embedder runtime: torch, onnx, onnx-int8, "
                   "openvino, openvino-int8 (see `toolkit index select-backend`)")
    a = sub.add_parser("add", help="add (or replace) documents in a built index without rebuilding it")
    a.add_argument("--docs", required=True, help="JSONL of {id,title,text,...metadata} to add")
    a.add_argument("--index", help="index directory (default: artifacts/indexes/flat)")
    r = sub.add_parser("remove", help="remove documents (by id) from a built index without rebuilding it")
    r.add_argument("--ids", required=True, nargs="+", help="document ids (space- or comma-separated)")
    r.add_argument("--index", help="index directory (default: artifacts/indexes/flat)")
    i = sub.add_parser("info", help="print an index's manifest summary")
    i.add_argument("index", help="index directory")
    from toolkit.retrieval.embed_select import configure as configure_select

    configure_select(sub.add_parser("select-backend", help="measure embedding backends (latency, throughput, "
                                    "recall) and choose the fastest within a recall budget"))


def _config(args: argparse.Namespace):
    from toolkit.config import apply_overrides, load_recipe, validate
    from toolkit.retrieval.config import IndexConfig

    overrides = {k: v for k, v in {"faiss.index_type": args.index_type, "backend": args.backend,
                                   "embedding_model": args.embedding_model,
                                   "milvus_uri": args.milvus_uri}.items() if v is not None}
    if args.config:
        return load_recipe(args.config, IndexConfig, overrides)
    return validate(IndexConfig, apply_overrides({}, overrides), "command line")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from toolkit import paths

    if args.action == "info":
        from toolkit.retrieval.index import read_index_manifest

        m = read_index_manifest(args.index)
        print(json.dumps({**m["results"], "timings_s": m["timings_s"]}, indent=2))
        return 0
    if args.action in ("add", "remove"):
        return _update(args)
    if args.action == "select-backend":
        from toolkit.retrieval.embed_select import run_cli

        return run_cli(args)
    from rich.console import Console

    from toolkit.retrieval.index import build_index

    config = _config(args)
    docs = Path(args.docs) if args.docs else paths.REFERENCE_DOCS
    output = Path(args.output) if args.output else paths.INDEXES_DIR / config.faiss.index_type
    console = Console(stderr=True)
    console.print(f"indexing {docs} → {output} ({config.backend}, {config.faiss.index_type})")
    manifest = build_index(docs, output, config, embedding_backend=args.embedding_backend)
    r = manifest["results"]
    print(f"index: {output}  chunks={r['count']} docs={r['documents']} dim={r['dimension']} "
          f"type={r['index_type']} params={r['params']} build={r['build_time_s']} s")
    return 0


def _update(args: argparse.Namespace) -> int:
    from pathlib import Path

    from toolkit import paths
    from toolkit.retrieval.index import update_index

    index = Path(args.index) if args.index else paths.INDEXES_DIR / "flat"
    if args.action == "add":
        m = update_index(index, docs=Path(args.docs))
    else:
        ids = [i for part in args.ids for i in part.split(",") if i.strip()]
        m = update_index(index, remove=[i.strip() for i in ids])
    r = m["results"]
    print(f"index: {index}  version {r['previous_version']} → {r['index_version']}  chunks={r['count']} "
          f"docs={r['documents']}  {r['last_update']}")
    return 0
