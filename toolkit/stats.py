"""The toolkit's one definition of percentiles, medians and a run's spread; every report and benchmark uses it.

Percentiles interpolate linearly between order statistics: the q-th percentile of a sorted sample ``x`` of
size ``n`` sits at position ``(n - 1) * q / 100``. This is numpy's default ``method="linear"`` (Hyndman & Fan
1996, definition 7; R's default type 7, Excel's PERCENTILE.INC), so p50 of an even-sized sample is the midpoint
of the two middle values and equals :func:`statistics.median`.

Standard library only: :mod:`toolkit.engine.offline` imports this module inside ``.venv-vllm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """``q``-th percentile (0..100) with linear interpolation between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def spread(runs: Sequence[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "runs"}`` of repeated measurements: the form every throughput figure takes."""
    xs = list(runs)
    return {"median": median(xs), "min": min(xs), "max": max(xs), "runs": xs}
