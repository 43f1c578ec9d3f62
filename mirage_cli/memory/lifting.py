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
    """
    factor = int(factor)
    *lead, H, W = depth.shape
    h, w = H // factor, W // factor
    d = depth[..., : h * factor, : w * factor].float()
    inf = torch.tensor(float("inf"), device=d.device)
    d = torch.where(torch.isfinite(d) & (d > 0), d, inf)
    if factor == 1:
        return torch.where(torch.isfinite(d), d, torch.zeros_like(d))
    blocks = d.reshape(*lead, h, factor, w, factor).transpose(-3, -2).reshape(*lead, h, w, factor * factor)
    s, _ = blocks.sort(dim=-1)
    jump = s[..., 1:] > s[..., :-1] * (1 + edge_tol)
    first = torch.ones_like(s[..., :1], dtype=torch.bool)
    incl = torch.cat([first, jump.cumsum(dim=-1) == 0], dim=-1) & torch.isfinite(s)
    inv = torch.where(incl, 1.0 / s, torch.zeros_like(s)).sum(dim=-1)
    cnt = incl.sum(dim=-1).float()
    return torch.where(cnt > 0, cnt / inv.clamp(min=1e-30), torch.zeros_like(inv))


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
