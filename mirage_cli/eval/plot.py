"""``mirage eval recon --plot``: a metric against frame, one line per clip, revisiting frames marked.

Frame 0 (the input, PSNR at the cap) is left out, as from the means, so it does not set the scale.
"""

from __future__ import annotations

import os

PLOT_FIELDS = ("psnr_all", "psnr_memory", "ssim_all", "known_fraction")
SIZE_PX = (1200, 800)
DPI = 100


def make_figure(doc: dict):
    """The matplotlib ``Figure``: one panel per field of :data:`PLOT_FIELDS` the clips have."""
    from matplotlib.figure import Figure

    fields = [f for f in PLOT_FIELDS if any(f in c["per_frame"] for c in doc["clips"])]
    fig = Figure(figsize=(SIZE_PX[0] / DPI, SIZE_PX[1] / DPI), dpi=DPI, layout="constrained")
    cfg = doc["config"]
    fig.suptitle(f"mirage eval recon - backend {cfg.get('backend')}, {len(doc['clips'])} clips "
                 "(x: revisiting frame)", fontsize=10)
    axes = fig.subplots(2, 2).ravel()
    for ax, f in zip(axes, fields):
        for c in doc["clips"]:
            pf = c["per_frame"]
            if f not in pf:
                continue
            pts = [(t, v) for t, v in zip(pf["frame"], pf[f]) if v is not None and t > 0]
            if not pts:
                continue
            x, y = zip(*pts)
            (line,) = ax.plot(x, y, "-", lw=1.8, label=c["name"])
            rev = [(t, v) for t, v, r in zip(pf["frame"], pf[f], pf["revisit_of"]) if r >= 0 and v is not None and t > 0]
            if rev:
                ax.plot(*zip(*rev), "x", color=line.get_color(), ms=7)
        ax.set_xlabel("frame")
        ax.set_ylabel(f)
        ax.grid(True, color="0.9")
        ax.legend(loc="best", fontsize=8)
    for ax in axes[len(fields):]:
        ax.set_visible(False)
    return fig


def draw_plot(doc: dict, path: str | os.PathLike) -> None:
    """Write the PNG of :func:`make_figure` to ``path`` (atomically)."""
    from ..io import atomic_path

    fig = make_figure(doc)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
