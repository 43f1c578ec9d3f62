"""The ``preview`` backend: no neural network, no download.

What the memory read covers is kept exactly; holes (newly revealed content) are filled by a
classical, depth-aware **push-pull** inpainting in latent space: the known cells are averaged down a
pyramid, preferring the background side of depth edges (newly revealed content usually lies
behind the occluder), and the coarse averages are pulled back up into the holes. It is
deterministic (the seed is unused) and fast, so a trajectory can be checked in seconds before an
expensive GPU run. Its output is a preview, not a generated video, and says so in run.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.codecs import PixelCodec
from . import ChunkRequest, FilledDepth, ProgressFn
from .specs import BACKENDS

BACKGROUND_RATIO = 0.9  # a child nearer than 90 % of the block's farthest depth counts as foreground
FOREGROUND_WEIGHT = 0.05
DEPTH_SIGMA = 0.1  # relative depth difference at which a coarse value stops counting for a hole cell
SPATIAL_SIGMA = 0.5  # in coarse cells


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))


def push_pull_fill(values: torch.Tensor, known: torch.Tensor, depth: torch.Tensor | None = None,
                   filled_depth: torch.Tensor | None = None) -> torch.Tensor:
    """Fill unknown cells from known ones with a depth-aware push-pull pyramid.

    Push: known cells are averaged down a pyramid of 2x2 blocks (within a block, children nearer
    than ``BACKGROUND_RATIO`` of its farthest child count only ``FOREGROUND_WEIGHT``). Pull: a
    partly known cell keeps its own average; the rest comes from the 3x3 coarser cells around it,
    weighted by distance and by how close their depth is to the cell's expected depth — the depth
    extended into the hole from the background side (:func:`~mirage_cli.geometry.depth.fill_depth`). So a
    disocclusion is filled with what lies behind the occluder, not a blur of both sides.

    Args:
        values: ``(T, C, h, w)`` float latents. known: ``(T, h, w)`` bool.
        depth: ``(T, h, w)`` z-depth of known cells (optional; enables the background preference).
        filled_depth: ``fill_depth(depth, known)`` when the caller has it already (it is not recomputed).
    Returns:
        ``(T, C, h, w)``: ``values`` on known cells, the fill elsewhere.
    """
    from ..geometry.depth import fill_depth

    if depth is None:
        depth = torch.ones_like(known, dtype=torch.float32)
    v = values.float()
    w = known[:, None].float()
    d = depth[:, None].float() * w
    # expected depth of every cell (the caller's fill_depth of this depth and mask when it has one)
    target = (fill_depth(depth.float(), known) if filled_depth is None else filled_depth.float())[:, None]
    levels = []  # (value, weight, depth, expected depth) per level, finest first
    while True:
        levels.append((v, w, d, target))
        if v.shape[-1] <= 1 and v.shape[-2] <= 1:
            break
        v, w, d, target = _pad_even(v), _pad_even(w), _pad_even(d), _pad_even(target)
        dmax = F.max_pool2d(d, 2)
        near = d < BACKGROUND_RATIO * F.interpolate(dmax, scale_factor=2, mode="nearest")
        ww = w * torch.where(near, torch.full_like(w, FOREGROUND_WEIGHT), torch.ones_like(w))
        sw = F.avg_pool2d(ww, 2) * 4
        v = F.avg_pool2d(v * ww, 2) * 4 / sw.clamp(min=1e-12)
        d = F.avg_pool2d(d * ww, 2) * 4 / sw.clamp(min=1e-12)
        w = sw.clamp(max=1.0)
        d = d * (w > 0)
        target = F.max_pool2d(target, 2)
    filled, _, cd, ct = levels[-1]
    coarse_depth = torch.where(cd > 0, cd, ct)
    for v, w, d, target in reversed(levels[:-1]):
        a = w.clamp(0, 1)
        up = _bilateral_up(filled, coarse_depth[:, 0], target[:, 0], a[:, 0] < 1)
        filled = v * a + up * (1 - a)
        coarse_depth = torch.where(d > 0, d, target)
    return torch.where(known[:, None], values.float(), filled)


def _bilateral_up(coarse: torch.Tensor, coarse_depth: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Values for the ``mask`` cells of the next finer level from the 3x3 coarse cells around each.

    Args:
        coarse: ``(T, C, hc, wc)``; coarse_depth: ``(T, hc, wc)``; target: ``(T, h, w)`` expected
        depth at the fine level; mask: ``(T, h, w)`` cells to compute.
    Returns:
        ``(T, C, h, w)`` (zeros outside ``mask``).
    """
    T, C, hc, wc = coarse.shape
    h, w = target.shape[-2:]
    out = coarse.new_zeros(T, C, h, w)
    t, i, j = mask.nonzero(as_tuple=True)
    if t.numel() == 0:
        return out
    cv = coarse.permute(0, 2, 3, 1)  # (T, hc, wc, C)
    fy, fx = (i.float() + 0.5) / 2, (j.float() + 0.5) / 2  # fine cell centre in coarse units
    dt = target[t, i, j].clamp(min=1e-6)
    acc = coarse.new_zeros(t.numel(), C)
    wsum = coarse.new_zeros(t.numel())
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            ni = (i // 2 + di).clamp(0, hc - 1)
            nj = (j // 2 + dj).clamp(0, wc - 1)
            ws = torch.exp(-((fy - ni - 0.5) ** 2 + (fx - nj - 0.5) ** 2) / (2 * SPATIAL_SIGMA**2))
            rel = (coarse_depth[t, ni, nj] - dt).abs() / dt
            wt = ws * (torch.exp(-((rel / DEPTH_SIGMA) ** 2)) + 1e-4)  # tiny floor: never all zero
            acc += wt[:, None] * cv[t, ni, nj]
            wsum += wt
    out[t, :, i, j] = acc / wsum[:, None]
    return out


@dataclass(frozen=True)
class PreviewInputs:
    """The preview's conditioning: the read, its known mask and depth, the fill depth, the pinned frame 0."""

    read: torch.Tensor  # (T, C, h, w)
    known: torch.Tensor  # (T, h, w) bool
    depth: torch.Tensor  # (T, h, w)
    filled_depth: torch.Tensor | None  # (T, h, w) or None (then computed by the fill)
    pin: torch.Tensor  # (C, h, w): the overlap latent (or the input's for chunk 0)


class PreviewBackend:
    """Keeps the memory read, inpaints the holes; frame 0 is pinned to the input / preceding latent."""

    name = "preview"
    spec = BACKENDS["preview"]
    preceding_frames = 0

    def build_inputs(self, req: ChunkRequest) -> PreviewInputs:
        filled = req.extra(FilledDepth)
        # Frame 0 is the frame this chunk shares with the one before (or the input image): kept.
        pin = req.preceding[-1] if req.preceding is not None else req.first_latent
        return PreviewInputs(req.read_latents, req.known, req.read_depth, filled.depth if filled else None, pin)

    def sample(self, inputs: PreviewInputs, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        out = push_pull_fill(inputs.read, inputs.known, inputs.depth, inputs.filled_depth)
        out[0] = inputs.pin.float()
        if progress is not None:
            progress(1, 1)
        return out

    def denoise(self, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        return self.sample(self.build_inputs(req), req, progress)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "model": None,
            "weights": "none",
            "note": "PREVIEW: no neural network; holes filled by depth-aware push-pull inpainting in latent space",
        }


def load_preview(cfg, show_progress: bool = True) -> tuple[PixelCodec, PreviewBackend]:
    """The spec's loader: the pixel codec at ``cfg.downscale`` (already chosen) and the backend."""
    return PixelCodec(cfg.downscale or 1), PreviewBackend()
