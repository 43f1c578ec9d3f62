"""PNG plot of a trajectory (``mirage traj show --plot``), drawn with Pillow only.

Two panels of the camera centres, poses relative to frame 0 (OpenCV: x right, y down, z forward):

- **top view**: x (right) horizontally, z (forward) up the page;
- **side view**: z (forward) horizontally, -y (up) up the page.

Centres are coloured from blue (frame 0) to red (last frame); short arrows show the viewing
direction (the camera's +z axis) of every few frames. Both panels keep equal axis scales.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from ..io import atomic_path
from .trajectory import Trajectory

BG, FG, GRID, PATH = (255, 255, 255), (30, 30, 30), (225, 225, 225), (170, 170, 170)
START, END = (30, 90, 200), (215, 50, 40)
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont  # load_default: a FreeType font (Pillow >= 10.1) or the bitmap one


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _colour(i: int, n: int) -> tuple[int, int, int]:
    a = i / max(n - 1, 1)
    r, g, b = (round(s + a * (e - s)) for s, e in zip(START, END))
    return r, g, b


def _nice_step(span: float) -> float:
    """A 1/2/5 x 10^k tick step giving about five ticks over ``span``."""
    raw = span / 5
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


class _Panel:
    """Maps data coordinates ``(h, v)`` to pixels inside a box, with equal scales on both axes."""

    def __init__(self, box: tuple[int, int, int, int], pts: torch.Tensor) -> None:
        self.box = box
        x0, y0, x1, y1 = box
        lo, hi = pts.min(0).values, pts.max(0).values
        centre, span = (lo + hi) / 2, (hi - lo).clamp(min=1e-9) * 1.15
        ppu = min((x1 - x0) / float(span[0]), (y1 - y0) / float(span[1]))  # pixels per unit
        self.ppu, self.centre = ppu, centre
        self.lo = centre - torch.tensor([(x1 - x0) / ppu, (y1 - y0) / ppu], dtype=centre.dtype) / 2
        self.hi = 2 * centre - self.lo

    def px(self, h: float, v: float) -> tuple[float, float]:
        x0, _, _, y1 = self.box
        return x0 + (h - float(self.lo[0])) * self.ppu, y1 - (v - float(self.lo[1])) * self.ppu


def _rotated_text(img: Image.Image, xy: tuple[int, int], text: str, font: Font) -> None:
    """Vertical text (reading bottom to top) centred on ``xy``."""
    w, h = int(font.getlength(text)) + 4, 20
    tile = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((2, 2), text, fill=FG, font=font)
    tile = tile.rotate(90, expand=True)
    img.paste(tile, (xy[0] - tile.width // 2, xy[1] - tile.height // 2), tile)


def _axes(img: Image.Image, draw: ImageDraw.ImageDraw, pan: _Panel, title: str, hlabel: str, vlabel: str) -> None:
    """Frame, grid, tick labels, axis labels and title of one panel."""
    font, x0, y0, x1, y1 = _font(13), *pan.box
    for axis in (0, 1):
        lo, hi = float(pan.lo[axis]), float(pan.hi[axis])
        step = _nice_step(hi - lo)
        val = math.ceil(lo / step) * step
        while val <= hi + 1e-12:
            label = f"{val:.10g}" if abs(val) > step * 1e-6 else "0"
            if axis == 0:
                x, _ = pan.px(val, 0.0)
                draw.line([(x, y0), (x, y1)], fill=GRID)
                draw.text((x, y1 + 4), label, fill=FG, font=font, anchor="mt")
            else:
                _, y = pan.px(0.0, val)
                draw.line([(x0, y), (x1, y)], fill=GRID)
                draw.text((x0 - 5, y), label, fill=FG, font=font, anchor="rm")
            val += step
    draw.rectangle(pan.box, outline=FG)
    draw.text(((x0 + x1) / 2, y1 + 24), hlabel, fill=FG, font=_font(14), anchor="mt")
    _rotated_text(img, (x0 - 48, (y0 + y1) // 2), vlabel, _font(14))
    draw.text(((x0 + x1) / 2, y0 - 8), title, fill=FG, font=_font(15), anchor="mb")


def _draw_cameras(draw: ImageDraw.ImageDraw, pan: _Panel, pts: torch.Tensor, dirs: torch.Tensor, arrow: float) -> None:
    """Path, centres and viewing-direction arrows of one panel."""
    n = pts.shape[0]
    xy = [pan.px(float(h), float(v)) for h, v in pts]
    if n > 1:
        draw.line(xy, fill=PATH, width=2)
    every = max(1, n // 12)
    for i in sorted(set(range(0, n, every)) | {n - 1}):
        d = dirs[i]
        norm = float(d.norm())
        if norm < 1e-6:  # looking straight out of this view's plane
            continue
        tip = pts[i] + arrow * d / norm
        a, b = xy[i], pan.px(float(tip[0]), float(tip[1]))
        draw.line([a, b], fill=_colour(i, n), width=2)
        ang = math.atan2(b[1] - a[1], b[0] - a[0])
        head = [(b[0] - 9 * math.cos(ang + s), b[1] - 9 * math.sin(ang + s)) for s in (0.45, -0.45)]
        draw.polygon([b, *head], fill=_colour(i, n))
    for i, (x, y) in enumerate(xy):
        r = 5 if i in (0, n - 1) else 3
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_colour(i, n))
    font = _font(13)
    draw.text((xy[0][0] + 7, xy[0][1] + 7), "0", fill=_colour(0, n), font=font)
    if n > 1:
        draw.text((xy[-1][0] + 7, xy[-1][1] - 18), str(n - 1), fill=_colour(n - 1, n), font=font)


def _draw_points(draw: ImageDraw.ImageDraw, pan: _Panel, pts: torch.Tensor, colors: torch.Tensor | None) -> None:
    """The scene's lifted points as one-pixel dots (their colours, else grey), far ones first."""
    rgb = (colors.clamp(0, 1) * 255).round().int().tolist() if colors is not None else None
    for i, (h, v) in enumerate(pts.tolist()):
        x, y = pan.px(h, v)
        draw.point((x, y), fill=tuple(rgb[i]) if rgb else PATH)


