"""Candidate planning from hardware reports: sm75, sm80, sm90, and CPUs with and without AVX-512-BF16."""

import pytest

from toolkit.errors import ToolkitError
from toolkit.hardware import support_flags
from toolkit.precision.candidates import CANDIDATES, parse_candidates, plan
from toolkit.precision.microbench import run_microbench

AVX2 = {"avx2": True}
SAPPHIRE = {"avx2": True, "avx512f": True, "avx512_bf16": True, "avx512_vnni": True, "amx_bf16": True,
            "amx_int8": True, "amx_tile": True}


def report(isa=None, cc=None):
    cpu = {"model": "test", "cores": 2, "ram_gb": 24, "isa": isa or AVX2}
    cuda = [{"name": f"GPU sm{cc}", "compute_capability": cc, "memory_gb": 80}] if cc else []
    return {"cpu": cpu, "cuda": cuda, "device": "cuda" if cc else "cpu", "supports": support_flags(cpu, cuda)}


def statuses(r, **kw):
    return {p.candidate.name: p.status for p in plan(r, **kw)}


def test_sm75_skips_tf32_bf16_fp8_with_reasons():
    p = {x.candidate.name: x for x in plan(report(cc="7.5"))}
    assert {n: x.status for n, x in p.items()} == {
        "fp32": "native", "tf32": "skipped", "bf16": "skipped", "fp16": "native", "fp8": "skipped", "int8": "native"}
    assert "8.0" in p["tf32"].reason and "sm75" in p["tf32"].reason
    assert "8.9" in p["fp8"].reason


def test_sm80_runs_tf32_bf16_and_fp8_only_weight_only():
    p = {x.candidate.name: x for x in plan(report(cc="8.0"))}
    assert p["tf32"].status == p["bf16"].status == "native"
    assert p["fp8"].status == "emulated" and "8.9" in p["fp8"].reason
    assert p["fp8"].kv_cache_dtype == "auto"


def test_sm90_runs_everything_natively_with_fp8_kv_cache():
    p = {x.candidate.name: x for x in plan(report(cc="9.0"))}
    assert all(x.status == "native" for x in p.values())
    assert p["fp8"].kv_cache_dtype == "fp8" and p["bf16"].kv_cache_dtype == "auto"


def test_cpu_without_avx512_bf16_flags_bf16_as_emulated():
    p = {x.candidate.name: x for x in plan(report(AVX2))}
    assert p["fp32"].status == "native" and p["tf32"].status == "skipped" and "GPU" in p["tf32"].reason
    assert p["bf16"].status == "emulated" and "AVX-512-BF16" in p["bf16"].reason
    assert p["int8"].status == "emulated" and "VNNI" in p["int8"].reason
    assert p["fp8"].status == "emulated"
    # skip policy: still listed, with the reason, never dropped
    skipped = {x.candidate.name: x for x in plan(report(AVX2), emulated="skip")}
    assert list(skipped) == list(CANDIDATES)
    assert skipped["bf16"].status == "skipped" and "AVX-512-BF16" in skipped["bf16"].reason


def test_cpu_with_avx512_bf16_and_amx_runs_bf16_and_int8_natively():
    s = statuses(report(SAPPHIRE))
    assert s["bf16"] == s["int8"] == "native"
    assert s["tf32"] == "skipped" and s["fp8"] == "emulated"
    assert statuses(report(SAPPHIRE), emulated="skip")["fp8"] == "skipped"


def test_candidate_subset_and_unknown_names():
    assert [p.candidate.name for p in plan(report(), ["int8", "fp32", "int8"])] == ["int8", "fp32"]
    assert parse_candidates("FP32, bf16") == ["fp32", "bf16"]
    with pytest.raises(ToolkitError, match="fp33"):
        parse_candidates("fp32,fp33")
    with pytest.raises(ToolkitError, match="emulated"):
        plan(report(), emulated="sometimes")


# Plans for the hand-written reports in tests/data/hardware_reports.json, written by hand: what each machine
# has units for is native, what its engine can still run without them is emulated, TF32 off CUDA is skipped.
FIXED_PLANS = {
    "epyc-avx2": {"fp32": "native", "tf32": "skipped", "bf16": "emulated", "fp16": "emulated",
                  "fp8": "emulated", "int8": "emulated"},
    "epyc-avx512-bf16-vnni": {"fp32": "native", "tf32": "skipped", "bf16": "native", "fp16": "emulated",
                              "fp8": "emulated", "int8": "native"},
    "sapphire-rapids-amx": {"fp32": "native", "tf32": "skipped", "bf16": "native", "fp16": "native",
                            "fp8": "emulated", "int8": "native"},
    "cuda-sm80": {"fp32": "native", "tf32": "native", "bf16": "native", "fp16": "native",
                  "fp8": "emulated", "int8": "native"},
    "cuda-sm90": {"fp32": "native", "tf32": "native", "bf16": "native", "fp16": "native",
                  "fp8": "native", "int8": "native"},
}


@pytest.mark.parametrize("name", list(FIXED_PLANS))
def test_plan_matches_each_machines_report(name, hardware_reports):
    """A recorded hardware report (as in any manifest) yields the plan its hardware calls for."""
    assert statuses(hardware_reports[name]) == FIXED_PLANS[name]


def test_microbench_times_each_format_on_this_device():
    names = ["fp32", "bf16", "int8"]
    out = run_microbench(names, hidden=64, intermediate=128, heads=2, seq=32, repeats=2)
    assert list(out) == names
    for name in names:
        m = out[name]
        assert "error" not in m, m
        s = m["matmul_gflops"]
        assert len(s["runs"]) == 2 and 0 < s["min"] <= s["median"] <= s["max"]
        assert m["attention_ms"]["median"] > 0
    assert out["int8"]["kernel"] == "torch._int_mm"
