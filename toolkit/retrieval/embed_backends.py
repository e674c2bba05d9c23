"""Embedding backends: run the transformer of a sentence-transformers model in torch, ONNX Runtime or OpenVINO.

Why not sentence-transformers' own ``backend="onnx"/"openvino"``: in ST 6.2 they need ``optimum-onnx`` /
``optimum-intel``, and both conflict with transformers 5.17 (pinned by llmcompressor, 5.15-5.17); they fail to
import even when installed with ``--no-deps``. So the toolkit keeps ST for what it does well (tokenize → pool →
normalize) and swaps only the transformer module's forward: :func:`attach` replaces ``st[0].model`` (ST 6.2's
attribute behind the read-only ``auto_model``) by a :class:`RuntimeModel` that feeds the tokenizer's tensors to
an exported graph and returns ``last_hidden_state``. Pooling and normalisation run unchanged, so every backend
produces vectors of the same model, only computed differently.

Backends (in order of preference when exporting):

- ``torch``: fp32 eager, the reference.
- ``onnx``: ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``), dynamic batch and sequence axes.
- ``onnx-int8``: ``onnxruntime.quantization.quantize_dynamic`` of that graph (int8 weights, activations
  quantized per batch at run time). Weights are QInt8 on CPUs with VNNI/AMX-INT8 (the s8s8 kernels are fast
  there) and QUInt8 elsewhere (u8s8 without VNNI avoids the int16 saturation of ``vpmaddubsw``).
- ``openvino``: ``openvino.convert_model`` of the ONNX graph, saved in fp32 (``compress_to_fp16=False``).
- ``openvino-int8``: ``nncf.quantize`` (static, transformer preset) calibrated on corpus chunks.

Exports are cached, atomically, under ``artifacts/embedders/<model id>/<backend>/`` with a manifest (source
model fingerprint, settings, library versions, CPU flags); a cache whose recorded settings differ from the ones
this machine asks for (another model file, another int8 weight type) is rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.manifest import RunRecord, atomic_dir, read_manifest

BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
# packages each backend imports, with the pins tested beside the toolkit's lock
REQUIRES: dict[str, tuple[str, ...]] = {
    "torch": (),
    "onnx": ("onnxruntime", "onnx"),
    "onnx-int8": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "onnx"),
    "openvino-int8": ("openvino", "nncf", "onnx"),
}
PINS = {"onnxruntime": "onnxruntime==1.32.0", "onnx": "onnx==1.23.2", "openvino": "openvino==2026.4.1",
        "nncf": "nncf==3.4.0"}
OPSET = 17
ONNX_FILE, OV_FILE = "model.onnx", "model.xml"
CALIBRATION_SIZE = 300  # chunks: NNCF's default subset size; more gives no measurable gain on MiniLM


def check_backend(name: str, field: str = "embedding_backend") -> str:
    """``name`` when it is a known backend, else a one-line :class:`ToolkitError` naming ``field``."""
    if name not in BACKENDS:
        raise ToolkitError(f"{field}: unknown embedding backend {name!r} (choose from {', '.join(BACKENDS)})")
    return name


def missing_packages(backend: str) -> list[str]:
    return [p for p in REQUIRES[check_backend(backend)] if importlib.util.find_spec(p) is None]


def require(backend: str) -> None:
    """One-line :class:`ToolkitError` naming the package a backend needs when it is not installed."""
    missing = missing_packages(backend)
    if missing:
        pins = " ".join(PINS.get(p, p) for p in missing)
        raise ToolkitError(f"embedding backend '{backend}' needs the package {', '.join(missing)} "
                           f"(.venv/bin/python -m pip install {pins})")


def installed_backends() -> list[str]:
    return [b for b in BACKENDS if not missing_packages(b)]


def int8_weight_type(report: dict[str, Any] | None = None) -> str:
    """``"QInt8"`` where the CPU has VNNI/AMX-INT8 (``toolkit.hardware`` ``supports.int8``), else ``"QUInt8"``."""
    from toolkit.hardware import hardware_report, native_formats

    return "QInt8" if native_formats(report or hardware_report())["int8"] else "QUInt8"


def _versions() -> dict[str, str | None]:
    import importlib.metadata as md

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    return {p: version(p) for p in ("torch", "transformers", "sentence-transformers", "onnxruntime", "onnx",
                                     "openvino", "nncf")}


def source_fingerprint(model_dir: str | Path) -> str:
    """Hash of the model's top-level files (weights, config, tokenizer): what an export is derived from.
    Sub-directories (pooling config, a hub repo's own onnx/ or openvino/ copies) do not change the graph."""
    h = hashlib.sha256()
    p = Path(model_dir)
    for f in sorted(q for q in p.iterdir() if q.is_file() and q.suffix in (".json", ".safetensors", ".bin", ".txt")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def export_dir(cache_root: Path, model_id: str, backend: str) -> Path:
    return Path(cache_root) / model_id / backend


# --- export ------------------------------------------------------------------------------------------------


def _input_names(st) -> list[str]:
    """The tokenizer outputs the transformer takes (BERT: input_ids, attention_mask, token_type_ids)."""
    return [k for k in st[0].tokenizer(["probe"], return_tensors="pt") if k in
            ("input_ids", "attention_mask", "token_type_ids", "position_ids")]


def _export_onnx(st, out: Path) -> None:
    import torch

    names = _input_names(st)
    model = st[0].model
    sample = st[0].tokenizer(["an example sentence", "a second, longer example sentence to pad"],
                             return_tensors="pt", padding=True)

    class LastHidden(torch.nn.Module):  # positional inputs in a fixed order, one named output
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args):
            return self.inner(**dict(zip(names, args)), return_dict=True).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    # The tracer warns about two Python conditions it freezes (mask padding length, `is_causal`): both are
    # constant for an encoder fed a full attention mask, whatever the shape; the tests check long and batched
    # inputs against torch.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHidden().eval(), tuple(sample[n] for n in names), str(out / ONNX_FILE),
                          input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _quantize_onnx(src: Path, out: Path, weight_type: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # per-channel weight scales: cosine to fp32 0.99+ on MiniLM instead of ~0.96 with one scale per tensor
    quantize_dynamic(str(src / ONNX_FILE), str(out / ONNX_FILE), weight_type=getattr(QuantType, weight_type),
                     per_channel=True)


def _convert_openvino(src: Path, out: Path) -> None:
    import openvino as ov

    ov.save_model(ov.convert_model(str(src / ONNX_FILE)), str(out / OV_FILE), compress_to_fp16=False)


def _quantize_openvino(st, src: Path, out: Path, texts: Sequence[str]) -> None:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(src / OV_FILE))
    names = [i.get_any_name() for i in model.inputs]
    items = [{k: v.numpy().astype(np.int64) for k, v in st[0].tokenizer([t], return_tensors="pt", truncation=True,
                                                                       max_length=st.max_seq_length).items()
              if k in names} for t in texts]
    q = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items))
    ov.save_model(q, str(out / OV_FILE), compress_to_fp16=False)


