"""Arithmetic behind the distillation table (README): decode speed-up, perplexity against the teacher and the
pass/miss targets, with hand-computed values. A real run trains three students and starts vLLM twice
(minutes), so it is left to ``make bench-distill``."""

import pytest

from toolkit.distill.bench import bench_targets, decode_speedup, ppl_vs_teacher

STUDENTS = ["whitebox-kd", "ce-only", "blackbox-sft"]


def test_decode_speedup_per_batch_rounded_to_two_decimals():
    teacher = {"batch1": 40.0, "batch8": 120.0}
    student = {"batch1": 90.0, "batch8": 200.0}
    assert decode_speedup(student, teacher) == {"batch1": 2.25, "batch8": 1.67}  # 200/120 = 1.666...


def test_ppl_vs_teacher_is_relative_change():
    assert ppl_vs_teacher(11.0, 10.0) == pytest.approx(0.10)
    assert ppl_vs_teacher(9.0, 10.0) == pytest.approx(-0.10)
    assert ppl_vs_teacher(10.0, 10.0) == 0.0


def test_targets_pass():
    ppl = {"teacher": 10.0, "whitebox-kd": 10.8, "ce-only": 11.5, "blackbox-sft": 12.0}
    assert bench_targets(ppl, {"batch1": 1.9, "batch8": 1.8}, STUDENTS) == {
        "kd_beats_ce_only_ppl": True, "best_student_ppl_within_10pct_of_teacher": True,
        "decode_speedup_ge_1_8x_batch1": True, "decode_speedup_ge_1_8x_batch8": True}


def test_targets_miss():
    # best student 11.5 > 1.1 * 10 = 11; KD worse than CE-only; speed-up 1.79 < 1.8; batch 8 not measured
    ppl = {"teacher": 10.0, "whitebox-kd": 12.0, "ce-only": 11.5, "blackbox-sft": 13.0}
    assert bench_targets(ppl, {"batch1": 1.79}, STUDENTS) == {
        "kd_beats_ce_only_ppl": False, "best_student_ppl_within_10pct_of_teacher": False,
        "decode_speedup_ge_1_8x_batch1": False, "decode_speedup_ge_1_8x_batch8": False}


def test_the_best_student_decides_the_perplexity_target():
    ppl = {"teacher": 10.0, "whitebox-kd": 12.0, "ce-only": 12.5, "blackbox-sft": 10.9}
    assert bench_targets(ppl, {}, STUDENTS)["best_student_ppl_within_10pct_of_teacher"] is True
