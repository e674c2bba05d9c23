"""Make LLM-backed RAG systems fast, and prove it.

Stages, one subpackage each: ``reference`` (offline corpus, tokenizer, model), ``quantize``, ``distill``,
``precision``, ``retrieval``, ``serving``, ``evaluation``. Shared plumbing: ``config`` (strict recipes),
``manifest`` (atomic artifacts + provenance), ``hardware`` (what this machine can do), ``modeling``
(loading causal LMs, perplexity).
"""

__version__ = "0.1.0"
