"""The one deterministic, footprint-aware z-buffer splat shared by every memory.

Footprints. A point ``p`` of frame ``t`` sits at continuous grid coordinates ``(u, v)`` (cell
``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``) and covers the cells whose centres lie in its
footprint:

- square (``radius``): ``[u - r, u + r) x [v - r, v + r)``;
- parallelogram (``axes``, a ``2 x 2`` matrix ``J`` whose columns are the footprint's two half-axes
  in target cells): the centres ``c`` with ``|J^-1 (c - (u, v))|_inf <= 1 + margin`` inside the
  parallelogram's bounding box (half-extents ``|a| + |b|``, ``|c| + |d|``, as the square's ``r``).
  This is the exact image of a latent cell lifted as a small planar patch (see :mod:`.latent`), so a
  surface seen obliquely, or from closer, is tiled without cracks and without overlaps. The memories
  read with the parallelogram grown by ``grow`` target cells (:data:`FOOTPRINT_GROW`): the box by
  ``grow`` and the test of half-axis ``k`` to ``1 + margin + grow / |J[:, k]|``, an absolute growth
  (a patch stretched along a grazing slope grows no more than a square one). Patches lifted from
  different views then overlap by a fraction of a cell where they meet, instead of leaving sub-cell
  cracks that a finely sampled trajectory would fill with new points, sliver by sliver. The growth
  only fills cracks, it never takes a cell from a patch: a cell that some point's own (ungrown)
  parallelogram covers is decided among those points; only cells no patch covers go to the nearest
  grown footprint. (Letting grown fringes compete by depth alone cost 9 dB of camera-following PSNR,
  issue 20: a nearer neighbour's fringe stole the cells at every depth edge.)

Half-extents are clamped to ``[0.5, max_radius]`` cells: a point always covers the cell its centre
falls in (exactly that cell for ``r = 0.5``: the cell whose centre is in ``[u - 0.5, u + 0.5)``),
and a very close point cannot flood the frame. Points with ``z <= 0`` (behind the camera),
non-finite values or a footprint that misses the grid are dropped; a point whose centre is just
outside the grid still covers the border cells its footprint overlaps.

Visibility. One ``scatter_reduce(amin)`` over a packed int64 per (cell, point):
``float32 bits of z << 32 | key`` (positive float32 bits sort like the floats). The nearest point
wins; among exactly equal depths the smaller ``key`` wins, a 31-bit hash of the point's own content,
so the result does not depend on the order of the points. Only if depth and key are both equal
(indistinguishable points) does the lower point index decide. A min-reduce over integers is exact
and order-independent on CPU and CUDA, unlike "last write wins"; everything is elementwise fp32
(no matmul), so CPU and CUDA give the same bits. With a per-point ``bias`` (:func:`splat_patches`) the packed
depth is ``z * bias`` (the memories' input points win conflicts with generated ones within a margin,
:mod:`.freespace`) and the depth returned is the winner's ``z * bias / bias`` in fp32.

Patches. Memories store each point as a small planar patch (:func:`lift_patches`: the lifted cell
with two world half-axes that follow the local depth slope) and read with :func:`splat_patches`
(project the patch with the projection's Jacobian, then rasterise the parallelogram). Every memory
(latent tokens, the RGB point-cloud baseline) uses these two functions, so they see the same geometry.
"""

from __future__ import annotations

import torch

from ..errors import MirageError
from . import compiled as _compiled

_MASK32 = 0xFFFFFFFF
_INT64_MAX = torch.iinfo(torch.int64).max
# Points are grouped by how many cells their footprint spans per axis (a short loop over groups,
# never over points): span 1 needs no expansion, the others expand to span x span offsets.
_SPAN_GROUPS = (1, 2, 3, 5, 9, 17, 33, 65)
# The largest half-extent a footprint may have: its box then spans at most 2 * 32 + 1 = 65 cells per
# axis, the last span group (both splat paths drop a point whose box spans more).
MAX_RADIUS = 32.0
AXES_MARGIN = 0.05
# Parallelogram footprints of the memories are grown by this many target cells (absolute, so a patch
# stretched along a grazing slope grows no more than a square one): patches lifted from different
# views then overlap where they meet instead of leaving sub-cell cracks, which a fine trajectory
# would otherwise fill with new points, sliver by sliver (issue 12: -18 % points after a 385-frame lap).
# Grown-only cells rank after every cell a patch itself covers (see the module docstring).
FOOTPRINT_GROW = 0.25


def mix32(x: torch.Tensor) -> torch.Tensor:
    """Integer hash (lowbias32-style) of int64 values taken modulo 2**32; returns values in [0, 2**32)."""
    x = x & _MASK32  # a new tensor: the steps below work in place on it (fewer temporaries)
    for _ in range(2):
        y = x >> 16
        x ^= y
        x *= 0x45D9F3B
        x &= _MASK32
    return x ^ (x >> 16)


