"""From pixel depth and cameras to the latent grid: depth reduction and latent intrinsics.

A latent cell is a ``factor x factor`` block of pixels starting at pixel 0 (``factor`` = the
codec's spatial factor). These helpers are shared by every memory that lifts latent cells.
"""

from __future__ import annotations

import torch

from ..errors import MirageError
from ..geometry.cameras import Cameras
from . import compiled as _compiled


def reduce_depth(depth: torch.Tensor, factor: int, edge_tol: float = 0.05) -> torch.Tensor:
    """Reduce pixel z-depth ``(..., H, W)`` to the latent grid ``(..., H // factor, W // factor)`` float32.

    Rule (foreground cluster): in the sorted ``factor x factor`` pixel depths of a cell, the cluster
    is the nearest value plus every following value up to the first relative jump larger than
    ``edge_tol`` (``d[k+1] > d[k] * (1 + edge_tol)``). The cell depth is the harmonic mean of that
    cluster (exact at the cell centre for a plane). A smooth or slanted surface has no jump, so the
    whole block is used; a cell straddling a depth edge takes the nearer surface only, never a value
    between the two. Invalid pixels (``<= 0`` or non-finite) are ignored; a cell without a valid
    pixel gets depth 0 (no point). Rows/columns beyond ``factor * (H // factor)`` are dropped.

    Speed: sorting every cell dominated a write with pixel depth, so only the cells that need it are
    sorted. Each cell's min and max come from pairwise ``minimum`` / ``maximum`` (no sort); a *smooth*
    cell (``min > 0``, ``max`` finite, ``max <= min * (1 + edge_tol)``) has no jump and no invalid
    pixel, so its cluster is the whole block and its sum of ``1 / d`` is taken in a fixed natural
    order: pairwise down each pixel column of the block (rows ``2i`` and ``2i + 1``, then pairs of
    those sums, an odd last term carried up a level), then pairwise across the column sums the same
    way. That is elementwise fp32 work on contiguous image rows, so the bits do not depend on the
    thread count or the SIMD width. Only the other, *hard* cells (depth edges, invalid pixels) are
    sorted and searched for the jump; their ``1 / d`` (0 outside the cluster) are summed pairwise in
    sorted order. On CPU the compiled twin in ``splat_ext.cpp`` (:mod:`.compiled`) does the same
    operations in the same order in one pass over the pixels (same bits; tests compare both).
    """
    factor = int(factor)
    *lead, H, W = depth.shape
    h, w = H // factor, W // factor
    d = depth[..., : h * factor, : w * factor].float()
    if factor == 1:
        return torch.where(torch.isfinite(d) & (d > 0), d, torch.zeros_like(d))
    ext = _compiled.for_device(d.device) if d.numel() else None
    if ext is not None:  # the compiled twin: the same rule and operations, one pass over the pixels
        return ext.reduce_depth_cpu(d.reshape(-1, h * factor, w * factor).contiguous(), factor,
                                    float(edge_tol)).reshape(*lead, h, w)
    return _reduce_depth_torch(d, factor, edge_tol)


def _reduce_depth_torch(d: torch.Tensor, factor: int, edge_tol: float) -> torch.Tensor:
    """:func:`reduce_depth` in torch operations, for ``d (..., h * factor, w * factor)`` float32."""
    *lead, H, W = d.shape
    h, w = H // factor, W // factor
    rows = d.reshape(-1, factor, w * factor)  # (block rows, pixel row in the block, pixels of that row)

    def per_cell(x: torch.Tensor, op) -> torch.Tensor:  # (cells,): down the columns, then across
        return _pairwise(_pairwise(x, 1, op).reshape(-1, w, factor), 2, op).reshape(-1)

    # by slabs of about _SLAB_PIXELS pixels: the temporaries stay small enough to be reused from
    # the heap and cache (a whole chunk's 1 / d is > 32 MB: a fresh, page-faulting mapping per call)
    lo, hi, inv = (torch.empty(rows.shape[0] * w, device=d.device) for _ in range(3))
    step = max(1, _SLAB_PIXELS // (factor * factor * w))
    for a in range(0, rows.shape[0], step):
        x, cells = rows[a : a + step], slice(a * w, (a + step) * w)
        lo[cells], hi[cells] = per_cell(x, torch.minimum), per_cell(x, torch.maximum)  # NaN propagates: hard
        inv[cells] = per_cell(x.reciprocal(), torch.add)
    smooth = (lo > 0) & (hi <= lo * (1 + edge_tol)) & torch.isfinite(hi)
    cnt = torch.full_like(inv, float(factor * factor))
    hard = (~smooth).nonzero().squeeze(1)
    if hard.numel():
        patches = rows.reshape(-1, factor, w, factor)[hard // w, :, hard % w, :]  # (hard, factor, factor)
        sh = patches.reshape(-1, factor * factor)
        sh = sh.masked_fill(~(sh > 0), float("inf"))  # NaN, <= 0 and -inf -> +inf (sorted last, excluded)
        sh, _ = sh.sort(dim=1)
        jump = sh[:, 1:] > sh[:, :-1] * (1 + edge_tol)
        first = torch.ones_like(sh[:, :1], dtype=torch.bool)
        incl = torch.cat([first, jump.cumsum(dim=1) == 0], dim=1) & torch.isfinite(sh)
        inv[hard] = _pairwise(torch.where(incl, 1.0 / sh, torch.zeros_like(sh)), 1, torch.add)  # sorted order
        cnt[hard] = incl.sum(dim=1).float()
    out = torch.where(cnt > 0, cnt / inv.clamp(min=1e-30), torch.zeros_like(inv))
    return out.reshape(*lead, h, w)


_SLAB_PIXELS = 1 << 20


def _pairwise(x: torch.Tensor, dim: int, op) -> torch.Tensor:
    """Reduce ``x`` over ``dim`` with the elementwise ``op`` pairwise in index order: entries ``2i``
    and ``2i + 1`` are combined, an odd last entry is carried to the next level, until one is left
    (``dim`` removed). One elementwise op per level: the order is fixed (a library reduction may change
    its accumulation order with threads or SIMD width) and a sum's error grows with the log of the size."""
    while x.shape[dim] > 1:
        n = x.shape[dim]
        pairs = x.narrow(dim, 0, n - n % 2).unflatten(dim, (n // 2, 2))
        s = op(pairs.select(dim + 1, 0), pairs.select(dim + 1, 1))
        x = torch.cat([s, x.narrow(dim, n - 1, 1)], dim) if n % 2 else s
    return x.squeeze(dim)


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
