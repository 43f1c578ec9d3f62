"""Reference selection by voxel IoU, as the paper's reference implementation chooses its reference frames.

For a chunk, the memory points inside the union of its latent-frame frustums are compared with the
memory points inside each earlier latent frame's frustum, both reduced to a voxel grid; the
history frames with the highest intersection-over-union of voxel sets (at least ``threshold``)
become the references, highest first. No occlusion test, as the reference.

"Recorded right after that frame's memory update": the reference keeps, for each history frame,
the voxels it saw once its chunk was written. mirage rebuilds that set from the memory itself:
every point carries the label of the chunk that wrote it (0 = the input image, ``k + 1`` = chunk
``k``), so the memory as it was after chunk ``k`` is the set of points with label ``<= k + 1``
(exact for the append-only write policies, ``new`` and ``append``). This needs no extra run state,
so ``--resume`` selects exactly what the uninterrupted run selected.

Units: ``voxel`` is in world units of the scene (0.1 in the reference, whose depth is metric).
Scenes with relative depth scale it by the reference depth (see :func:`voxel_size`).
"""

from __future__ import annotations

import torch

from ..geometry.cameras import Cameras, backproject, project

VOXEL = 0.1  # world units (metres in the reference)
IOU_THRESHOLD = 0.04


def depth_is_metric(depth_source: str) -> bool:
    """Whether the input depth is metric: a depth file / sidecar / geometry.npz or a metric depth model
    (``model:NAME:metric``); the geometric prior and relative models are not."""
    kind = depth_source.split(":", 1)[0]
    return kind in ("file", "sidecar", "geometry") or depth_source.endswith(":metric")


def voxel_size(depth_source: str, reference_depth: float) -> tuple[float, str]:
    """``(voxel edge in world units, how it was chosen)``: 0.1 for metric depth; for relative depth
    ``0.1 x reference depth`` (the median input depth), so the grid keeps its size relative to the scene."""
    if depth_is_metric(depth_source):
        return VOXEL, f"{VOXEL} world units (metric depth)"
    v = VOXEL * float(reference_depth)
    return v, f"{VOXEL} x reference depth {reference_depth:.4g} = {v:.4g} world units (relative depth)"


def _voxel_keys(points: torch.Tensor, voxel: float) -> torch.Tensor:
    """Unique int64 keys ``(M,)`` of the voxels holding ``points (N, 3)`` (21 bits per axis)."""
    q = torch.floor(points.double() / voxel).long() + (1 << 20)
    q = q.clamp(0, (1 << 21) - 1)
    return torch.unique((q[:, 0] << 42) | (q[:, 1] << 21) | q[:, 2])


def _in_frustum(points: torch.Tensor, cams: Cameras, grid: tuple[int, int], batch: int = 16) -> torch.Tensor:
    """``(F, N)`` bool: point in front of camera ``f`` and projecting inside its ``h x w`` latent grid."""
    h, w = grid
    out = []
    K = cams.K(w, h)
    for s in range(0, len(cams), batch):
        uv, z = project(points, cams.w2c[s:s + batch], K[s:s + batch])
        out.append((z > 1e-6) & (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h))
    return torch.cat(out)


def voxel_iou_references(points: torch.Tensor, labels: torch.Tensor, target: Cameras, history: Cameras,
                         history_labels: list[int], candidates: list[int], count: int, grid: tuple[int, int],
                         voxel: float, threshold: float = IOU_THRESHOLD) -> list[int]:
    """Choose up to ``count`` of ``candidates`` (indices into ``history``) by voxel IoU with the chunk.

    Args:
        points: ``(N, 3)`` memory points (world). labels: ``(N,)`` chunk label of each point.
        target: ``(T)`` the chunk's latent-frame cameras. history: ``(H)`` cameras of the history frames.
        history_labels: for each history frame, the largest point label its memory state held.
        candidates: history indices that may be chosen. grid: ``(h, w)`` latent cells.
        voxel: voxel edge in world units. threshold: minimum IoU.

    Returns:
        history indices, highest IoU first (ties: most recent first).
    """
    if count <= 0 or not candidates or len(points) == 0:
        return []
    pts = points.double().cpu()
    labels = labels.cpu()
    seen = _in_frustum(pts, target, grid).any(0)
    tgt = _voxel_keys(pts[seen], voxel)
    if len(tgt) == 0:
        return []
    sel = torch.tensor(candidates)
    inside = _in_frustum(pts, Cameras(history.c2w[sel], history.intrinsics[sel], history.width, history.height), grid)
    scored = []
    for row, i in enumerate(candidates):
        keys = _voxel_keys(pts[inside[row] & (labels <= history_labels[i])], voxel)
        inter = int(torch.isin(keys, tgt).sum())
        union = len(keys) + len(tgt) - inter
        iou = inter / union if union else 0.0
        if iou >= threshold:
            scored.append((-iou, -i))
    return [-i for _, i in sorted(scored)[:count]]


# ------------------------------------------------------------------------------------ training samples
def depth_voxel_keys(depth: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, valid: torch.Tensor,
                     voxel: float) -> torch.Tensor:
    """The occupancy of one annotated frame, as the reference's training references use it: every
    valid pixel of ``depth (H, W)`` (z-depth; ``valid (H, W)`` bool) back-projected with ``c2w (4, 4)``
    and pixel intrinsics ``K (3, 3)``, floored to ``voxel``; unique int64 keys ``(M,)``."""
    pts = backproject(depth.double(), c2w.double(), K.double())[valid]
    return _voxel_keys(pts, voxel)


def frame_iou_references(keys: dict[int, torch.Tensor], targets: list[int], candidates: list[int], count: int,
                         threshold: float = IOU_THRESHOLD) -> tuple[list[int], list[float]]:
    """The reference's training reference frames (``data_process/reference_frames.py`` of
    microsoft/LatentSpatialMemory at b2cd738): the
    score of a candidate frame is the largest voxel IoU between its occupancy and any target frame's
    (``keys``: frame -> :func:`depth_voxel_keys`); candidates scoring at least ``threshold`` are kept,
    highest first (ties: the earlier frame), at most ``count``.

    Returns:
        ``(frames, ious)``, both ordered by IoU descending.
    """
    scored = []
    for c in candidates:
        kc, best = keys[c], 0.0
        for t in targets:
            kt = keys[t]
            inter = int(torch.isin(kc, kt).sum())
            union = len(kc) + len(kt) - inter
            best = max(best, inter / union if union else 0.0)
        if best >= threshold:
            scored.append((-best, c))
    scored.sort()
    return [c for _, c in scored[:count]], [-s for s, _ in scored[:count]]
