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
  cluster rule, in :mod:`.lifting`), so a cell straddling a depth edge lands on the nearer surface,
  never in between.
- **Read** (:meth:`LatentMemory.read`): every point is projected into each target camera's latent
  grid together with its patch (the projection's Jacobian applied to ``axes * footprint``: a
  parallelogram in target cells, about ``footprint * fx_lat_target / z_target`` wide for a frontal
  patch; half-extents clamped to ``[0.5, max_radius]`` cells) and z-buffered by
  :func:`~mirage_cli.memory.splat.splat_patches`: scatter-min of depth, ties broken by a hash of the
  point's content, so the read is bit-identical whatever the order of the points, on CPU and CUDA.
  Reading the lifting camera gives back exactly one point per cell (the patch is that cell).
- **Write** (:meth:`LatentMemory.write`): frame by frame with the write policies of
  :mod:`.policies` (shared with the point-cloud baseline): ``"new"`` (default; only cells the read
  did not cover add points, so revisiting a place adds nothing), ``"replace"``, ``"average"``
  (features blended in fp64, stored in ``feature_dtype``) or ``"append"`` (every valid cell adds a
  point, as the paper's reference implementation does).
- **Splat mode** (``splat``): ``"patch"`` (default, above) or ``"point"``: each point fills only the
  cell its centre projects to (nearest-cell splat of the reference implementation; cracks appear
  when the camera moves closer). Same deterministic z-buffer and tie-break in both modes.
- **Observed free space** (:mod:`.freespace`): lifting the input (chunk 0) records the view as an
  *observation* (pose, grid intrinsics, depth grid); every write then pushes a new point that would
  lie in front of an observed surface back along its ray (or drops it), whatever the policy, so
  generated content never hides what the input saw; and every read lets an input point win a depth
  conflict with a generated one within ``OBSERVED_MARGIN``. Observations are saved with the cache.
- **File** (:meth:`save` / :meth:`load`): the safetensors cache format of :mod:`.storage`.
"""

from __future__ import annotations

import json
import math
import operator
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..dtypes import dtype_name
from ..errors import MirageError
from ..geometry.cameras import Cameras
from . import reading
from .checkpoint import read_checkpoint
from .freespace import Observation, constrain_depth, depth_bias, fit_patches, observation, same_observation
from .lifting import depth_to_grid, latent_K, latent_size, reduce_depth
from .policies import LATENT_POLICIES, check_policy, write_frames
from .splat import (
    CULL_BLOCK,
    MAX_RADIUS,
    SPLAT_MODES,
    block_bounds,
    check_splat_mode,
    float_bits,
    hash_rows,
    lift_patches,
    lift_patches_frames,
    splat_patches,
)
from .storage import (
    FEATURE_DTYPES,
    INPUT_CHUNK,
    LatentCache,
    latent_metadata,
    observation_tensors,
    points_per_chunk,
    read_latent_cache,
    write_safetensors,
)

WRITE_POLICIES = LATENT_POLICIES  # the policies this memory accepts (the --write-policy choices)

# INPUT_CHUNK and reduce_depth are part of this module's API (the generate loop imports them from here).
__all__ = ["INPUT_CHUNK", "SPLAT_MODES", "WRITE_POLICIES", "LatentMemory", "MemoryChanges", "reduce_depth"]


def _count(name: str, value) -> int:
    """A count the user chose (channels, spatial factor): an integer >= 1.

    A non-integer is a programming error (``TypeError``); a value below 1 is the user's (``MirageError``).
    """
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if n < 1:
        raise MirageError(f"{name} must be >= 1, got {n}")
    return n


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    """A finite real setting > 0 (or >= 0), else ``MirageError``."""
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise MirageError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value}")
    return v


def _feature_dtype(value: torch.dtype | str) -> torch.dtype:
    dtype = FEATURE_DTYPES.get(value) if isinstance(value, str) else value
    if dtype is None or dtype not in FEATURE_DTYPES.values():
        raise MirageError(f"feature_dtype must be one of {', '.join(FEATURE_DTYPES)}, got {value}")
    return dtype


def _device(value: str | torch.device) -> torch.device:
    try:
        return torch.device(value)
    except (RuntimeError, TypeError) as e:
        raise MirageError(f"unknown device {value!r} ({' '.join(str(e).split())})") from None


# rows per slab of LatentMemory._hash
_HASH_SLAB = 4096


@dataclass(frozen=True)
class MemoryChanges:
    """What changed in a :class:`LatentMemory` since :meth:`LatentMemory.mark` (what an incremental
    checkpoint, :mod:`.checkpoint`, writes).

    The memory's rows are then the marked state's rows that were not dropped, in their order, followed
    by the rows added since (``N - first_new`` of them, from row ``first_new = base_rows - len(dropped)``).

    Attributes:
        token: the token given to :meth:`~LatentMemory.mark`.
        base_rows: rows at the mark.
        dropped: ``(D,)`` int64, ascending: rows of the marked state removed since (policy ``"replace"``).
        changed: ``(M,)`` int64, ascending: rows of the marked state, not dropped, whose features changed
            since (policy ``"average"``; their other tensors never change).
        base_observations: observations at the mark; the later ones are new (observations are only added).
    """

    token: str
    base_rows: int
    dropped: torch.Tensor
    changed: torch.Tensor
    base_observations: int

    @property
    def first_new(self) -> int:
        return self.base_rows - int(self.dropped.numel())


@dataclass(frozen=True)
class _Journal:
    """The change record behind :meth:`LatentMemory.changes_since`. Immutable (each change makes a new
    one), so a shallow copy of a memory keeps the record of its own state. ``alive`` / ``dirty``:
    ``(base_rows,)`` bool over the marked rows (``None`` = all alive / none dirty); ``survivors``: marked
    rows still stored (they come first)."""

    token: str
    base_rows: int
    base_observations: int
    survivors: int
    alive: torch.Tensor | None = None
    dirty: torch.Tensor | None = None

    def _positions(self) -> torch.Tensor | None:
        """Marked-row index of each surviving marked row (``None``: the identity)."""
        return None if self.alive is None else self.alive.nonzero().squeeze(1)

    def dropped(self, keep: torch.Tensor) -> _Journal:
        """After :meth:`LatentMemory.drop` with ``keep (N,) bool``."""
        kept = keep[: self.survivors]
        if bool(kept.all()):
            return self
        alive = torch.ones(self.base_rows, dtype=torch.bool, device=keep.device) if self.alive is None else self.alive.clone()
        pos = self._positions()
        gone = (~kept).nonzero().squeeze(1)
        alive[gone if pos is None else pos[gone]] = False
        return replace(self, alive=alive, survivors=int(kept.sum()))

    def blended(self, index: torch.Tensor) -> _Journal:
        """After :meth:`LatentMemory.blend` of the rows ``index (M,)``."""
        rows = index[index < self.survivors]
        if rows.numel() == 0:
            return self
        pos = self._positions()
        dirty = torch.zeros(self.base_rows, dtype=torch.bool, device=index.device) if self.dirty is None else self.dirty.clone()
        dirty[rows if pos is None else pos[rows]] = True
        return replace(self, dirty=dirty)

    def to(self, device: torch.device) -> _Journal:
        return replace(self, alive=None if self.alive is None else self.alive.to(device),
                       dirty=None if self.dirty is None else self.dirty.to(device))

    def changes(self) -> MemoryChanges:
        empty = torch.zeros(0, dtype=torch.int64)
        dropped = empty if self.alive is None else (~self.alive).nonzero().squeeze(1).cpu()
        changed = empty
        if self.dirty is not None:
            dirty = self.dirty if self.alive is None else self.dirty & self.alive
            changed = dirty.nonzero().squeeze(1).cpu()
        return MemoryChanges(self.token, self.base_rows, dropped, changed, self.base_observations)


class LatentMemory:
    """A 3D cache of latent tokens (see the module docstring for the semantics).

    Args:
        channels: latent channels ``C``.
        spatial_factor: pixels per latent cell along each axis (8 for Wan2.1, 1 for raw pixels).
        codec: name of the codec the latents come from (stored in the cache file).
        feature_dtype: storage dtype of the features (fp16 by default, bf16 or fp32 allowed; a
            dtype or its name).
        device: where the tensors live (``"cpu"``, ``"cuda"``...).
        write_policy: ``"new"`` (default), ``"replace"``, ``"average"`` or ``"append"`` (see :mod:`.policies`).
        image_hash: hash of the input image (stored in the cache file).
        max_radius: largest splat half-extent in target cells.
        edge_tol: relative depth jump that separates surfaces in :func:`reduce_depth`.
        max_stretch: largest patch elongation (slope clamp) for cells seen at grazing angles.
        splat: ``"patch"`` (default: each point covers its projected cell, no cracks) or ``"point"``
            (each point fills only the cell it projects to, as the paper's reference implementation).

    Raises:
        MirageError: a setting the user chose is out of range (channels or spatial factor < 1, empty
            codec name, unknown feature dtype, write policy or device, non-positive radius...).
        TypeError: a setting has the wrong type (a programming error: non-integer channels,
            non-string codec).
    """

    # set by _set / _room / _world_axes (read with getattr(..., None) before the first set)
    _grown: dict[str, torch.Tensor] | None  # the append buffers (the stored tensors are views of them), or None
    _axes_cache: torch.Tensor | None  # (N, 6) world half-axes (_world_axes), or None: recompute

    def __init__(
        self,
        channels: int,
        spatial_factor: int,
        codec: str = "pixel",
        feature_dtype: torch.dtype | str = torch.float16,
        device: str | torch.device = "cpu",
        write_policy: str = "new",
        image_hash: str = "",
        max_radius: float = 4.0,
        edge_tol: float = 0.05,
        max_stretch: float = 8.0,
        splat: str = "patch",
    ) -> None:
        if not isinstance(codec, str):
            raise TypeError(f"codec must be a codec name (str), got {type(codec).__name__}")
        if not codec.strip():
            raise MirageError("codec name must not be empty")
        self.channels = _count("channels", channels)
        self.spatial_factor = _count("spatial_factor", spatial_factor)
        self.codec = codec
        self.feature_dtype = _feature_dtype(feature_dtype)
        self.write_policy = check_policy(write_policy, LATENT_POLICIES)
        self.image_hash = str(image_hash)
        self.max_radius = _positive("max_radius", max_radius)
        if self.max_radius > MAX_RADIUS:  # a larger footprint would be dropped, not clamped
            raise MirageError(f"max_radius must be <= {MAX_RADIUS:g} cells, got {max_radius}")
        self.edge_tol = _positive("edge_tol", edge_tol, allow_zero=True)
        self.max_stretch = _positive("max_stretch", max_stretch)
        self.splat = check_splat_mode(splat)
        self.extras: dict = {}
        dev = _device(device)
        self._points = torch.zeros(0, 3, dtype=torch.float32, device=dev)
        self._features = torch.zeros(0, self.channels, dtype=self.feature_dtype, device=dev)
        self._footprint = torch.zeros(0, dtype=torch.float32, device=dev)
        self._axes = torch.zeros(0, 2, 3, dtype=torch.float16, device=dev)
        self._chunk = torch.zeros(0, dtype=torch.int32, device=dev)
        self._key = torch.zeros(0, dtype=torch.int64, device=dev)
        self._observations: list[Observation] = []
        self._journal: _Journal | None = None  # changes since mark() (None: not recorded)
        self.last_write: dict[str, int] = {}

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

    @property
    def observations(self) -> list[Observation]:
        """The observed views whose free space every write keeps free (:mod:`.freespace`)."""
        return list(self._observations)

    def observe(self, camera: Cameras, depth: torch.Tensor) -> None:
        """Record ``camera`` (one camera) with its latent depth grid ``(h, w)`` (0 = not observed) as an
        observation: space in front of its surfaces stays free in every later write. :meth:`lift` with
        chunk 0 (the input) does this itself."""
        if len(camera) != 1:
            raise MirageError(f"observe: expected one camera, got {len(camera)}")
        h, w = self.latent_size(camera)
        d = torch.as_tensor(depth).to(self.device)
        if tuple(d.shape) != (h, w):
            raise MirageError(f"observe: depth has shape {tuple(d.shape)}, expected ({h}, {w})")
        obs = observation(camera.c2w[0], latent_K(camera, self.spatial_factor)[0], d)
        if not any(same_observation(obs, o) for o in self._observations):  # a reused memory's input: once
            self._observations.append(obs)

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
                    max_stretch=self.max_stretch, splat=self.splat)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"points": self._points, "features": self._features, "footprint": self._footprint,
                "axes": self._axes, "chunk": self._chunk}

    _STORED = ("_points", "_features", "_footprint", "_axes", "_chunk", "_key")

    def _set(self, points, features, footprint, axes, chunk, key=None) -> None:
        self._points = points.to(torch.float32).contiguous()
        self._features = features.to(self.feature_dtype).contiguous()
        self._footprint = footprint.to(torch.float32).contiguous()
        self._axes = axes.to(torch.float16).contiguous()
        self._chunk = chunk.to(torch.int32).contiguous()
        self._key = self._hash(self._points, self._features) if key is None else key
        self._grown = None  # the tensors are no longer views of the append buffers
        self._axes_cache = None

    def _world_axes(self) -> torch.Tensor:
        """``(N, 6)`` float32 world half-axes (``axes * footprint``), kept up to date by appends and
        recomputed only when the points are replaced (:meth:`_set`, :meth:`to`)."""
        cache = getattr(self, "_axes_cache", None)
        if cache is None or cache.shape[0] != len(self) or cache.device != self.device:
            cache = self._axes_cache = self._world_rows(self._axes, self._footprint)
        return cache

    def _block_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cull-block bounds of the points (:func:`~mirage_cli.memory.splat.block_bounds`), kept
        between reads: reused while the points tensor is the same object; after an append (the new
        points tensor is a longer view of the same buffer) only the last, partial block and the new
        ones are recomputed, since an append leaves the stored rows as they were."""
        pts = self._points
        cache = getattr(self, "_bounds_cache", None)
        if cache is not None and cache[0] is pts:
            return cache[1], cache[2]
        n = pts.shape[0]
        if (cache is not None and 0 < cache[3] <= n and cache[1].device == pts.device
                and cache[0].data_ptr() == pts.data_ptr()):
            keep = cache[3] // CULL_BLOCK  # full blocks stored before the append: unchanged
            lo, hi = block_bounds(pts[keep * CULL_BLOCK :])
            lo, hi = torch.cat([cache[1][:keep], lo]), torch.cat([cache[2][:keep], hi])
        else:
            lo, hi = block_bounds(pts)
        self._bounds_cache = (pts, lo, hi, n)
        return lo, hi

    def _depth_bias(self) -> torch.Tensor | None:
        """``(N,)`` z-buffer depth factor per point (:func:`.freespace.depth_bias`), kept while the
        chunk labels are the same tensor; ``None`` when every point is the input's."""
        cache = getattr(self, "_bias_cache", None)
        if cache is None or cache[0] is not self._chunk:
            cache = self._bias_cache = (self._chunk, depth_bias(self._chunk, INPUT_CHUNK))
        return cache[1]

    @staticmethod
    def _world_rows(axes: torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
        return (axes.float() * footprint[:, None, None]).reshape(-1, 6).contiguous()

    @staticmethod
    def _hash(points: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if points.shape[0] == 0:
            return torch.zeros(0, dtype=torch.int64, device=points.device)
        # by slabs of rows: the (rows, 3 + C) int64 bit rows (and hash_rows' torch temporaries) stay in
        # cache instead of tens of megabytes per write; rows are hashed independently
        return torch.cat([hash_rows(torch.cat([float_bits(points[a : a + _HASH_SLAB]),
                                               float_bits(features[a : a + _HASH_SLAB])], dim=1))
                          for a in range(0, points.shape[0], _HASH_SLAB)])

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more points: the next appends up to that many land in spare
        capacity without copying the stored points (as after the doubling growth of a long run).
        Changes no stored value."""
        self._room(len(self) + max(0, int(extra)))

    def _room(self, need: int) -> dict[str, torch.Tensor]:
        """The append buffers, grown (doubling, at least to ``need`` rows) if they hold fewer than
        ``need`` rows; after a growth the stored tensors are views of the new buffers."""
        buf = getattr(self, "_grown", None)
        if buf is not None and buf["_points"].shape[0] >= need:
            return buf
        n = len(self)
        cap = max(2 * n, need, 1024)
        old = {name: getattr(self, name) for name in self._STORED}
        old["_world"] = self._world_axes()
        buf = {}
        for name, t in old.items():  # the one copy of the n stored rows per growth
            buf[name] = torch.empty((cap, *t.shape[1:]), dtype=t.dtype, device=t.device)
            buf[name][:n] = t
        self._grown = buf
        for name in self._STORED:
            setattr(self, name, buf[name][:n])
        self._axes_cache = buf["_world"][:n]
        return buf

    def _append(self, new: dict[str, torch.Tensor], chunk: int) -> int:
        """Append rows into buffers with amortised (doubling) growth, so a write costs the new rows,
        not a copy of all ``N`` points per frame; the stored tensors are views of the buffers.
        ``new`` may carry the rows' ``key`` and ``world`` axes already (as :class:`_NewRows` does)."""
        k = new["points"].shape[0]
        if k == 0:
            return 0
        pts = new["points"].to(torch.float32)
        feats = new["features"].to(self.feature_dtype)
        foot = new["footprint"].to(torch.float32)
        axes = new["axes"].to(torch.float16)
        rows = {"_points": pts, "_features": feats, "_footprint": foot, "_axes": axes,
                "_chunk": torch.full((k,), int(chunk), dtype=torch.int32, device=self.device),
                "_key": new["key"] if "key" in new else self._hash(pts, feats),
                "_world": new["world"] if "world" in new else self._world_rows(axes, foot)}
        n = len(self)
        buf = self._room(n + k)
        for name, r in rows.items():
            buf[name][n : n + k] = r
        for name in self._STORED:
            setattr(self, name, buf[name][: n + k])
        self._axes_cache = buf["_world"][: n + k]
        return k

    def select(self, index: torch.Tensor) -> LatentMemory:
        """A new memory holding the points ``index`` (int indices or a bool mask), in that order."""
        m = LatentMemory(**self._config())
        m.extras = json.loads(json.dumps(self.extras))
        m._observations = list(self._observations)
        index = torch.as_tensor(index).to(self.device)
        m._set(self._points[index], self._features[index], self._footprint[index], self._axes[index],
               self._chunk[index], self._key[index])
        return m

    def to(self, device: str | torch.device) -> LatentMemory:
        """Move every tensor to ``device`` (in place, like ``nn.Module.to``); returns ``self``."""
        dev = _device(device)
        for name in self._STORED:
            setattr(self, name, getattr(self, name).to(dev).contiguous())
        self._observations = [o.to(dev) for o in self._observations]
        self._journal = self._journal.to(dev) if self._journal is not None else None
        self._grown = None
        self._axes_cache = None
        return self

    # ----------------------------------------------------------------------------- change record
    def mark(self, token: str) -> None:
        """Start recording changes: from now on :meth:`changes_since` ``(token)`` says which rows were
        dropped, which changed and which were added, and which observations are new. ``token`` names
        the state at the mark (an incremental checkpoint, :mod:`.checkpoint`, passes its newest entry's
        chain hash). Costs nothing on the append path; :meth:`drop` and :meth:`blend` update a bool
        mask over the marked rows."""
        self._journal = _Journal(str(token), len(self), len(self._observations), len(self))

    def changes_since(self, token: str) -> MemoryChanges | None:
        """The changes since :meth:`mark` ``(token)``, or ``None`` when the last mark had another token
        (or there was none, or the memory was rebuilt since: loaded, :meth:`select`-ed)."""
        j = self._journal
        return j.changes() if j is not None and j.token == token else None

    # ----------------------------------------------------------------------------- geometry
    def latent_size(self, cameras: Cameras) -> tuple[int, int]:
        """``(h, w)`` of the latent grid for these cameras: ``(H // f, W // f)``."""
        return latent_size(cameras, self.spatial_factor)

    def read_index(self, cameras: Cameras, batch: int = 8, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The z-buffer of :meth:`read` as indices: winner point per cell ``(T, h, w)`` int64
        (-1 = unknown) and its depth ``(T, h, w)`` float32 (e.g. to colour points for a preview).

        Only the points ``start:`` take part (the indices still count from point 0); frames are
        splatted ``batch`` at a time (:func:`.reading.read_index`).
        """
        return reading.read_index(self, cameras, batch, start)

    def winners(self, cameras: Cameras, start: int = 0) -> torch.Tensor:
        """``(T, h, w)`` int64 z-buffer winners among the points ``start:`` (-1 = none); see :mod:`.policies`."""
        return self.read_index(cameras, start=start)[0]

    def _fit_axes(self, pts: torch.Tensor, foot: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
        """Generated points' patches shrunk out of observed free space (:func:`.freespace.fit_patches`);
        ``axes (M, 2, 3)`` in units of the footprint, as lifted."""
        if not self._observations or pts.shape[0] == 0:
            return axes
        world = axes * foot[:, None, None]
        fitted = fit_patches(pts, world, self._observations)
        return axes if fitted is world else fitted / foot[:, None, None]

    def _make_points(self, latents: torch.Tensor, depth: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor,
                     cells: torch.Tensor, generated: bool = False) -> dict[str, torch.Tensor]:
        """Lift latent cells ``cells (h, w) bool`` of one frame with latent depth ``(h, w)`` (``generated``:
        patches fitted out of observed free space)."""
        pts, foot, axes, ii, jj = lift_patches(depth, K, c2w, cells, self.max_stretch)
        if generated:
            axes = self._fit_axes(pts, foot, axes)
        return {"points": pts, "features": latents[:, ii, jj].T.to(self.feature_dtype), "footprint": foot,
                "axes": axes.to(torch.float16)}

    def _make_points_frames(self, latents: torch.Tensor, depth: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor,
                            cells: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`_make_points` of ``T`` frames at once (``latents (T, C, h, w)``, ``depth, cells (T, h, w)``,
        ``c2w (T, 4, 4)``, ``K (T, 3, 3)``): the rows of frame 0, then frame 1, ..., bit for bit."""
        pts, foot, axes, tt, ii, jj = lift_patches_frames(depth, K, c2w, cells, self.max_stretch)
        axes = self._fit_axes(pts, foot, axes)  # written frames are generated
        return {"points": pts, "features": latents.permute(0, 2, 3, 1)[tt, ii, jj].to(self.feature_dtype),
                "footprint": foot, "axes": axes.to(torch.float16)}

    def _check_latents(self, latents: torch.Tensor, h: int, w: int, what: str) -> torch.Tensor:
        latents = torch.as_tensor(latents).to(self.device)
        if latents.shape[-3:] != (self.channels, h, w):
            raise MirageError(f"{what}: latents have shape {tuple(latents.shape)}, expected (..., {self.channels}, {h}, {w}) "
                              f"for {self.channels} channels and this camera's latent grid")
        return latents

    def _depth_grid(self, depth: torch.Tensor, h: int, w: int, what: str) -> torch.Tensor:
        return depth_to_grid(depth, h, w, self.spatial_factor, self.edge_tol, self.device, what)

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
        d = self._depth_grid(depth, h, w, "lift depth")
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
        K = latent_K(camera, self.spatial_factor)[0]
        if chunk == INPUT_CHUNK:  # the input's depth is observed: its free space stays free
            self.observe(camera, torch.where(cells, d, torch.zeros_like(d)))
        return self._append(self._make_points(latents.float(), d, camera.c2w[0], K, cells,
                                              generated=chunk != INPUT_CHUNK), chunk)

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
        return reading.read_latents(self, cameras, batch)

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
        d = self._depth_grid(depth, h, w, "write depth")
        if d.ndim == 2:
            d = d[None]
        if d.shape[0] != T:
            raise MirageError(f"write: {d.shape[0]} depth frames for {T} cameras")
        latents = latents.float()
        K = latent_K(cameras, self.spatial_factor)
        d = self.keep_free_space(d, cameras, K, self.write_policy, known)

        def add(t: int, cells: torch.Tensor) -> int:
            return self._append(self._make_points(latents[t], d[t], cameras.c2w[t], K[t], cells, generated=True), chunk)

        def values(t: int, covered: torch.Tensor) -> torch.Tensor:
            return latents[t][:, covered].T.to(torch.float64)

        batch = _NewRows(self, latents, d, cameras, K, chunk)
        return write_frames(self, self.write_policy, cameras, d > 0, known, add, values, batch)

    def keep_free_space(self, depth: torch.Tensor, cameras: Cameras, K: torch.Tensor, policy: str,
                        known: torch.Tensor | None) -> torch.Tensor:
        """Depth ``(T, h, w)`` of frames about to be written with write ``policy``, with every point in
        observed free space pushed back or dropped (:func:`.freespace.constrain_depth`; ``K (T, 3, 3)``
        their grid intrinsics). Policy ``"new"`` with the read's ``known (T, h, w)`` lifts only the
        cells the read did not cover, so only those are checked (the rest is left as it is). The
        counts go to :attr:`last_write` (``pushed``, ``dropped``). Both memories' writes call this."""
        cells = None
        if policy == "new" and known is not None:
            cells = ~torch.as_tensor(known, device=depth.device).bool()
            cells = cells if cells.shape == depth.shape else None  # a wrong shape is write_frames' error to report
        out, pushed, dropped = constrain_depth(depth, cameras.c2w, K, self._observations, cells=cells)
        self.last_write = {"pushed": pushed, "dropped": dropped}
        return out

    def drop(self, keep: torch.Tensor) -> None:
        """Keep only the points where ``keep (N,) bool`` is true, in order (policy ``"replace"``)."""
        self._set(self._points[keep], self._features[keep], self._footprint[keep], self._axes[keep],
                  self._chunk[keep], key=self._key[keep])
        if self._journal is not None:
            self._journal = self._journal.dropped(keep)

    def blend(self, index: torch.Tensor, mean: torch.Tensor) -> None:
        """Policy ``"average"``: feature ``<- (feature + mean) / 2`` for the points ``index (M,)``,
        computed in fp64 and stored in ``feature_dtype`` (``mean (M, C)`` float64); keys follow."""
        feats = self._features.clone()
        feats[index] = (0.5 * (self._features[index].to(torch.float64) + mean)).to(self.feature_dtype)
        self._set(self._points, feats, self._footprint, self._axes, self._chunk)
        if self._journal is not None:
            self._journal = self._journal.blended(index)

    # ----------------------------------------------------------------------------- inspection
    def nbytes(self) -> int:
        """Bytes of the stored tensors (points, features, footprint, axes, chunk): the cache payload."""
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    def stats(self) -> dict:
        """Summary: points, bytes, channels, dtype, bounds, points_per_chunk, codec, spatial_factor..."""
        n = len(self)
        if n:
            bounds = [self._points.min(dim=0).values.tolist(), self._points.max(dim=0).values.tolist()]
            fp = self._footprint
            footprint = {"min": float(fp.min()), "median": float(fp.median()), "max": float(fp.max())}
        else:
            bounds, footprint = None, None
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
            "splat": self.splat,
            "observations": len(self._observations),
            "bounds": bounds,
            "points_per_chunk": points_per_chunk(self._chunk),
            "footprint": footprint,
            "image_hash": self.image_hash,
            "device": str(self.device),
        }

    # ----------------------------------------------------------------------------- file
    def metadata(self, extras: dict | None = None) -> dict[str, str]:
        """The cache file's ``__metadata__`` (strings only; extras JSON-encoded; see :mod:`.storage`)."""
        return latent_metadata(self, extras)

    def save(self, path: str | os.PathLike, extras: dict | None = None) -> None:
        """Write a ``.safetensors`` cache atomically (temporary file + ``os.replace``).

        ``extras`` (JSON-serialisable) are merged over :attr:`extras` and stored JSON-encoded in
        the metadata field ``extras`` (e.g. ``reference_depth``, ``width``, ``height``).
        """
        try:
            meta = self.metadata(extras)
        except (TypeError, ValueError) as e:
            raise MirageError(f"{path}: extras are not JSON-serialisable ({e})") from None
        write_safetensors(path, self.cache_tensors(), meta)

    def cache_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors of the memory's cache file (:mod:`.storage`): the per-point tensors and its observations'."""
        return {**self._tensors(), **observation_tensors(self._observations)}

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> LatentMemory:
        """Load and validate a cache: a ``.safetensors`` file, or an incremental checkpoint directory
        (:mod:`.checkpoint`: its entries replayed, the memory marked with its newest entry so that the
        next :meth:`~.checkpoint.MemoryCheckpoint.append` to it writes only what changes from here).
        Either way the same checks (format, version, metadata, shapes, dtypes, values).

        Raises:
            MirageError: one line naming the file and the problem.
        """
        if Path(path).is_dir():
            cache, token = read_checkpoint(path)
            return cls.from_cache(cache, device, mark=token)
        return cls.from_cache(read_latent_cache(path), device)

    @classmethod
    def from_cache(cls, c: LatentCache, device: str | torch.device = "cpu", mark: str | None = None) -> LatentMemory:
        """The memory of a validated cache (:func:`.storage.read_latent_cache`), on ``device``;
        ``mark``: a token to :meth:`mark` it with."""
        t = c.tensors
        m = cls(c.channels, c.spatial_factor, c.codec, t["features"].dtype, "cpu", c.write_policy, c.image_hash,
                splat=c.splat)
        m.extras = c.extras
        m._observations = c.observations
        m._set(t["points"], t["features"], t["footprint"], t["axes"], t["chunk"])
        if mark is not None:
            m.mark(mark)
        return m.to(device)


class _NewRows:
    """:class:`~mirage_cli.memory.policies.BatchLift` of a :class:`LatentMemory` write: the cells of
    every frame lifted at once (:meth:`LatentMemory._make_points_frames`, with the rows' keys and world
    axes, computed once), the coverage of a subset of them splatted like :meth:`LatentMemory.winners`
    would after appending them, and the kept rows appended once."""

    def __init__(self, mem: LatentMemory, latents: torch.Tensor, depth: torch.Tensor, cameras: Cameras,
                 K: torch.Tensor, chunk: int) -> None:
        self.mem, self.latents, self.depth, self.cameras, self.K, self.chunk = mem, latents, depth, cameras, K, chunk

    def lift(self, cells: torch.Tensor) -> None:
        m = self.mem
        r = self.rows = m._make_points_frames(self.latents, self.depth, self.cameras.c2w, self.K, cells)
        # rows as stored (float32 points, storage-dtype features, fp16 axes): the key and world axes
        # an append would derive from them, here once for the coverage splats and the append
        r["key"], r["world"] = m._hash(r["points"], r["features"]), m._world_rows(r["axes"], r["footprint"])

    def coverage(self, rows: torch.Tensor, t: int) -> torch.Tensor:
        m = self.mem
        h, w = m.latent_size(self.cameras)
        cam = self.cameras[t]  # the camera exactly as LatentMemory.winners(cameras[t]) would build it
        r = self.rows
        idx, _ = splat_patches(r["points"].index_select(0, rows), r["world"].index_select(0, rows),
                               r["key"].index_select(0, rows), cam.w2c, latent_K(cam, m.spatial_factor), h, w,
                               m.max_radius, mode=m.splat)
        return idx[0] >= 0

    def keep(self, rows: torch.Tensor | None = None) -> int:
        picked = self.rows if rows is None else {k: v.index_select(0, rows) for k, v in self.rows.items()}
        return self.mem._append(picked, self.chunk)
