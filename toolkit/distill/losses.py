"""The distillation losses, as plain functions of logits / hidden states and a token mask.

White-box KD (Hinton et al., 2015) softens both distributions with a temperature ``T`` and scales the
divergence by ``T²`` so its gradient magnitude stays comparable to the cross-entropy term as ``T`` grows:

    loss = α · T² · D(p_teacher^T, p_student^T) + (1 − α) · CE(student, labels) + β · hidden-state loss

``D`` is selectable:

- ``forward``: KL(p_t ‖ p_s) — mean-seeking; the student spreads mass over everything the teacher allows
  (the classic choice, best when the student has enough capacity).
- ``reverse``: KL(p_s ‖ p_t) — mode-seeking; the student concentrates on the teacher's main modes
  (MiniLLM argues it suits generative students that cannot cover the whole teacher distribution).
- ``jsd``: Jensen–Shannon, ½KL(p_t ‖ m) + ½KL(p_s ‖ m) with m = ½(p_t + p_s) — symmetric and bounded by
  ln 2, so it is gentler early in training when the two distributions barely overlap.

All per-token quantities are averaged over the positions where ``mask`` is true (padding and prompt tokens
excluded), so batches with different amounts of padding weigh every real token equally.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Divergence = Literal["forward", "reverse", "jsd"]
HiddenLoss = Literal["mse", "cosine"]


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (shape ``[..., L]``) over positions where ``mask`` is true; 0 if none are."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-position KL(p ‖ q) from log-probabilities over the last axis (0·log 0 treated as 0)."""
    p = log_p.exp()
    return (p * (log_p - log_q)).sum(-1)


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                     kind: Divergence = "forward") -> torch.Tensor:
    """Per-position divergence between temperature-softened distributions, shape ``logits.shape[:-1]``.

    Computed in float32 whatever the logits' dtype: log-softmax over a large vocabulary in bf16 loses the
    small probabilities the divergence is made of.
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if kind == "forward":
        return _kl(log_t, log_s)
    if kind == "reverse":
        return _kl(log_s, log_t)
    if kind == "jsd":
        # log m = log(½(p_t + p_s)) = logsumexp([log p_t, log p_s]) − log 2, stable for tiny probabilities
        log_m = torch.logsumexp(torch.stack([log_t, log_s]), dim=0) - math.log(2.0)
        return 0.5 * _kl(log_t, log_m) + 0.5 * _kl(log_s, log_m)
    raise ValueError(f"unknown divergence '{kind}' (forward, reverse or jsd)")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None,
            temperature: float = 1.0, kind: Divergence = "forward") -> torch.Tensor:
    """``T² · mean over masked positions of D(p_t^T, p_s^T)`` — the distillation term before α."""
    per_token = token_divergence(student_logits, teacher_logits, temperature, kind)
    return (temperature ** 2) * masked_mean(per_token, mask)


def causal_ce(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Next-token cross-entropy, mean over label positions != ``ignore_index`` (logits and labels unshifted)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                           ignore_index=ignore_index)


def hidden_loss(student_h: torch.Tensor, teacher_h: torch.Tensor, mask: torch.Tensor | None,
                kind: HiddenLoss = "mse") -> torch.Tensor:
    """Per-token hidden-state distance averaged over masked positions; shapes ``[B, L, D]`` (same D).

    ``mse`` is the mean squared error per element (so it does not grow with the width); ``cosine`` is
    1 − cosine similarity, which ignores scale — useful when the student's activations have a different
    norm from the teacher's (e.g. after dropping half the layers).
    """
    s, t = student_h.float(), teacher_h.float()
    if kind == "mse":
        per_token = (s - t).pow(2).mean(-1)
    elif kind == "cosine":
        per_token = 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-6)
    else:
        raise ValueError(f"unknown hidden-state loss '{kind}' (mse or cosine)")
    return masked_mean(per_token, mask)


def default_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Uniform map of student block outputs to teacher block outputs (hidden-state indices, 1-based).

    Student output ``j`` (after block j, j = 1..m) is matched with teacher output ``round(j·n/m)``, so the
    last student layer always matches the last teacher layer (TinyBERT's uniform strategy).
    """
    return {j: max(1, round(j * teacher_layers / student_layers)) for j in range(1, student_layers + 1)}


class HiddenProjector(torch.nn.Module):
    """Learned linear maps from student width to teacher width, one per mapped layer (identity if equal).

    Trained jointly with the student and discarded afterwards: it only exists to make hidden states of
    different widths comparable.
    """

    def __init__(self, layer_map: dict[int, int], student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.needed = student_dim != teacher_dim
        self.proj = torch.nn.ModuleDict(
            {str(j): torch.nn.Linear(student_dim, teacher_dim, bias=False) for j in layer_map} if self.needed else {})

    def forward(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        if not self.needed:
            return h
        proj = self.proj[str(layer)]
        return proj(h.to(proj.weight.dtype))


def hidden_state_loss(student_hidden: tuple[torch.Tensor, ...], teacher_hidden: tuple[torch.Tensor, ...],
                      layer_map: dict[int, int], mask: torch.Tensor | None, kind: HiddenLoss = "mse",
                      projector: HiddenProjector | None = None) -> torch.Tensor:
    """Mean over the layer map of :func:`hidden_loss`; hidden tuples as returned with ``output_hidden_states``."""
    losses = []
    for s_idx, t_idx in layer_map.items():
        h = student_hidden[s_idx]
        if projector is not None:
            h = projector(s_idx, h)
        losses.append(hidden_loss(h, teacher_hidden[t_idx], mask, kind))
    return torch.stack(losses).mean()
