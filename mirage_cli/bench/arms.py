"""The two arms of ``mirage bench --compare pointcloud``, behind one interface.

An arm owns one memory and measures its own operations on it:

- :meth:`Arm.lift` the input image (timed, peak bytes),
- :meth:`Arm.read` a chunk's cameras -> :class:`ArmRead` (what the denoiser would be conditioned on),
- :meth:`Arm.write` the generated chunk back (only what the read did not cover, with the policy),
- :meth:`Arm.fidelity` of the read against the true render (uncharged),
- :meth:`Arm.nbytes` / ``len()``: the cache payload and its points.

Per-chunk numbers go to a :class:`ChunkNumbers`; the arm's totals to its :class:`ArmRecord`.

- :class:`LatentArm` (mirage): read = splat of latent points into each *latent* frame; write = lift
  the newly revealed latent cells. No codec call.
- :class:`PointCloudArm` (GEN3C / Spatia-style): read = render every *video* frame at pixel
  resolution + codec encode of the rendered video and of the mask video; write = lift the newly
  revealed pixels of the decoded frames (``append``: every valid pixel of every new frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from ..geometry.cameras import Cameras
from ..geometry.depth import fill_depth
from ..memory.latent import LatentMemory
from ..memory.pointcloud import PointCloudMemory
from ..pipeline.plan import Chunk, latent_frame_indices, written_latent_frames
from ..units import psnr_db
from .measure import held_bytes, measure_peak, timed, timed_median, timed_update


def clone_latent(memory: LatentMemory) -> LatentMemory:
    """An independent copy of a latent memory (writes on it leave ``memory`` as it is)."""
    return memory.select(torch.arange(len(memory), device=memory.device))


@dataclass(frozen=True)
class ChunkCameras:
    """The cameras of one chunk, as both arms need them.

    ``video`` has the chunk's ``L`` (padded) frames, ``latent`` its ``T_lat`` latent frames (latent
    frame ``j`` = chunk frame ``tf * j``). Only the first ``written`` latent frames carry real content
    (:func:`~mirage_cli.pipeline.plan.written_latent_frames`); ``positions[j]`` is the chunk frame
    standing for written latent frame ``j`` (the padded one falls back to the last real frame, which
    has the same camera).
    """

    chunk: Chunk
    video: Cameras
    latent: Cameras
    written: int
    positions: list[int]

    @classmethod
    def of(cls, chunk: Chunk, cams: Cameras, temporal_factor: int) -> ChunkCameras:
        n = written_latent_frames(chunk, temporal_factor)
        return cls(chunk, cams[chunk.frames], cams[latent_frame_indices(chunk, temporal_factor)], n,
                   [min(temporal_factor * j, chunk.real - 1) for j in range(n)])


@dataclass
class ChunkNumbers:
    """What one arm measured on one chunk (seconds, bytes, counts).

    ``render_s``, ``encode_s`` and ``write_decode_s`` are the point cloud's only; ``psnr`` is set
    only when fidelity is measured. ``frames_written``: latent frames (latent arm) or video frames
    (point cloud) the write lifted.
    """

    frames: int  # trajectory frames done after this chunk
    read_s: float = 0.0
    codec_s: float = 0.0  # codec time inside the read
    codec_encodes: int = 0  # codec.encode calls inside the read
    peak_bytes: int = 0
    known_fraction: float = 0.0
    write_depth_s: float = 0.0
    write_s: float = 0.0  # includes write_depth_s
    frames_written: int = 0
    points_added: int = 0
    psnr: float | None = None
    cache_bytes: int = 0
    points: int = 0
    render_s: float | None = None
    encode_s: float | None = None
    write_decode_s: float | None = None

    POINTCLOUD_ONLY = ("render_s", "encode_s", "write_decode_s")

    @property
    def memory_overhead_s(self) -> float:
        return self.read_s + self.write_s

    def as_dict(self, pointcloud: bool, fidelity: bool) -> dict:
        """The report's per-chunk record (arm-specific fields only where they apply)."""
        skip = set() if pointcloud else set(self.POINTCLOUD_ONLY)
        if not fidelity:
            skip.add("psnr")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        return out | {"memory_overhead_s": self.memory_overhead_s}


@dataclass
class ArmRecord:
    """One arm's totals and its chunks."""

    name: str
    lift_s: float = 0.0
    lift_peak: int = 0
    lift_bytes: int = 0
    setup_s: float = 0.0  # one-time work outside the loop (the latent arm's grey-video latent)
    xyz_rgb_bytes: int | None = None  # point cloud: the most compact xyz + rgb payload
    chunks: list[ChunkNumbers] = field(default_factory=list)
    mse_sum: float = 0.0
    mse_count: int = 0

    @property
    def read_psnr(self) -> float | None:
        """PSNR (dB, signal 1.0) over every known pixel of every chunk's read."""
        if self.mse_count == 0:
            return None
        return psnr_db(self.mse_sum / self.mse_count)


