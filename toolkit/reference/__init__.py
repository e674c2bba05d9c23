"""Offline reference data and model: corpus from the Python standard library's docstrings, QA set,
byte-level BPE tokenizer and a small Llama trained locally, so every command works with no model hub."""