def default_calibration_texts(n: int = CALIBRATION_SIZE) -> list[str]:
    """Chunks of the reference corpus (what the index embeds), spread evenly over it."""
    from toolkit import paths
    from toolkit.retrieval.chunking import chunk_docs, read_docs
    from toolkit.retrieval.config import IndexConfig

    if not paths.REFERENCE_DOCS.is_file():
        raise ToolkitError(f"embedding backend 'openvino-int8' calibrates on corpus chunks: {paths.REFERENCE_DOCS} "
                           "not found (run `make reference`)")
    cfg = IndexConfig()
    chunks = [c.text for c in chunk_docs(read_docs(paths.REFERENCE_DOCS), cfg.chunk_words, cfg.chunk_overlap)]
    step = max(1, len(chunks) // n)
    return chunks[::step][:n]


def ensure_export(st, model_dir: str | Path, model_id: str, backend: str, cache_root: str | Path,
                  calibration: Sequence[str] | None = None) -> Path:
    """The export directory of ``backend`` for this model, built (atomically, with a manifest) unless a cached
    one with the same source fingerprint and settings exists. Returns the directory."""
    require(backend)
    if backend == "torch":
        raise ToolkitError("embedding backend 'torch' runs the model itself; nothing to export")
    cache_root = Path(cache_root)
    fingerprint = source_fingerprint(model_dir)
    settings: dict[str, Any] = {"backend": backend, "source_sha256": fingerprint, "opset": OPSET}
    if backend == "onnx-int8":
        settings.update(weight_type=int8_weight_type(), per_channel=True)
    out = export_dir(cache_root, model_id, backend)
    cached = read_manifest(out) if out.is_dir() else None
    if backend == "openvino-int8":
        if calibration is None and cached and {k: v for k, v in cached.get("recipe", {}).items()
                                               if not k.startswith("calibration_")} == settings:
            return out  # no calibration asked for: any calibration of this model will do (a server start)
        texts = list(calibration) if calibration is not None else default_calibration_texts()
        if not texts:
            raise ToolkitError("embedding backend 'openvino-int8': no calibration texts")
        settings["calibration_sha256"] = hashlib.sha256("\n".join(texts).encode()).hexdigest()
        settings["calibration_texts"] = len(texts)
    if cached and cached.get("recipe") == settings:
        return out
    parent = {"onnx-int8": "onnx", "openvino": "onnx", "openvino-int8": "openvino"}.get(backend)
    src = ensure_export(st, model_dir, model_id, parent, cache_root) if parent else None
    record = RunRecord("embedder-export")
    record.recipe = settings
    record.add_input("model", model_dir)
    with atomic_dir(out) as tmp, record.timed("export"):
        if backend == "onnx":
            _export_onnx(st, tmp)
        elif backend == "onnx-int8":
            _quantize_onnx(src, tmp, settings["weight_type"])
        elif backend == "openvino":
            _convert_openvino(src, tmp)
        else:
            _quantize_openvino(st, src, tmp, texts)
        record.results = {"model_id": model_id, "backend": backend, "versions": _versions()}
        record.write(tmp)
    return out


# --- runtime -------------------------------------------------------------------------------------------------


def _onnx_runner(path: Path, threads: int | None) -> tuple[Callable[[dict[str, np.ndarray]], np.ndarray], list[str]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or 0  # 0: one per physical core
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        # a fixed thread count means a shared machine (vLLM next door): spinning workers would steal its cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path / ONNX_FILE), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return (lambda feeds: sess.run(["last_hidden_state"], feeds)[0]), names  # run() is thread-safe


def _openvino_runner(path: Path, threads: int | None) -> tuple[Callable[[dict[str, np.ndarray]], np.ndarray],
                                                                list[str]]:
    import openvino as ov

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path / OV_FILE), "CPU", config)
    names = [i.get_any_name() for i in compiled.inputs]
    local = threading.local()  # an infer request is not thread-safe; one per calling thread

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        req = getattr(local, "req", None)
        if req is None:
            req = local.req = compiled.create_infer_request()
        return req.infer(feeds)[0].copy()  # the output buffer is reused by the next call

    return run, names