@dataclass
class ArmRead:
    """One arm's read of a chunk. ``latents``: ``(T_lat, C, h, w)`` (the latent read, or the encoded
    render); ``known``/``depth``: ``(T, h, w)`` at the arm's resolution (latent frames or video frames)."""

    latents: torch.Tensor
    known: torch.Tensor
    depth: torch.Tensor
    numbers: ChunkNumbers


@dataclass(frozen=True)
class ChunkContent:
    """The generated chunk: ``latents (T_lat, C, h, w)`` and its decode ``frames (L, 3, H, W)``."""

    latents: torch.Tensor
    frames: torch.Tensor
    decode_s: float


class Arm:
    """One memory and the measurement of its operations (see the module docstring)."""

    name = ""

    def __init__(self, memory, codec) -> None:
        self.memory = memory
        self.codec = codec
        self.record = ArmRecord(self.name)

    # what differs between the arms ------------------------------------------------------------
    def _empty(self):
        raise NotImplementedError

    @staticmethod
    def _clone(memory):
        raise NotImplementedError

    def read(self, cams: ChunkCameras) -> ArmRead:
        raise NotImplementedError

    def _write_inputs(self, read: ArmRead, content: ChunkContent, cams: ChunkCameras):
        """``(values (T, ...), read depth (T, h, w), known (T, h, w), cameras (T,), chunk frame of each)``."""
        raise NotImplementedError

    def write_positions(self, cams: ChunkCameras) -> list[int]:
        """Chunk frames whose content the write lifts (exact depth is needed there)."""
        return cams.positions

    def _pixel_known(self, read: ArmRead, cams: ChunkCameras) -> torch.Tensor:
        """Known-mask ``(n, H, W)`` at pixels of the written latent frames' positions."""
        raise NotImplementedError

    # shared --------------------------------------------------------------------------------------
    def nbytes(self) -> int:
        return self.memory.nbytes()

    def __len__(self) -> int:
        return len(self.memory)

    def lift(self, values: torch.Tensor, depth: torch.Tensor, camera: Cameras) -> None:
        """Lift the input (latent ``(C, h, w)`` or image ``(3, H, W)``) with its depth ``(H, W)``."""
        rec = self.record
        rec.lift_peak = measure_peak(lambda: self._empty().lift(values, depth, camera))
        self.memory, rec.lift_s = timed_update(self.memory, self._clone, lambda m: m.lift(values, depth, camera, chunk=0))
        rec.lift_bytes = self.nbytes()

    def write(self, read: ArmRead, content: ChunkContent, cams: ChunkCameras, gt_depth: torch.Tensor | None) -> None:
        """Write the chunk back; depth of new content = ``gt_depth (L, H, W)`` when given (exact), else
        the read depth filled into the holes (timed as part of the write)."""
        nums, label = read.numbers, cams.chunk.index + 1
        values, rdepth, known, wcams, pos = self._write_inputs(read, content, cams)
        if gt_depth is not None:
            depth = gt_depth[pos]
        else:
            depth, nums.write_depth_s = timed_median(lambda: fill_depth(rdepth, known))
        args = (values, depth, wcams, known)
        nums.peak_bytes = max(nums.peak_bytes, held_bytes(self.memory) + measure_peak(
            lambda: self._clone(self.memory).write(*args, chunk=label)))
        before = len(self)
        self.memory, s = timed_update(self.memory, self._clone, lambda m: m.write(*args, chunk=label))
        nums.write_s = s + nums.write_depth_s
        nums.points_added = len(self) - before
        nums.frames_written = len(values)

    def fidelity(self, read: ArmRead, gt_rgb: torch.Tensor, cams: ChunkCameras) -> None:
        """PSNR of the decoded read against the true render ``gt_rgb (L, 3, H, W)`` on known pixels."""
        pos = cams.positions
        pred, gt = self.codec.decode(read.latents)[pos], gt_rgb[pos]
        m = self._pixel_known(read, cams)[:, None].expand_as(gt)
        if not bool(m.any()):
            return
        err = ((pred.float() - gt.float()) ** 2)[m]
        s, n = float(err.sum()), int(err.numel())
        self.record.mse_sum += s
        self.record.mse_count += n
        read.numbers.psnr = psnr_db(s / n)

    def finish(self, read: ArmRead) -> None:
        """Record the chunk's numbers with the memory's size after the write."""
        read.numbers.cache_bytes = self.nbytes()
        read.numbers.points = len(self)
        self.record.chunks.append(read.numbers)


