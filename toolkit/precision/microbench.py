"""Raw kernel effect of each format: one matmul and one attention shape, timed with torch on this device.

The engine numbers (:mod:`toolkit.precision.measure`) say what a deployer gets end to end; these say *why*:
whether the device's matmul units actually speed up the format. Kernels are chosen at run time:

- FP32 / BF16 / FP16: ``torch.matmul`` and ``scaled_dot_product_attention`` in that dtype.
- TF32 (CUDA): FP32 tensors with ``torch.backends.cuda.matmul.allow_tf32 = True`` (restored afterwards).
- FP8: ``torch._scaled_mm`` on ``float8_e4m3fn`` operands with per-tensor scales (tensor cores on sm89+;
  on a CPU torch runs a reference kernel, which shows what emulation costs). Attention stays 16-bit.
- INT8: ``torch._int_mm`` (int8 x int8 -> int32; oneDNN/VNNI on CPU, IMMA on CUDA). Attention stays 16-bit.

Each timing is the median of ``repeats`` runs (min/max kept) of a loop long enough to dominate timer noise.
Shapes default to the model's own hidden/intermediate sizes, so the figure is about this model's matmuls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from toolkit.stats import spread


def _time(fn: Callable[[], Any], sync: Callable[[], None], repeats: int, min_s: float = 0.05) -> list[float]:
    """Seconds per call: one warm-up, then calibrate a loop of >= ``min_s`` and time it ``repeats`` times."""
    fn()
    sync()
    n, t = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        t = time.perf_counter() - start
        if t >= min_s or n >= 1 << 14:
            break
        n *= 2
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        out.append((time.perf_counter() - start) / n)
    return out


def _matmul_fn(name: str, m: int, k: int, n: int, device: str):
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    a32 = torch.randn(m, k, generator=g).to(device)
    b32 = torch.randn(k, n, generator=g).to(device)
    if name in ("fp32", "tf32"):
        return lambda: a32 @ b32
    if name in ("bf16", "fp16"):
        dt = torch.bfloat16 if name == "bf16" else torch.float16
        a, b = a32.to(dt), b32.to(dt)
        return lambda: a @ b
    if name == "fp8":
        a = a32.to(torch.float8_e4m3fn)
        b = b32.t().contiguous().to(torch.float8_e4m3fn).t()  # _scaled_mm wants B column-major
        one = torch.tensor(1.0, device=device)
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    if name == "int8":
        a = torch.randint(-127, 127, (max(m, 17), k), generator=g, dtype=torch.int8).to(device)  # _int_mm: m > 16
        b = torch.randint(-127, 127, (k, n), generator=g, dtype=torch.int8).to(device)
        return lambda: torch._int_mm(a, b)
    raise KeyError(name)


def _attention_fn(name: str, heads: int, seq: int, head_dim: int, device: str):
    import torch
    import torch.nn.functional as F

    dt = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
    if dt is None:  # quantized formats keep 16-bit attention in vLLM (unless an FP8 KV cache is used)
        dt = torch.bfloat16 if device == "cpu" else torch.float16
    g = torch.Generator(device="cpu").manual_seed(1)
    q, k, v = (torch.randn(1, heads, seq, head_dim, generator=g).to(device=device, dtype=dt) for _ in range(3))
    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)


def run_microbench(names: list[str], hidden: int, intermediate: int, heads: int, device: str = "cpu",
                   tokens: int = 64, seq: int = 256, repeats: int = 3) -> dict[str, dict[str, Any]]:
    """Time a ``tokens x hidden @ hidden x intermediate`` matmul and causal attention for each format.

    Returns ``{name: {"matmul_gflops": stats, "attention_ms": stats, "kernel": str}}``; a format whose
    kernel is missing on this device gets ``{"error": "..."}`` instead of numbers.
    """
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    flops = 2.0 * tokens * hidden * intermediate
    head_dim = max(1, hidden // max(1, heads))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        prev_tf32 = torch.backends.cuda.matmul.allow_tf32
        try:
            torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
            mm = _time(_matmul_fn(name, tokens, hidden, intermediate, device), sync, repeats)
            att = _time(_attention_fn(name, heads, seq, head_dim, device), sync, repeats)
            out[name] = {
                "matmul_gflops": spread([flops / s / 1e9 for s in mm]),
                "attention_ms": spread([s * 1e3 for s in att]),
                "shape": {"matmul": [tokens, hidden, intermediate], "attention": [heads, seq, head_dim]},
                "kernel": {"fp8": "torch._scaled_mm", "int8": "torch._int_mm"}.get(name, f"torch.matmul ({name})"),
            }
        except (RuntimeError, NotImplementedError, TypeError) as exc:
            out[name] = {"error": str(exc).splitlines()[0][:200]}
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    return out
