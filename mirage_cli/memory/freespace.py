"""Observed free space: what a memory's observed views saw as empty stays empty.

A view whose depth was *observed* (the input image with its depth file or depth model: a memory
records it when it lifts chunk 0, :data:`~mirage_cli.memory.storage.INPUT_CHUNK`) tells more than
where its surfaces are: along every ray, the space in front of the surface is empty. Generated
content is lifted with depth that is only a guess (the preview's background-side fill, a depth
model aligned to the read), and a guess that lands in that empty space floats in front of observed
surfaces: when the camera comes back, the read's z-buffer lets it win, and the memory no longer
shows what it saw (issue 20: "flames" over a third of the input view after a full orbit).

The rule (:func:`constrain_depth`), applied by every memory's write to every new point, whatever
the write policy:

- A new point at z-depth ``z`` on the ray of cell ``(i, j)`` of a written frame is in observed free
  space when, in some observation, it projects inside the observed grid at depth ``z_o`` in front
  of what that view saw there by more than ``tol``: ``z_o < (1 - tol) * min2x2(D_o)`` (``D_o`` the
  observed depth grid; ``min2x2`` its minimum over the four cells nearest to where the point
  projects, so that a point beside a depth edge is never judged against the far side alone; cells
  the view did not observe, depth 0, declare nothing).
- Such a point is **pushed back** along its own ray (so the written frame still sees it exactly
  where it was generated) to the first depth that is not in observed free space on geometric steps
  of ``PUSH_STEP`` up to ``MAX_PUSH`` times its depth (an allowed interval thinner than a step can
  be stepped over), then ``BISECT`` bisections between the last free and the first allowed depth
  (the allowed end is kept). A point with no allowed depth within
  ``MAX_PUSH`` is dropped (depth 0: no point).

Why push rather than drop: the written frame's own view of the content is unchanged, the next
chunks read it back where it was generated (no regenerated holes), and from the observed view it
lies at or behind the surface it saw, where the z-buffer keeps it hidden. Generated frames are not
observations: their depth is a guess too, and one guess must not carve another's surface.

Reads add the other half (:func:`depth_bias`): an observed point wins every depth conflict with a
generated one within :data:`OBSERVED_MARGIN`, so content generated on or just in front of an
observed surface (a sphere's limb, a floor at a grazing angle: where the test above cannot tell a
point from the surface within a cell) never hides it.

Arithmetic: float64, elementwise only (no matmul, no matrix inverse), so CPU and CUDA decide alike.

Cost: one projection per new cell per observation, and the push search for the (few) conflicting
cells only; all tensor arithmetic, no loop over points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import MirageError

FREE_SPACE_TOL = 0.03
"""Relative depth margin: a point must be more than 3 % in front of an observed surface to be in
its free space (depth reduction and fp16 axes make observed surfaces agree with themselves to well
under 1 %; 3 % also absorbs the depth of a latent cell's patch at grazing angles)."""
OBSERVED_MARGIN = 0.05
"""In every read, a generated point must be more than 5 % nearer than an observed (input) point to
win a cell from it (a depth factor ``1 + OBSERVED_MARGIN`` on generated points in the z-buffer test,
:func:`depth_bias`): what the push leaves within ``FREE_SPACE_TOL`` of an observed surface, and a
generated surface that meets an observed one at a shallow angle, no longer hides it."""
PUSH_STEP = 1.15
MAX_PUSH = 16.0
BISECT = 5


@dataclass(frozen=True)
class Observation:
    """One observed view: ``c2w (4, 4)`` float32 (OpenCV), ``K (3, 3)`` float32 intrinsics of its grid
    (cells, centres at +0.5) and ``depth (h, w)`` float32 observed z-depth (0 = not observed)."""

    c2w: torch.Tensor
    K: torch.Tensor
    depth: torch.Tensor

    def to(self, device: torch.device | str) -> Observation:
        return Observation(self.c2w.to(device), self.K.to(device), self.depth.to(device))


def observation(c2w: torch.Tensor, K: torch.Tensor, depth: torch.Tensor) -> Observation:
    """An :class:`Observation` from a view's pose, grid intrinsics and depth grid (float32 copies;
    non-finite or negative depth becomes 0, "not observed")."""
    d = depth.detach().to(torch.float32)
    d = torch.where(torch.isfinite(d) & (d > 0), d, torch.zeros_like(d))
    return Observation(c2w.detach().to(d.device, torch.float32).clone(), K.detach().to(d.device, torch.float32).clone(),
                       d.clone().contiguous())


def depth_bias(chunk: torch.Tensor, input_chunk: int = 0) -> torch.Tensor | None:
    """``(N,)`` float32 z-buffer depth factor of each point: 1 for observed (input) points,
    ``1 + OBSERVED_MARGIN`` for generated ones; ``None`` when every point is observed (nothing to bias)."""
    gen = chunk != input_chunk
    if not bool(gen.any()):
        return None
    one = torch.ones(chunk.shape[0], dtype=torch.float32, device=chunk.device)
    return torch.where(gen, one * (1.0 + OBSERVED_MARGIN), one)


def same_observation(a: Observation, b: Observation) -> bool:
    """Whether two observations are the same view with the same depth (a memory records a view once)."""
    return (a.depth.shape == b.depth.shape and torch.equal(a.c2w.cpu(), b.c2w.cpu()) and torch.equal(a.K.cpu(), b.K.cpu())
            and torch.equal(a.depth.cpu(), b.depth.cpu()))


def _floor_depth(depth: torch.Tensor) -> torch.Tensor:
    """2x2 minimum of the observed depth over *observed* cells, on the grid of cell corners: entry
    ``(i, j)`` is the nearest surface the view saw in the four cells around corner ``(i, j)``
    (``(h + 1, w + 1)``; unobserved cells are ignored, 0 where none of the four was observed). A
    point is judged against the four cells nearest to where it projects, so a point beside a depth
    edge is never judged against the far side alone."""
    big = torch.finfo(torch.float32).max
    d = torch.where(depth > 0, depth, torch.full_like(depth, big))
    m = -F.max_pool2d(F.pad(-d, (1, 1, 1, 1), value=-big)[None, None], 2, stride=1)[0, 0]
    return torch.where(m < big, m, torch.zeros_like(m))


def in_free_space(points: torch.Tensor, observations: list[Observation], floors: list[torch.Tensor] | None = None,
                  tol: float = FREE_SPACE_TOL) -> torch.Tensor:
    """``(M,)`` bool: the world points ``(M, 3)`` lie in front of an observed surface by more than ``tol``.

    ``floors``: per observation, the 2x2 minimum depth on the corner grid (:func:`_floor_depth`, the
    robust test for a point's centre) or ``None`` = the observed depth of the cell the point falls
    in (the exact test, for the corners of a generated patch)."""
    free = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    if points.shape[0] == 0:
        return free
    p = points.to(torch.float64)
    for k, obs in enumerate(observations):
        floor = floors[k] if floors is not None else obs.depth.to(p.device)
        # world -> camera with R^T (p - t), elementwise: no matmul, no inverse (CPU and CUDA alike)
        C = obs.c2w.to(p.device, torch.float64)
        d = p - C[:3, 3]
        cam = [C[0, r] * d[:, 0] + C[1, r] * d[:, 1] + C[2, r] * d[:, 2] for r in range(3)]
        z = cam[2]
        K = obs.K.to(p.device, torch.float64)
        zs = torch.where(z > 0, z, torch.ones_like(z))
        u = cam[0] / zs * K[0, 0] + K[0, 2]
        v = cam[1] / zs * K[1, 1] + K[1, 2]
        h, w = obs.depth.shape
        inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        if floors is not None:  # the corner nearest to the point: the four cells around it
            j = (u + 0.5).clamp(0, w).floor().long()
            i = (v + 0.5).clamp(0, h).floor().long()
        else:
            j = u.clamp(0, w - 1).floor().long()
            i = v.clamp(0, h - 1).floor().long()
        seen = floor[i, j].to(torch.float64)
        free |= inside & (seen > 0) & (z < (1.0 - tol) * seen)
    return free


def constrain_depth(depth: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, observations: list[Observation],
                    tol: float = FREE_SPACE_TOL, cells: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
    """Apply the observed-free-space rule (module docstring) to the depth of ``T`` frames to be written.

    Args:
        depth: ``(T, h, w)`` z-depth at the cell centres of the written frames (``<= 0`` = no point).
        c2w: ``(T, 4, 4)`` their camera-to-world poses (OpenCV); K: ``(T, 3, 3)`` their grid intrinsics.
        observations: the memory's observed views (none: ``depth`` is returned as it is).
        tol: relative depth margin (:data:`FREE_SPACE_TOL`).
        cells: optional ``(T, h, w)`` bool, the only cells that may be lifted (policy ``"new"``: the
            cells the read did not cover); the others are returned unchanged and cost nothing.
    Returns:
        ``(depth', pushed, dropped)``: the depth with every point in observed free space pushed back
        along its ray (or set to 0 when no allowed depth exists within :data:`MAX_PUSH` times its
        depth), and how many cells were pushed and dropped.
    Raises:
        MirageError: ``tol`` outside ``[0, 1)``.
    """
    if not 0 <= tol < 1:
        raise MirageError(f"free-space tolerance must be in [0, 1), got {tol}")
    if not observations:
        return depth, 0, 0
    valid = torch.isfinite(depth) & (depth > 0)
    if cells is not None:
        valid &= cells.to(valid.device).bool()
    tt, ii, jj = valid.nonzero(as_tuple=True)
    if tt.numel() == 0:
        return depth, 0, 0
    floors = [_floor_depth(o.depth.to(depth.device)) for o in observations]
    C = c2w.to(depth.device, torch.float64)
    Kd = K.to(depth.device, torch.float64)
    # each cell's ray: world point = origin + z * ray (z = depth along the camera's optical axis)
    xn = ((jj.to(torch.float64) + 0.5) - Kd[tt, 0, 2]) / Kd[tt, 0, 0]
    yn = ((ii.to(torch.float64) + 0.5) - Kd[tt, 1, 2]) / Kd[tt, 1, 1]
    dirs = torch.stack([xn, yn, torch.ones_like(xn)], dim=1)
    R = C[tt, :3, :3]
    ray = torch.stack([R[:, r, 0] * dirs[:, 0] + R[:, r, 1] * dirs[:, 1] + R[:, r, 2] * dirs[:, 2] for r in range(3)], 1)
    origin = C[tt, :3, 3]
    z = depth[tt, ii, jj].to(torch.float64)

    def free_at(zz: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return in_free_space(origin[rows] + zz[:, None] * ray[rows], observations, floors, tol)

    bad = in_free_space(origin + z[:, None] * ray, observations, floors, tol).nonzero().squeeze(1)
    if bad.numel() == 0:
        return depth, 0, 0
    lo = z[bad].clone()  # the last depth known to be free
    hi = torch.zeros_like(lo)  # the first allowed depth (0 = none found yet)
    zz = lo.clone()
    while True:
        zz = zz * PUSH_STEP
        open_ = (hi == 0) & (zz <= MAX_PUSH * z[bad])
        if not bool(open_.any()):
            break
        rows = open_.nonzero().squeeze(1)
        f = free_at(zz[rows], bad[rows])
        hi[rows[~f]] = zz[rows[~f]]
        lo[rows[f]] = zz[rows[f]]
    found = (hi > 0).nonzero().squeeze(1)
    for _ in range(BISECT):
        if found.numel() == 0:
            break
        mid = 0.5 * (lo[found] + hi[found])
        f = free_at(mid, bad[found])
        lo[found[f]] = mid[f]
        hi[found[~f]] = mid[~f]
    out = depth.clone()
    out[tt[bad], ii[bad], jj[bad]] = hi.to(out.dtype)  # 0 where nothing allowed was found: dropped
    dropped = int((hi == 0).sum())
    return out, int(bad.numel()) - dropped, dropped


def fit_patches(points: torch.Tensor, axes: torch.Tensor, observations: list[Observation],
                tol: float = FREE_SPACE_TOL) -> torch.Tensor:
    """Shrink the patches of new generated points that reach into observed free space.

    A point's centre is kept out of free space by :func:`constrain_depth`; its patch (``points (M, 3)``
    with world half-axes ``axes (M, 2, 3)``) may still reach over an observed depth edge, where the
    read would let it cover the far surface the view saw there (a one-cell outline around every
    object after an orbit). A patch with a corner or edge midpoint ``p + s a_0 + t a_1`` (``s, t`` in
    ``{-1, 0, 1}``, not both 0) in free space by the exact per-cell test is halved, up to three
    times (``1/8``: it then covers its own cell only, from any view). Returns the axes ``(M, 2, 3)``
    (the same tensor when nothing is in free space or there is no observation).
    """
    if not observations or points.shape[0] == 0:
        return axes
    scale = torch.ones(points.shape[0], dtype=torch.float32, device=points.device)
    offsets = [(s, t) for s in (-1, 0, 1) for t in (-1, 0, 1) if (s, t) != (0, 0)]
    rows = torch.arange(points.shape[0], device=points.device)
    a = axes.to(torch.float32)
    for _ in range(3):
        if rows.numel() == 0:
            break
        p, ax = points[rows].to(torch.float32), a[rows] * scale[rows, None, None]
        probe = torch.stack([p + s * ax[:, 0] + t * ax[:, 1] for s, t in offsets], dim=1)  # (R, 8, 3)
        free = in_free_space(probe.reshape(-1, 3), observations, None, tol).view(-1, len(offsets)).any(1)
        rows = rows[free]
        scale[rows] *= 0.5
    if bool((scale == 1).all()):
        return axes
    return (a * scale[:, None, None]).to(axes.dtype)
