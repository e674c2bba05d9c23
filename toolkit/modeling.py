"""Loading causal LMs (a local directory or a hub id) and measuring perplexity on held-out text.

Perplexity is the quality yardstick shared by every stage (reference training, quantization, distillation,
precision selection, eval): exp of the mean next-token negative log-likelihood over fixed, non-overlapping
windows of the same token stream, so two models with the same tokenizer are compared on exactly the same
tokens.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import ToolkitError
from toolkit.jsonl import read_jsonl

if TYPE_CHECKING:  # torch is imported lazily (the CLI starts without it)
    import torch


def resolve_model(path_or_id: str | Path) -> str:
    """Check that ``path_or_id`` names a causal LM, locally or as a hub id; return it as a string.

    A local directory must hold a ``config.json`` whose architecture is a ``*ForCausalLM``. Anything else
    that looks like a path is an error here, not a confusing hub lookup later.
    """
    s = str(path_or_id)
    p = Path(s).expanduser()
    if p.exists():
        cfg = p / "config.json"
        if not p.is_dir() or not cfg.is_file():
            raise ToolkitError(f"{p}: not a model directory (no config.json)")
        try:
            config = json.loads(cfg.read_text())
        except json.JSONDecodeError as exc:
            raise ToolkitError(f"{cfg}: invalid JSON ({exc.msg})") from None
        archs = config.get("architectures") or []
        if not any(a.endswith("ForCausalLM") for a in archs):
            raise ToolkitError(f"{p}: not a causal LM (architectures: {archs or 'none'})")
        return str(p)
    if s.startswith((".", "/", "~")) or s.count("/") > 1 or not s:  # path-like: never sent to the hub
        raise ToolkitError(f"{s}: no such directory (model path not found; a hub id is 'name' or 'org/name')")
    return s  # a hub id ('gpt2', 'org/name'); loading it reports reachability


def load_tokenizer(path_or_id: str | Path):
    from transformers import AutoTokenizer

    name = resolve_model(path_or_id)
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        raise ToolkitError(f"{name}: cannot load tokenizer ({str(exc).splitlines()[0]})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path_or_id: str | Path, dtype: Any = "auto", device: str | None = None):
    """Load a causal LM for evaluation (eval mode). ``dtype`` is a torch dtype or ``"auto"``."""
    from transformers import AutoModelForCausalLM

    name = resolve_model(path_or_id)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **_gguf_kwargs(name))
    except (OSError, ValueError) as exc:
        raise ToolkitError(f"{name}: cannot load as a causal LM ({str(exc).splitlines()[0]})") from None
    if device:
        model.to(device)
    return model.eval()


def gguf_file(path: str | Path) -> str | None:
    """The ``.gguf`` file name of a GGUF model directory (``toolkit export-gguf``: one ``.gguf``, no safetensors
    or ``.bin`` weights; what llama.cpp serves), None for any other checkpoint."""
    d = Path(path)
    if not d.is_dir() or any(d.glob("*.safetensors")) or any(d.glob("*.bin")):
        return None
    ggufs = sorted(d.glob("*.gguf"))
    return ggufs[0].name if len(ggufs) == 1 else None


def _gguf_kwargs(name: str) -> dict[str, str]:
    """``{"gguf_file": f}`` for a GGUF model directory, so transformers dequantizes the very weights llama.cpp
    serves; ``{}`` otherwise."""
    f = gguf_file(name)
    return {"gguf_file": f} if f else {}


def stored_dtype(path_or_id: str | Path) -> torch.dtype:
    """The torch dtype a checkpoint's config says its weights are stored in (float32 when it says none, as
    transformers assumes); read from the config alone, so the compute dtype is known before loading."""
    import torch
    from transformers import AutoConfig

    name = resolve_model(path_or_id)
    try:
        dtype = getattr(AutoConfig.from_pretrained(name), "dtype", None)
    except (OSError, ValueError) as exc:
        raise ToolkitError(f"{name}: cannot read the model config ({str(exc).splitlines()[0]})") from None
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def read_texts(path: str | Path, field: str = "text") -> list[str]:
    """Texts from ``.jsonl`` (one object per line, ``field`` key) or ``.txt`` (blank-line separated)."""
    p = Path(path)
    if not p.is_file():
        raise ToolkitError(f"{p}: file not found")
    if p.suffix == ".jsonl":
        return [row[field] for row in read_jsonl(p, require={field: str})]
    if p.suffix in (".txt", ".md", ""):
        return [t.strip() for t in p.read_text(encoding="utf-8").split("\n\n") if t.strip()]
    raise ToolkitError(f"{p}: unsupported text file type '{p.suffix}' (use .jsonl with a '{field}' field, or .txt)")


def token_windows(tokenizer, texts: Iterable[str], seq_len: int, max_windows: int | None = None) -> list[list[int]]:
    """Concatenate texts (EOS-separated) into one token stream cut into full windows of ``seq_len``."""
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    need = None if max_windows is None else max_windows * seq_len
    for t in texts:
        stream.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(eos)
        if need is not None and len(stream) >= need:
            break
    n = len(stream) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    return [stream[i * seq_len:(i + 1) * seq_len] for i in range(n)]


def perplexity(model, windows: Sequence[Sequence[int]], batch_size: int = 8, progress: str | None = None) -> float:
    """exp(mean NLL) of ``model`` over the token windows (every token after the first of each window)."""
    import torch

    if not windows:
        raise ToolkitError("perplexity: no full evaluation window (evaluation text too short)")
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    batches = range(0, len(windows), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=progress, unit="batch", leave=False)
    with torch.inference_mode():
        for i in batches:
            ids = torch.tensor(windows[i:i + batch_size], device=device)
            logits = model(input_ids=ids).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="sum")
            total_nll += nll.item()
            total_tokens += ids[:, 1:].numel()
    return math.exp(total_nll / total_tokens)
