"""Precision selection: which numeric format (FP32/TF32/BF16/FP16/FP8/INT8) to serve a model in, measured here."""