def hash_rows(bits: torch.Tensor) -> torch.Tensor:
    """31-bit hash of each row of an integer tensor ``(N, D)`` (values < 2**32) -> ``(N,)`` int64.

    Depends only on the row's values (and column positions), so it follows a point wherever it is
    stored. Vectorised; all products stay below 2**63.
    """
    N, D = bits.shape
    ext = _compiled.for_device(bits.device) if N else None
    if ext is not None:  # the compiled twin: the same integer arithmetic, one pass
        return ext.hash_rows_cpu(bits.to(torch.int64).contiguous())
    cols = torch.arange(D, device=bits.device, dtype=torch.int64)
    m = mix32(bits.to(torch.int64) + cols * 0x9E3779B9)
    m *= mix32(cols + 0x1234567) & 0xFFFFF | 1  # odd 20-bit weight per column
    s = m.sum(dim=1) & _MASK32
    return mix32(s + D) & 0x7FFFFFFF


def float_bits(x: torch.Tensor) -> torch.Tensor:
    """Raw bit pattern of a float tensor as non-negative int64 (16 or 32 bits; fp64 is cast to fp32)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.contiguous().view(torch.int16).to(torch.int64) & 0xFFFF
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    return x.contiguous().view(torch.int32).to(torch.int64) & _MASK32


def splat(
    uv: torch.Tensor,
    z: torch.Tensor,
    radius: torch.Tensor | None,
    h: int,
    w: int,
    key: torch.Tensor | None = None,
    max_radius: float = 4.0,
    axes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffered splat of ``P`` points into ``T`` frames of an ``h x w`` grid.

    Args:
        uv: ``(T, P, 2)`` continuous target-grid coordinates (cell centres at +0.5).
        z: ``(T, P)`` z-depth in each target camera.
        radius: ``(T, P)`` half-extent of a square footprint in target cells (ignored when
            ``axes`` is given; ``None`` only with ``axes``).
        h, w: grid size.
        key: optional ``(P,)`` or ``(T, P)`` int64 tie-break keys in ``[0, 2**31)`` (a hash of each
            point's content). Default: a hash of the float32 bits of ``(u, v, z)``.
        max_radius: largest half-extent in cells.
        axes: optional ``(T, P, 2, 2)`` parallelogram footprints: ``axes[..., :, k]`` is half-axis
            ``k`` as a ``(du, dv)`` displacement in target cells.
    Returns:
        index: ``(T, h, w)`` int64, the winning point per cell, ``-1`` where no point landed.
        depth: ``(T, h, w)`` float32, the winner's ``z``, ``0`` where no point landed.
    """
    if uv.ndim != 3 or uv.shape[-1] != 2 or z.shape != uv.shape[:2]:
        raise ValueError(f"splat: uv {tuple(uv.shape)}, z {tuple(z.shape)} must be (T,P,2), (T,P)")
    if axes is None and (radius is None or radius.shape != z.shape):
        raise ValueError("splat: radius must be (T,P) (or give axes (T,P,2,2))")
    if axes is not None and axes.shape != (*z.shape, 2, 2):
        raise ValueError(f"splat: axes {tuple(axes.shape)} must be (T,P,2,2)")
    T, P = z.shape
    u = uv[..., 0].float()
    v = uv[..., 1].float()
    zf = z.float()
    ok = torch.isfinite(u) & torch.isfinite(v) & torch.isfinite(zf) & (zf > 0)
    t_idx, p_idx = ok.nonzero(as_tuple=True)
    u, v, zf = u[t_idx, p_idx], v[t_idx, p_idx], zf[t_idx, p_idx]
    if key is None:
        ks = hash_rows(torch.stack([float_bits(u), float_bits(v), float_bits(zf)], dim=1))
    else:
        key = key.to(device=z.device, dtype=torch.int64)
        ks = key[p_idx] if key.ndim == 1 else key[t_idx, p_idx]
    if axes is not None:
        J = axes.float()[t_idx, p_idx]
        return rasterize(t_idx, p_idx, u, v, zf, ks, T, h, w, J=(J[:, 0, 0], J[:, 0, 1], J[:, 1, 0], J[:, 1, 1]),
                         max_radius=max_radius)
    assert radius is not None  # checked above: no axes, a radius
    return rasterize(t_idx, p_idx, u, v, zf, ks, T, h, w, radius=radius.float()[t_idx, p_idx], max_radius=max_radius)


