"""``DistillTrainer``: the Hugging Face ``Trainer`` with a knowledge-distillation loss.

Everything else (optimizer, scheduler, mixed precision, gradient accumulation, checkpoints and resume,
progress bar with ETA, DDP under ``torchrun``/``accelerate launch``) is the stock ``Trainer``. Only
:meth:`compute_loss` changes:

    loss = α·T²·D(p_teacher^T, p_student^T) + (1 − α)·CE + β·hidden-state loss

The teacher is frozen (``requires_grad=False``), kept in eval mode (no dropout) and run under
``torch.no_grad`` — it is not part of the trained model, so DDP neither wraps nor synchronises it; each
process holds its own copy. With α = 0 and β = 0 the teacher is not even run (plain CE fine-tuning, the
baseline the benchmark compares against, and black-box SFT on teacher answers).

Each loss component is averaged between logging steps and logged separately (``loss_ce``, ``loss_kd``,
``loss_hidden``) next to the Trainer's total ``loss``. The component averages are those of the main
process (the total ``loss`` is averaged over processes by the Trainer).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from transformers import Trainer

from toolkit.distill.losses import HiddenProjector, causal_ce, hidden_state_loss, kd_loss
from toolkit.distill.recipe import KDLossSpec

PROJECTOR_ATTR = "kd_projector"  # registered on the student so DDP and the optimizer see it; removed before export


def freeze(teacher: torch.nn.Module) -> torch.nn.Module:
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def attach_projector(student, layer_map: dict[int, int], teacher_dim: int) -> HiddenProjector | None:
    """Register a learned projection on the student when its width differs from the teacher's."""
    proj = HiddenProjector(layer_map, student.config.hidden_size, teacher_dim)
    if not proj.needed:
        return None
    setattr(student, PROJECTOR_ATTR, proj.to(next(student.parameters()).dtype))
    return proj


def detach_projector(student) -> None:
    if hasattr(student, PROJECTOR_ATTR):
        delattr(student, PROJECTOR_ATTR)


class DistillTrainer(Trainer):
    def __init__(self, *args: Any, teacher: torch.nn.Module | None = None, kd: KDLossSpec | None = None,
                 layer_map: dict[int, int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kd = kd
        self.layer_map = layer_map or {}
        uses_teacher = kd is not None and (kd.alpha > 0 or kd.beta > 0)
        self.teacher = freeze(teacher).to(self.args.device) if (teacher is not None and uses_teacher) else None
        # Our loss is a per-token mean computed here; the Trainer must not rescale it by token counts.
        self.model_accepts_loss_kwargs = False
        self._sums: dict[str, float] = defaultdict(float)
        self._n = 0

    def compute_loss(self, model, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        labels = inputs["labels"]
        kd = self.kd
        want_hidden = self.teacher is not None and kd.beta > 0
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    output_hidden_states=want_hidden)
        ce = causal_ce(out.logits, labels)
        parts = {"ce": ce}
        loss = ce
        if self.teacher is not None:
            with torch.no_grad():
                t_out = self.teacher(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                     output_hidden_states=want_hidden)
            target_mask = labels[:, 1:] != -100  # the positions CE trains on: no padding, no prompt
            kd_term = kd_loss(out.logits[:, :-1], t_out.logits[:, :-1], target_mask, kd.temperature, kd.divergence)
            parts["kd"] = kd_term
            loss = kd.alpha * kd_term + (1.0 - kd.alpha) * ce
            if want_hidden:
                projector = getattr(self.accelerator.unwrap_model(model), PROJECTOR_ATTR, None)
                h = hidden_state_loss(out.hidden_states, t_out.hidden_states, self.layer_map,
                                      inputs["attention_mask"].bool(), kd.hidden_loss, projector)
                parts["hidden"] = h
                loss = loss + kd.beta * h
        if model.training:
            for k, v in parts.items():
                self._sums[k] += float(v.detach())
            self._n += 1
        return (loss, out) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._n:
            for k, v in self._sums.items():
                logs[f"loss_{k}"] = round(v / self._n, 4)
            self._sums.clear()
            self._n = 0
        super().log(logs, start_time)


def final_losses(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged value of the total loss and of each component."""
    out: dict[str, float] = {}
    for entry in log_history:
        for k, v in entry.items():
            if k == "loss" or k.startswith("loss_"):
                out[k] = v
        if "train_loss" in entry:
            out["train_loss_mean"] = entry["train_loss"]
    return out


def first_losses(log_history: list[dict[str, Any]]) -> dict[str, float]:
    for entry in log_history:
        if "loss" in entry:
            return {k: v for k, v in entry.items() if k == "loss" or k.startswith("loss_")}
    return {}
