"""The search space: one :class:`Config` per combination of the recipe's axes, and the serve profile of each.

Knobs split by what changing them costs. ``top_k`` is sent with every request (``/v1/rag``'s ``top_k``), so
configurations differing only in it share one running stack (:func:`stack_key`); the variant, the engine knobs
and the retrieval knobs (index, nprobe, efSearch, embedder) need a restart. The baseline is the first value of
every axis.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit.optimize.recipe import OptimizeRecipe, Space


@dataclass(frozen=True)
class Config:
    variant: str
    max_num_seqs: int | None = None
    enable_prefix_caching: bool = False
    max_num_batched_tokens: int | None = None
    top_k: int = 5
    dtype: str | None = None
    kv_cache_space_gib: float | None = None
    embedding_backend: str | None = None
    index: str | None = None
    nprobe: int | None = None
    ef_search: int | None = None
    kv_cache_dtype: str | None = None
    attention_backend: str | None = None

    @property
    def id(self) -> str:
        """Stable short id of the configuration (its trial files are named after it). Axes added after the first
        version count only when set, so trials recorded before they existed keep their ids (a re-run resumes)."""
        d = asdict(self)
        for late in LATE_AXES:
            if d[late] is None:
                del d[late]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def label(self) -> str:
        """``reference-w8a8 seqs=4 prefix=on top_k=3``: only the knobs that are set."""
        parts = [Path(self.variant).name]
        if self.max_num_seqs is not None:
            parts.append(f"seqs={self.max_num_seqs}")
        if self.enable_prefix_caching:
            parts.append("prefix=on")
        if self.max_num_batched_tokens is not None:
            parts.append(f"batched={self.max_num_batched_tokens}")
        if self.dtype is not None:
            parts.append(f"dtype={self.dtype}")
        if self.kv_cache_space_gib is not None:
            parts.append(f"kv={self.kv_cache_space_gib:g}GiB")
        if self.embedding_backend is not None:
            parts.append(f"embed={self.embedding_backend}")
        if self.index is not None:
            parts.append(f"index={Path(self.index).name}")
        for name, short in (("nprobe", "nprobe"), ("ef_search", "ef"), ("kv_cache_dtype", "kv_dtype"),
                            ("attention_backend", "attn")):
            if getattr(self, name) is not None:
                parts.append(f"{short}={getattr(self, name)}")
        parts.append(f"top_k={self.top_k}")
        if engine_kind(self.variant) == "llamacpp":
            parts.insert(1, "llama.cpp")
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def engine_kind(variant: str | Path) -> str:
    """``llamacpp`` for a GGUF model directory (served by llama.cpp's llama-server), else ``vllm``."""
    from toolkit.modeling import gguf_file
    from toolkit.optimize.recipe import repo_path

    return "llamacpp" if gguf_file(repo_path(variant)) else "vllm"


# the axes after the variant, in the recipe's order (top_k last: it varies fastest, sharing an engine start)
AXES = ("max_num_seqs", "enable_prefix_caching", "max_num_batched_tokens", "dtype", "kv_cache_space_gib",
        "embedding_backend", "index", "nprobe", "ef_search", "kv_cache_dtype", "attention_backend", "top_k")
LATE_AXES = ("dtype", "kv_cache_space_gib", "embedding_backend", "index", "nprobe", "ef_search", "kv_cache_dtype",
             "attention_backend")
# what llama.cpp has no use for (its own knobs are in its profile's engine.llamacpp)
VLLM_AXES = {"max_num_seqs", "max_num_batched_tokens", "dtype", "kv_cache_space_gib", "kv_cache_dtype",
             "attention_backend"}


def configs(space: Space) -> list[Config]:
    """Every combination, baseline first (``itertools.product`` keeps the first value of each axis first). A GGUF
    variant is served by llama.cpp, which has none of the vLLM knobs (:data:`VLLM_AXES`): its configurations
    vary the others only."""
    out: dict[Config, None] = {}
    for v in space.variants:
        llama = engine_kind(v) == "llamacpp"
        for values in itertools.product(*(getattr(space, a) for a in AXES)):
            kw = {a: (None if llama and a in VLLM_AXES else x) for a, x in zip(AXES, values)}
            out.setdefault(Config(str(v), **kw), None)
    return list(out)


def stack_key(c: Config) -> tuple[Any, ...]:
    """What needs its own stack start: everything but ``top_k`` (retrieval knobs restart the endpoint)."""
    return tuple(v for k, v in asdict(c).items() if k != "top_k")


def serve_profile(recipe: OptimizeRecipe, suite, c: Config, out_dir: Path, for_serving: bool = False) -> Path:
    """Write the serve profile of ``c``: the recipe's base profile (or the device default) with the suite's
    measurement settings (:func:`toolkit.evaluation.cli.eval_profile`: hot-query cache off, extra vLLM flags),
    then this configuration's knobs. ``for_serving``: also name the checkpoint in ``model`` so that
    ``make serve PROFILE=...`` serves it unchanged."""
    import yaml

    from toolkit.atomic import atomic_write_text
    from toolkit.config import dump_recipe
    from toolkit.evaluation.cli import eval_profile
    from toolkit.optimize.recipe import repo_path
    from toolkit.paths import REPO_ROOT
    from toolkit.serving.profiles import load_profile

    out_dir.mkdir(parents=True, exist_ok=True)
    llamacpp = engine_kind(c.variant) == "llamacpp"
    base_profile = recipe.llamacpp_profile if llamacpp else recipe.profile
    base = eval_profile(str(repo_path(base_profile)) if base_profile else None, suite, out_dir)
    prof = load_profile(base)
    base.unlink()
    e = prof.engine
    e.enable_prefix_caching = c.enable_prefix_caching
    if c.max_num_seqs is not None:
        e.max_num_seqs = c.max_num_seqs
    if c.dtype is not None:
        e.dtype = c.dtype
    if c.kv_cache_space_gib is not None:
        e.kv_cache_space_gib = c.kv_cache_space_gib
    extra = dict(e.extra_args)
    if c.max_num_batched_tokens is not None:
        extra["max_num_batched_tokens"] = c.max_num_batched_tokens
    e.extra_args = extra
    prof.endpoint.top_k = c.top_k
    for name in ("embedding_backend", "nprobe", "ef_search"):
        if getattr(c, name) is not None:
            setattr(prof.retrieval, name, getattr(c, name))
    for name in ("kv_cache_dtype", "attention_backend"):
        if getattr(c, name) is not None:
            setattr(e, name, getattr(c, name))
    header = ""
    path = out_dir / ("profile.yaml" if for_serving else f"profile-{c.id}.yaml")
    if for_serving:
        variant = repo_path(c.variant).resolve()
        prof.model = str(variant.relative_to(REPO_ROOT)) if variant.is_relative_to(REPO_ROOT) else str(variant)
        header = (f"# Chosen by `toolkit optimize` ({recipe.name}): {c.label()}.\n# Serve it unchanged with "
                  f"`make serve PROFILE={path}`; measured with the hot-query cache off (cache_size 0).\n")
    atomic_write_text(path, header + yaml.safe_dump(dump_recipe(prof), sort_keys=False))
    return path
