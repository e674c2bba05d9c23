"""vLLM offline jobs (batch generation, decode/prefill throughput) run in the serving environment.

vLLM lives in ``.venv-vllm`` (its pins clash with llm-compressor's), so the main environment never imports
it: :mod:`toolkit.engine.client` writes a JSON job, runs :mod:`toolkit.engine.offline` with the serving
interpreter, and reads the JSON result. The OpenAI-compatible server is started by ``toolkit.serving``.
"""
