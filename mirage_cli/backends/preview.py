"""The ``preview`` backend: no neural network, no download.

What the memory read covers is kept exactly; holes (newly revealed content) are filled by a
classical, depth-aware **push-pull** inpainting in latent space: the known cells are averaged down a
pyramid, preferring the background side of depth edges (newly revealed content usually lies
behind the occluder), and the coarse averages are pulled back up into the holes. It is
deterministic (the seed is unused) and fast, so a trajectory can be checked in seconds before an
expensive GPU run. Its output is a preview, not a generated video, and says so in run.json.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import ChunkRequest, ProgressFn

BACKGROUND_RATIO = 0.9  # a child nearer than 90 % of the block's farthest depth counts as foreground
FOREGROUND_WEIGHT = 0.05


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))


def push_pull_fill(values: torch.Tensor, known: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
    """Fill unknown cells from known ones with a depth-aware push-pull pyramid.

    Args:
        values: ``(T, C, h, w)`` float latents. known: ``(T, h, w)`` bool.
        depth: ``(T, h, w)`` z-depth of known cells (optional; enables the background preference).
    Returns:
        ``(T, C, h, w)``: ``values`` on known cells, the fill elsewhere.
    """
    v = values.float()
    w = known[:, None].float()
    d = (depth if depth is not None else torch.ones_like(known, dtype=torch.float32))[:, None].float() * w
    levels = []  # (value, weight, depth) per level, finest first
    while True:
        levels.append((v, w, d))
        if v.shape[-1] <= 1 and v.shape[-2] <= 1:
            break
        v, w, d = _pad_even(v), _pad_even(w), _pad_even(d)
        dmax = F.max_pool2d(d, 2)
        near = d < BACKGROUND_RATIO * F.interpolate(dmax, scale_factor=2, mode="nearest")
        ww = w * torch.where(near, torch.full_like(w, FOREGROUND_WEIGHT), torch.ones_like(w))
        sw = F.avg_pool2d(ww, 2) * 4
        v = F.avg_pool2d(v * ww, 2) * 4 / sw.clamp(min=1e-12)
        d = F.avg_pool2d(d * ww, 2) * 4 / sw.clamp(min=1e-12)
        w = sw.clamp(max=1.0)
        d = d * (w > 0)
    filled = levels[-1][0]
    for v, w, _ in reversed(levels[:-1]):
        up = F.interpolate(filled, size=v.shape[-2:], mode="bilinear", align_corners=False)
        a = w.clamp(0, 1)
        filled = v * a + up * (1 - a)
    return torch.where(known[:, None], values.float(), filled)


class PreviewBackend:
    """Keeps the memory read, inpaints the holes; frame 0 is pinned to the input / preceding latent."""

    name = "preview"

    def denoise(self, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        out = push_pull_fill(req.read_latents, req.known, req.read_depth)
        # Frame 0 is the frame this chunk shares with the one before (or the input image): keep it.
        out[0] = req.preceding[-1].float() if req.preceding is not None else req.first_latent.float()
        if progress is not None:
            progress(1, 1)
        return out

    def describe(self) -> dict:
        return {
            "name": self.name,
            "model": None,
            "weights": "none",
            "note": "PREVIEW: no neural network; holes filled by depth-aware push-pull inpainting in latent space",
        }
