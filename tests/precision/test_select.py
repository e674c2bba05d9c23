"""Selection on hand-written measurements: the winner within the budget, and the fastest unquantized format
(the baseline a speed-up is stated against)."""

from toolkit.precision.select import select


def row(name: str, decode: float, ppl_delta: float) -> dict:
    runs = {"median": decode, "min": decode * 0.95, "max": decode * 1.05}
    return {"name": name, "label": name.upper(), "ppl_delta": ppl_delta, "throughput": {"decode": {"8": runs}}}


def test_winner_and_fastest_unquantized_are_reported_separately():
    rows = [row("fp32", 1900, 0.0), row("bf16", 1767, 0.001), row("int8", 2575, 0.004)]
    sel = select(rows, budget=0.01)
    assert sel["winner"] == "int8" and sel["ranking"] == ["int8", "fp32", "bf16"]
    assert sel["fastest_unquantized"] == "fp32"  # faster than BF16 here, although BF16 is native


def test_fastest_unquantized_is_none_when_only_quantized_formats_were_measured():
    sel = select([row("int8", 2575, 0.004), row("fp8", 400, 0.002)], budget=0.01)
    assert sel["winner"] == "int8" and sel["fastest_unquantized"] is None
