"""Arithmetic behind the distillation table (README): decode speed-up, perplexity against the teacher and the
pass/miss targets, with hand-computed values; how the measured figures become named metrics of the common
results schema and the printed table. A real run trains three students and starts vLLM twice (minutes), so it
is left to ``make bench-distill``."""

import pytest

from toolkit.distill.bench import _print, bench_targets, decode_means, decode_speedup, ppl_vs_teacher, record
from toolkit.results import SCHEMA, BenchRun, find, read_results

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


def test_decode_means_are_the_means_of_the_runs():
    assert decode_means({"1": [40.0, 42.0, 44.0], "8": [100.0]}) == {"batch1": 42.0, "batch8": 100.0}


def _measured() -> dict:
    runs = {"teacher": {"1": [40.0, 40.0, 40.0], "8": [118.0, 120.0, 122.0]},
            "student": {"1": [90.0, 90.0, 90.0], "8": [200.0, 200.0, 200.0]}}
    tps = {k: decode_means(v) for k, v in runs.items()}
    ppl = {"teacher": 10.0, "student_init": 900.0, "whitebox-kd": 10.8, "ce-only": 11.5, "blackbox-sft": 12.0}
    speedup = decode_speedup(tps["student"], tps["teacher"])
    return {"teacher": "/m/teacher", "steps": 5, "teacher_params": 2_000_000, "student_params": 1_000_000,
            "student_layers_from_teacher": [0, 2], "validation_perplexity": ppl,
            "qa_f1": {"teacher": 0.4, "whitebox-kd": 0.3, "ce-only": 0.2, "blackbox-sft": 0.1},
            "decode_tokens_per_s": tps, "decode_runs": runs, "decode_speedup_student_vs_teacher": speedup,
            "train_runtime_s": {"whitebox-kd": 3.0, "ce-only": 2.0, "blackbox-sft": 2.5},
            "final_losses": {"whitebox-kd": {"ce": 1.0}}, "targets": bench_targets(ppl, speedup, STUDENTS)}


def test_record_writes_the_common_schema_with_offline_batch_size_labels(tmp_path, capsys):
    run = BenchRun("distill-bench", config={"steps": 5})
    path = run.write(tmp_path / "distill-bench.json", extra=record(run, _measured()))
    data = read_results(path)
    assert data["schema"] == SCHEMA and data["bench"] == "distill-bench"
    env = data["environment"]
    assert "avx512f" in env["hardware"]["cpu"]["isa"] and len(env["load_avg_start"]) == len(env["load_avg_end"]) == 3
    assert all(m["unit"] for m in data["metrics"])
    tps = find(data, "offline_decode_tok_s")
    assert len(tps) == 4 and all("concurrency" not in m["labels"] for m in tps)
    (t8,) = find(data, "offline_decode_tok_s", variant="teacher", batch_size=8)
    assert t8["value"] == 120.0 and t8["interval"]["n"] == 3 and t8["interval"]["cv"] == pytest.approx(2 / 120)
    (s8,) = find(data, "offline_decode_speedup", batch_size=8)
    assert s8["unit"] == "ratio" and s8["value"] == 1.67  # 200 / 120, rounded
    assert find(data, "perplexity", variant="student_init")[0]["value"] == 900.0
    assert find(data, "qa_f1", variant="ce-only")[0]["value"] == 0.2
    assert data["targets"]["kd_beats_ce_only_ppl"] is True and data["student_layers_from_teacher"] == [0, 2]
    _print(_measured(), data["environment"])
    out = capsys.readouterr().out
    assert "5 steps per student" in out and "120.0" in out and "PASS  kd_beats_ce_only_ppl" in out
