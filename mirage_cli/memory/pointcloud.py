"""The explicit RGB point-cloud memory of GEN3C / Spatia-style systems: the baseline of ``mirage bench``.

It is what mirage's latent memory replaces, built as those systems build it and with the same
pieces as :class:`~mirage_cli.memory.latent.LatentMemory`, so that the benchmark compares the
representations and nothing else. Storage, one row per point (``N`` points):

- ``points (N, 3) float32``: world position (OpenCV world of the input camera).
- ``colors (N, 3) uint8``: the pixel's RGB.
- ``footprint (N,) float32``: world size of the pixel the point was lifted from (``z / fx_px``).
- ``chunk (N,) int32``: who wrote the point (0 = input image, generated chunk ``i`` -> ``i + 1``).

(A derived ``key (N,) int64`` content hash, the depth tie-break of the splat, is held as in the
latent memory and, as there, not counted in :meth:`nbytes` nor saved.)

Semantics:

- **Lift** (:meth:`PointCloudMemory.lift`): one point per *pixel* with valid depth, at the pixel
  centre's ray.
- **Read** = :meth:`render` + :meth:`encode_condition`: every point is projected into every
  *video* frame of the chunk at pixel resolution and z-buffered by the same
  :func:`~mirage_cli.memory.splat.splat` as the latent memory (half-extent
  ``footprint * fx_px / z / 2`` pixels, clamped to ``[0.5, max_radius]``); the rendered video
  (unknown pixels grey) and the mask video (1 = unknown, "generate") are then encoded by the codec,
  which is the condition a VACE/GEN3C-style denoiser consumes. :meth:`read` does both.
- **Write** (:meth:`write`; :meth:`write_latents` decodes first): the chunk's frames are lifted at
  pixel resolution with the same policies as the latent memory — ``"new"`` (only pixels the render
  did not cover, and not covered by points earlier frames of the same call just added),
  ``"replace"``, ``"average"`` — plus ``"append"``: every valid pixel of every frame is added,
  which is what peers that append each generated frame to their cache do.
"""

from __future__ import annotations

import os

import torch

from .. import __version__
from ..camera import Cameras
from ..errors import MirageError
from .cachefile import write_safetensors
from .splat import float_bits, hash_rows, splat

FORMAT = "mirage.pointcloud-memory"
VERSION = 1
WRITE_POLICIES = ("new", "replace", "average", "append")
INPUT_CHUNK = 0
GREY = 0.5  # value of unknown pixels in the rendered condition video


