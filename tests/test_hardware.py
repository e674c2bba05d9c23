from toolkit.hardware import hardware_report, support_flags

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