def inverse2x2(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Inverse ``(a', b', c', d')`` of ``[[a, b], [c, d]]`` (four ``(M,)`` tensors).

    A degenerate matrix (a parallelogram seen edge-on) gets a huge inverse, so that only the cell
    its centre falls in is covered.
    """
    det = a * d - b * c
    good = det.abs() > 1e-12
    inv_det = torch.where(good, 1.0 / torch.where(good, det, torch.ones_like(det)), torch.zeros_like(det))
    big = torch.full_like(det, 1e12)
    return tuple(torch.where(good, x * inv_det, big) for x in (d, -b, -c, a))


def rasterize(
    t_idx: torch.Tensor | int,
    owner: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    z: torch.Tensor,
    key: torch.Tensor,
    T: int,
    h: int,
    w: int,
    radius: torch.Tensor | None = None,
    J: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    max_radius: float = 4.0,
    margin: float = AXES_MARGIN,
    grow: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Core of :func:`splat` on a flat list of ``M`` (frame, point) pairs with ``z > 0``.

    Args:
        t_idx: ``(M,)`` frame of each pair, or an int when all pairs are in that frame.
        owner: ``(M,)`` point index reported in ``index``.
        u, v, z: ``(M,)`` fp32 grid coordinates and depth.
        key: ``(M,)`` int64 tie-break keys in ``[0, 2**31)``.
        T, h, w: output size.
        radius: ``(M,)`` square half-extents in cells, or
        J: parallelograms ``[[a, b], [c, d]]`` as four ``(M,)`` tensors (columns = half-axes in
            cells). Half-extents are clamped to ``[0.5, max_radius]``.
        margin: parallelograms cover the centres within ``1 + margin`` half-axes.
        grow: parallelograms grown by this many target cells (:data:`FOOTPRINT_GROW`): the box
            by ``grow``, each half-axis's limit by ``grow`` over that axis's length in cells. A cell
            reached only by grown footprints goes to the nearest of them; a cell some ungrown
            parallelogram covers is decided among those alone.
    Returns:
        index ``(T, h, w)`` int64 (-1 none) and depth ``(T, h, w)`` float32 (0 none).
    """
    dev = z.device
    hw = h * w
    index = torch.full((T * hw,), -1, dtype=torch.int64, device=dev)
    depth = torch.zeros(T * hw, dtype=torch.float32, device=dev)
    if z.numel() == 0 or hw == 0:
        return index.view(T, h, w), depth.view(T, h, w)
    lims = None
    if J is not None:
        a, b, c, d = J
        ru, rv = a.abs() + b.abs() + grow, c.abs() + d.abs() + grow
        lim = torch.tensor(1.0 + margin, dtype=torch.float32, device=dev)

        def axis_lim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # the half-axis (x, y)'s test limit
            n = torch.sqrt(x * x + y * y)
            return lim + torch.where(n > 0, grow / n, torch.zeros_like(n))

        lims = (axis_lim(a, c), axis_lim(b, d))
    else:
        assert radius is not None, "rasterize: give radius or J"
        ru = rv = radius
    ru = ru.nan_to_num(0.5).clamp(0.5, float(max_radius))
    rv = ru if rv is ru else rv.nan_to_num(0.5).clamp(0.5, float(max_radius))
    # Cell ranges [j0, j1) x [i0, i1) whose centres lie in the bounding box; clamp before casting.
    j0 = torch.ceil(u - ru - 0.5).clamp(-1, w + 1)
    j1 = torch.ceil(u + ru - 0.5).clamp(-1, w + 1)
    i0 = torch.ceil(v - rv - 0.5).clamp(-1, h + 1)
    i1 = torch.ceil(v + rv - 0.5).clamp(-1, h + 1)
    jc0, jc1 = j0.long().clamp(0, w), j1.long().clamp(0, w)
    ic0, ic1 = i0.long().clamp(0, h), i1.long().clamp(0, h)
    base = ic0 * w + jc0 + (t_idx * hw if torch.is_tensor(t_idx) else int(t_idx) * hw)
    packed = (float_bits(z) << 32) | (key & 0x7FFFFFFF)
    own_box = None
    if lims is not None and grow > 0:  # the ungrown patch's box (cells outside it are grown-only)
        eu = (a.abs() + b.abs()).nan_to_num(0.5).clamp(0.5, float(max_radius))
        ev = (c.abs() + d.abs()).nan_to_num(0.5).clamp(0.5, float(max_radius))
        own_box = (torch.ceil(v - ev - 0.5), torch.ceil(v + ev - 0.5), torch.ceil(u - eu - 0.5), torch.ceil(u + eu - 0.5))
    cell, sel, exact = _covered_cells(base, ic0, jc0, ic1 - ic0, jc1 - jc0, w, u, v, J, lims, 1.0 + margin, own_box)
    val = packed if sel is None else packed.index_select(0, sel)
    own = owner if sel is None else owner.index_select(0, sel)
    return _zbuffer(cell, val, own, index, depth, T, h, w, exact if grow > 0 else None)


def _covered_cells(base: torch.Tensor, ic0: torch.Tensor, jc0: torch.Tensor, span_i: torch.Tensor,
                   span_j: torch.Tensor, w: int, u: torch.Tensor, v: torch.Tensor,
                   J: tuple[torch.Tensor, ...] | None, lims: tuple[torch.Tensor, torch.Tensor] | None,
                   lim: float = 1.0 + AXES_MARGIN, own_box: tuple[torch.Tensor, ...] | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Expand ``M`` footprints to the flat cells they cover.

    Each pair covers the cells of its clamped bounding box (first cell ``base``, ``span_i x span_j``
    cells), and with parallelograms ``J`` only those whose centre passes the ``|J^-1 d| <= lims``
    test per half-axis (or that hold the pair's centre). Returns the covered cells ``(K,)``, per cell
    the pair it came from ``(K,)`` (``None`` when every pair covers exactly its one base cell), and per
    cell whether the pair's own patch covers it ``(K,)`` bool (the ungrown test ``|J^-1 d| <= lim``
    inside the ungrown box ``own_box`` = ``(i0, i1, j0, j1)`` float per pair, or the centre's cell;
    ``None`` = all), as opposed to only its grown footprint.
    """
    dev = base.device
    # Cells spanned per axis (0 when the bounding box misses the grid on either axis).
    span = torch.where(torch.minimum(span_i, span_j) > 0, torch.maximum(span_i, span_j), 0)
    one = span == 1  # a single cell (the one the centre falls in): no expansion, no test
    if bool(one.all()):
        return base, None, None
    sel = one.nonzero().squeeze(1)
    cells, pairs, exact = [base.index_select(0, sel)], [sel], [torch.ones_like(sel, dtype=torch.bool)]
    if J is not None:  # per pair, once: the inverse parallelogram and the cell holding the centre
        inv = inverse2x2(*J)
        home_i, home_j = torch.ceil(v - 1.0).long(), torch.ceil(u - 1.0).long()
    top = int(span.max())
    lo = 1
    for hi in _SPAN_GROUPS[1:]:
        if lo >= top:  # no pair spans more cells than the groups done so far
            break
        sel = ((span > lo) & (span <= hi)).nonzero().squeeze(1)
        lo = hi
        if sel.numel() == 0:
            continue
        off = torch.arange(hi, device=dev)
        di, dj = torch.meshgrid(off, off, indexing="ij")
        di, dj = di.reshape(-1), dj.reshape(-1)
        inside = (di[None] < span_i[sel, None]) & (dj[None] < span_j[sel, None])  # (S, hi*hi)
        rows, offs = inside.nonzero(as_tuple=True)
        s = sel.index_select(0, rows)
        dio, djo = di.index_select(0, offs), dj.index_select(0, offs)
        cell = base.index_select(0, s) + dio * w + djo
        if J is not None:
            assert lims is not None  # set with J above
            keep, own = _inside_parallelogram(s, ic0.index_select(0, s) + dio, jc0.index_select(0, s) + djo, u, v,
                                              inv, home_i, home_j, lims, lim, own_box)
            s, cell = s.index_select(0, keep), cell.index_select(0, keep)
        else:
            own = torch.ones_like(s, dtype=torch.bool)
        cells.append(cell)
        pairs.append(s)
        exact.append(own)
    return torch.cat(cells), torch.cat(pairs), torch.cat(exact)


def _inside_parallelogram(s: torch.Tensor, ci: torch.Tensor, cj: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                          inv: tuple[torch.Tensor, ...], home_i: torch.Tensor, home_j: torch.Tensor,
                          lims: tuple[torch.Tensor, torch.Tensor], lim: float,
                          own_box: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the candidate cells ``(ci, cj)`` of pairs ``s`` whose centre lies in the pair's
    parallelogram (inverse ``inv`` per pair, grown to the per-pair limits ``lims``) or that hold the pair's centre
    (cell ``(home_i, home_j)`` per pair); and for each of those whether the ungrown patch (``lim``) or
    the centre's cell holds it."""
    us, vs = u.index_select(0, s), v.index_select(0, s)
    dx = (cj.to(torch.float32) + 0.5) - us
    dy = (ci.to(torch.float32) + 0.5) - vs
    a, b, c, d = (x.index_select(0, s) for x in inv)
    alpha = a * dx + b * dy
    beta = c * dx + d * dy
    # The cell whose centre is in [u - 0.5, u + 0.5) is always covered.
    home = (ci == home_i.index_select(0, s)) & (cj == home_j.index_select(0, s))
    aa, bb = alpha.abs(), beta.abs()
    inside = (aa <= lims[0].index_select(0, s)) & (bb <= lims[1].index_select(0, s))
    keep = (inside | home).nonzero().squeeze(1)
    own = (aa <= lim) & (bb <= lim)
    if own_box is not None:
        i0, i1, j0, j1 = (x.index_select(0, s) for x in own_box)
        cif, cjf = ci.to(torch.float32), cj.to(torch.float32)
        own &= (cif >= i0) & (cif < i1) & (cjf >= j0) & (cjf < j1)
    own |= home
    return keep, own.index_select(0, keep)


def _zbuffer(cell: torch.Tensor, val: torch.Tensor, own: torch.Tensor, index: torch.Tensor, depth: torch.Tensor,
             T: int, h: int, w: int, exact: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic z-buffer: per flat cell, the smallest packed ``z bits << 32 | key`` wins, then the
    smallest owner among exact ties. With ``exact (K,)`` bool, a cell that some point's own patch
    covers is decided among those points only; the grown-only candidates (``exact`` false) compete
    for the cells no patch covers (the compiled twin: a top bit in its 128-bit value).
    Returns index ``(T, h, w)`` (-1 none) and depth (0 none)."""
    n = T * h * w
    best = torch.full((n,), _INT64_MAX, dtype=torch.int64, device=cell.device)
    if exact is not None and not bool(exact.all()):
        ex = exact.nonzero().squeeze(1)
        best.scatter_reduce_(0, cell.index_select(0, ex), val.index_select(0, ex), reduce="amin", include_self=True)
        # grown-only candidates enter only cells that no patch covers
        gr = (~exact).nonzero().squeeze(1)
        gr = gr[best.index_select(0, cell.index_select(0, gr)) == _INT64_MAX]
        keep = torch.cat([ex, gr])
        cell, val, own = cell.index_select(0, keep), val.index_select(0, keep), own.index_select(0, keep)
        best.scatter_reduce_(0, cell, val, reduce="amin", include_self=True)
    else:
        best.scatter_reduce_(0, cell, val, reduce="amin", include_self=True)
    win = (val == best.index_select(0, cell)).nonzero().squeeze(1)
    best_owner = torch.full((n,), _INT64_MAX, dtype=torch.int64, device=cell.device)
    best_owner.scatter_reduce_(0, cell.index_select(0, win), own.index_select(0, win), reduce="amin",
                               include_self=True)
    known = best_owner != _INT64_MAX
    index = torch.where(known, best_owner, index)
    zbits = (best >> 32).to(torch.int32)
    depth = torch.where(known, zbits.view(torch.float32), depth)
    return index.view(T, h, w), depth.view(T, h, w)


# ---------------------------------------------------------------------------------- patches
def depth_slopes(d: torch.Tensor, ratio: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust depth slopes ``dz/du``, ``dz/dv`` per cell of latent depth maps ``d (..., h, w)`` (0 = invalid).

    One-sided differences to both neighbours: their mean when they agree in sign within a factor
    ``ratio`` (a smooth surface), else the smaller in magnitude (a depth edge on one side: keep the
    cell's own surface); one side only when the other neighbour is missing; 0 when both are.
    """
    valid = d > 0

    def along(x: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        nan = torch.full_like(x[..., :1], float("nan"))
        dd = torch.where(ok[..., 1:] & ok[..., :-1], x[..., 1:] - x[..., :-1], float("nan"))
        fwd = torch.cat([dd, nan], dim=-1)
        bwd = torch.cat([nan, dd], dim=-1)
        af, ab = fwd.abs(), bwd.abs()
        agree = (fwd * bwd > 0) & (torch.maximum(af, ab) <= ratio * torch.minimum(af, ab))
        small = torch.where(af <= ab, fwd, bwd)
        g = torch.where(agree, 0.5 * (fwd + bwd), small)
        g = torch.where(torch.isnan(fwd), bwd, torch.where(torch.isnan(bwd), fwd, g))
        return torch.nan_to_num(g, nan=0.0)

    return along(d, valid), along(d.transpose(-1, -2), valid.transpose(-1, -2)).transpose(-1, -2)



def lift_patches(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor, cells: torch.Tensor,
                 max_stretch: float = 8.0) -> tuple[torch.Tensor, ...]:
    """Lift the grid cells ``cells (h, w) bool`` of one view to patches.

    Args:
        depth: ``(h, w)`` z-depth at the cell centres (0 = invalid; used whole for the slopes).
        K: ``(3, 3)`` intrinsics of that grid; c2w: ``(4, 4)`` camera-to-world (any float dtype).
        cells: which cells to lift (``depth > 0`` there).
        max_stretch: slope clamp, ``|dz/du| <= max_stretch * footprint`` (grazing cells).
    Returns:
        points ``(M, 3)`` float32 (on the cell-centre rays), footprint ``(M,)`` float32
        (``z / fx``), axes ``(M, 2, 3)`` float32 world half-axes along u and v divided by the
        footprint, and the cells' row / column indices ``ii, jj (M,)``. Computed in float64
        (:func:`lift_patches_frames` with one frame).
    """
    pts, foot, axes, _, ii, jj = lift_patches_frames(depth[None], K[None], c2w[None], cells[None], max_stretch)
    return pts, foot, axes, ii, jj


def lift_patches_frames(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor, cells: torch.Tensor,
                        max_stretch: float = 8.0) -> tuple[torch.Tensor, ...]:
    """:func:`lift_patches` of ``T`` views at once: ``depth, cells (T, h, w)``, ``K (T, 3, 3)``,
    ``c2w (T, 4, 4)``. Returns the points of frame 0, then frame 1, ... (each in row-major cell
    order, so the same rows, bit for bit, as one call per frame, in far fewer operations) and their
    frame, row and column indices ``tt, ii, jj (M,)``. On CPU the compiled twin (:mod:`.compiled`)
    does the same float64 operations in the same order per cell (same bits; tests compare both)."""
    dev = depth.device
    ext = _compiled.for_device(dev) if cells.any() else None
    if ext is not None:
        return tuple(ext.lift_patches_cpu(depth.to(torch.float64).contiguous(), K.to(torch.float64).contiguous(),
                                          c2w.to(torch.float64).contiguous(), cells.to(torch.bool).contiguous(),
                                          float(max_stretch)))
    gu, gv = depth_slopes(depth.to(torch.float64))
    tt, ii, jj = cells.nonzero(as_tuple=True)
    z = depth[tt, ii, jj].to(torch.float64)
    # each cell's view: the entries used, gathered per cell (M,) (not whole (M, 4, 4) matrices)
    Kd = K.to(dev, torch.float64)
    fx, fy, cx, cy = (Kd[:, r, c].index_select(0, tt) for r, c in ((0, 0), (1, 1), (0, 2), (1, 2)))
    C = c2w.to(dev, torch.float64)
    T = [[C[:, r, c].index_select(0, tt) for c in range(4)] for r in range(3)]  # T[r][c]: (M,)
    xn = ((jj.to(torch.float64) + 0.5) - cx) / fx
    yn = ((ii.to(torch.float64) + 0.5) - cy) / fy
    footprint = z / fx
    lim = max_stretch * footprint
    gu = torch.maximum(torch.minimum(gu[tt, ii, jj], lim), -lim)
    gv = torch.maximum(torch.minimum(gv[tt, ii, jj], lim), -lim)
    cam = torch.stack([xn * z, yn * z, z], dim=1)
    du = torch.stack([gu * xn + z / fx, gu * yn, gu], dim=1) * 0.5  # half-axis along u (camera frame)
    dv = torch.stack([gv * xn, gv * yn + z / fy, gv], dim=1) * 0.5

    def rot(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([T[k][0] * x[:, 0] + T[k][1] * x[:, 1] + T[k][2] * x[:, 2] for k in range(3)], dim=1)

    world = rot(cam) + torch.stack([T[k][3] for k in range(3)], dim=1)
    axes = torch.stack([rot(du), rot(dv)], dim=1) / footprint[:, None, None]
    return world.to(torch.float32), footprint.to(torch.float32), axes.to(torch.float32), tt, ii, jj


from .modes import SPLAT_MODES  # noqa: E402  (torch-free names, read by the option checks)

# Points are culled by blocks of this many consecutive stored points before the per-point test:
# points lifted together are neighbours in space, so most blocks are wholly in or out of a view.
CULL_BLOCK = 128


def check_splat_mode(mode: str) -> str:
    """``mode`` if it is a splat mode (``"patch"`` or ``"point"``), else a one-line :class:`MirageError`."""
    if mode not in SPLAT_MODES:
        raise MirageError(f"unknown splat mode {mode!r} (choose from {', '.join(SPLAT_MODES)})")
    return mode


def block_bounds(points: torch.Tensor, block: int = CULL_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis-aligned bounds of consecutive blocks of ``block`` points: ``lo, hi (B, 3)`` float64."""
    N = points.shape[0]
    nb = -(-N // block)
    p = points
    if nb * block != N:  # pad with the last point (it is in the last block anyway)
        p = torch.cat([p, p[-1:].expand(nb * block - N, 3)])
    p = p.view(nb, block, 3)
    return p.amin(dim=1).double(), p.amax(dim=1).double()


def _frustum_planes(w2c: torch.Tensor, bounds: list[tuple[float, ...]]) -> torch.Tensor:
    """``(4, 5 T)`` float64: per frame, the five tests of the per-point cull (``z > 0``, ``x > x_lo z``,
    ``x < x_hi z``, ``y > y_lo z``, ``y < y_hi z``, camera coordinates) as linear functions
    ``a . p + b`` of the world point (rows: ``a`` then ``b``), from ``w2c (T, 4, 4)``."""
    M = w2c[:, :3].to(torch.float64)  # (T, 3, 4) rows x, y, z as functions of (X, Y, Z, 1)
    x, y, z = M.unbind(1)
    lim = torch.tensor(bounds, dtype=torch.float64, device=M.device).reshape(-1, 4, 1)
    x_lo, x_hi, y_lo, y_hi = lim.unbind(1)
    planes = torch.stack([z, x - x_lo * z, x_hi * z - x, y - y_lo * z, y_hi * z - y], dim=1)  # (T, 5, 4)
    return planes.permute(2, 0, 1).reshape(4, -1)


def _visible_blocks(lo: torch.Tensor, hi: torch.Tensor, w2c: torch.Tensor, bounds: list[tuple[float, ...]]) -> torch.Tensor:
    """``(T, B)`` bool: block may hold a point passing the per-point frustum test of frame ``t``
    (conservative), for blocks with bounds ``lo, hi (B, 3)`` and cameras ``w2c (T, 4, 4)``.

    Each test of the per-point cull is a linear function ``a . p + b`` of the world point
    (:func:`_frustum_planes`), whose largest value over a box is ``a . centre + |a| . half_size + b``;
    a box where one of them is ``<= 0`` holds no point that passes. Computed in float64 with a
    relative tolerance far above the per-point fp32 rounding, so culling never removes a point the
    exact test would keep (all frames in one matrix product).
    """
    planes = _frustum_planes(w2c.to(lo.device), bounds)
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    top = centre @ planes[:3] + half @ planes[:3].abs() + planes[3]  # (B, 5 T)
    scale = (centre.abs() + half) @ planes[:3].abs() + planes[3].abs()
    # "not provably outside": a block holding a NaN or infinite coordinate has NaN bounds and stays
    # (its finite points must not vanish with it; the per-point test drops the bad ones)
    ok = ~(top <= -1e-5 * scale - 1e-30).view(lo.shape[0], -1, 5).any(dim=2)  # (B, T)
    return ok.T


def _visible_block_lists(lo: torch.Tensor, hi: torch.Tensor, w2c: torch.Tensor,
                         frustum: list[tuple[float, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The blocks of :data:`CULL_BLOCK` points each frame may see (:func:`_visible_blocks`),
    concatenated over the ``T`` frames ``(V,)`` int64, and where each frame's list starts ``(T + 1,)``."""
    vis = _visible_blocks(lo, hi, w2c, frustum)  # (T, B)
    t, b = vis.nonzero(as_tuple=True)  # row-major: frame by frame, blocks ascending
    start = torch.zeros(len(frustum) + 1, dtype=torch.int64)
    start[1:] = vis.sum(dim=1).cumsum(0).cpu()
    return b.to(torch.int64).contiguous(), start


def _splat_compiled(ext, points: torch.Tensor, axes: torch.Tensor, key: torch.Tensor, w2c: torch.Tensor,
                    K: torch.Tensor, frustum: list[tuple[float, ...]], h: int, w: int, m: float, owner_offset: int,
                    mode: str, bounds: tuple[torch.Tensor, torch.Tensor],
                    bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`splat_patches` through the compiled CPU kernel: the same block cull, then one pass over
    the points of the visible blocks per frame (same bits as the pure-torch path)."""
    f32 = torch.float32
    blocks, start = _visible_block_lists(*bounds, w2c, frustum)
    return ext.splat_patches_cpu(
        points.to(f32).contiguous(),
        axes.to(f32).contiguous() if mode == "patch" else torch.zeros(0, 6, dtype=f32),  # unused for points
        key.to(torch.int64).contiguous(),
        w2c.to(f32).contiguous(), K.to(f32).contiguous(), torch.tensor(frustum, dtype=f32).reshape(len(frustum), 4),
        blocks, start, CULL_BLOCK, h, w, m, int(owner_offset), mode == "patch", AXES_MARGIN, FOOTPRINT_GROW,
        bias.to(f32).contiguous() if bias is not None else torch.zeros(0, dtype=f32))


def splat_patches(points: torch.Tensor, axes: torch.Tensor, key: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor,
                  h: int, w: int, max_radius: float = 4.0, owner_offset: int = 0,
                  mode: str = "patch", compiled: bool = True,
                  bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
                  bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffered splat of patches into ``T`` cameras' ``h x w`` grids.

    Args:
        points: ``(N, 3)`` float32 world positions.
        axes: ``(N, 6)`` float32 world half-axes (``axes * footprint`` of :func:`lift_patches`,
            flattened); unused in ``"point"`` mode.
        key: ``(N,)`` int64 content hashes in ``[0, 2**31)`` (tie-break).
        w2c: ``(T, 4, 4)`` world-to-camera; K: ``(T, 3, 3)`` intrinsics of the target grids.
        owner_offset: added to the reported indices (when ``points`` is a slice of a memory).
        mode: ``"patch"`` (each point covers the cells of its projected parallelogram: no cracks)
            or ``"point"`` (each point fills only the cell its centre projects to, the nearest-cell
            splat of the paper's reference implementation).
        compiled: use the compiled CPU splat (:mod:`.compiled`) when it can be built; it gives the
            same bits as the pure-torch path, which runs otherwise (and on CUDA).
        bounds: optional :func:`block_bounds` of ``points`` (a memory keeps them between reads);
            computed here when ``None``.
        bias: optional ``(N,)`` float32 factor on each point's depth in the z-buffer test only (the
            reported depth is the winner's own, ``biased / bias`` in fp32): the memories give
            generated points ``1 + OBSERVED_MARGIN`` so that an observed point wins every conflict
            within that margin (:mod:`.freespace`). ``None`` = 1 for all.
    Returns:
        index ``(T, h, w)`` int64 (-1 = none) and depth ``(T, h, w)`` float32 (0 = none).

    Per frame (a loop over frames, never over points): cull blocks of points whose bounding box is
    outside the frustum, project the rest, cull those whose footprint cannot reach the grid, then
    compute the survivors' patch Jacobians and rasterise. The per-point arithmetic is elementwise
    fp32 only (no matmul), so CPU and CUDA give bit-identical results, and the block cull only
    skips points the per-point test would drop, so it changes no result.
    """
    check_splat_mode(mode)
    dev = points.device
    T = w2c.shape[0]
    N = points.shape[0]
    m = float(max_radius)
    frustum = _frustum_bounds(K, h, w, m)
    if N and bounds is None:
        bounds = block_bounds(points)
    ext = _compiled.for_device(dev) if compiled and N and T else None
    if ext is not None:
        assert bounds is not None  # N > 0
        return _splat_compiled(ext, points, axes, key, w2c, K, frustum, h, w, m, owner_offset, mode, bounds, bias)
    index = torch.full((T, h, w), -1, dtype=torch.int64, device=dev)
    depth = torch.zeros(T, h, w, dtype=torch.float32, device=dev)
    if N == 0:
        return index, depth
    assert bounds is not None  # N > 0
    visible = _visible_blocks(*bounds, w2c, frustum)  # (T, B)
    w2c = w2c.to(dev, torch.float32)
    K = K.to(dev, torch.float32)
    for t in range(T):
        vis = visible[t].nonzero().squeeze(1)
        if vis.numel() == 0:
            continue
        sel, u, v, xn, yn, z = _project_frame(points, vis, w2c[t], K[t], frustum[t])
        tie = key.index_select(0, sel)
        zc = z if bias is None else z * bias.to(dev, torch.float32).index_select(0, sel)  # the z-buffer's depth
        if mode == "point":
            idx, dep = rasterize(0, sel + owner_offset, u, v, zc, tie, 1, h, w,
                                 radius=torch.full_like(z, 0.5), max_radius=m)
        else:
            J = _patch_jacobian(axes.index_select(0, sel), w2c[t], K[t], xn, yn, z)
            idx, dep = rasterize(0, sel + owner_offset, u, v, zc, tie, 1, h, w, J=J, max_radius=m, grow=FOOTPRINT_GROW)
        if bias is not None:  # the winner's own depth back
            won = idx >= 0
            b = bias.to(dev, torch.float32).index_select(0, (idx - owner_offset).clamp(min=0).view(-1)).view(idx.shape)
            dep = torch.where(won, dep / b, dep)
        index[t], depth[t] = idx[0], dep[0]
    return index, depth


def _frustum_bounds(K: torch.Tensor, h: int, w: int, m: float) -> list[tuple[float, ...]]:
    """Per frame ``(x_lo, x_hi, y_lo, y_hi)``: the grid grown by ``m`` cells as slopes ``x / z``,
    ``y / z`` in camera coordinates (float64 from ``K (T, 3, 3)``), for the cull without dividing."""
    Kc = K.to("cpu", torch.float64)
    return [(float((-m - k[0, 2]) / k[0, 0]), float((w + m - k[0, 2]) / k[0, 0]),
             float((-m - k[1, 2]) / k[1, 1]), float((h + m - k[1, 2]) / k[1, 1])) for k in Kc]


def _project_frame(points: torch.Tensor, vis: torch.Tensor, r: torch.Tensor, K: torch.Tensor,
                   bounds: tuple[float, ...]) -> tuple[torch.Tensor, ...]:
    """Project the points of the visible blocks ``vis`` with ``r (4, 4)`` fp32 world-to-camera and
    ``K (3, 3)`` fp32, keep those inside the grown frustum ``bounds``. Returns ``sel (M,)`` int64
    (indices into ``points``), cell coordinates ``u, v``, normalised ``xn, yn`` and depth ``z`` (fp32)."""
    N = points.shape[0]
    x_lo, x_hi, y_lo, y_hi = bounds
    X, Y, Z = points.unbind(dim=1)
    cand = None
    if 2 * vis.numel() * CULL_BLOCK < N:  # gather only when it skips most of the points
        cand = (vis[:, None] * CULL_BLOCK + torch.arange(CULL_BLOCK, device=points.device)).reshape(-1)
        cand = cand[cand < N]
    Xs, Ys, Zs = (X, Y, Z) if cand is None else (a.index_select(0, cand) for a in (X, Y, Z))
    xc = r[0, 0] * Xs + r[0, 1] * Ys + r[0, 2] * Zs + r[0, 3]
    yc = r[1, 0] * Xs + r[1, 1] * Ys + r[1, 2] * Zs + r[1, 3]
    zc = r[2, 0] * Xs + r[2, 1] * Ys + r[2, 2] * Zs + r[2, 3]
    ok = (zc > 0) & (xc > x_lo * zc) & (xc < x_hi * zc) & (yc > y_lo * zc) & (yc < y_hi * zc)
    keep = ok.nonzero().squeeze(1)
    xc, yc, z = (a.index_select(0, keep) for a in (xc, yc, zc))
    sel = keep if cand is None else cand.index_select(0, keep)
    xn, yn = xc / z, yc / z
    return sel, xn * K[0, 0] + K[0, 2], yn * K[1, 1] + K[1, 2], xn, yn, z


def _patch_jacobian(A: torch.Tensor, r: torch.Tensor, K: torch.Tensor, xn: torch.Tensor, yn: torch.Tensor,
                    z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The projected patch ``[[du_0, du_1], [dv_0, dv_1]]`` (flattened row-major) of the world
    half-axes ``A (M, 6)``: its columns are the patch's half-axes in target cells."""
    fx, fy = K[0, 0], K[1, 1]
    J = []
    for q in (0, 3):
        ax, ay, az = A[:, q], A[:, q + 1], A[:, q + 2]
        cxk = r[0, 0] * ax + r[0, 1] * ay + r[0, 2] * az
        cyk = r[1, 0] * ax + r[1, 1] * ay + r[1, 2] * az
        czk = r[2, 0] * ax + r[2, 1] * ay + r[2, 2] * az
        J += [fx * (cxk - xn * czk) / z, fy * (cyk - yn * czk) / z]
    return J[0], J[2], J[1], J[3]