def _to_u8(rgb: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` float in [0, 1] -> uint8 (round to nearest)."""
    return (rgb.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)


class PointCloudMemory:
    """An explicit RGB point cloud, rendered at pixel resolution (see the module docstring).

    Args:
        device: where the tensors live.
        write_policy: ``"new"`` (default), ``"replace"``, ``"average"`` or ``"append"``.
        max_radius: largest splat half-extent in target pixels (same default as the latent memory).
    """

    def __init__(self, device: str | torch.device = "cpu", write_policy: str = "new", max_radius: float = 4.0) -> None:
        if write_policy not in WRITE_POLICIES:
            raise MirageError(f"unknown write policy {write_policy!r} (choose from {', '.join(WRITE_POLICIES)})")
        self.write_policy = write_policy
        self.max_radius = float(max_radius)
        dev = torch.device(device)
        self._points = torch.zeros(0, 3, dtype=torch.float32, device=dev)
        self._colors = torch.zeros(0, 3, dtype=torch.uint8, device=dev)
        self._footprint = torch.zeros(0, dtype=torch.float32, device=dev)
        self._chunk = torch.zeros(0, dtype=torch.int32, device=dev)
        self._key = torch.zeros(0, dtype=torch.int64, device=dev)

    # ----------------------------------------------------------------------------- attributes
    @property
    def points(self) -> torch.Tensor:
        """``(N, 3)`` float32 world positions."""
        return self._points

    @property
    def colors(self) -> torch.Tensor:
        """``(N, 3)`` uint8 RGB."""
        return self._colors

    @property
    def footprint(self) -> torch.Tensor:
        """``(N,)`` float32 world size of each point's pixel."""
        return self._footprint

    @property
    def chunk(self) -> torch.Tensor:
        """``(N,)`` int32 chunk that wrote each point (0 = input image)."""
        return self._chunk

    @property
    def key(self) -> torch.Tensor:
        """``(N,)`` int64 31-bit content hash (splat tie-break; derived, not saved)."""
        return self._key

    @property
    def device(self) -> torch.device:
        return self._points.device

    def __len__(self) -> int:
        return self._points.shape[0]

    def __repr__(self) -> str:
        return f"PointCloudMemory(points={len(self)}, write_policy={self.write_policy!r}, device={self.device})"

    def clone(self) -> "PointCloudMemory":
        """An independent copy (same policy, copied tensors)."""
        m = PointCloudMemory(self.device, self.write_policy, self.max_radius)
        m._set(self._points.clone(), self._colors.clone(), self._footprint.clone(), self._chunk.clone(), self._key.clone())
        return m

    # ----------------------------------------------------------------------------- storage
    def _set(self, points, colors, footprint, chunk, key=None) -> None:
        self._points = points.to(torch.float32).contiguous()
        self._colors = colors.to(torch.uint8).contiguous()
        self._footprint = footprint.to(torch.float32).contiguous()
        self._chunk = chunk.to(torch.int32).contiguous()
        self._key = self._hash(self._points, self._colors) if key is None else key

    @staticmethod
    def _hash(points: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
        if points.shape[0] == 0:
            return torch.zeros(0, dtype=torch.int64, device=points.device)
        return hash_rows(torch.cat([float_bits(points), colors.to(torch.int64)], dim=1))

    def _append(self, points: torch.Tensor, colors: torch.Tensor, footprint: torch.Tensor, chunk: int) -> int:
        n = points.shape[0]
        if n == 0:
            return 0
        points = points.to(torch.float32)
        colors = colors.to(torch.uint8)
        self._points = torch.cat([self._points, points])
        self._colors = torch.cat([self._colors, colors])
        self._footprint = torch.cat([self._footprint, footprint.to(torch.float32)])
        self._chunk = torch.cat([self._chunk, torch.full((n,), int(chunk), dtype=torch.int32, device=self.device)])
        self._key = torch.cat([self._key, self._hash(points, colors)])
        return n

    # ----------------------------------------------------------------------------- geometry
    def _project(self, cameras: Cameras, points: torch.Tensor, footprint: torch.Tensor):
        """``uv (T, P, 2)``, ``z (T, P)``, ``radius (T, P)`` in the cameras' pixel grids (fp32, elementwise)."""
        dev = self.device
        w2c = cameras.w2c.to(dev, torch.float32)
        K = cameras.K().to(dev, torch.float32)
        X, Y, Z = (c[None] for c in points.unbind(dim=1))
        R, t = w2c[:, :3, :3], w2c[:, :3, 3]

        def row(k: int) -> torch.Tensor:
            return R[:, k, 0, None] * X + R[:, k, 1, None] * Y + R[:, k, 2, None] * Z + t[:, k, None]

        xc, yc, zc = row(0), row(1), row(2)
        fx, fy, cx, cy = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None]
        u = xc / zc * fx + cx
        v = yc / zc * fy + cy
        radius = footprint[None] * fx / zc * 0.5
        return torch.stack([u, v], dim=-1), zc, radius

    def _splat(self, cameras: Cameras, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Winner index ``(T, H, W)`` (-1 = none, relative to ``start``) and depth, for points ``start:``."""
        pts, fp, key = self._points[start:], self._footprint[start:], self._key[start:]
        uv, z, radius = self._project(cameras, pts, fp)
        return splat(uv, z, radius, cameras.height, cameras.width, key=key, max_radius=self.max_radius)

    def _make_points(self, rgb: torch.Tensor, depth: torch.Tensor, camera: Cameras, cells: torch.Tensor):
        """Lift pixels ``cells (H, W) bool`` of ``rgb (3, H, W)`` with ``depth (H, W)`` -> points, colors, footprints."""
        ii, jj = cells.nonzero(as_tuple=True)
        z = depth[ii, jj].to(torch.float64)
        K = camera.K()[0].to(self.device, torch.float64)
        T = camera.c2w[0].to(self.device, torch.float64)
        xc = ((jj.to(torch.float64) + 0.5) - K[0, 2]) / K[0, 0] * z
        yc = ((ii.to(torch.float64) + 0.5) - K[1, 2]) / K[1, 1] * z
        world = torch.stack([T[k, 0] * xc + T[k, 1] * yc + T[k, 2] * z + T[k, 3] for k in range(3)], dim=1)
        colors = _to_u8(rgb[:, ii, jj].T)
        footprint = (z / K[0, 0]).to(torch.float32)
        return world.to(torch.float32), colors, footprint

    def _check(self, rgb: torch.Tensor, depth: torch.Tensor, cameras: Cameras, what: str):
        H, W = cameras.height, cameras.width
        rgb = torch.as_tensor(rgb).to(self.device)
        depth = torch.as_tensor(depth).to(self.device).float()
        if rgb.ndim == 3:
            rgb = rgb[None]
        if depth.ndim == 2:
            depth = depth[None]
        T = len(cameras)
        if tuple(rgb.shape) != (T, 3, H, W):
            raise MirageError(f"{what}: frames have shape {tuple(rgb.shape)}, expected ({T}, 3, {H}, {W})")
        if tuple(depth.shape) != (T, H, W):
            raise MirageError(f"{what}: depth has shape {tuple(depth.shape)}, expected ({T}, {H}, {W})")
        depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.zeros_like(depth))
        return rgb, depth

    # ----------------------------------------------------------------------------- lift / read / write
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
        cells = depth[0] > 0
        if mask is not None:
            cells &= torch.as_tensor(mask, device=self.device).bool()
        pts, cols, fp = self._make_points(rgb[0], depth[0], camera, cells)
        return self._append(pts, cols, fp, chunk)

    @torch.no_grad()
    def render(self, cameras: Cameras, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Z-buffered render of the cloud into every camera at pixel resolution.

        Returns:
            rgb: ``(T, 3, H, W)`` float32 in [0, 1] (0 where unknown).
            known: ``(T, H, W)`` bool.
            depth: ``(T, H, W)`` float32 z-depth of the winner (0 where unknown).
        """
        H, W, T = cameras.height, cameras.width, len(cameras)
        rgb = torch.zeros(T, 3, H, W, dtype=torch.float32, device=self.device)
        known = torch.zeros(T, H, W, dtype=torch.bool, device=self.device)
        depth = torch.zeros(T, H, W, dtype=torch.float32, device=self.device)
        if len(self) == 0:
            return rgb, known, depth
        b = max(1, int(batch))
        for s in range(0, T, b):
            cams = cameras[s : s + b]
            idx, dep = self._splat(cams)
            k = idx >= 0
            cols = self._colors[idx.clamp(min=0)].float() / 255.0  # (b, H, W, 3)
            rgb[s : s + len(cams)] = torch.where(k[..., None], cols, torch.zeros_like(cols)).permute(0, 3, 1, 2)
            known[s : s + len(cams)] = k
            depth[s : s + len(cams)] = dep
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
        """Lift a chunk's frames with this memory's write policy, frame by frame.

        Args:
            frames: ``(T, 3, H, W)`` in [0, 1] (decoded chunk frames). depth: ``(T, H, W)`` z-depth.
            cameras: the ``T`` cameras. known: ``(T, H, W)`` bool known-mask of the render made before
                generating (policy ``"new"``; ``None`` = render now). chunk: label of the new points.
        Returns:
            the number of points added.
        """
        frames, d = self._check(frames, depth, cameras, "write")
        T, H, W = d.shape
        if self.write_policy == "append":
            return sum(self._append(*self._make_points(frames[t], d[t], cameras[t], d[t] > 0), chunk) for t in range(T))
        if self.write_policy == "new":
            if known is None:
                known = self._splat(cameras)[0] >= 0 if len(self) else torch.zeros(T, H, W, dtype=torch.bool, device=self.device)
            known = torch.as_tensor(known, device=self.device).bool()
            if tuple(known.shape) != (T, H, W):
                raise MirageError(f"write: known-mask has shape {tuple(known.shape)}, expected ({T}, {H}, {W})")
            start, added = len(self), 0
            for t in range(T):
                covered = known[t]
                if len(self) > start:  # cells covered by points earlier frames of this call just added
                    covered = covered | (self._splat(cameras[t], start)[0][0] >= 0)
                cells = (d[t] > 0) & ~covered
                added += self._append(*self._make_points(frames[t], d[t], cameras[t], cells), chunk)
            return added
        added = 0
        for t in range(T):  # replace / average
            valid = d[t] > 0
            idx = self._splat(cameras[t])[0][0] if len(self) else torch.full((H, W), -1, dtype=torch.int64, device=self.device)
            covered = (idx >= 0) & valid
            winners = idx[covered]
            if self.write_policy == "replace":
                keep = torch.ones(len(self), dtype=torch.bool, device=self.device)
                keep[winners] = False
                self._set(self._points[keep], self._colors[keep], self._footprint[keep], self._chunk[keep], self._key[keep])
                cells = valid
            else:  # average
                if winners.numel():
                    new = frames[t][:, covered].T.to(torch.float64) * 255.0
                    sums = torch.zeros(len(self), 3, dtype=torch.float64, device=self.device)
                    sums.index_add_(0, winners, new)
                    cnt = torch.bincount(winners, minlength=len(self))
                    upd = (cnt > 0).nonzero(as_tuple=True)[0]
                    mean = sums[upd] / cnt[upd, None].to(torch.float64)
                    cols = self._colors.clone()
                    cols[upd] = (0.5 * (self._colors[upd].to(torch.float64) + mean) + 0.5).clamp(0, 255).to(torch.uint8)
                    self._set(self._points, cols, self._footprint, self._chunk)
                cells = valid & ~covered
            added += self._append(*self._make_points(frames[t], d[t], cameras[t], cells), chunk)
        return added

    def write_latents(self, latents: torch.Tensor, codec, depth: torch.Tensor, cameras: Cameras,
                      known: torch.Tensor | None, chunk: int, frame_index: list[int] | None = None) -> int:
        """Decode ``latents (T_lat, C, h, w)`` with ``codec`` and :meth:`write` the frames ``frame_index``
        of the decoded video (default: all) with the matching ``depth``/``cameras``/``known``."""
        with torch.no_grad():
            frames = codec.decode(latents)
        if frame_index is not None:
            frames = frames[frame_index]
        return self.write(frames, depth, cameras, known, chunk)

    # ----------------------------------------------------------------------------- inspection
    def nbytes(self) -> int:
        """Bytes of the stored tensors (points, colors, footprint, chunk): the cache payload."""
        return sum(t.numel() * t.element_size() for t in (self._points, self._colors, self._footprint, self._chunk))

    def held_bytes(self) -> int:
        """Bytes of every tensor the memory holds (:meth:`nbytes` plus the derived keys)."""
        return self.nbytes() + self._key.numel() * self._key.element_size()

    def stats(self) -> dict:
        n = len(self)
        b = self.nbytes()
        if n:
            ch, cnt = torch.unique(self._chunk, return_counts=True)
            per_chunk = {str(int(c)): int(k) for c, k in zip(ch.tolist(), cnt.tolist())}
        else:
            per_chunk = {}
        return {"points": n, "bytes": b, "bytes_per_point": (b / n) if n else 0.0, "write_policy": self.write_policy,
                "points_per_chunk": per_chunk, "device": str(self.device)}

    def save(self, path: str | os.PathLike) -> None:
        """Write a ``.safetensors`` file (atomic): points, colors, footprint, chunk + metadata."""
        meta = {"format": FORMAT, "version": str(VERSION), "convention": "opencv", "created_by": f"mirage-cli {__version__}",
                "write_policy": self.write_policy, "points": str(len(self))}
        write_safetensors(path, {"points": self._points, "colors": self._colors, "footprint": self._footprint,
                                 "chunk": self._chunk}, meta)
