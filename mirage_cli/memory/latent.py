"""The latent spatial memory: a 3D cache of latent tokens, lifted with depth, read by a z-buffered splat.

Storage, one row per point (``N`` points, ``C`` latent channels):

- ``points (N, 3) float32``: world position (OpenCV world, the frame of the input camera).
- ``features (N, C)``: the latent token, stored in ``feature_dtype`` (fp16 by default), exactly as
  the denoiser consumes it; all arithmetic is done in fp32.
- ``footprint (N,) float32``: world size of the latent cell the point was lifted from,
  ``z / fx_lat`` (``fx_lat`` = focal length in latent cells).
- ``axes (N, 2, 3) float16``: the cell as a small planar patch: its two world half-axes (along the
  lifting camera's u and v, following the local depth slope), divided by ``footprint``. A frontal
  cell has ``axes ~ [[.5, 0, 0], [0, .5, 0]]`` (rotated to world); a floor cell seen at a grazing
  angle has a long v axis. Slopes come from :func:`~mirage_cli.memory.splat.depth_slopes`, clamped to
  ``max_stretch``.
- ``chunk (N,) int32``: who wrote the point. Convention: ``0`` = the input image (the :meth:`lift`
  default); generated chunk ``i`` (file ``chunk_{i:03d}``) writes with ``chunk = i + 1``.

Semantics:

- **Lift** (:meth:`LatentMemory.lift`): one point per latent cell with valid depth, at the cell
  centre's ray. Pixel depth is reduced to the latent grid by :func:`reduce_depth` (foreground
  cluster rule), so a cell straddling a depth edge lands on the nearer surface, never in between.
- **Read** (:meth:`LatentMemory.read`): every point is projected into each target camera's latent
  grid together with its patch (the projection's Jacobian applied to ``axes * footprint``: a
  parallelogram in target cells, about ``footprint * fx_lat_target / z_target`` wide for a frontal
  patch; half-extents clamped to ``[0.5, max_radius]`` cells) and z-buffered by
  :func:`~mirage_cli.memory.splat.splat_patches`: scatter-min of depth, ties broken by a hash of the
  point's content, so the read is bit-identical whatever the order of the points, on CPU and CUDA.
  Reading the lifting camera gives back exactly one point per cell (the patch is that cell).
- **Write** (:meth:`LatentMemory.write`), policy ``"new"`` (default): only cells the read did not
  cover add points, frame by frame, and cells covered by points that earlier frames of the same
  call just added count as covered. Revisiting a place adds nothing, so the memory is bounded by
  the scene, not by the video length. ``"replace"``: the read's winners under every valid cell
  are removed and the new latents lifted. ``"average"``: each winner's feature becomes the mean of
  its old value and the mean of the new latents it covers (an exponential moving average with
  weight 1/2); uncovered cells add points as with ``"new"``.
"""

from __future__ import annotations

import json
import os

import torch

from .. import __version__
from ..geometry.cameras import Cameras
from ..dtypes import dtype_name
from ..errors import MirageError
from .cachefile import check_tensor, parse_int, parse_json, read_safetensors, write_safetensors
from .splat import depth_slopes, float_bits, hash_rows, lift_patches, splat_patches  # noqa: F401 (depth_slopes re-exported)

FORMAT = "mirage.latent-memory"
VERSION = 1
WRITE_POLICIES = ("new", "replace", "average")
FEATURE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
INPUT_CHUNK = 0


# ------------------------------------------------------------------------------------ depth
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


def _latent_K(cameras: Cameras, factor: int) -> torch.Tensor:
    """``(N, 3, 3)`` float64 intrinsics of the latent grid: pixel intrinsics divided by ``factor``.

    A latent cell is a ``factor x factor`` pixel block starting at pixel 0, so this is exact even
    when the image size is not a multiple of ``factor`` (equal to ``K(W // f, H // f)`` when it is).
    """
    K = cameras.K().clone()
    K[:, :2, :] /= factor
    return K


