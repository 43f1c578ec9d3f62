"""PNG of a bench report: cache size and cumulative seconds against frames, both arms (matplotlib).

Frame 1 is the input image (its lift); each later point is the end of a chunk. Axes start at 0 and
are autoscaled to the data (with matplotlib's margins), so every series lies inside its panel and
nothing is drawn over the titles.
"""

from __future__ import annotations

import os
from typing import Any

COLORS = {"latent": "#1f77b4", "pointcloud": "#d62728"}  # matplotlib's tab:blue / tab:red
SIZE_PX = (1200, 520)
DPI = 100


def series(report: dict) -> dict:
    """The plotted data: ``frames`` (x) and, per arm, ``cache_mb``, ``end_to_end_s``, ``overhead_s`` (y)."""
    out: dict[str, Any] = {"frames": [1] + list(report["latent"]["per_chunk"]["frames"])}  # x, then a dict per arm
    for arm in COLORS:
        r, pc = report[arm], report[arm]["per_chunk"]
        start = report["shared"]["input_encode_s"] + r.get("setup_s", 0.0) + r["lift_s"]
        out[arm] = {"cache_mb": [b / 1e6 for b in [r["input_cache_bytes"]] + pc["cache_bytes"]],
                    "end_to_end_s": [start] + pc["cumulative_end_to_end_s"],
                    "overhead_s": [r["lift_s"]] + pc["cumulative_memory_overhead_s"]}
    return out


def make_figure(report: dict):
    """The matplotlib ``Figure`` (two panels, ``SIZE_PX`` pixels at ``DPI``)."""
    from matplotlib.figure import Figure

    c = report["config"]
    data = series(report)
    x = data["frames"]
    fig = Figure(figsize=(SIZE_PX[0] / DPI, SIZE_PX[1] / DPI), dpi=DPI, layout="constrained")
    fig.suptitle(f"mirage bench: latent memory vs RGB point cloud - codec {c['codec_label']}, {c['width']}x{c['height']}, "
                 f"write policy {c['pointcloud_write_policy']}, {report['device']}", fontsize=10)
    size_ax, time_ax = fig.subplots(1, 2)
    for arm, color in COLORS.items():
        d = data[arm]
        size_ax.plot(x, d["cache_mb"], "o-", color=color, lw=2.5, label=arm)
        time_ax.plot(x, d["end_to_end_s"], "o-", color=color, lw=2.5, label=f"{arm} (end to end)")
        time_ax.plot(x, d["overhead_s"], "--", color=color, lw=2, label=f"{arm} (memory overhead)")
    for ax, ylabel in ((size_ax, "cache size (MB)"), (time_ax, "cumulative seconds")):
        ax.set_xlabel("frames")
        ax.set_ylabel(ylabel)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(True, color="0.9")
        ax.legend(loc="upper left")
    return fig


def draw_plot(report: dict, path: str | os.PathLike) -> None:
    """Write the PNG of :func:`make_figure` to ``path`` (atomically)."""
    from ..io import atomic_path

    fig = make_figure(report)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