class LatentArm(Arm):
    """mirage: the latent memory, read and written in latent space (see the module docstring)."""

    name = "latent"

    def __init__(self, codec, device: torch.device, write_policy: str) -> None:
        self.device = device
        super().__init__(LatentMemory(codec.channels, codec.spatial_factor, codec=codec.name, device=device,
                                      write_policy=write_policy), codec)

    def _empty(self):
        return LatentMemory(self.codec.channels, self.codec.spatial_factor, device=self.device)

    _clone = staticmethod(clone_latent)

    def read(self, cams: ChunkCameras) -> ArmRead:
        (lat, known, depth), read_s = timed_median(lambda: self.memory.read(cams.latent))
        peak = held_bytes(self.memory) + measure_peak(lambda: self.memory.read(cams.latent))
        nums = ChunkNumbers(frames=cams.chunk.stop, read_s=read_s, peak_bytes=peak,
                            known_fraction=round(float(known[:cams.written].float().mean()), 6))
        return ArmRead(lat, known, depth, nums)

    def _write_inputs(self, read, content, cams):
        n = cams.written
        return content.latents[:n], read.depth[:n], read.known[:n], cams.latent[:n], cams.positions

    def _pixel_known(self, read, cams):
        f = self.codec.spatial_factor
        known = read.known[:cams.written]
        return known.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) if f > 1 else known


class PointCloudArm(Arm):
    """The baseline: an explicit RGB point cloud, rendered at pixels and encoded (see the module docstring)."""

    name = "pointcloud"

    def __init__(self, codec, device: torch.device, write_policy: str) -> None:
        self.device = device
        super().__init__(PointCloudMemory(device=device, write_policy=write_policy), codec)

    def _empty(self):
        return PointCloudMemory(device=self.device)

    @staticmethod
    def _clone(memory):
        return memory.clone()

    def read(self, cams: ChunkCameras) -> ArmRead:
        mem = self.memory
        (rgb, known, depth), render_s = timed_median(lambda: mem.render(cams.video))
        (cond, _), encode_s = timed(lambda: PointCloudMemory.encode_condition(self.codec, rgb, known))
        peak = held_bytes(mem) + measure_peak(lambda: PointCloudMemory.condition_videos(*mem.render(cams.video)[:2]))
        nums = ChunkNumbers(frames=cams.chunk.stop, read_s=render_s + encode_s, codec_s=encode_s, codec_encodes=2,
                            peak_bytes=peak, known_fraction=round(float(known[cams.positions].float().mean()), 6),
                            render_s=render_s, encode_s=encode_s)
        return ArmRead(cond, known, depth, nums)

    def write(self, read, content, cams, gt_depth) -> None:
        read.numbers.write_decode_s = content.decode_s  # the write needs pixels: the shared decode
        super().write(read, content, cams, gt_depth)

    def write_positions(self, cams: ChunkCameras) -> list[int]:
        # append: every new frame of the chunk (the overlap frame 0 is the previous chunk's last)
        return list(range(1, cams.chunk.real)) if self.memory.write_policy == "append" else cams.positions

    def _write_inputs(self, read, content, cams):
        pos = self.write_positions(cams)
        return content.frames[pos], read.depth[pos], read.known[pos], cams.video[pos], pos

    def _pixel_known(self, read, cams):
        return read.known[cams.positions]

    def finish(self, read: ArmRead) -> None:
        super().finish(read)
        self.record.xyz_rgb_bytes = self.memory.nbytes_xyz_rgb()


def warmup(image: torch.Tensor, depth: torch.Tensor, cam: Cameras, codec, device: torch.device) -> None:
    """Run every memory kernel once on a quarter-size frame (untimed): first calls pay one-time costs."""
    import torch.nn.functional as F

    C, f = codec.channels, codec.spatial_factor
    small = Cameras(cam.c2w, cam.intrinsics, max(f, cam.width // 4 // f * f), max(f, cam.height // 4 // f * f))
    img = F.interpolate(image[None], size=(small.height, small.width), mode="area")[0]
    dep = F.interpolate(depth[None, None], size=(small.height, small.width), mode="nearest")[0, 0]
    lm = LatentMemory(C, f, device=device)
    lm.lift(torch.zeros(C, small.height // f, small.width // f, device=device), dep, small)
    _, known, _ = lm.read(small)
    lm.write(torch.zeros(1, C, small.height // f, small.width // f, device=device), dep[None], small, known, chunk=1)
    pm = PointCloudMemory(device=device)
    pm.lift(img, dep, small)
    rgb, known, _ = pm.render(small)
    PointCloudMemory.condition_videos(rgb, known)
    pm.write(img[None], dep[None], small, known, chunk=1)
