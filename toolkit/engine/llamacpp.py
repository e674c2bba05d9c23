"""llama.cpp as the second serving engine: its build, its profile settings and the ``llama-server`` command line.

``make setup-llamacpp`` (``scripts/setup_llamacpp.sh``) builds ``llama-server`` and ``llama-quantize`` from the
llama.cpp that the pinned ``llama-cpp-python`` sdist vendors, into ``build/llamacpp/<version>/``; nothing here
works without it, and every entry point says so in one line naming the target.

What llama.cpp serves is a *GGUF model directory*: one ``*.gguf`` beside the Hugging Face ``config.json`` and
tokenizer files (``toolkit export-gguf`` writes them). The directory is what the rest of the toolkit already
takes as ``--model`` (the endpoint budgets prompts with its tokenizer, reports record its manifest); only the
engine reads the GGUF.

Context: ``engine.max_model_len`` keeps its vLLM meaning, the longest prompt + answer of one request. llama.cpp
splits ``-c`` evenly across its ``--parallel`` slots (the KV cache is not unified when the slot count is
given), so the server gets ``-c max_model_len * parallel``; unset, ``max_model_len`` is the checkpoint's
``max_position_embeddings``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import Field

from toolkit.config import StrictModel
from toolkit.errors import ToolkitError
from toolkit.engine.launch import LLAMACPP_DIR, cli_flag, llamacpp_command

Scalar = str | int | float | bool


class LlamaCppSettings(StrictModel):
    """``engine.llamacpp``: the llama-server knobs worth tuning on a CPU (the rest go in ``extra_args``)."""

    threads: int | None = Field(None, ge=1, description="-t: decode threads (default: llama.cpp's, the "
                                "physical cores)")
    threads_batch: int | None = Field(None, ge=1, description="-tb: prompt-processing threads (default: threads)")
    parallel: int = Field(4, ge=1, description="--parallel: slots decoded together (continuous batching); "
                          "requests beyond it queue in the server")
    batch_size: int | None = Field(None, ge=1, description="-b: logical batch (tokens per prompt step)")
    ubatch_size: int | None = Field(None, ge=1, description="-ub: physical batch (<= batch_size)")
    extra_args: dict[str, Scalar] = Field(default_factory=dict, description="other llama-server flags "
                                          "({flag-name: value}, true for a bare flag), e.g. {flash-attn: on}")


def converter_script() -> Path:
    """llama.cpp's ``convert_hf_to_gguf.py`` (run with ``.venv``'s Python, which has torch and transformers)."""
    path = LLAMACPP_DIR / "src" / "convert_hf_to_gguf.py"
    if not path.is_file():
        raise ToolkitError(f"{path}: llama.cpp is not built; run `make setup-llamacpp` (~10 min, opt-in)")
    return path


def find_gguf(model_dir: str | Path) -> Path:
    """The one ``*.gguf`` of a GGUF model directory; a one-line error otherwise."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ToolkitError(f"{d}: llama.cpp serves a local GGUF model directory (toolkit export-gguf), not a hub id")
    found = sorted(d.glob("*.gguf"))
    if len(found) != 1:
        what = "no .gguf file" if not found else f"{len(found)} .gguf files ({', '.join(p.name for p in found)})"
        raise ToolkitError(f"{d}: {what}; engine.kind llamacpp needs exactly one "
                           "(make one with `toolkit export-gguf --model <dir> --type q8_0`)")
    return found[0]


def context_per_slot(model_dir: Path, max_model_len: int | None) -> int:
    if max_model_len:
        return max_model_len
    try:
        return int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return 4096


def server_command(model_dir: str | Path, port: int, served_model_name: str, settings: LlamaCppSettings,
                   max_model_len: int | None, prefix_caching: bool, host: str = "127.0.0.1",
                   extra: dict[str, Scalar] | None = None) -> list[str]:
    """argv for ``llama-server`` serving ``model_dir``'s GGUF under ``served_model_name`` (its ``/v1/models`` id).

    ``prefix_caching`` false turns off llama.cpp's per-slot prompt cache (``--no-cache-prompt``), the
    counterpart of vLLM's prefix caching, so both engines compute every prompt in full by default."""
    cmd = llamacpp_command("llama-server")  # first: the not-built error wins over a bad model directory
    gguf = find_gguf(model_dir)
    n_ctx = context_per_slot(Path(model_dir), max_model_len) * settings.parallel
    args: dict[str, Scalar | None] = {
        "model": str(gguf), "alias": served_model_name, "host": host, "port": port, "parallel": settings.parallel,
        "ctx-size": n_ctx, "threads": settings.threads, "threads-batch": settings.threads_batch,
        "batch-size": settings.batch_size, "ubatch-size": settings.ubatch_size, "cont-batching": True,
        "cache-prompt": prefix_caching, "no-webui": True, "seed": 0,
    }
    args.update(settings.extra_args)
    args.update(extra or {})
    for name, value in args.items():
        if value is not None:
            cmd += cli_flag(name, value)
    return cmd


LLAMACPP_LOG_PREFIX = re.compile(r"^\d+(?:\.\d+)+ [DIWE] +")  # llama-server's "0.00.028.894 E " (time, level)


def llamacpp_load_error(log: str) -> str | None:
    """llama-server's reason for a failed model load, or None when its log has none.

    A failed load logs several lines (``gguf_init_from_reader: invalid magic characters ...``, ``llama_model_load:
    error loading model: <why>``, ``failed to load model '<path>'``, ``main: exiting due to model loading error``);
    the ``error loading model`` one carries the loader's reason (a missing tensor, a bad key). When that reason is
    only "failed to load model from <file>", the GGUF parser's own error line before it says why, so it is added."""
    lines = [LLAMACPP_LOG_PREFIX.sub("", ln.strip()) for ln in log.splitlines() if ln.strip()]
    loads = [i for i, ln in enumerate(lines) if "error loading model" in ln]
    if not loads:
        return None
    line = lines[loads[-1]]
    if "failed to load model from" in line:
        parser = [ln for ln in lines[:loads[-1]] if ln.startswith("gguf_") and ": " in ln]
        if parser:
            line += f" ({parser[-1]})"
    return line[:400]
