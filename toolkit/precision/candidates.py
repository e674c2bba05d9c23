"""The numeric formats precision selection considers, and which of them this hardware can run.

Every candidate is checked against the hardware report (:func:`toolkit.hardware.hardware_report`) before
anything is measured, and ends up in one of three states:

- ``native``: the device has the units for it (TF32/BF16 tensor cores, AVX-512-BF16, VNNI, FP8 on sm89+).
- ``emulated``: the engine runs it, but without native units (BF16 on an AVX2-only CPU, INT8 without VNNI,
  FP8 weights on a CPU or a pre-Ada GPU). It is measured by default and flagged, because "slower than FP32
  here" is an answer a deployer needs to see; ``emulated: skip`` turns these into skips.
- ``skipped``: it cannot run on this device at all (TF32 on a CPU, BF16 below sm80), with the reason.

Nothing is dropped silently: the plan lists every candidate that was asked for. The functions here are pure
(report dict in, plan out), so the rules are tested with synthetic reports for sm75/sm80/sm90 and CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from toolkit.errors import ToolkitError
from toolkit.hardware import native_formats

Status = Literal["native", "emulated", "skipped"]


@dataclass(frozen=True)
class Candidate:
    """One numeric format as the engine and the quality check see it."""

    name: str                    # short id used on the command line and in reports
    label: str                   # human name for tables
    engine_dtype: str            # vLLM ``dtype`` (activations / unquantized weights)
    torch_dtype: str             # dtype the perplexity model is loaded in
    quantize_recipe: str | None = None  # quantization recipe producing the checkpoint (FP8/INT8)
    tf32: bool = False           # FP32 storage with TF32 tensor-core matmuls


CANDIDATES: dict[str, Candidate] = {c.name: c for c in (
    Candidate("fp32", "FP32", "float32", "float32"),
    Candidate("tf32", "TF32", "float32", "float32", tf32=True),
    Candidate("bf16", "BF16", "bfloat16", "bfloat16"),
    Candidate("fp16", "FP16", "float16", "float16"),
    Candidate("fp8", "FP8 W8A8 (dynamic)", "bfloat16", "bfloat16", quantize_recipe="fp8"),
    Candidate("int8", "INT8 W8A8", "bfloat16", "bfloat16", quantize_recipe="int8"),
)}


@dataclass(frozen=True)
class Planned:
    candidate: Candidate
    status: Status
    reason: str
    kv_cache_dtype: str = "auto"

    @property
    def measured(self) -> bool:
        return self.status != "skipped"


def parse_candidates(spec: str | list[str] | None) -> list[str]:
    """``"fp32,int8"`` or a list → validated candidate names (order kept, duplicates removed)."""
    if spec is None:
        return list(CANDIDATES)
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown or not names:
        raise ToolkitError(f"--candidates: unknown format(s) {', '.join(unknown) or '(none given)'}; "
                           f"choose from {', '.join(CANDIDATES)}")
    return list(dict.fromkeys(names))


def compute_capability(report: dict[str, Any]) -> tuple[int, int] | None:
    """Highest CUDA compute capability in the report, or None on a CPU-only machine."""
    ccs = [tuple(int(x) for x in d["compute_capability"].split(".")) for d in report.get("cuda") or []]
    return max(ccs) if ccs else None  # type: ignore[return-value]


def _native_reason(name: str, cc: tuple[int, int] | None, isa: dict[str, bool]) -> str:
    if cc is not None:
        return f"CUDA sm{cc[0]}{cc[1]}" + ("" if name == "fp32" else f": {CANDIDATES[name].label} tensor cores")
    if name == "fp32":
        return "CPU " + ("AVX-512" if isa.get("avx512f") else "AVX2" if isa.get("avx2") else "SIMD")
    units = {"bf16": ("amx_bf16", "avx512_bf16"), "fp16": ("amx_fp16", "avx512_fp16"),
             "int8": ("amx_int8", "avx512_vnni")}[name]
    return "CPU has " + " / ".join(u.upper().replace("_", "-") for u in units if isa.get(u))


def _not_native(name: str, cc: tuple[int, int] | None) -> tuple[Status, str]:
    """Why a format has no native units here, and whether the engine can still run it (``emulated``)."""
    if cc is not None:
        sm = f"sm{cc[0]}{cc[1]}"
        return {
            "tf32": ("skipped", f"TF32 needs compute capability >= 8.0 (this GPU is {sm})"),
            "bf16": ("skipped", f"BF16 needs compute capability >= 8.0; vLLM refuses it on {sm}"),
            "fp16": ("emulated", f"no FP16 tensor cores below sm70 ({sm})"),
            "fp8": ("emulated", f"FP8 needs compute capability >= 8.9; on {sm} vLLM runs FP8 weights "
                                "weight-only (Marlin), activations stay 16-bit") if cc >= (8, 0) else
                   ("skipped", f"FP8 needs compute capability >= 8.9 (weight-only fallback needs sm80; this is {sm})"),
            "int8": ("skipped", f"INT8 W8A8 kernels need compute capability >= 7.5 (this GPU is {sm})"),
        }[name]
    return {
        "tf32": ("skipped", "TF32 is a CUDA tensor-core mode (compute capability >= 8.0); this machine has no GPU"),
        "bf16": ("emulated", "CPU lacks AVX-512-BF16/AMX: BF16 matmuls are converted to FP32 (slower than FP32)"),
        "fp16": ("emulated", "CPU lacks AVX-512-FP16/AMX-FP16: FP16 matmuls are converted to FP32"),
        "fp8": ("emulated", "no CPU has FP8 matmul units: vLLM-CPU dequantizes FP8 weights; FP8 KV cache needs "
                            "a GPU (or AVX-512/AMX)"),
        "int8": ("emulated", "CPU lacks VNNI/AMX-INT8: int8 dot products run on plain AVX2"),
    }[name]


def plan(report: dict[str, Any], names: list[str] | None = None, emulated: str = "measure") -> list[Planned]:
    """Decide, for each requested candidate, whether it runs here natively, emulated, or not at all.

    ``emulated="skip"`` turns emulated formats into skips (same reason, prefixed), for a quick run that
    measures only what the hardware accelerates.
    """
    if emulated not in ("measure", "skip"):
        raise ToolkitError(f"emulated: expected 'measure' or 'skip', got {emulated!r}")
    cc = compute_capability(report)
    cpu = report.get("cpu") or {}
    isa = cpu.get("isa") or {}
    supports = native_formats(report)  # the same flags compute_dtype() decides fp32-vs-bf16 from
    out = []
    for name in parse_candidates(names):
        if name == "fp32" or supports.get(name):
            status, reason = "native", _native_reason(name, cc, isa)
        else:
            status, reason = _not_native(name, cc)
        # FP8 KV cache: CUDA only (vLLM-CPU needs AVX-512/AMX for it, and it costs accuracy for little gain there)
        kv = "fp8" if name == "fp8" and cc is not None and status == "native" else "auto"
        if status == "emulated" and emulated == "skip":
            status, reason = "skipped", f"emulated here ({reason}); skipped by 'emulated: skip'"
        out.append(Planned(CANDIDATES[name], status, reason, kv))
    return out
