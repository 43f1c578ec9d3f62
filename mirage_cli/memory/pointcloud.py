"""The explicit RGB point-cloud memory of GEN3C / Spatia-style systems: the baseline of ``mirage bench``.

It is what mirage's latent memory replaces, built as those systems build it and with the same
pieces as :class:`~mirage_cli.memory.latent.LatentMemory`, so that the benchmark compares the
representations and nothing else. Storage, one row per point (``N`` points, one per *pixel*):

- ``points (N, 3) float32``: world position (OpenCV world of the input camera).
- ``colors (N, 3) uint8``: the pixel's RGB.
- the same per-point bookkeeping as the latent memory: ``footprint (N,) float32`` (world size of
  the pixel), ``axes (N, 2, 3) float16`` (the pixel as a small planar patch) and ``chunk (N,)
  int32`` (0 = input image, generated chunk ``i`` -> ``i + 1``).

The geometry lives in a :class:`LatentMemory` at ``spatial_factor = 1`` (one "cell" per pixel), so
lifting, patch orientation, the z-buffered splat and its tie-breaking are *the same code* as the
latent memory's; the colours are kept next to it, row-aligned. That geometry memory carries a
1-channel fp16 placeholder feature, an implementation detail: it is not counted in :meth:`nbytes`
(the cache payload) but is in :meth:`held_bytes`. Derived keys are not counted either (as in the
latent memory).

Semantics:

- **Lift** (:meth:`PointCloudMemory.lift`): one point per pixel with valid depth.
- **Read** = :meth:`render` + :meth:`encode_condition`: every point is splatted into every *video*
  frame of the chunk at pixel resolution; the rendered video (unknown pixels grey) and the mask
  video (1 = unknown, "generate") are then encoded by the codec, which is the condition a
  VACE/GEN3C-style denoiser consumes. :meth:`read` does both.
- **Write** (:meth:`write`): the chunk's (decoded) frames are lifted at pixel resolution with the
  write policies of :mod:`.policies`, the same code as the latent memory's -- ``"new"``,
  ``"replace"``, ``"average"`` (colours blended in fp64, rounded to uint8) -- plus ``"append"``:
  every valid pixel of every frame is added, which is what peers that append each generated frame
  to their cache do. As in the latent memory, a new point in front of what the input saw is pushed
  back along its ray or dropped (:mod:`.freespace`).
"""

from __future__ import annotations

import os

import torch

from ..errors import MirageError
from ..geometry.cameras import Cameras
from .latent import LatentMemory
from .lifting import latent_K
from .policies import POINTCLOUD_POLICIES, check_policy, write_frames
from .storage import CREATED_BY, INPUT_CHUNK, points_per_chunk, write_safetensors

FORMAT = "mirage.pointcloud-memory"
VERSION = 1
GREY = 0.5  # value of unknown pixels in the rendered condition video