# ------------------------------------------------------------------------------------ memory
_TENSORS = ("points", "features", "footprint", "axes", "chunk")


class LatentMemory:
    """A 3D cache of latent tokens (see the module docstring for the semantics).

    Args:
        channels: latent channels ``C``.
        spatial_factor: pixels per latent cell along each axis (8 for Wan2.1, 1 for raw pixels).
        codec: name of the codec the latents come from (stored in the cache file).
        feature_dtype: storage dtype of the features (fp16 by default, bf16 or fp32 allowed).
        device: where the tensors live (``"cpu"``, ``"cuda"``...).
        write_policy: ``"new"`` (default), ``"replace"`` or ``"average"``.
        image_hash: hash of the input image (stored in the cache file).
        max_radius: largest splat half-extent in target cells.
        edge_tol: relative depth jump that separates surfaces in :func:`reduce_depth`.
        max_stretch: largest patch elongation (slope clamp) for cells seen at grazing angles.
    """

    def __init__(
        self,
        channels: int,
        spatial_factor: int,
        codec: str = "pixel",
        feature_dtype: torch.dtype = torch.float16,
        device: str | torch.device = "cpu",
        write_policy: str = "new",
        image_hash: str = "",
        max_radius: float = 4.0,
        edge_tol: float = 0.05,
        max_stretch: float = 8.0,
    ) -> None:
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if int(spatial_factor) < 1:
            raise ValueError(f"spatial_factor must be >= 1, got {spatial_factor}")
        if isinstance(feature_dtype, str):
            feature_dtype = FEATURE_DTYPES.get(feature_dtype, feature_dtype)
        if feature_dtype not in FEATURE_DTYPES.values():
            raise ValueError(f"feature_dtype must be one of {', '.join(FEATURE_DTYPES)}, got {feature_dtype}")
        if write_policy not in WRITE_POLICIES:
            raise MirageError(f"unknown write policy {write_policy!r} (choose from {', '.join(WRITE_POLICIES)})")
        self.channels = int(channels)
        self.spatial_factor = int(spatial_factor)
        self.codec = str(codec)
        self.feature_dtype = feature_dtype
        self.write_policy = write_policy
        self.image_hash = str(image_hash)
        self.max_radius = float(max_radius)
        self.edge_tol = float(edge_tol)
        self.max_stretch = float(max_stretch)
        self.extras: dict = {}
        dev = torch.device(device)
        self._points = torch.zeros(0, 3, dtype=torch.float32, device=dev)
        self._features = torch.zeros(0, self.channels, dtype=feature_dtype, device=dev)
        self._footprint = torch.zeros(0, dtype=torch.float32, device=dev)
        self._axes = torch.zeros(0, 2, 3, dtype=torch.float16, device=dev)
        self._chunk = torch.zeros(0, dtype=torch.int32, device=dev)
        self._key = torch.zeros(0, dtype=torch.int64, device=dev)

    # ----------------------------------------------------------------------------- attributes
    @property
    def points(self) -> torch.Tensor:
        """``(N, 3)`` float32 world positions."""
        return self._points

    @property
    def features(self) -> torch.Tensor:
        """``(N, C)`` latent features in ``feature_dtype``."""
        return self._features

    @property
    def footprint(self) -> torch.Tensor:
        """``(N,)`` float32 world size of each point's latent cell (``z / fx_lat`` when lifted)."""
        return self._footprint

    @property
    def axes(self) -> torch.Tensor:
        """``(N, 2, 3)`` float16 world half-axes of each point's patch, in units of its footprint."""
        return self._axes

    @property
    def chunk(self) -> torch.Tensor:
        """``(N,)`` int32 chunk that wrote each point (0 = input image, generated chunk i = i + 1)."""
        return self._chunk

    @property
    def key(self) -> torch.Tensor:
        """``(N,)`` int64 31-bit content hash of each point (depth tie-break; derived, not saved)."""
        return self._key

    @property
    def device(self) -> torch.device:
        return self._points.device

    def __len__(self) -> int:
        return self._points.shape[0]

    def __repr__(self) -> str:
        return (f"LatentMemory(points={len(self)}, channels={self.channels}, spatial_factor={self.spatial_factor}, "
                f"codec={self.codec!r}, dtype={dtype_name(self.feature_dtype, 'torch')}, device={self.device})")

    # ----------------------------------------------------------------------------- building
    def _config(self) -> dict:
        return dict(channels=self.channels, spatial_factor=self.spatial_factor, codec=self.codec,
                    feature_dtype=self.feature_dtype, device=self.device, write_policy=self.write_policy,
                    image_hash=self.image_hash, max_radius=self.max_radius, edge_tol=self.edge_tol,
                    max_stretch=self.max_stretch)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"points": self._points, "features": self._features, "footprint": self._footprint,
                "axes": self._axes, "chunk": self._chunk}

    def _set(self, points, features, footprint, axes, chunk, key=None) -> None:
        self._points = points.to(torch.float32).contiguous()
        self._features = features.to(self.feature_dtype).contiguous()
        self._footprint = footprint.to(torch.float32).contiguous()
        self._axes = axes.to(torch.float16).contiguous()
        self._chunk = chunk.to(torch.int32).contiguous()
        self._key = self._hash(self._points, self._features) if key is None else key

    def _world_axes(self) -> torch.Tensor:
        """``(N, 6)`` float32 world half-axes (``axes * footprint``), cached until the points change."""
        cache = getattr(self, "_axes_cache", None)
        if cache is None or cache[0] is not self._axes or cache[1].shape[0] != len(self) or cache[1].device != self.device:
            A = (self._axes.float() * self._footprint[:, None, None]).reshape(-1, 6).contiguous()
            cache = (self._axes, A)
            self._axes_cache = cache
        return cache[1]

    @staticmethod
    def _hash(points: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if points.shape[0] == 0:
            return torch.zeros(0, dtype=torch.int64, device=points.device)
        return hash_rows(torch.cat([float_bits(points), float_bits(features)], dim=1))

    def _append(self, new: dict[str, torch.Tensor], chunk: int) -> int:
        n = new["points"].shape[0]
        if n == 0:
            return 0
        pts = new["points"].to(torch.float32)
        feats = new["features"].to(self.feature_dtype)
        self._points = torch.cat([self._points, pts])
        self._features = torch.cat([self._features, feats])
        self._footprint = torch.cat([self._footprint, new["footprint"].to(torch.float32)])
        self._axes = torch.cat([self._axes, new["axes"].to(torch.float16)])
        self._chunk = torch.cat([self._chunk, torch.full((n,), int(chunk), dtype=torch.int32, device=self.device)])
        self._key = torch.cat([self._key, self._hash(pts, feats)])
        return n

    def select(self, index: torch.Tensor) -> "LatentMemory":
        """A new memory holding the points ``index`` (int indices or a bool mask), in that order."""
        m = LatentMemory(**self._config())
        m.extras = json.loads(json.dumps(self.extras))
        index = torch.as_tensor(index).to(self.device)
        m._set(self._points[index], self._features[index], self._footprint[index], self._axes[index],
               self._chunk[index], self._key[index])
        return m

    def to(self, device: str | torch.device) -> "LatentMemory":
        """Move every tensor to ``device`` (in place, like ``nn.Module.to``); returns ``self``."""
        dev = torch.device(device)
        for name in ("_points", "_features", "_footprint", "_axes", "_chunk", "_key"):
            setattr(self, name, getattr(self, name).to(dev))
        return self

    # ----------------------------------------------------------------------------- geometry
    def latent_size(self, cameras: Cameras) -> tuple[int, int]:
        """``(h, w)`` of the latent grid for these cameras: ``(H // f, W // f)``."""
        h, w = cameras.height // self.spatial_factor, cameras.width // self.spatial_factor
        if h < 1 or w < 1:
            raise MirageError(f"image {cameras.width}x{cameras.height} is smaller than one latent cell "
                              f"(spatial factor {self.spatial_factor})")
        return h, w

    def _depth_to_grid(self, depth: torch.Tensor, h: int, w: int, what: str = "depth") -> torch.Tensor:
        """Depth ``(..., h, w)`` latent cells or ``(..., H, W)`` pixels -> ``(..., h, w)`` float32 on device."""
        depth = torch.as_tensor(depth).to(self.device)
        if depth.ndim < 2:
            raise MirageError(f"{what}: expected a (H, W) depth map, got shape {tuple(depth.shape)}")
        Hd, Wd = depth.shape[-2:]
        f = self.spatial_factor
        if (Hd, Wd) == (h, w):
            d = depth.float()
            return torch.where(torch.isfinite(d) & (d > 0), d, torch.zeros_like(d))
        if Hd // f == h and Wd // f == w:
            return reduce_depth(depth, f, self.edge_tol)
        raise MirageError(f"{what}: shape {tuple(depth.shape[-2:])} matches neither the latent grid ({h}, {w}) "
                          f"nor the image ({h * f}, {w * f})")

    def _splat(self, cameras: Cameras, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Winner index ``(T, h, w)`` (-1 = none; into all points) and depth, for points ``start:``."""
        h, w = self.latent_size(cameras)
        return splat_patches(self._points[start:], self._world_axes()[start:], self._key[start:], cameras.w2c,
                             _latent_K(cameras, self.spatial_factor), h, w, self.max_radius, owner_offset=start)

    @torch.no_grad()
    def read_index(self, cameras: Cameras, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """The z-buffer of :meth:`read` as indices: winner point per cell ``(T, h, w)`` int64
        (-1 = unknown) and its depth ``(T, h, w)`` float32 (e.g. to colour points for a preview)."""
        h, w = self.latent_size(cameras)
        idx, dep = [], []
        for s in range(0, len(cameras), max(1, int(batch))):
            i, d = self._splat(cameras[s : s + batch])
            idx.append(i)
            dep.append(d)
        if not idx:
            return (torch.zeros(0, h, w, dtype=torch.int64, device=self.device),
                    torch.zeros(0, h, w, dtype=torch.float32, device=self.device))
        return torch.cat(idx), torch.cat(dep)

    def _make_points(self, latents: torch.Tensor, depth: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor,
                     cells: torch.Tensor) -> dict[str, torch.Tensor]:
        """Lift latent cells ``cells (h, w) bool`` of one frame with latent depth ``(h, w)``."""
        pts, foot, axes, ii, jj = lift_patches(depth, K, c2w, cells, self.max_stretch)
        return {"points": pts, "features": latents[:, ii, jj].T.to(self.feature_dtype), "footprint": foot,
                "axes": axes.to(torch.float16)}

    def _check_latents(self, latents: torch.Tensor, h: int, w: int, what: str) -> torch.Tensor:
        latents = torch.as_tensor(latents).to(self.device)
        if latents.shape[-3:] != (self.channels, h, w):
            raise MirageError(f"{what}: latents have shape {tuple(latents.shape)}, expected (..., {self.channels}, {h}, {w}) "
                              f"for {self.channels} channels and this camera's latent grid")
        return latents

    # ----------------------------------------------------------------------------- lift / read / write
    @torch.no_grad()
    def lift(self, latents: torch.Tensor, depth: torch.Tensor, camera: Cameras, chunk: int = INPUT_CHUNK,
             mask: torch.Tensor | None = None) -> int:
        """Add one point per latent cell with valid depth.

        Args:
            latents: ``(C, h, w)`` with ``h, w = camera.height // f, camera.width // f``.
            depth: ``(H, W)`` pixel z-depth (reduced by :func:`reduce_depth`) or ``(h, w)`` depth
                at the latent cell centres. ``<= 0`` / non-finite = no point.
            camera: one camera (the pose and intrinsics the latents were seen with).
            chunk: label stored with the points (0 = the input image).
            mask: optional ``(h, w)`` bool, only these cells are lifted.
        Returns:
            the number of points added.
        """
        if len(camera) != 1:
            raise MirageError(f"lift: expected one camera, got {len(camera)}")
        h, w = self.latent_size(camera)
        latents = self._check_latents(latents, h, w, "lift")
        if latents.ndim == 4 and latents.shape[0] == 1:
            latents = latents[0]
        d = self._depth_to_grid(depth, h, w, "lift depth")
        if d.ndim == 3 and d.shape[0] == 1:
            d = d[0]
        if latents.ndim != 3 or d.ndim != 2:
            raise MirageError(f"lift: expected latents (C, h, w) and depth (H, W), got {tuple(latents.shape)} "
                              f"and {tuple(d.shape)}")
        cells = d > 0
        if mask is not None:
            mask = torch.as_tensor(mask, device=self.device)
            if mask.shape != (h, w):
                raise MirageError(f"lift: mask has shape {tuple(mask.shape)}, expected ({h}, {w})")
            cells &= mask.bool()
        K = _latent_K(camera, self.spatial_factor)[0]
        return self._append(self._make_points(latents.float(), d, camera.c2w[0], K, cells), chunk)

    @torch.no_grad()
    def read(self, cameras: Cameras, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Warp the memory into every camera's latent grid (``h, w = H // f, W // f``).

        Args:
            cameras: ``T`` target cameras.
            batch: frames splatted together (bounds the temporary memory to ``batch x N`` floats).
        Returns:
            latents: ``(T, C, h, w)`` float32, the winning point's feature (0 where unknown).
            known: ``(T, h, w)`` bool, a point landed there.
            depth: ``(T, h, w)`` float32 z-depth of the winner in that camera (0 where unknown).
        """
        h, w = self.latent_size(cameras)
        T = len(cameras)
        lat = torch.zeros(T, self.channels, h, w, dtype=torch.float32, device=self.device)
        known = torch.zeros(T, h, w, dtype=torch.bool, device=self.device)
        depth = torch.zeros(T, h, w, dtype=torch.float32, device=self.device)
        if len(self) == 0:
            return lat, known, depth
        step = max(1, int(batch))
        for s in range(0, T, step):
            cams = cameras[s : s + step]
            idx, dep = self._splat(cams)
            k = idx >= 0
            feats = self._features[idx.clamp(min=0)].float()  # (b, h, w, C)
            lat[s : s + len(cams)] = torch.where(k[..., None], feats, torch.zeros_like(feats)).permute(0, 3, 1, 2)
            known[s : s + len(cams)] = k
            depth[s : s + len(cams)] = dep
        return lat, known, depth

    @torch.no_grad()
    def write(self, latents: torch.Tensor, depth: torch.Tensor, cameras: Cameras, known: torch.Tensor | None,
              chunk: int) -> int:
        """Write a generated chunk back, frame by frame in order, with this memory's write policy.

        Args:
            latents: ``(T, C, h, w)`` latents of the chunk's latent frames.
            depth: ``(T, h, w)`` z-depth at the latent cells (or ``(T, H, W)`` pixel depth).
            cameras: the ``T`` cameras of those frames.
            known: ``(T, h, w)`` bool, the known-mask of the read made before generating this chunk
                (policy ``"new"``; ``None`` = read the memory now). ``"replace"`` and ``"average"``
                re-read the memory for every frame.
            chunk: label stored with the new points (generated chunk ``i`` -> ``i + 1``).
        Returns:
            the number of points added.
        """
        h, w = self.latent_size(cameras)
        T = len(cameras)
        latents = self._check_latents(latents, h, w, "write")
        if latents.ndim == 3:
            latents = latents[None]
        if latents.shape[0] != T:
            raise MirageError(f"write: {latents.shape[0]} latent frames for {T} cameras")
        d = self._depth_to_grid(depth, h, w, "write depth")
        if d.ndim == 2:
            d = d[None]
        if d.shape[0] != T:
            raise MirageError(f"write: {d.shape[0]} depth frames for {T} cameras")
        latents = latents.float()
        K = _latent_K(cameras, self.spatial_factor)
        if self.write_policy == "new":
            return self._write_new(latents, d, cameras, known, chunk, K, h, w)
        return self._write_update(latents, d, cameras, chunk, K)

    def _write_new(self, latents, d, cameras, known, chunk, K, h, w) -> int:
        T = len(cameras)
        if known is None:
            known = self._splat(cameras)[0] >= 0
        known = torch.as_tensor(known, device=self.device).bool()
        if known.shape != (T, h, w):
            raise MirageError(f"write: known-mask has shape {tuple(known.shape)}, expected ({T}, {h}, {w})")
        start = len(self)
        added = 0
        for t in range(T):
            covered = known[t]
            if len(self) > start:  # cells covered by the points earlier frames of this call just added
                covered = covered | (self._splat(cameras[t], start)[0][0] >= 0)
            cells = (d[t] > 0) & ~covered
            added += self._append(self._make_points(latents[t], d[t], cameras.c2w[t], K[t], cells), chunk)
        return added

    def _write_update(self, latents, d, cameras, chunk, K) -> int:
        added = 0
        for t in range(len(cameras)):
            valid = d[t] > 0
            idx = self._splat(cameras[t])[0][0]
            covered = (idx >= 0) & valid
            winners = idx[covered]
            if self.write_policy == "replace":
                keep = torch.ones(len(self), dtype=torch.bool, device=self.device)
                keep[winners] = False
                self._set(*(v[keep] for v in self._tensors().values()), key=self._key[keep])
                cells = valid
            else:  # average
                if winners.numel():
                    new = latents[t][:, covered].T.to(torch.float64)  # (M, C)
                    sums = torch.zeros(len(self), self.channels, dtype=torch.float64, device=self.device)
                    sums.index_add_(0, winners, new)
                    cnt = torch.bincount(winners, minlength=len(self))
                    upd = (cnt > 0).nonzero(as_tuple=True)[0]
                    mean = sums[upd] / cnt[upd, None].to(torch.float64)
                    feats = self._features.clone()
                    feats[upd] = (0.5 * (self._features[upd].to(torch.float64) + mean)).to(self.feature_dtype)
                    self._set(self._points, feats, self._footprint, self._axes, self._chunk)
                cells = valid & ~covered
            added += self._append(self._make_points(latents[t], d[t], cameras.c2w[t], K[t], cells), chunk)
        return added

    # ----------------------------------------------------------------------------- inspection
    def nbytes(self) -> int:
        """Bytes of the stored tensors (points, features, footprint, axes, chunk): the cache payload."""
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    def stats(self) -> dict:
        """Summary: points, bytes, channels, dtype, bounds, points_per_chunk, codec, spatial_factor..."""
        n = len(self)
        if n:
            bounds = [self._points.min(dim=0).values.tolist(), self._points.max(dim=0).values.tolist()]
            ch, cnt = torch.unique(self._chunk, return_counts=True)
            per_chunk = {str(int(c)): int(k) for c, k in zip(ch.tolist(), cnt.tolist())}
            fp = self._footprint
            footprint = {"min": float(fp.min()), "median": float(fp.median()), "max": float(fp.max())}
        else:
            bounds, per_chunk, footprint = None, {}, None
        b = self.nbytes()
        return {
            "points": n,
            "bytes": b,
            "bytes_per_point": (b / n) if n else 0.0,
            "channels": self.channels,
            "dtype": dtype_name(self.feature_dtype, "torch"),
            "codec": self.codec,
            "spatial_factor": self.spatial_factor,
            "write_policy": self.write_policy,
            "bounds": bounds,
            "points_per_chunk": per_chunk,
            "footprint": footprint,
            "image_hash": self.image_hash,
            "device": str(self.device),
        }

    # ----------------------------------------------------------------------------- file
    def metadata(self, extras: dict | None = None) -> dict[str, str]:
        """The cache file's ``__metadata__`` (strings only; extras JSON-encoded)."""
        ex = dict(self.extras)
        ex.update(extras or {})
        return {
            "format": FORMAT,
            "version": str(VERSION),
            "codec": self.codec,
            "channels": str(self.channels),
            "spatial_factor": str(self.spatial_factor),
            "convention": "opencv",
            "created_by": f"mirage-cli {__version__}",
            "image_hash": self.image_hash,
            "feature_dtype": dtype_name(self.feature_dtype, "torch"),
            "write_policy": self.write_policy,
            "points": str(len(self)),
            "extras": json.dumps(ex, sort_keys=True),
        }

    def save(self, path: str | os.PathLike, extras: dict | None = None) -> None:
        """Write a ``.safetensors`` cache atomically (temporary file + ``os.replace``).

        ``extras`` (JSON-serialisable) are merged over :attr:`extras` and stored JSON-encoded in
        the metadata field ``extras`` (e.g. ``reference_depth``, ``width``, ``height``).
        """
        try:
            meta = self.metadata(extras)
        except (TypeError, ValueError) as e:
            raise MirageError(f"{path}: extras are not JSON-serialisable ({e})") from None
        write_safetensors(path, self._tensors(), meta)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "LatentMemory":
        """Load and validate a cache file (format, version, metadata, shapes, dtypes, values).

        Raises:
            MirageError: one line naming the file and the problem.
        """
        tensors, meta = read_safetensors(path)
        fmt = meta.get("format")
        if fmt != FORMAT:
            what = "no 'format' metadata" if fmt is None else f"format {fmt!r}"
            raise MirageError(f"{path}: not a mirage latent-memory cache ({what}, expected {FORMAT!r})")
        version = meta.get("version")
        if version != str(VERSION):
            raise MirageError(f"{path}: cache format version {version!r} is not supported (this mirage reads version {VERSION})")
        if meta.get("convention", "opencv") != "opencv":
            raise MirageError(f"{path}: convention {meta.get('convention')!r} is not supported (expected 'opencv')")
        channels = parse_int(path, meta, "channels", 1)
        factor = parse_int(path, meta, "spatial_factor", 1)
        codec = meta.get("codec") or ""
        if not codec:
            raise MirageError(f"{path}: metadata field 'codec' is missing")
        policy = meta.get("write_policy", "new")
        if policy not in WRITE_POLICIES:
            raise MirageError(f"{path}: metadata field 'write_policy' = {policy!r} is not one of {', '.join(WRITE_POLICIES)}")
        extras = parse_json(path, meta, "extras")
        points = check_tensor(path, "points", tensors, (None, 3), (torch.float32,))
        n = points.shape[0]
        features = check_tensor(path, "features", tensors, (n, channels), tuple(FEATURE_DTYPES.values()))
        footprint = check_tensor(path, "footprint", tensors, (n,), (torch.float32,))
        axes = check_tensor(path, "axes", tensors, (n, 2, 3), (torch.float16,))
        chunk = check_tensor(path, "chunk", tensors, (n,), (torch.int32,))
        extra_tensors = sorted(set(tensors) - set(_TENSORS))
        if extra_tensors:
            raise MirageError(f"{path}: unexpected tensors {', '.join(extra_tensors)} for format version {VERSION}")
        if "points" in meta and meta["points"] != str(n):
            raise MirageError(f"{path}: metadata says {meta['points']} points but the tensors hold {n}")
        if n:
            if not torch.isfinite(points).all():
                raise MirageError(f"{path}: tensor 'points' contains NaN or inf")
            if not (torch.isfinite(footprint).all() and (footprint > 0).all()):
                raise MirageError(f"{path}: tensor 'footprint' must be finite and positive")
            if not torch.isfinite(axes).all():
                raise MirageError(f"{path}: tensor 'axes' contains NaN or inf")
            if not torch.isfinite(features.float()).all():
                raise MirageError(f"{path}: tensor 'features' contains NaN or inf")
        m = cls(channels, factor, codec, features.dtype, "cpu", policy, meta.get("image_hash", ""))
        m.extras = extras
        m._set(points, features, footprint, axes, chunk)
        return m.to(device)
