"""Making the student: a layer subset of the teacher (weights copied), or a model/config given by path.

Keeping every other transformer block and copying its weights (DistilBERT's initialisation) gives a student
that already produces sensible text, so distillation refines it instead of starting from noise. The
embeddings, final norm and LM head are copied too, so the student shares the teacher's vocabulary and
tokenizer exactly — a requirement of white-box KD, whose losses compare distributions token by token.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from toolkit.errors import ToolkitError

_LAYER_KEY = re.compile(r"^(.*\blayers\.)(\d+)(\..*)$")


def default_layers(n_layers: int, keep_every: int = 2) -> list[int]:
    """Every ``keep_every``-th layer, starting with the first: 0, 2, 4, … for 2 (half the depth, rounded up)."""
    return list(range(0, n_layers, keep_every))


def check_layers(layers: list[int], n_layers: int) -> list[int]:
    if not layers:
        raise ToolkitError("student.layers: empty list (keep at least one teacher layer)")
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise ToolkitError(f"student.layers: {bad} out of range for a teacher with {n_layers} layers (0..{n_layers - 1})")
    if sorted(set(layers)) != list(layers):
        raise ToolkitError(f"student.layers: {layers} must be strictly increasing without repeats")
    return list(layers)


def student_from_teacher(teacher, layers: list[int] | None = None, keep_every: int = 2):
    """A new model of the teacher's class with only ``layers`` kept, every kept weight copied.

    Works for decoder-only models whose blocks live under ``…layers.<i>.`` in the state dict (Llama, Qwen2,
    Mistral, Gemma, Phi-3, …). Per-layer config lists (``layer_types``) are subset to match.
    """
    import torch

    n = teacher.config.num_hidden_layers
    layers = check_layers(layers if layers is not None else default_layers(n, keep_every), n)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    for attr in ("layer_types",):  # per-layer settings (sliding vs full attention) follow their layer
        value = getattr(config, attr, None)
        if isinstance(value, list) and len(value) == n:
            setattr(config, attr, [value[i] for i in layers])
    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, tensor in teacher.state_dict().items():
        m = _LAYER_KEY.match(key)
        if m is None:
            state[key] = tensor
        elif int(m.group(2)) in new_index:
            state[f"{m.group(1)}{new_index[int(m.group(2))]}{m.group(3)}"] = tensor
    student = type(teacher)(config).to(next(teacher.parameters()).dtype)
    with torch.no_grad():
        missing, unexpected = student.load_state_dict(state, strict=False)
    # Tied LM heads and rotary buffers may legitimately be absent from the state dict; real weights may not.
    real_missing = [k for k in missing if "rotary" not in k and not (k.endswith("lm_head.weight") and config.tie_word_embeddings)]
    if real_missing or unexpected:
        raise ToolkitError(f"cannot build the student by copying layers of {type(teacher).__name__}: "
                           f"missing {real_missing[:3]}, unexpected {unexpected[:3]}")
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student


def load_student(path: str | Path, dtype):
    """A student from ``path``: a model directory with weights is loaded; a config alone is random-initialised."""
    from transformers import AutoConfig, AutoModelForCausalLM

    p = Path(path)
    if not p.exists():
        raise ToolkitError(f"{p}: student not found (give a model directory or a config.json)")
    cfg_path = p / "config.json" if p.is_dir() else p
    if not cfg_path.is_file():
        raise ToolkitError(f"{p}: not a model directory (no config.json)")
    try:
        archs = json.loads(cfg_path.read_text()).get("architectures") or []
    except json.JSONDecodeError as exc:
        raise ToolkitError(f"{cfg_path}: invalid JSON ({exc.msg})") from None
    if not any(a.endswith("ForCausalLM") for a in archs):
        raise ToolkitError(f"{cfg_path}: not a causal LM config (architectures: {archs or 'none'})")
    has_weights = p.is_dir() and any(p.glob("*.safetensors")) or p.is_dir() and any(p.glob("pytorch_model*.bin"))
    if has_weights:
        return AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype)
    config = AutoConfig.from_pretrained(str(cfg_path.parent))
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def check_same_vocabulary(teacher_tok, student_tok, teacher_model, student_model, teacher_name: str,
                          student_name: str) -> None:
    """Raise unless teacher and student share the tokenizer vocabulary and the LM-head size."""
    tv, sv = teacher_tok.get_vocab(), student_tok.get_vocab()
    if tv != sv:
        differ = len(set(tv.items()) ^ set(sv.items()))
        raise ToolkitError(
            f"tokenizer mismatch: teacher {teacher_name} ({len(tv)} tokens) and student {student_name} "
            f"({len(sv)} tokens) differ in {differ} entries; white-box distillation compares token "
            f"distributions and needs the teacher's tokenizer (use a student built from the teacher, or black-box)")
    t_out, s_out = teacher_model.get_output_embeddings(), student_model.get_output_embeddings()
    if t_out.weight.shape[0] != s_out.weight.shape[0]:
        raise ToolkitError(f"vocabulary size mismatch: teacher LM head has {t_out.weight.shape[0]} rows, "
                           f"student {student_name} has {s_out.weight.shape[0]}")