def _to_u8(rgb: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` float in [0, 1] -> uint8 (round to nearest)."""
    return (rgb.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def _valid(depth: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(depth) & (depth > 0)


class PointCloudMemory:
    """An explicit RGB point cloud, rendered at pixel resolution (see the module docstring).

    Args:
        device: where the tensors live.
        write_policy: ``"new"`` (default), ``"replace"``, ``"average"`` or ``"append"``.
        max_radius: largest splat half-extent in target pixels (same default as the latent memory).
    """

    def __init__(self, device: str | torch.device = "cpu", write_policy: str = "new", max_radius: float = 4.0) -> None:
        self.write_policy = check_policy(write_policy, POINTCLOUD_POLICIES)
        self.max_radius = float(max_radius)
        self.geometry = LatentMemory(1, 1, codec="pointcloud", device=device, max_radius=max_radius)
        self._colors = torch.zeros(0, 3, dtype=torch.uint8, device=torch.device(device))

    # ----------------------------------------------------------------------------- attributes
    @property
    def points(self) -> torch.Tensor:
        """``(N, 3)`` float32 world positions."""
        return self.geometry.points

    @property
    def colors(self) -> torch.Tensor:
        """``(N, 3)`` uint8 RGB."""
        return self._colors

    @property
    def footprint(self) -> torch.Tensor:
        """``(N,)`` float32 world size of each point's pixel."""
        return self.geometry.footprint

    @property
    def axes(self) -> torch.Tensor:
        """``(N, 2, 3)`` float16 patch half-axes in units of the footprint."""
        return self.geometry.axes

    @property
    def chunk(self) -> torch.Tensor:
        """``(N,)`` int32 chunk that wrote each point (0 = input image)."""
        return self.geometry.chunk

    @property
    def key(self) -> torch.Tensor:
        """``(N,)`` int64 splat tie-break hash (derived, not saved)."""
        return self.geometry.key

    @property
    def device(self) -> torch.device:
        return self.geometry.device

    def __len__(self) -> int:
        return len(self.geometry)

    def __repr__(self) -> str:
        return f"PointCloudMemory(points={len(self)}, write_policy={self.write_policy!r}, device={self.device})"

    def _replace(self, geometry: LatentMemory, colors: torch.Tensor) -> None:
        if len(geometry) != colors.shape[0]:  # pragma: no cover - an internal invariant
            raise RuntimeError(f"point cloud out of step: {len(geometry)} points, {colors.shape[0]} colours")
        self.geometry, self._colors = geometry, colors.contiguous()

    def select(self, index: torch.Tensor) -> PointCloudMemory:
        """A new point cloud holding the points ``index`` (int indices or a bool mask), in that order."""
        m = PointCloudMemory(self.device, self.write_policy, self.max_radius)
        index = torch.as_tensor(index).to(self.device)
        m._replace(self.geometry.select(index), self._colors[index])
        return m

    def clone(self) -> PointCloudMemory:
        """An independent copy (same policy, copied tensors)."""
        return self.select(torch.arange(len(self), device=self.device))

    # ----------------------------------------------------------------------------- lift / read / write
    def _check(self, rgb: torch.Tensor, depth: torch.Tensor, cameras: Cameras, what: str):
        H, W, T = cameras.height, cameras.width, len(cameras)
        rgb = torch.as_tensor(rgb).to(self.device)
        depth = torch.as_tensor(depth).to(self.device).float()
        if rgb.ndim == 3:
            rgb = rgb[None]
        if depth.ndim == 2:
            depth = depth[None]
        if tuple(rgb.shape) != (T, 3, H, W):
            raise MirageError(f"{what}: frames have shape {tuple(rgb.shape)}, expected ({T}, 3, {H}, {W})")
        if tuple(depth.shape) != (T, H, W):
            raise MirageError(f"{what}: depth has shape {tuple(depth.shape)}, expected ({T}, {H}, {W})")
        return rgb, torch.where(_valid(depth), depth, torch.zeros_like(depth))

    def _lift_one(self, rgb: torch.Tensor, depth: torch.Tensor, camera: Cameras, chunk: int, cells: torch.Tensor) -> int:
        """Lift the pixels ``cells (H, W) bool`` (with valid depth) of one frame; colours stay row-aligned."""
        cells = cells & (depth > 0)
        if not bool(cells.any()):
            return 0
        placeholder = torch.zeros(1, *depth.shape, device=self.device)
        n = self.geometry.lift(placeholder, depth, camera, chunk=chunk, mask=cells)
        self._colors = torch.cat([self._colors, _to_u8(rgb[:, cells].T)])
        if n != int(cells.sum()):  # pragma: no cover - the geometry memory lifted other pixels than asked
            raise RuntimeError(f"point cloud lift: {n} points for {int(cells.sum())} pixels")
        return n

    @torch.no_grad()
    def lift(self, rgb: torch.Tensor, depth: torch.Tensor, camera: Cameras, chunk: int = INPUT_CHUNK,
             mask: torch.Tensor | None = None) -> int:
        """Add one point per pixel with valid depth.

        Args:
            rgb: ``(3, H, W)`` in [0, 1] at ``camera``'s size. depth: ``(H, W)`` z-depth (``<= 0`` = none).
            camera: one camera. chunk: label of the points. mask: optional ``(H, W)`` bool.
        Returns:
            the number of points added.
        """
        if len(camera) != 1:
            raise MirageError(f"lift: expected one camera, got {len(camera)}")
        rgb, depth = self._check(rgb, depth, camera, "lift")
        cells = torch.ones_like(depth[0], dtype=torch.bool)
        if mask is not None:
            cells &= torch.as_tensor(mask, device=self.device).bool()
        return self._lift_one(rgb[0], depth[0], camera, chunk, cells)

    @torch.no_grad()
    def render(self, cameras: Cameras, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Z-buffered render of the cloud into every camera at pixel resolution.

        Returns:
            rgb: ``(T, 3, H, W)`` float32 in [0, 1] (0 where unknown).
            known: ``(T, H, W)`` bool.
            depth: ``(T, H, W)`` float32 z-depth of the winner (0 where unknown).
        """
        idx, depth = self.geometry.read_index(cameras, batch=batch)
        known = idx >= 0
        cols = self._colors[idx.clamp(min=0)].float() / 255.0 if len(self) else torch.zeros(*idx.shape, 3, device=self.device)
        rgb = torch.where(known[..., None], cols, torch.zeros_like(cols)).permute(0, 3, 1, 2).contiguous()
        return rgb, known, depth

    @staticmethod
    def condition_videos(rgb: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two pixel videos a VACE/GEN3C-style condition is encoded from.

        Returns:
            video: ``(T, 3, H, W)``: the render, grey (0.5) where unknown.
            mask: ``(T, 3, H, W)``: 1 where unknown (to generate), 0 where known (to keep).
        """
        k = known[:, None]
        video = torch.where(k, rgb, torch.full_like(rgb, GREY))
        mask = (~k).to(rgb.dtype).expand(-1, 3, -1, -1).contiguous()
        return video, mask

    @staticmethod
    def encode_condition(codec, rgb: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the rendered video and the mask video: ``(T_lat, C, h, w)`` each."""
        video, mask = PointCloudMemory.condition_videos(rgb, known)
        with torch.no_grad():
            return codec.encode(video), codec.encode(mask)

    def read(self, cameras: Cameras, codec) -> dict:
        """Render every camera (the chunk's video frames) and encode the condition.

        Returns a dict with ``latents`` and ``mask_latents`` ``(T_lat, C, h, w)`` and the pixel
        ``rgb (T, 3, H, W)``, ``known (T, H, W)``, ``depth (T, H, W)`` of the render.
        """
        rgb, known, depth = self.render(cameras)
        latents, mask_latents = self.encode_condition(codec, rgb, known)
        return {"latents": latents, "mask_latents": mask_latents, "rgb": rgb, "known": known, "depth": depth}

    @torch.no_grad()
    def write(self, frames: torch.Tensor, depth: torch.Tensor, cameras: Cameras, known: torch.Tensor | None,
              chunk: int) -> int:
        """Lift a chunk's frames with this memory's write policy, frame by frame in order.

        Args:
            frames: ``(T, 3, H, W)`` in [0, 1] (decoded chunk frames). depth: ``(T, H, W)`` z-depth.
            cameras: the ``T`` cameras. known: ``(T, H, W)`` bool known-mask of the render made before
                generating (policy ``"new"``; ``None`` = render now). chunk: label of the new points.
        Returns:
            the number of points added.
        """
        frames, d = self._check(frames, depth, cameras, "write")
        # observed free space stays free (the geometry memory recorded the input's view when it lifted it)
        d = self.geometry.keep_free_space(d, cameras, latent_K(cameras, 1), self.write_policy, known)

        def add(t: int, cells: torch.Tensor) -> int:
            return self._lift_one(frames[t], d[t], cameras[t], chunk, cells)

        def values(t: int, covered: torch.Tensor) -> torch.Tensor:
            return frames[t][:, covered].T.to(torch.float64) * 255.0

        return write_frames(self, self.write_policy, cameras, d > 0, known, add, values)

    def winners(self, cameras: Cameras, start: int = 0) -> torch.Tensor:
        """``(T, H, W)`` int64 z-buffer winners among the points ``start:`` (-1 = none); see :mod:`.policies`."""
        return self.geometry.winners(cameras, start)

    def drop(self, keep: torch.Tensor) -> None:
        """Keep only the points where ``keep (N,) bool`` is true, in order (policy ``"replace"``)."""
        self._replace(self.geometry.select(keep), self._colors[keep])

    def blend(self, index: torch.Tensor, mean: torch.Tensor) -> None:
        """Policy ``"average"``: colour ``<- (colour + mean) / 2`` for the points ``index (M,)``, in fp64
        and rounded to uint8 (``mean (M, 3)`` float64 in 0..255)."""
        cols = self._colors.clone()
        cols[index] = (0.5 * (self._colors[index].to(torch.float64) + mean) + 0.5).clamp(0, 255).to(torch.uint8)
        self._colors = cols

    # ----------------------------------------------------------------------------- inspection
    def _payload(self) -> dict[str, torch.Tensor]:
        g = self.geometry
        return {"points": g.points, "colors": self._colors, "footprint": g.footprint, "axes": g.axes, "chunk": g.chunk}

    def nbytes(self) -> int:
        """Bytes of the cache payload: points f32 + colors u8 + footprint f32 + axes f16 + chunk i32."""
        return sum(t.numel() * t.element_size() for t in self._payload().values())

    def nbytes_xyz_rgb(self) -> int:
        """Bytes of the most compact explicit cloud, xyz f32 + rgb u8 only (15 B/point), for reference."""
        return len(self) * (3 * 4 + 3)

    def held_bytes(self) -> int:
        """Bytes of every tensor the memory holds: :meth:`nbytes` plus the placeholder features and keys."""
        g = self.geometry
        return self.nbytes() + sum(t.numel() * t.element_size() for t in (g.features, g.key))

    def stats(self) -> dict:
        """Summary: points, bytes, bytes_per_point, write_policy, points_per_chunk, device."""
        n = len(self)
        b = self.nbytes()
        return {"points": n, "bytes": b, "bytes_per_point": (b / n) if n else 0.0, "write_policy": self.write_policy,
                "points_per_chunk": points_per_chunk(self.chunk), "device": str(self.device)}

    def save(self, path: str | os.PathLike) -> None:
        """Write a ``.safetensors`` file (atomic): points, colors, footprint, axes, chunk + metadata."""
        meta = {"format": FORMAT, "version": str(VERSION), "convention": "opencv", "created_by": CREATED_BY,
                "write_policy": self.write_policy, "points": str(len(self))}
        write_safetensors(path, self._payload(), meta)
