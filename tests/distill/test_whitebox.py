"""White-box KD end to end on tiny models: losses fall, components are logged, the output is a plain HF
checkpoint with a manifest, a narrower student trains through the learned projection, and 2 CPU
processes (gloo) train the same recipe data-parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from toolkit.cli import main
from toolkit.manifest import read_manifest, sha256_tree
from toolkit.modeling import load_causal_lm, load_tokenizer, perplexity, read_texts, token_windows
from toolkit.paths import REPO_ROOT


def _losses(manifest: dict, key: str = "loss") -> list[float]:
    return [e[key] for e in manifest["results"]["log_history"] if key in e]


def test_whitebox_kd_trains_and_exports_hf_checkpoint(tiny_llama, distill_texts, write_recipe, whitebox_recipe, tmp_path):
    train, valid = distill_texts
    out = tmp_path / "student"
    recipe = write_recipe(whitebox_recipe(train, valid, divergence="jsd"))
    assert main(["distill", "--recipe", str(recipe), "--teacher", str(tiny_llama), "--output", str(out)]) == 0

    m = read_manifest(out)
    r = m["results"]
    assert r["steps"] == 8 and r["world_size"] == 1
    # recipe precision "auto": bf16 mixed precision exactly where the recorded hardware runs bf16 natively
    # (AVX-512-BF16/AMX CPU, CUDA >= 8.0), fp32 elsewhere; the rule itself is unit-tested on fixed reports
    native_bf16 = m["hardware"]["supports"]["bf16"]
    assert r["precision"] == ("bf16-mixed" if native_bf16 else "fp32")
    assert r["compute_dtype"] == ("bfloat16" if native_bf16 else "float32")
    assert m["inputs"]["teacher"]["sha256"] == sha256_tree(tiny_llama)
    assert m["recipe"]["loss"]["divergence"] == "jsd"
    total = _losses(m)
    assert len(total) == 8 and sum(total[-2:]) < sum(total[:2]), total
    for part in ("loss_ce", "loss_kd", "loss_hidden"):
        assert len(_losses(m, part)) == 8
    assert set(r["final_losses"]) >= {"loss", "loss_ce", "loss_kd", "loss_hidden"}
    assert r["student_layers_from_teacher"] == [0]
    assert r["student_params"] < r["teacher_params"]
    ppl = r["validation_perplexity"]
    assert all(1 < ppl[k] < 1e6 for k in ("teacher", "student_init", "student"))  # random teacher: no ranking

    # a plain HF causal LM directory: config + weights + tokenizer, same dtype as the teacher, no extras
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and cfg["architectures"] == ["LlamaForCausalLM"]
    student = load_causal_lm(out)
    assert str(student.dtype) == "torch.bfloat16"
    assert not any("kd_projector" in k for k in student.state_dict())
    tok = load_tokenizer(out)
    windows = token_windows(tok, read_texts(valid), 64, 4)
    assert abs(perplexity(student.float(), windows) - ppl["student"]) / ppl["student"] < 0.05
    assert not (tmp_path / ".student.checkpoints").exists()  # checkpoints removed after success


def test_narrower_student_uses_learned_projection(tiny_llama, distill_texts, write_recipe, whitebox_recipe, tmp_path):
    """A student from a config (hidden 128 vs teacher 256) trains through the projection, which is not exported."""
    cfg = json.loads((tiny_llama / "config.json").read_text())
    cfg.update(hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2,
               num_key_value_heads=1, head_dim=64)
    student_cfg = tmp_path / "student-config"
    student_cfg.mkdir()
    (student_cfg / "config.json").write_text(json.dumps(cfg))
    train, valid = distill_texts
    recipe = write_recipe(whitebox_recipe(train, valid, hidden_loss="mse", divergence="reverse"))
    out = tmp_path / "narrow"
    assert main(["distill", "--recipe", str(recipe), "--teacher", str(tiny_llama), "--student", str(student_cfg),
                 "--output", str(out), "--max-steps", "6"]) == 0
    m = read_manifest(out)
    assert m["results"]["steps"] == 6
    hidden = _losses(m, "loss_hidden")
    assert hidden[-1] < hidden[0], hidden
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 128
    assert not any("kd_projector" in k for k in load_causal_lm(out).state_dict())


def test_two_process_gloo_run(tiny_llama, distill_texts, write_recipe, whitebox_recipe, tmp_path):
    """``torchrun --nproc_per_node 2`` on CPU: DDP over gloo, one output written by rank 0."""
    train, valid = distill_texts
    data = whitebox_recipe(train, valid)
    data["training"].update(max_steps=4, batch_size=2)
    recipe = write_recipe(data)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29517", "-m", "toolkit", "distill", "--recipe", str(recipe),
                           "--teacher", str(tiny_llama), "--output", str(out)],
                          capture_output=True, text=True, env=env, timeout=240, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = read_manifest(out)
    assert m["results"]["world_size"] == 2 and m["results"]["steps"] == 4
    assert (out / "model.safetensors").is_file()


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes_from_checkpoint(tiny_llama, distill_texts, whitebox_recipe, tmp_path):
    """A run killed after its step-2 checkpoint leaves no output; ``resume=True`` continues at step 2."""
    from transformers import TrainerCallback

    from toolkit.distill.recipe import DistillRecipe
    from toolkit.distill.run import checkpoint_dir, distill

    class StopAt3(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise _Interrupt

    data = whitebox_recipe(*distill_texts, beta=0.0)
    data["training"].update(max_steps=4, save_steps=2, batch_size=2)
    recipe = DistillRecipe.model_validate(data)
    out = tmp_path / "resumed"
    with pytest.raises(_Interrupt):
        distill(recipe, str(tiny_llama), out, callbacks=[StopAt3()])
    assert not out.exists()
    assert [p.name for p in checkpoint_dir(out).glob("checkpoint-*")] == ["checkpoint-2"]
    m = distill(recipe, str(tiny_llama), out, resume=True)
    steps_logged = [e["step"] for e in m["results"]["log_history"] if "loss" in e]
    assert m["results"]["steps"] == 4 and steps_logged == [1, 2, 3, 4]
    assert not checkpoint_dir(out).exists()