def plot_trajectory(traj: Trajectory, path: str | Path, size: tuple[int, int] = (1200, 640), scene=None,
                    cameras=None, subtitle: str | None = None) -> None:
    """Draw the top and side views of ``traj`` (relative to frame 0) into a PNG at ``path``, atomically.

    With ``scene`` (a :class:`~mirage_cli.trajectories.scale.Scene`) the input image's lifted points
    are drawn under the path and ``cameras`` (the path in scene units, relative to frame 0, see
    :func:`~mirage_cli.trajectories.scale.scene_cameras`) replace the trajectory's own;
    ``subtitle`` is a second title line (the scale check's numbers)."""
    c2w = (cameras if cameras is not None else traj.cameras.relative_to_first()).c2w
    C, F = c2w[:, :3, 3], c2w[:, :3, 2]
    W, H = size
    img = Image.new("RGB", size, BG)
    draw = ImageDraw.Draw(img)
    units = ("scene units" if scene is not None else
             "reference depth" if traj.scale == "relative" else "file units")
    draw.text((W / 2, 12), f"{Path(traj.source).name or traj.source}: {traj.format}, {len(traj)} frames at "
              f"{traj.fps:g} fps, units = {units}", fill=FG, font=_font(16), anchor="mt")
    if subtitle:
        draw.text((W / 2, 32), subtitle, fill=FG, font=_font(13), anchor="mt")
    top = lambda X: torch.stack([X[:, 0], X[:, 2]], -1)  # noqa: E731  x right, z forward up the page
    side = lambda X: torch.stack([X[:, 2], -X[:, 1]], -1)  # noqa: E731  z forward, -y (up) up the page
    views = [("top view", "x (right)", "z (forward)", top), ("side view", "z (forward)", "-y (up)", side)]
    extent = float((C.max(0).values - C.min(0).values).max())
    if scene is not None:
        extent = max(extent, scene.size)
    arrow = max(0.15 * extent, 0.1 if traj.scale == "relative" else 0.1 * max(extent, 1e-3))
    half = W // 2
    for k, (title, hl, vl, proj) in enumerate(views):
        pts, dirs = proj(C), proj(F)
        box = (k * half + 80, 70, (k + 1) * half - 30, H - 70)
        tips = pts + arrow * dirs / dirs.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        cloud = None
        if scene is not None:  # drawn from below (top view: the highest points last) / from +x (side view)
            P = scene.points.double()
            order = torch.argsort(P[:, 1], descending=True) if k == 0 else torch.argsort(P[:, 0])
            cloud = proj(P[order])
        pan = _Panel(box, torch.cat([pts, tips] + ([cloud] if cloud is not None else [])))
        _axes(img, draw, pan, title, hl, vl)
        if cloud is not None:
            _draw_points(draw, pan, cloud, scene.colors[order] if scene.colors is not None else None)
        _draw_cameras(draw, pan, pts, dirs, arrow)
    _save_png(img, Path(path))


def _save_png(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
