"""Serving profiles (``serve/*.yaml``): engine flags for vLLM plus endpoint and retrieval settings.

Validated by strict pydantic models, so a misspelt key is an error naming the file and field. The engine
section maps one-to-one onto ``vllm.entrypoints.openai.api_server`` flags (:func:`engine_command`); anything
not modelled goes in ``engine.extra_args`` (``{flag_name: value}``, ``true`` for a bare flag).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from toolkit.config import StrictModel, load_recipe
from toolkit.engine.llamacpp import LlamaCppSettings
from toolkit.errors import ToolkitError
from toolkit.paths import SERVE_DIR
from toolkit.prompt import SYSTEM_PROMPT

Scalar = str | int | float | bool


class EngineSettings(StrictModel):
    kind: Literal["vllm", "llamacpp"] = Field("vllm", description="vllm, or llama.cpp's llama-server serving a "
                                              "GGUF model directory (make setup-llamacpp; toolkit.engine.llamacpp)")
    llamacpp: LlamaCppSettings = Field(default_factory=LlamaCppSettings,
                                       description="kind llamacpp only: threads, slots, batches")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    max_model_len: int | None = Field(None, ge=16, description="context length; default: the model's")
    kv_cache_space_gib: float | None = Field(
        None, gt=0, description="CPU only: VLLM_CPU_KVCACHE_SPACE (GiB of KV cache)")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=0.98, description="CUDA only: fraction of GPU memory for weights + KV cache; leave room "
        "for the FAISS index and its scratch memory")
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    attention_backend: str | None = Field(None, description="e.g. FLASH_ATTN (CUDA); CPU picks its own")
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    enable_prefix_caching: bool = Field(
        False, description="reuse KV of shared prompt prefixes (system prompt); off by default so before/after "
        "comparisons measure the model, not the cache")
    max_num_seqs: int | None = Field(None, ge=1)
    startup_timeout_s: float = Field(600, gt=0)
    extra_args: dict[str, Scalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_engine(self) -> "EngineSettings":
        """Under ``kind: llamacpp`` a vLLM-only key set to anything but its default is an error naming it (it
        would be silently ignored); shared keys: max_model_len, enable_prefix_caching, startup_timeout_s."""
        if self.kind == "vllm":
            if self.llamacpp != LlamaCppSettings():
                raise ValueError("'llamacpp' settings need kind: llamacpp (kind is vllm)")
            return self
        for name in VLLM_ONLY:
            if getattr(self, name) != type(self).model_fields[name].get_default(call_default_factory=True):
                raise ValueError(f"'{name}' is a vLLM setting; with kind: llamacpp use engine.llamacpp "
                                 "(threads, threads_batch, parallel, batch_size, ubatch_size, extra_args)")
        return self


# EngineSettings fields llama.cpp has no use for (the others are shared by both engines)
VLLM_ONLY = ("dtype", "kv_cache_space_gib", "gpu_memory_utilization", "kv_cache_dtype", "attention_backend",
             "tensor_parallel_size", "pipeline_parallel_size", "max_num_seqs", "extra_args")


class SemanticCacheSettings(StrictModel):
    """Optional paraphrase cache (:mod:`toolkit.serving.semantic_cache`); off by default, like every cache that
    would make a before/after comparison measure the cache instead of the model."""

    enabled: bool = Field(False, description="serve a query whose embedding is within `threshold` cosine of a "
                          "cached query's from that query's retrieval")
    threshold: float = Field(0.98, gt=0, le=1, description="cosine similarity for a hit; the default is the "
                             "lowest threshold with <= 1% false hits on the paraphrase set with the cosine alone "
                             "(python -m toolkit.evaluation.paraphrases, all-MiniLM-L6-v2, 2026-12-01: 0.7% false "
                             "hits, 2.9% of paraphrases hit); another embedder needs its own measurement")
    match_identifiers: bool = Field(False, description="a hit also needs both queries to name the same code "
                                    "identifiers (json.dumps, snake_case, CamelCase, f()): neighbouring APIs "
                                    "embed too close for the cosine alone")
    size: int = Field(1024, ge=1, description="entries (least recently used evicted first)")
    ttl_s: float | None = Field(3600, gt=0, description="seconds an entry is served; null: until evicted")
    reuse_answers: bool = Field(False, description="also reuse the cached query's answer (temperature 0, no chat "
                                "history, same max_tokens/min_tokens only); a false hit then serves a wrong "
                                "answer, not just wrong context")


class CacheSettings(StrictModel):
    """Where the query cache (exact and semantic) lives: in the process (``memory``, each replica its own) or in a
    Redis server shared by every endpoint replica (:mod:`toolkit.serving.redis_cache`)."""

    backend: Literal["memory", "redis"] = Field("memory", description="memory: per-process LRU; redis: shared by "
                                                "replicas (needs url)")
    url: str | None = Field(None, validate_default=True, description="redis backend only: redis://host:6379/0")
    ttl_s: float | None = Field(3600, gt=0, description="seconds an exact-match entry is served; null: until "
                                "evicted (the semantic cache has its own semantic_cache.ttl_s)")
    socket_timeout_ms: float = Field(50, gt=0, description="redis backend: connect and read timeout; a slower "
                                     "or unreachable Redis is a cache miss, never a failed request")

    @field_validator("url", mode="after")
    @classmethod
    def _url_for_redis(cls, url: str | None, info: ValidationInfo) -> str | None:
        backend = info.data.get("backend", "memory")
        if backend == "redis" and not url:
            raise PydanticCustomError("cache_url", "required with backend: redis (e.g. redis://127.0.0.1:6379/0)")
        if backend == "memory" and url:
            raise PydanticCustomError("cache_url", "only used with backend: redis (backend is memory)")
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise PydanticCustomError("cache_url", "must start with redis://, rediss:// or unix://")
        return url


class EndpointSettings(StrictModel):
    top_k: int = Field(5, ge=1, le=100)
    max_tokens: int = Field(64, ge=1)
    max_query_chars: int = Field(2000, ge=1)
    cache_size: int = Field(1024, ge=0, description="exact-match query cache entries, in memory or in Redis "
                            "(0 disables it)")
    cache: CacheSettings = Field(default_factory=CacheSettings, description="cache backend: memory or redis")
    semantic_cache: SemanticCacheSettings = Field(default_factory=SemanticCacheSettings)
    max_concurrency: int = Field(32, ge=1, description="requests in flight beyond which the endpoint answers 429")
    request_timeout_s: float = Field(120, gt=0)
    api_key_env: str = Field("TOOLKIT_API_KEY", description="env var holding the API key; unset = no auth")
    embed_threads: int = Field(1, ge=1, description="torch threads for query embedding (vLLM owns the rest)")
    system_prompt: str = Field(SYSTEM_PROMPT, description="default: toolkit.prompt.SYSTEM_PROMPT, the prompt every "
                               "stage trains, distills and evaluates with")


class RetrievalSettings(StrictModel):
    nprobe: int | None = Field(None, ge=1, description="IVF lists scanned per query (default: as built)")
    ef_search: int | None = Field(None, ge=1, description="HNSW efSearch (default: as built)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    embedding_backend: Literal["torch", "onnx", "onnx-int8", "openvino", "openvino-int8"] | None = Field(
        None, description="runtime of the query embedder (toolkit.retrieval.embed_backends; default: the backend "
        "the index was built with); another than the index's needs a selection that measured the pair "
        "(python -m toolkit.retrieval.embed_select)")
    reload_check_s: float = Field(2.0, ge=0, description="how often (at most) the endpoint checks the index "
                                  "manifest for a new index_version (`toolkit index add/remove`) and reloads it in "
                                  "the background; 0 = never (toolkit.serving.index_watch)")


class ServeProfile(StrictModel):
    device: Literal["cpu", "cuda"] = "cpu"
    model: str | None = Field(None, description="checkpoint to serve when --model is not given (precision "
                              "selection writes the winner's; relative paths are from the repository root)")
    selection: dict[str, Any] | None = Field(None, description="informational: the measurements that chose "
                                             "this profile (written by `toolkit precision`)")
    engine: EngineSettings = Field(default_factory=EngineSettings)
    endpoint: EndpointSettings = Field(default_factory=EndpointSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)


def default_profile_path() -> Path:
    from toolkit.hardware import hardware_report

    return SERVE_DIR / ("cuda.yaml" if hardware_report().get("cuda") else "cpu.yaml")


def load_profile(path: str | Path | None = None) -> ServeProfile:
    return load_recipe(path or default_profile_path(), ServeProfile)


def engine_command(model: str | Path, port: int, served_model_name: str, profile: ServeProfile,
                   host: str = "127.0.0.1", extra: dict[str, Scalar] | None = None) -> list[str]:
    """argv for vLLM's OpenAI server (``python -m``: the ``vllm`` console script of vllm-cpu is broken).

    Refuses a checkpoint vLLM cannot serve on this machine (W4A16 on an AVX2-only CPU) with the reason, before
    a minute-long engine start that would end in a kernel error.
    """
    from toolkit.engine.kernels import serving_blocker
    from toolkit.engine.launch import cli_flag, vllm_command

    if profile.engine.kind == "llamacpp":
        return _llamacpp_command(model, port, served_model_name, profile, host, extra)
    cmd = vllm_command("vllm.entrypoints.openai.api_server")  # first: it says when .venv-vllm is missing
    if blocker := serving_blocker(model, profile.device):
        raise ToolkitError(f"{blocker}: serve it on an AVX-512 CPU or a GPU "
                           "(`toolkit eval --no-serve` still measures its perplexity)")
    e = profile.engine
    args: dict[str, Scalar | None] = {
        "model": str(model), "host": host, "port": port, "served_model_name": served_model_name,
        "dtype": e.dtype, "max_model_len": e.max_model_len, "kv_cache_dtype": e.kv_cache_dtype,
        "tensor_parallel_size": e.tensor_parallel_size, "pipeline_parallel_size": e.pipeline_parallel_size,
        "enable_prefix_caching": e.enable_prefix_caching, "max_num_seqs": e.max_num_seqs, "seed": 0,
        "generation_config": "vllm",  # sampling defaults from the request, not the checkpoint
    }
    if profile.device == "cuda":
        args.update(gpu_memory_utilization=e.gpu_memory_utilization, attention_backend=e.attention_backend)
    args.update(e.extra_args)
    args.update(extra or {})
    for name, value in args.items():
        if value is not None:
            cmd += cli_flag(name, value)
    return cmd


def _llamacpp_command(model: str | Path, port: int, served_model_name: str, profile: ServeProfile, host: str,
                      extra: dict[str, Scalar] | None) -> list[str]:
    from toolkit.engine.llamacpp import server_command

    if profile.device != "cpu":
        raise ToolkitError(f"engine.kind llamacpp: `make setup-llamacpp` builds llama.cpp for the CPU; "
                           f"set device: cpu (profile has {profile.device})")
    e = profile.engine
    return server_command(model, port, served_model_name, e.llamacpp, e.max_model_len, e.enable_prefix_caching,
                          host, extra)


def engine_environment(profile: ServeProfile) -> dict[str, str]:
    if profile.engine.kind == "llamacpp":
        from toolkit.engine.launch import llamacpp_env

        return llamacpp_env()
    env = {}
    if profile.device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{profile.engine.kv_cache_space_gib or 1:g}"
    return env
