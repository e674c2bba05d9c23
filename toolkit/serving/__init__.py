"""Serving stage: vLLM engine launcher (profiles in ``serve/``), the FastAPI RAG endpoint in front of it, and
:func:`toolkit.serving.stack.running_stack` to run both, for ``toolkit serve``, benchmarks and evaluation."""
