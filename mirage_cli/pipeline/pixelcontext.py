"""Pixel context for backends trained on an explicit RGB point cloud (Spatia's loop, approximated with mirage's parts).

Spatia (ZhaoJingjing713/Spatia at 5dd3457, ``Spatia/inference.py`` lines 470-560) conditions each round on

- an RGB point cloud rebuilt **from scratch every round** from every 6th frame generated so far
  (``map_stride = round(24 / 4)``), voxel-downsampled (0.01 world units), rendered into every frame
  of the round with black holes, and its coverage (the hole mask);
- the last ``overlap`` decoded frames (re-encoded into the round's pinned latents);
- up to 7 decoded frames chosen as references by a one-to-one (Hungarian) matching of front-most
  point sets: targets every 12th pose of the round, candidates every 4th frame before the round
  (``select_reference_frames``, ``find_mask_matches(method="hungarian")``), in target order.

mirage has no MapAnything (not on PyPI) and no PyTorch3D: here the cloud is
:class:`~mirage_cli.memory.pointcloud.PointCloudMemory` lifted per pixel from the same frames, with
the input depth for frame 0 and, for generated frames, the latent memory's depth read at that
frame's camera (holes filled, bilinearly upsampled to pixels); it is rendered with mirage's hard
z-buffered splat, and the voxel downsample keeps the first point per voxel (Spatia averages colours).
Everything is a deterministic function of the decoded frames, the cameras and the latent memory,
which a resumed run has exactly as the uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..backends import PixelHistory, PointRender  # noqa: F401  (the extras this module's context fills)
from ..geometry.cameras import Cameras
from ..geometry.depth import fill_depth
from ..memory.pointcloud import PointCloudMemory

MAP_STRIDE = 6  # every 6th frame enters the cloud (Spatia: round(fps 24 / map_fps 4))
REF_TARGET_STRIDE = 12  # reference targets: every 12th pose of the round (round(24 / 2))
REF_CANDIDATE_STRIDE = 4  # reference candidates: every 4th frame before the round (round(24 / 6))
MAX_REFERENCES = 7  # Spatia's --ref_num
VOXEL_GROWTH = 0.5  # render voxel = voxel * (1 + 0.5 round): Spatia's 0.01 + 0.005 round


def frames_tensor(pixels: list[np.ndarray], idx: list[int], device: torch.device) -> torch.Tensor:
    """``(len(idx), 3, H, W)`` float32 in [0, 1] from uint8 ``(H, W, 3)`` frames."""
    arr = np.stack([pixels[i] for i in idx])
    return torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().div(255.0)


def voxel_downsample(cloud: PointCloudMemory, voxel: float) -> PointCloudMemory:
    """One point per ``voxel``-sized cell (the first lifted), order kept (Spatia: open3d, colours averaged)."""
    if voxel <= 0 or len(cloud) == 0:
        return cloud
    keys = torch.floor(cloud.points.double() / voxel).long()
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(cloud), dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(cloud), device=keys.device), reduce="amin")
    return cloud.select(torch.sort(first).values)


def frame_depth(memory, cam: Cameras, size: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` depth of one generated frame: the latent memory's read at its camera, holes filled
    (:func:`fill_depth`) and bilinearly upsampled to pixels."""
    _, known, depth = memory.read(cam)
    filled = fill_depth(depth, known)[0]
    W, H = size
    return F.interpolate(filled[None, None].float(), size=(H, W), mode="bilinear", align_corners=False)[0, 0]


def rebuild_cloud(pixels: list[np.ndarray], cams: Cameras, memory, input_depth: torch.Tensor, upto: int,
                  voxel: float) -> PointCloudMemory:
    """The RGB cloud of every ``MAP_STRIDE``-th frame among the first ``upto`` (frame 0 with ``input_depth``).

    pixels: uint8 ``(H, W, 3)`` per trajectory frame. cams: the trajectory's cameras (scene units).
    memory: the latent memory (its depth places generated frames). voxel: downsample cell (0: none)."""
    dev = input_depth.device
    cloud = PointCloudMemory(device=dev, write_policy="append")
    for f in range(0, upto, MAP_STRIDE):
        cam = cams[f:f + 1]
        rgb = frames_tensor(pixels, [f], dev)[0]
        depth = input_depth if f == 0 else frame_depth(memory, cam, (cams.width, cams.height)).to(dev)
        cloud.lift(rgb, depth, cam, chunk=0 if f == 0 else 1)
    return voxel_downsample(cloud, voxel)


def frontmost_sets(cloud: PointCloudMemory, cams: Cameras) -> torch.Tensor:
    """``(K, N)`` bool: the points that win the z-buffer somewhere in each camera's image (front-most)."""
    win = cloud.winners(cams)  # (K, H, W), -1 = none
    vis = torch.zeros(len(cams), len(cloud) + 1, dtype=torch.bool, device=win.device)
    vis.scatter_(1, (win.flatten(1) + 1).clamp(min=0), True)
    return vis[:, 1:]


def matching_references(cloud: PointCloudMemory, targets: Cameras, candidates: Cameras, candidate_ids: list[int],
                        count: int = MAX_REFERENCES) -> list[int]:
    """Spatia's reference choice: a one-to-one assignment of targets to candidates maximising the
    number of shared front-most points (``scipy.optimize.linear_sum_assignment``, as Spatia's
    ``find_mask_matches``), no threshold, in target order, at most ``count``.

    Returns the chosen ``candidate_ids``. Spatia raises when targets outnumber candidates; here the
    assignment then covers as many targets as there are candidates (the first ones, in order)."""
    if count <= 0 or not candidate_ids or len(cloud) == 0:
        return []
    from scipy.optimize import linear_sum_assignment

    t = frontmost_sets(cloud, targets).float()
    c = frontmost_sets(cloud, candidates).float()
    inter = (t @ c.T).cpu().numpy()  # (n_target, n_candidate) shared points (Spatia: a bf16 matmul)
    rows, cols = linear_sum_assignment(inter, maximize=True)
    chosen = [candidate_ids[j] for _, j in sorted(zip(rows.tolist(), cols.tolist()))]
    return chosen[:count]
