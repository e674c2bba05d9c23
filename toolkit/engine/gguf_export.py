"""``toolkit export-gguf --model M [--type f16|q8_0|q4_k_m] [--output DIR]``: a GGUF model directory for llama.cpp.

Method: llama.cpp's own tools, so the file is exactly what llama.cpp would make of the checkpoint.
``convert_hf_to_gguf.py`` (from the built llama.cpp source, run with this environment's Python: it needs torch
and transformers) writes F16; for ``q8_0`` and ``q4_k_m`` ``llama-quantize`` then quantizes that F16 file (Q4_K_M
keeps some tensors at Q6_K, llama.cpp's recipe). The output directory holds ``model.gguf`` beside the source's
``config.json`` and tokenizer files, so the toolkit takes it as ``--model`` like any checkpoint (the endpoint
budgets prompts with that tokenizer), plus a manifest; it is written atomically.

``--model`` may also be a ``.gguf`` file (e.g. the shipped SmolLM2 Q4_1): it is packaged as it is (no
``--type``, no requantization), with config and tokenizer read from the GGUF by transformers.

A checkpoint the converter cannot export (a quantization it does not read, an unknown architecture) fails with
the converter's own reason in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError

TYPES = {"f16": "F16", "q8_0": "Q8_0", "q4_k_m": "Q4_K_M"}  # --type -> llama-quantize's name
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory, or a .gguf file to "
                        "package as it is")
    parser.add_argument("--type", choices=sorted(TYPES), help="weight format (required for a checkpoint "
                        "directory; not allowed for a .gguf file)")
    parser.add_argument("--output", help="output directory (default: artifacts/gguf/<model name>-<type>)")
    parser.add_argument("--threads", type=int, help="llama-quantize threads (default: all cores)")


def run(args: argparse.Namespace) -> int:
    from toolkit.paths import ARTIFACTS

    src = Path(args.model).expanduser()
    is_gguf = src.is_file() and src.suffix == ".gguf"
    kind = "as-is" if is_gguf else args.type
    if is_gguf and args.type:
        raise ToolkitError(f"--type: {src} is already a GGUF; it is packaged as it is (requantizing a quantized "
                           "GGUF compounds the error: export the checkpoint directory instead)")
    if not is_gguf and not args.type:
        raise ToolkitError(f"--type: required for a checkpoint directory (one of {', '.join(sorted(TYPES))})")
    output = Path(args.output) if args.output else ARTIFACTS / "gguf" / f"{src.stem if is_gguf else src.name}-{kind}"
    manifest = package_gguf(src, output) if is_gguf else export_checkpoint(src, args.type, output, args.threads)
    r = manifest["results"]
    print(f"wrote {output}/{r['file']} ({r['gguf_file_type']}, {r['bytes'] / 2**20:.1f} MiB) in "
          f"{manifest['timings_s']['wall']:.1f} s")
    return 0


def _run_tool(cmd: list[str], log: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run a converter/quantizer step; on failure raise its telling line (the last naming an error)."""
    from toolkit.engine.client import last_error_line
    from toolkit.engine.launch import engine_env

    with open(log, "ab") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=engine_env(env))
    if proc.returncode != 0:
        raise ToolkitError(f"{what} failed (code {proc.returncode}): "
                           f"{last_error_line(log.read_text(errors='replace'))}")


def _check_convertible(model_dir: Path) -> None:
    """Fail fast, before torch loads, on what cannot become a GGUF here."""
    from toolkit.modeling import resolve_model

    resolve_model(model_dir)
    if not model_dir.is_dir():
        raise ToolkitError(f"--model {model_dir}: export-gguf needs a local checkpoint directory or a .gguf file")
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
        raise ToolkitError(f"{model_dir}: no weights (*.safetensors or *.bin) to convert")


def _byte_level_with_fallback(tokenizer: dict[str, Any]) -> bool:
    """A byte-level BPE tokenizer.json that also says ``byte_fallback`` (what transformers writes for a GGUF's
    gpt2 tokenizer, e.g. the reference model's): llama.cpp's converter takes that for a SentencePiece-style
    Llama vocabulary and writes ``tokenizer.ggml.model llama``, and llama-server then fails every request
    ("unordered_map::at", measured with SmolLM2). Byte-level BPE never falls back: every byte has a token."""
    pre = json.dumps(tokenizer.get("pre_tokenizer") or {})
    model = tokenizer.get("model") or {}
    return model.get("type") == "BPE" and bool(model.get("byte_fallback")) and '"ByteLevel"' in pre


