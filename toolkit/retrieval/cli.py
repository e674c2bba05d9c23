"""``toolkit index build|info``: build a retrieval index from a JSONL corpus, or print an index's manifest.

``toolkit index build [--docs D] [--output DIR] [--index-type flat|ivf|ivfpq|hnsw] [--backend faiss|milvus]``
Defaults: the reference corpus (artifacts/reference/docs.jsonl) → artifacts/indexes/<index type>.
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
    i = sub.add_parser("info", help="print an index's manifest summary")
    i.add_argument("index", help="index directory")


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
    from rich.console import Console

    from toolkit.retrieval.index import build_index

    config = _config(args)
    docs = Path(args.docs) if args.docs else paths.REFERENCE_DOCS
    output = Path(args.output) if args.output else paths.INDEXES_DIR / config.faiss.index_type
    console = Console(stderr=True)
    console.print(f"indexing {docs} → {output} ({config.backend}, {config.faiss.index_type})")
    manifest = build_index(docs, output, config)
    r = manifest["results"]
    print(f"index: {output}  chunks={r['count']} docs={r['documents']} dim={r['dimension']} "
          f"type={r['index_type']} params={r['params']} build={r['build_time_s']} s")
    return 0
