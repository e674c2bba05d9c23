"""Retrieval stage: chunk documents, embed them with sentence-transformers, index them in FAISS (or Milvus),
keep chunk texts in SQLite beside the index, and load it all back with model/dimension checks.

Entry points: :func:`toolkit.retrieval.index.build_index`, :func:`toolkit.retrieval.index.load_index`.
"""
