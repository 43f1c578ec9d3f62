"""Write policies, shared by every memory: which cells of a written frame add points, which points change.

A memory writes a chunk frame by frame, in order. For frame ``t`` with valid cells ``V`` (depth > 0):

- ``"new"`` (default): the cells of ``V`` that are not covered add points. Covered = the known-mask
  of the read made before generating (or a read now), plus the cells the points that earlier frames
  of the same call just added cover. Revisiting a place adds nothing, so the memory is bounded by
  the scene, not by the video length.
- ``"replace"``: the z-buffer winners under ``V`` are removed, then every cell of ``V`` adds a point.
- ``"average"``: each winner under ``V`` gets the mean of its old value and the mean of the new values
  it covers (an exponential moving average with weight 1/2, blended by the memory in its own storage
  dtype); cells of ``V`` that no point covers add points as with ``"new"``.
- ``"append"``: every cell of ``V`` adds a point, as the paper's reference implementation and peers
  that append each generated frame to their cache do (the memory grows with the video length).

This module decides cells and winners; the memory (a :class:`PolicyTarget`) keeps the storage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from ..errors import MirageError
from ..geometry.cameras import Cameras
from .modes import APPEND, AVERAGE, LATENT_POLICIES, NEW, REPLACE  # noqa: F401  (torch-free names)

POINTCLOUD_POLICIES = LATENT_POLICIES


def check_policy(policy: str, allowed: tuple[str, ...]) -> str:
    """``policy`` if it is one of ``allowed``, else a one-line :class:`MirageError`."""
    if policy not in allowed:
        raise MirageError(f"unknown write policy {policy!r} (choose from {', '.join(allowed)})")
    return policy


class PolicyTarget(Protocol):
    """What a memory offers the write policies (``N`` points, frames of ``h x w`` cells)."""

    def __len__(self) -> int: ...

    def winners(self, cameras: Cameras, start: int = 0) -> torch.Tensor:
        """``(T, h, w)`` int64 z-buffer winner among the points ``start:`` (index into all points, -1 = none)."""

    def drop(self, keep: torch.Tensor) -> None:
        """Keep only the points where ``keep (N,) bool`` is true, in order."""

    def blend(self, index: torch.Tensor, mean: torch.Tensor) -> None:
        """Average policy: set the points ``index (M,)`` to the mean of their value and ``mean (M, C)`` float64."""


def winner_means(winners: torch.Tensor, values: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the new ``values (M, C)`` float64 per winning point (``winners (M,)`` in ``[0, n)``).

    Returns the distinct winners ``(K,)`` (ascending) and their means ``(K, C)`` float64.
    """
    sums = torch.zeros(n, values.shape[1], dtype=torch.float64, device=values.device)
    sums.index_add_(0, winners, values)
    cnt = torch.bincount(winners, minlength=n)
    upd = (cnt > 0).nonzero(as_tuple=True)[0]
    return upd, sums[upd] / cnt[upd, None].to(torch.float64)


# Policy "new" lifts a write's candidate cells in one batch when at most this fraction of its cells
# are candidates (memory bench, against one lift per frame: faster with 0.2-8 % candidates, ~1.5x slower
# with all cells candidates, where it lifts many cells that earlier frames' new points then cover).
BATCH_LIFT_FRACTION = 0.25


class BatchLift(Protocol):
    """Optional fast path of policy ``"new"``: lift every candidate cell of the call at once, then
    decide frame by frame which of them to keep (the same points, in the same order, as one lift per
    frame: a cell's point depends only on its own frame's depth and camera)."""

    def lift(self, cells: torch.Tensor) -> None:
        """Lift the cells ``(T, h, w) bool`` (rows ordered by frame, then row-major)."""

    def coverage(self, rows: torch.Tensor, t: int) -> torch.Tensor:
        """``(h, w)`` bool: the cells of frame ``t`` that the lifted rows ``rows (K,)`` cover."""

    def keep(self, rows: torch.Tensor | None = None) -> int:
        """Append the lifted rows ``rows (K,)`` (ascending; ``None`` = all) to the memory; returns how many."""