def _converter_view(model_dir: Path, view: Path) -> Path:
    """``model_dir`` itself, or, for :func:`_byte_level_with_fallback` tokenizers, ``view``: links to its files
    with a tokenizer.json that says plain byte-level BPE (no byte fallback, a ByteLevel decoder), which the
    converter recognises by its pre-tokenizer hash (gpt2 model, e.g. pre ``smollm``). Encoding is unchanged."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return model_dir
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    if not _byte_level_with_fallback(tokenizer):
        return model_dir
    view.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.name != "tokenizer.json":
            os.symlink(f.resolve(), view / f.name)
    tokenizer["model"]["byte_fallback"] = False
    tokenizer["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    (view / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    return view


def export_checkpoint(model_dir: Path, kind: str, output: Path, threads: int | None = None) -> dict[str, Any]:
    """Convert ``model_dir`` to F16 with llama.cpp's converter, quantize to ``kind``; returns the manifest."""
    from toolkit.engine.launch import llamacpp_command, llamacpp_env
    from toolkit.engine.llamacpp import converter_script
    from toolkit.manifest import RunRecord, atomic_dir, read_manifest

    quantize = llamacpp_command("llama-quantize")  # not built: say so before anything else
    script = converter_script()
    _check_convertible(model_dir)
    record = RunRecord("gguf-export")
    record.recipe = {"type": kind, "converter": str(script), "quantizer": quantize[0]}
    record.add_input("model", model_dir)
    with tempfile.TemporaryDirectory(prefix="toolkit-gguf-") as scratch, atomic_dir(output) as tmp:
        log = Path(scratch) / "export.log"
        f16 = Path(scratch) / "model-f16.gguf"
        final = tmp / "model.gguf"
        source = _converter_view(model_dir, Path(scratch) / "source")
        with record.timed("convert_f16"):
            _run_tool([sys.executable, str(script), str(source), "--outtype", "f16", "--outfile",
                       str(f16 if kind != "f16" else final)], log, f"convert_hf_to_gguf.py on {model_dir}")
        if kind != "f16":
            with record.timed("quantize"):
                _run_tool(quantize + [str(f16), str(final), TYPES[kind], *([str(threads)] if threads else [])],
                          log, f"llama-quantize to {TYPES[kind]}", llamacpp_env())
        for name in SIDE_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        record.results = _gguf_results(final)
        record.write(tmp)
    return read_manifest(output) or {}


def package_gguf(gguf: Path, output: Path) -> dict[str, Any]:
    """A GGUF file as a model directory: the file (hard-linked where possible) + config/tokenizer from it."""
    from toolkit.manifest import RunRecord, atomic_dir, read_manifest
    from toolkit.reference.pretrained import check_gguf

    check_gguf(gguf)
    record = RunRecord("gguf-export")
    record.recipe = {"type": "as-is"}
    record.add_input("gguf", gguf)
    with atomic_dir(output) as tmp:
        final = tmp / "model.gguf"
        with record.timed("package"):
            try:
                os.link(gguf, final)
            except OSError:
                shutil.copy2(gguf, final)
            _config_and_tokenizer_from_gguf(gguf, tmp)
        record.results = _gguf_results(final)
        record.write(tmp)
    return read_manifest(output) or {}


def _config_and_tokenizer_from_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # noqa: BLE001 - a file transformers cannot read surfaces as many types
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise ToolkitError(f"{gguf}: transformers could not read its config/tokenizer: {first}") from None
    # the rest of the toolkit recognises a causal LM by config.json's architectures
    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    if not config.architectures and arch:
        config.architectures = [arch]
    if hasattr(config, "quantization_config"):  # transformers' GGUF marker, not a property of the weights here
        del config.quantization_config
    config.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def _gguf_results(path: Path) -> dict[str, Any]:
    from toolkit.manifest import sha256_file
    from toolkit.reference.pretrained import gguf_file_type

    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path),
            "gguf_file_type": gguf_file_type(path)}
