"""Workaround: AWQ in llm-compressor 0.14.0.1 crashes on CPU-only torch.

Upstream: ``llmcompressor/modifiers/transform/awq/base.py`` ``AWQModifier._apply_smoothing`` calls
``IntermediatesCache.pin_memory`` (``llmcompressor/pipelines/cache.py``) for every cached batch to speed up
host→device copies; ``Tensor.pin_memory()`` then raises ``RuntimeError: Cannot access accelerator device
when none is available.`` (also in 0.13.0). Pinning only matters for transfers to an accelerator, so when
there is none it is skipped. The patch is applied only while AWQ runs and only on machines without an
accelerator; everywhere else the upstream method runs unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def pin_memory_guard() -> Iterator[bool]:
    """Within the block, ``IntermediatesCache.pin_memory`` is a no-op if no accelerator exists.

    Yields whether the patch is active (recorded in the manifest).
    """
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield False
        return
    original = IntermediatesCache.pin_memory

    def _no_pin(self, batch_index, input_names=None):  # pinned host memory needs an accelerator
        return None

    IntermediatesCache.pin_memory = _no_pin
    try:
        yield True
    finally:
        IntermediatesCache.pin_memory = original
