import pytest
import torch

from toolkit.errors import ToolkitError
from toolkit.hardware import compute_dtype, hardware_report, support_flags, training_precision

CPU_PLAIN = {"isa": {"avx2": True}}
CPU_BF16 = {"isa": {"avx512f": True, "avx512_bf16": True, "avx512_vnni": True}}


def gpu(cc):
    return [{"name": "GPU", "compute_capability": cc, "memory_gb": 80}]


def test_support_flags_follow_compute_capability():
    assert support_flags(CPU_PLAIN, gpu("7.5")) == {"tf32": False, "bf16": False, "fp16": True, "fp8": False, "int8": True}
    assert support_flags(CPU_PLAIN, gpu("8.0"))["tf32"] and not support_flags(CPU_PLAIN, gpu("8.0"))["fp8"]
    assert support_flags(CPU_PLAIN, gpu("9.0"))["fp8"]


def test_cpu_bf16_needs_avx512_bf16():
    assert not support_flags(CPU_PLAIN, [])["bf16"]
    assert support_flags(CPU_BF16, [])["bf16"] and support_flags(CPU_BF16, [])["int8"]
    assert not support_flags(CPU_BF16, [])["fp8"]


def test_report_describes_this_machine():
    r = hardware_report()
    assert r["cpu"]["cores"] >= 1 and r["cpu"]["ram_gb"] > 0
    assert r["versions"]["torch"].startswith("2.")
    assert r["device"] in ("cpu", "cuda")


# Known answers for the hand-written reports in tests/data/hardware_reports.json, written by hand from the
# hardware's documented units: bf16 needs AVX-512-BF16/AMX or CUDA >= 8.0, fp16 needs AVX-512-FP16 or CUDA >= 7.0.
# name: (compute dtype of a bf16 checkpoint, of an fp16 checkpoint, training precision for "auto")
DECISIONS = {
    "epyc-avx2": ("float32", "float32", "fp32"),
    "epyc-avx512-bf16-vnni": ("bfloat16", "float32", "bf16-mixed"),
    "sapphire-rapids-amx": ("bfloat16", "float16", "bf16-mixed"),
    "cuda-sm75": ("float32", "float16", "fp32"),
    "cuda-sm80": ("bfloat16", "float16", "bf16-mixed"),
    "cuda-sm90": ("bfloat16", "float16", "bf16-mixed"),
}


def test_fixed_reports_carry_the_flags_support_flags_derives(hardware_reports):
    """The reports' hand-written ``supports`` are support_flags' answers for their CPU/GPU."""
    assert set(hardware_reports) == set(DECISIONS)
    for name, r in hardware_reports.items():
        assert support_flags(r["cpu"], r["cuda"]) == r["supports"], name


@pytest.mark.parametrize("name", list(DECISIONS))
def test_compute_dtype_on_fixed_hardware(name, hardware_reports):
    report = hardware_reports[name]
    bf16_ckpt, fp16_ckpt, _ = DECISIONS[name]
    assert compute_dtype(torch.bfloat16, report) == getattr(torch, bf16_ckpt)
    assert compute_dtype(torch.float16, report) == getattr(torch, fp16_ckpt)
    assert compute_dtype(torch.float32, report) == torch.float32  # fp32 runs everywhere, never narrowed


@pytest.mark.parametrize("name", list(DECISIONS))
def test_training_precision_on_fixed_hardware(name, hardware_reports):
    report = hardware_reports[name]
    assert training_precision("auto", report) == DECISIONS[name][2]
    assert training_precision("fp32", report) == "fp32"


def test_explicit_bf16_training_where_it_is_only_emulated_is_a_one_line_error(hardware_reports):
    assert training_precision("bf16", hardware_reports["cuda-sm80"]) == "bf16-mixed"
    for name in ("epyc-avx2", "cuda-sm75"):
        with pytest.raises(ToolkitError, match="bf16 requested but this hardware has no native bf16") as exc:
            training_precision("bf16", hardware_reports[name])
        assert "\n" not in str(exc.value)
    with pytest.raises(ToolkitError, match="fp16"):
        training_precision("fp16", hardware_reports["cuda-sm90"])


def test_compute_dtype_defaults_to_this_machines_report(as_machine):
    """Without a report argument the decision follows ``hardware_report()`` (here replaced by a fixed one)."""
    as_machine("epyc-avx2")
    assert compute_dtype(torch.bfloat16) == torch.float32 and training_precision("auto") == "fp32"
    as_machine("epyc-avx512-bf16-vnni")
    assert compute_dtype(torch.bfloat16) == torch.bfloat16 and training_precision("auto") == "bf16-mixed"


def test_compute_dtype_derives_flags_for_a_report_without_them():
    """A hand-written report with only the CPU's ISA: the flags come from support_flags."""
    assert compute_dtype(torch.bfloat16, {"cpu": CPU_BF16, "cuda": []}) == torch.bfloat16
    assert compute_dtype(torch.bfloat16, {"cpu": CPU_PLAIN, "cuda": []}) == torch.float32
