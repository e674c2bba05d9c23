import torch
from llmcompressor.pipelines.cache import IntermediatesCache

from toolkit.quantize.cpu_awq import pin_memory_guard


def test_pin_memory_is_skipped_only_without_an_accelerator_and_restored_after():
    original = IntermediatesCache.pin_memory
    cache = IntermediatesCache.empty(1, torch.device("cpu"))
    cache.update(0, {"x": torch.ones(4)})
    with pin_memory_guard() as patched:
        assert patched == (not torch.accelerator.is_available())
        cache.pin_memory(0)  # upstream raises "Cannot access accelerator device" here on CPU-only torch
        assert torch.equal(cache.fetch(0)["x"], torch.ones(4))
    assert IntermediatesCache.pin_memory is original
