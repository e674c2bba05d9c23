"""The demo's plan and resume logic (the full pipeline itself runs with `make demo`)."""

import json

from toolkit.demo import Step, _student_winner_argv, plan, run_steps


def test_quick_plan_is_the_user_commands_in_order(tmp_path):
    steps, compare_dir = plan(quick=True, root=tmp_path)
    names = [s.name for s in steps]
    assert names == ["reference", "quantize reference-gptq-w8a8-int8", "index", "eval reference-bf16",
                     "eval reference-gptq-w8a8-int8", "compare"]
    assert steps[0].argv()[:3] == ["reference", "--recipe", "recipes/reference/quick.yaml"]
    assert compare_dir == tmp_path / "reports" / "demo" / "compare"


def test_full_plan_covers_every_recipe_and_the_student(tmp_path):
    names = [s.name for s in plan(quick=False, root=tmp_path)[0]]
    for recipe in ("rtn-w4a16", "gptq-w4a16", "awq-w4a16", "gptq-w8a8-int8", "fp8-dynamic"):
        assert f"quantize reference-{recipe}" in names and f"eval reference-{recipe}" in names
    assert names.index("distill student-kd") < names.index("precision") < names.index(
        "quantize student with the precision winner") < names.index("compare")


def test_full_plan_sizes_calibration_and_precision_for_the_demo(tmp_path):
    from toolkit.hardware import hardware_report

    steps = {s.name: s for s in plan(quick=False, root=tmp_path)[0]}
    for recipe, calibrated in (("rtn-w4a16", False), ("gptq-w4a16", True), ("awq-w4a16", True),
                               ("fp8-dynamic", False)):
        argv = steps[f"quantize reference-{recipe}"].argv()
        assert ("--num-samples" in argv) == calibrated, argv  # data-free recipes take no calibration flag
    argv = steps["precision"].argv()
    assert ("--candidates" in argv) == (hardware_report()["device"] == "cpu")


def test_variants_vllm_cannot_serve_here_get_a_quality_only_eval(tmp_path):
    from toolkit.demo import _eval_argv
    from toolkit.engine.kernels import w4a16_kernel_available

    def model_with(bits: int, activations: dict | None):  # the quantization_config llm-compressor writes
        d = tmp_path / f"w{bits}"
        d.mkdir()
        group = {"weights": {"num_bits": bits, "type": "int"}, "input_activations": activations, "targets": ["Linear"]}
        (d / "config.json").write_text(json.dumps({"quantization_config": {"config_groups": {"group_0": group}}}))
        return d

    w4 = _eval_argv(model_with(4, None), tmp_path, tmp_path / "s.yaml", tmp_path / "r.json")()
    w8 = _eval_argv(model_with(8, {"num_bits": 8, "type": "int"}), tmp_path, tmp_path / "s.yaml", tmp_path / "r.json")()
    assert ("--no-serve" in w4) == (not w4a16_kernel_available()[0])
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
    proc = subprocess.run([sys.executable, "-m", "toolkit", "demo", "--quick", "--output", str(root)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = root / "reports" / "demo"
    for variant in ("reference-bf16", "reference-gptq-w8a8-int8"):
        report = read_report(reports / f"{variant}.json")
        assert report.quality.val_ppl and report.latency.points and report.quality.recall_at_k
    assert (reports / "compare" / "compare.html").stat().st_size > 10_000
    assert "demo finished" in proc.stdout and "reference-gptq-w8a8-int8" in proc.stdout
    again = subprocess.run([sys.executable, "-m", "toolkit", "demo", "--quick", "--output", str(root), "--plan"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert again.stdout.count(": done") == 6  # a re-run resumes: every step is already done
