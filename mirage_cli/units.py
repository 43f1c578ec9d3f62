"""One spelling of sizes for every command: decimal SI units (B, kB, MB, GB), as the README tables."""

from __future__ import annotations


def fmt_bytes(n: float) -> str:
    """``6435680`` -> ``"6.44 MB"``; below 1 kB in whole bytes."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"