@functools.cache
def _runtime_model_class() -> type:
    """:class:`RuntimeModel`, defined on first use so importing this module does not import torch."""
    import torch

    class RuntimeModel(torch.nn.Module):
        """Stands in for the transformers model inside ST's Transformer module: same call, same output key."""

        def __init__(self, run: Callable[[dict[str, np.ndarray]], np.ndarray], input_names: list[str],
                     config: Any, backend: str) -> None:
            super().__init__()
            self._run, self._names, self.config, self.backend = run, input_names, config, backend
            self.device = torch.device("cpu")  # ST reads `.device` of the transformers model

        def forward(self, **kwargs: Any) -> dict[str, Any]:
            feeds = {n: kwargs[n].detach().cpu().numpy().astype(np.int64, copy=False) for n in self._names}
            return {"last_hidden_state": torch.from_numpy(self._run(feeds))}

    return RuntimeModel


def attach(st, backend: str, model_dir: str | Path, model_id: str, cache_root: str | Path,
           threads: int | None = None, calibration: Sequence[str] | None = None) -> Path | None:
    """Swap ``st``'s transformer for ``backend`` (exported/cached on first use). Returns the export dir."""
    check_backend(backend)
    if backend == "torch":
        return None
    path = ensure_export(st, model_dir, model_id, backend, cache_root, calibration)
    run, names = (_onnx_runner if backend.startswith("onnx") else _openvino_runner)(path, threads)
    st[0].model = _runtime_model_class()(run, names, st[0].model.config, backend)  # frees the torch weights
    return path


def export_info(path: Path | None) -> dict[str, Any] | None:
    """What an index manifest records about the export its vectors came from."""
    if path is None:
        return None
    m = read_manifest(path) or {}
    return {"path": str(path), "recipe": m.get("recipe"), "created_unix": m.get("created_unix")}
