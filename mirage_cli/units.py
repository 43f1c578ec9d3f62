"""One spelling of sizes for every command (decimal SI units: B, kB, MB, GB, as the docs' tables), and
the one PSNR-from-MSE formula the bench and the generate record share."""

from __future__ import annotations

import math


def fmt_bytes(n: float) -> str:
    """``6435680`` -> ``"6.44 MB"``; below 1 kB in whole bytes."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


def psnr_db(mse: float) -> float:
    """PSNR in dB of a mean squared error ``mse`` for signals in [0, 1] (peak 1.0): ``10 log10(1 / mse)``,
    with ``mse`` floored at 1e-12 so an exact match gives 120 dB instead of infinity."""
    return 10 * math.log10(1.0 / max(mse, 1e-12))
