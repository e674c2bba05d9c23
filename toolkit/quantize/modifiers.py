"""Recipe → llm-compressor modifiers, after checking the recipe against the actual model.

The split mirrors llm-compressor's own: *what* the weights become (a compressed-tensors
``QuantizationScheme``: bits, symmetry, grouping, activation quantization) is one ``config_groups`` entry
shared by every algorithm; *how* they are rounded is the modifier that carries it:

- ``rtn``  → ``QuantizationModifier(config_groups=...)`` (data-free; min/max observers)
- ``gptq`` → ``GPTQModifier(config_groups=..., dampening_frac, block_size, actorder)``
- ``awq``  → ``[AWQModifier(duo_scaling, n_grid), QuantizationModifier(config_groups=...)]``: in 0.14 AWQ is a
  transform that only rescales channels and reads the scheme from the quantization modifier that follows it
  (the single-modifier ``llmcompressor.modifiers.awq.AWQModifier(scheme=...)`` is a deprecated shim for
  exactly this pair).
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import ToolkitError
from toolkit.quantize.recipe import AWQOptions, GPTQOptions, QuantizeRecipe


def build_scheme(recipe: QuantizeRecipe):
    """The compressed-tensors scheme: the preset named by ``recipe.scheme`` with the recipe's group size."""
    from compressed_tensors.quantization import preset_name_to_scheme

    scheme = preset_name_to_scheme(recipe.scheme, list(recipe.targets))
    if recipe.effective_group_size is not None and scheme.weights is not None:
        scheme.weights.group_size = recipe.effective_group_size
    return scheme


def quantized_layers(model, recipe: QuantizeRecipe) -> list[tuple[str, Any]]:
    """``(name, module)`` of every layer the recipe quantizes (targets minus ignore)."""
    from compressed_tensors.utils import match_named_modules

    return list(match_named_modules(model, list(recipe.targets), list(recipe.ignore)))


def fitting_group_sizes(input_sizes: list[int], candidates: tuple[int, ...] = (256, 128, 64, 32, 16)) -> list[int]:
    """The usual group sizes (largest first) that divide every input size: groups never straddle rows."""
    return [g for g in candidates if all(n % g == 0 for n in input_sizes)]


def check_against_model(model, recipe: QuantizeRecipe, source: str = "recipe") -> int:
    """Fail early, before any calibration, if the recipe cannot apply; return the number of layers hit.

    Grouped schemes need every quantized layer's input size divisible by the group size (the packed format
    and vLLM's kernels have no partial groups).
    """
    layers = quantized_layers(model, recipe)
    if not layers:
        raise ToolkitError(f"{source}: field 'targets': {recipe.targets} (minus ignore {recipe.ignore}) "
                           "matches no layer of the model")
    gs = recipe.effective_group_size
    if gs is not None:
        bad = [(name, m.weight.shape[-1]) for name, m in layers if m.weight.shape[-1] % gs]
        if bad:
            name, cols = bad[0]
            hidden = getattr(model.config, "hidden_size", "?")
            fits = fitting_group_sizes([m.weight.shape[-1] for _, m in layers])
            way_out = (f"group sizes that divide every layer: {', '.join(map(str, fits))}" if fits else
                       "no group size of 16 or more divides every layer: use a per-channel scheme (W8A16, W8A8)")
            raise ToolkitError(f"{source}: field 'group_size': {gs} does not divide the input size {cols} of "
                               f"{name} (hidden_size {hidden}; {len(bad)} layer(s) affected); {way_out}, "
                               "or add those layers to 'ignore'")
    return len(layers)


def build_modifiers(recipe: QuantizeRecipe) -> list:
    """The llm-compressor modifiers for ``oneshot(recipe=...)``."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    quant = {"config_groups": {"group_0": build_scheme(recipe)}, "ignore": list(recipe.ignore)}
    smooth = []
    if recipe.smoothquant is not None:
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        smooth = [SmoothQuantModifier(smoothing_strength=recipe.smoothquant.smoothing_strength)]
    if recipe.algorithm == "rtn":
        return [*smooth, QuantizationModifier(**quant)]
    if recipe.algorithm == "gptq":
        opts = recipe.gptq or GPTQOptions()
        return [*smooth, GPTQModifier(**quant, dampening_frac=opts.dampening_frac, block_size=opts.block_size,
                                      actorder=opts.actorder)]
    from llmcompressor.modifiers.transform.awq import AWQModifier

    awq = recipe.awq or AWQOptions()
    return [AWQModifier(duo_scaling=awq.duo_scaling, n_grid=awq.n_grid), QuantizationModifier(**quant)]
