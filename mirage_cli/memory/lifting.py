"""From pixel depth and cameras to the latent grid: depth reduction and latent intrinsics.

A latent cell is a ``factor x factor`` block of pixels starting at pixel 0 (``factor`` = the
codec's spatial factor). These helpers are shared by every memory that lifts latent cells.
"""

from __future__ import annotations

import torch

from ..errors import MirageError
from ..geometry.cameras import Cameras


def reduce_depth(depth: torch.Tensor, factor: int, edge_tol: float = 0.05) -> torch.Tensor:
    """Reduce pixel z-depth ``(..., H, W)`` to the latent grid ``(..., H // factor, W // factor)``.

    Rule (foreground cluster): the ``factor x factor`` pixel depths of a cell are sorted; the
    cluster is the nearest value plus every following value up to the first relative jump larger
    than ``edge_tol`` (``d[k+1] > d[k] * (1 + edge_tol)``). The cell depth is the harmonic mean of
    that cluster (exact at the cell centre for a plane). A smooth or slanted surface has no jump, so
    the whole block is used; a cell straddling a depth edge takes the nearer surface only, never a
    value between the two. Invalid pixels (``<= 0`` or non-finite) are ignored; a cell without a
    valid pixel gets depth 0 (no point). Rows/columns beyond ``factor * (H // factor)`` are dropped.

    Speed without changing a bit: a cell whose largest value is within ``edge_tol`` of its smallest
    has no jump and no invalid pixel, so its cluster is the whole block and only the cells that fail
    this test (depth edges, invalid pixels) go through the jump search. Every cell is still sorted,
    because the fp32 sum of ``1 / d`` is accumulated in sorted order (a different order changes the
    last bit of some cells, and with them the example video).
    """
    factor = int(factor)
    *lead, H, W = depth.shape
    h, w = H // factor, W // factor
    d = depth[..., : h * factor, : w * factor].float()
    if factor == 1:
        return torch.where(torch.isfinite(d) & (d > 0), d, torch.zeros_like(d))
    d = d.masked_fill(~(d > 0), float("inf"))  # NaN, <= 0 and -inf -> +inf (sorted last, excluded)
    blocks = d.reshape(*lead, h, factor, w, factor).transpose(-3, -2).reshape(-1, factor * factor)
    s, _ = blocks.sort(dim=1)
    smooth = (s[:, -1] <= s[:, 0] * (1 + edge_tol)) & torch.isfinite(s[:, -1])
    hard = (~smooth).nonzero().squeeze(1)
    sh = s.index_select(0, hard)
    inv = s.reciprocal_().sum(dim=1)  # the smooth cells: every value, in sorted order
    cnt = torch.full_like(inv, float(factor * factor))
    if hard.numel():
        jump = sh[:, 1:] > sh[:, :-1] * (1 + edge_tol)
        first = torch.ones_like(sh[:, :1], dtype=torch.bool)
        incl = torch.cat([first, jump.cumsum(dim=1) == 0], dim=1) & torch.isfinite(sh)
        inv[hard] = torch.where(incl, 1.0 / sh, torch.zeros_like(sh)).sum(dim=1)
        cnt[hard] = incl.sum(dim=1).float()
    out = torch.where(cnt > 0, cnt / inv.clamp(min=1e-30), torch.zeros_like(inv))
    return out.reshape(*lead, h, w)


def latent_K(cameras: Cameras, factor: int) -> torch.Tensor:
    """``(N, 3, 3)`` float64 intrinsics of the latent grid: pixel intrinsics divided by ``factor``.

    A latent cell is a ``factor x factor`` pixel block starting at pixel 0, so this is exact even
    when the image size is not a multiple of ``factor`` (equal to ``K(W // f, H // f)`` when it is).
    """
    K = cameras.K().clone()
    K[:, :2, :] /= factor
    return K


def latent_size(cameras: Cameras, factor: int) -> tuple[int, int]:
    """``(h, w)`` of the latent grid for these cameras: ``(H // factor, W // factor)``."""
    h, w = cameras.height // factor, cameras.width // factor
    if h < 1 or w < 1:
        raise MirageError(f"image {cameras.width}x{cameras.height} is smaller than one latent cell "
                          f"(spatial factor {factor})")
    return h, w


def depth_to_grid(depth: torch.Tensor, h: int, w: int, factor: int, edge_tol: float,
                  device: torch.device, what: str = "depth") -> torch.Tensor:
    """Depth ``(..., h, w)`` latent cells or ``(..., H, W)`` pixels -> ``(..., h, w)`` float32 on ``device``.

    Latent-grid depth is taken as is (invalid values -> 0); pixel depth is reduced with
    :func:`reduce_depth`. Any other size is a :class:`MirageError` naming ``what``.
    """
    depth = torch.as_tensor(depth).to(device)
    if depth.ndim < 2:
        raise MirageError(f"{what}: expected a (H, W) depth map, got shape {tuple(depth.shape)}")
    Hd, Wd = depth.shape[-2:]
    if (Hd, Wd) == (h, w):
        d = depth.float()
        return torch.where(torch.isfinite(d) & (d > 0), d, torch.zeros_like(d))
    if Hd // factor == h and Wd // factor == w:
        return reduce_depth(depth, factor, edge_tol)
    raise MirageError(f"{what}: shape {tuple(depth.shape[-2:])} matches neither the latent grid ({h}, {w}) "
                      f"nor the image ({h * factor}, {w * factor})")