def write_frames(memory: PolicyTarget, policy: str, cameras: Cameras, valid: torch.Tensor,
                 known: torch.Tensor | None, add: Callable[[int, torch.Tensor], int],
                 values: Callable[[int, torch.Tensor], torch.Tensor],
                 batch: BatchLift | None = None) -> int:
    """Write ``T`` frames into ``memory`` with ``policy`` (see the module docstring), in order.

    Args:
        cameras: the ``T`` cameras of the frames.
        valid: ``(T, h, w)`` bool, cells with valid depth.
        known: ``(T, h, w)`` bool known-mask of the read made before generating (policy ``"new"``;
            ``None`` = read the memory now). The other policies read the memory for every frame.
        add: ``add(t, cells)`` lifts the cells ``(h, w) bool`` of frame ``t`` as new points (appended)
            and returns how many it added.
        values: ``values(t, covered)`` -> ``(M, C)`` float64 new values of frame ``t`` at the ``M``
            cells of ``covered (h, w) bool`` (row-major), in the memory's storage units.
        batch: optional :class:`BatchLift` of the memory (same result as ``add`` frame by frame, with
            one lift and one append per call): policy ``"append"`` (no frame depends on another) and
            ``"new"`` (when few cells are candidates, :data:`BATCH_LIFT_FRACTION`).
    Returns:
        the number of points added.
    """
    if policy == APPEND:
        if batch is not None:
            batch.lift(valid)
            return batch.keep()
        return sum(add(t, valid[t]) for t in range(len(cameras)))
    if policy == NEW:
        return _write_new(memory, cameras, valid, known, add, batch)
    return _write_update(memory, policy, cameras, valid, add, values)


def _write_new(memory: PolicyTarget, cameras: Cameras, valid: torch.Tensor, known: torch.Tensor | None,
               add: Callable[[int, torch.Tensor], int], batch: BatchLift | None = None) -> int:
    T, h, w = valid.shape
    if known is None:
        known = memory.winners(cameras) >= 0
    known = torch.as_tensor(known, device=valid.device).bool()
    if tuple(known.shape) != (T, h, w):
        raise MirageError(f"write: known-mask has shape {tuple(known.shape)}, expected ({T}, {h}, {w})")
    candidates = valid & ~known
    # The batched lift also lifts candidates that earlier frames' new points turn out to cover: cheap
    # when few cells are unknown (the usual chunk), a loss when most are (then one lift per frame).
    if batch is not None and int(candidates.sum()) <= BATCH_LIFT_FRACTION * candidates.numel():
        return _write_new_batched(batch, candidates)
    start, added = len(memory), 0
    for t in range(T):
        covered = known[t]
        if len(memory) > start:  # cells covered by the points earlier frames of this call just added
            covered = covered | (memory.winners(cameras[t], start)[0] >= 0)
        added += add(t, valid[t] & ~covered)
    return added


def _write_new_batched(batch: BatchLift, candidates: torch.Tensor) -> int:
    """Policy ``"new"`` with one lift of every candidate cell ``(T, h, w)`` (valid, not known), then,
    frame by frame, keep the candidates that the rows kept for earlier frames do not cover."""
    batch.lift(candidates)
    tt, ii, jj = candidates.nonzero(as_tuple=True)
    ends = torch.bincount(tt, minlength=candidates.shape[0]).cumsum(0).tolist()
    kept = torch.zeros(tt.shape[0], dtype=torch.bool, device=candidates.device)
    lo = 0
    for t, hi in enumerate(ends):
        if hi > lo:
            earlier = kept[:lo].nonzero().squeeze(1)
            if earlier.numel():  # cells covered by the points earlier frames of this call add
                kept[lo:hi] = ~batch.coverage(earlier, t)[ii[lo:hi], jj[lo:hi]]
            else:
                kept[lo:hi] = True
        lo = hi
    return batch.keep(kept.nonzero().squeeze(1))


def _write_update(memory: PolicyTarget, policy: str, cameras: Cameras, valid: torch.Tensor,
                  add: Callable[[int, torch.Tensor], int], values: Callable[[int, torch.Tensor], torch.Tensor]) -> int:
    added = 0
    for t in range(len(cameras)):
        idx = memory.winners(cameras[t])[0]
        covered = (idx >= 0) & valid[t]
        winners = idx[covered]
        if policy == REPLACE:
            keep = torch.ones(len(memory), dtype=torch.bool, device=valid.device)
            keep[winners] = False
            memory.drop(keep)
            cells = valid[t]
        else:  # AVERAGE
            if winners.numel():
                memory.blend(*winner_means(winners, values(t, covered), len(memory)))
            cells = valid[t] & ~covered
        added += add(t, cells)
    return added
