"""Distillation: a smaller student learns from a frozen teacher.

Two recipes (``recipes/distill/``): black-box sequence-level KD (the student is fine-tuned on the teacher's
generated answers, seen only as text) and white-box KD (the student matches the teacher's softened token
distributions and, optionally, its hidden states). Training runs on the Hugging Face ``Trainer`` so
``torchrun``/``accelerate launch`` give data-parallel training with no extra code.
"""
