"""``mirage eval recon --plot``: a metric against frame, one line per clip, revisiting frames marked.

Frame 0 (the input, PSNR at the cap) is left out, as from the means, so it does not set the scale.
A field that has one value on every frame of every clip (the preview's ``known_fraction`` is 1.0
throughout: its memory reads something everywhere) is not drawn -- a flat line says nothing -- and
the title names it with its value instead.
"""

from __future__ import annotations

import os

PLOT_FIELDS = ("psnr_all", "psnr_memory", "ssim_all", "known_fraction")
SIZE_PX = (1200, 800)
DPI = 100


def make_figure(doc: dict):
    """The matplotlib ``Figure``: one panel per field of :data:`PLOT_FIELDS` the clips have."""
    from matplotlib.figure import Figure

    present = [f for f in PLOT_FIELDS if any(f in c["per_frame"] for c in doc["clips"])]
    flat = {f: v for f in present if (v := _constant(doc, f)) is not None}
    fields = [f for f in present if f not in flat]
    fig = Figure(figsize=(SIZE_PX[0] / DPI, SIZE_PX[1] / DPI), dpi=DPI, layout="constrained")
    cfg = doc["config"]
    fig.suptitle(f"mirage eval recon - backend {cfg.get('backend')}, {len(doc['clips'])} clips "
                 "(x: revisiting frame)" + "".join(f"; {f} = {v:g} on every frame (not drawn)" for f, v in flat.items()),
                 fontsize=10)
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


def _constant(doc: dict, field: str) -> float | None:
    """The one value ``field`` takes on frames 1.. of every clip, or None when it varies."""
    values = {v for c in doc["clips"] for t, v in zip(c["per_frame"]["frame"], c["per_frame"].get(field, []))
              if t > 0 and v is not None}
    return values.pop() if len(values) == 1 else None


def draw_plot(doc: dict, path: str | os.PathLike) -> None:
    """Write the PNG of :func:`make_figure` to ``path`` (atomically)."""
    from ..io import atomic_path

    fig = make_figure(doc)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
