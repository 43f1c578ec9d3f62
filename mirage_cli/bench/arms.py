"""The two arms of ``mirage bench --compare pointcloud`` and what each measures.

An arm owns one memory and records its own operations on it in an :class:`ArmRecord` (one
:class:`ChunkNumbers` per chunk): the lift of the input (timed, peak bytes), each chunk's read
and write, the fidelity of the read against the true render (uncharged), the cache payload.

- :class:`EngineArm`: an arm that *is* a :class:`~mirage_cli.pipeline.engine.ChunkEngine`, the object
  ``mirage generate`` runs. Its read, write and their seconds are the engine's own
  (``ChunkResult.seconds``); the bench adds only measurement (peak bytes from untimed replays of the
  engine's own :meth:`~mirage_cli.pipeline.engine.ChunkEngine.read` and
  :meth:`~mirage_cli.pipeline.engine.ChunkEngine.write`). The latent arm is always one; with
  ``--denoiser spatia`` the point-cloud arm is one too (Spatia's ``rgb`` conditioning).
- :class:`PointCloudArm` (GEN3C / Spatia-style, beside a shared engine): read = render every *video*
  frame at pixel resolution + codec encode of the rendered video and of the mask video; write = lift
  the newly revealed pixels of the engine's decoded frames (``append``: every valid pixel of every new frame).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

from ..geometry.cameras import Cameras
from ..geometry.depth import fill_depth
from ..memory.latent import LatentMemory
from ..memory.pointcloud import PointCloudMemory
from ..pipeline.engine import ChunkEngine, ChunkResult
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
    """One arm's totals and its chunks. ``denoise_s`` / ``decode_s``: the arm's own per-chunk seconds
    when it has its own engine content (``--denoiser spatia``); None: the shared ones (:class:`SharedNumbers`)."""

    name: str
    lift_s: float = 0.0
    lift_peak: int = 0
    lift_bytes: int = 0
    setup_s: float = 0.0  # one-time work outside the loop (the latent arm's grey-video latent)
    xyz_rgb_bytes: int | None = None  # point cloud: the most compact xyz + rgb payload
    chunks: list[ChunkNumbers] = field(default_factory=list)
    mse_sum: float = 0.0
    mse_count: int = 0
    denoise_s: list[float] | None = None
    decode_s: list[float] | None = None

    @property
    def read_psnr(self) -> float | None:
        """PSNR (dB, signal 1.0) over every known pixel of every chunk's read."""
        if self.mse_count == 0:
            return None
        return psnr_db(self.mse_sum / self.mse_count)

    def lift(self, memory, empty, clone, values: torch.Tensor, depth: torch.Tensor, camera: Cameras):
        """Lift the input (latent ``(C, h, w)`` or image ``(3, H, W)``) with its depth ``(H, W)`` into
        ``memory`` (timed: median over fresh copies; peak bytes on ``empty()``); returns the lifted memory."""
        self.lift_peak = measure_peak(lambda: empty().lift(values, depth, camera))
        memory, self.lift_s = timed_update(memory, clone, lambda m: m.lift(values, depth, camera, chunk=0))
        self.lift_bytes = memory.nbytes()
        return memory

    def fidelity(self, nums: ChunkNumbers, pred: torch.Tensor, gt: torch.Tensor, known: torch.Tensor) -> None:
        """PSNR of decoded read frames ``pred (n, 3, H, W)`` against the true renders ``gt`` on the
        known pixels ``known (n, H, W)``, into ``nums`` and the arm's total."""
        m = known[:, None].expand_as(gt)
        if not bool(m.any()):
            return
        err = ((pred.float() - gt.float()) ** 2)[m]
        s, n = float(err.sum()), int(err.numel())
        self.mse_sum += s
        self.mse_count += n
        nums.psnr = psnr_db(s / n)


@dataclass
class ArmRead:
    """The point-cloud arm's read of a chunk: ``latents (T_lat, C, h, w)`` the encoded render;
    ``known``/``depth``: ``(L, H, W)`` at pixels of every video frame."""

    latents: torch.Tensor
    known: torch.Tensor
    depth: torch.Tensor
    numbers: ChunkNumbers


class EngineArm:
    """An arm that is a :class:`~mirage_cli.pipeline.engine.ChunkEngine` (see the module docstring).

    ``meter``: the :class:`~mirage_cli.bench.engines.MeteredCodec` of the engine's backend (``--denoiser
    spatia``), or None. The whole-chunk videos it saw encoded (Spatia ``rgb``: the render and the mask)
    are charged to the read, as the point-cloud arm's encodes are, not to the denoise; constant-video
    latents made for the first chunk of a length (Spatia ``latent``) are one-time setup (``setup_s``). An arm whose
    conditioning renders the explicit cloud also fills the point cloud's own fields (render, encode,
    write-decode) and counts the decoded frames its engine keeps in its cache."""

    def __init__(self, record: ArmRecord, engine: ChunkEngine, meter=None) -> None:
        self.engine = engine
        self.record = record
        self.meter = meter
        self.renders = engine.settings.conditioning in engine.backend.spec.render_conditionings
        self.numbers = ChunkNumbers(frames=0)

    @property
    def memory(self) -> LatentMemory:
        return self.engine.memory

    def step(self, cams: ChunkCameras, gt_depth: torch.Tensor | None) -> ChunkResult:
        """One chunk through the engine (exact depth ``gt_depth (L, H, W)`` for new content when given);
        records its numbers. Peak bytes: untimed replays of the engine's read and write."""
        engine, chunk = self.engine, cams.chunk
        read_peak = held_bytes(engine.memory) + measure_peak(lambda: engine.read(chunk, cams.video))
        scratch = copy.copy(engine)  # the state before the write, for the write's replay
        scratch.memory = clone_latent(engine.memory)
        result = engine.step(chunk, cams.video, depth=gt_depth)
        write_peak = held_bytes(scratch.memory) + measure_peak(
            lambda: scratch.write(chunk, result.read, result.latents, result.frames, gt_depth))
        sec = result.seconds
        nums = ChunkNumbers(frames=chunk.stop, read_s=sec["read"], write_s=sec["write"],
                            peak_bytes=max(read_peak, write_peak), known_fraction=round(result.known_fraction, 6),
                            frames_written=result.written, points_added=result.points_added)
        denoise_s = sec["denoise"]
        if self.meter is not None:  # whole-chunk video encodes (the render's and the mask's): the read's
            nums.codec_encodes, nums.codec_s = self.meter.take()
            nums.read_s += nums.codec_s
            setup = self.meter.take_setup()  # constant-video latents: one-time, as the grey latent of wan-vace
            self.record.setup_s += setup
            denoise_s -= nums.codec_s + setup
        if self.renders:
            nums.render_s, nums.encode_s, nums.write_decode_s = sec["read"], nums.codec_s, sec["decode"]
        if self.record.denoise_s is not None and self.record.decode_s is not None:
            self.record.denoise_s.append(denoise_s)
            self.record.decode_s.append(sec["decode"])
        self.numbers = nums
        return result

    def fidelity_read(self, result: ChunkResult, gt_rgb: torch.Tensor, cams: ChunkCameras) -> None:
        """PSNR of the decoded latent read against the true render on the known pixels (uncharged)."""
        read, f = result.read, self.engine.codec.spatial_factor
        known = read.known[:cams.written]
        known = known.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) if f > 1 else known
        pred = self.engine.codec.decode(read.latents)[cams.positions]
        self.record.fidelity(self.numbers, pred, gt_rgb[cams.positions], known)

    def cache_bytes(self) -> tuple[int, int]:
        """``(bytes, points)`` the arm's conditioning reads from: its latent memory, and for an arm
        that renders the explicit cloud (its engine's ``pixel_history`` frames, rebuilt into a cloud
        each chunk) every decoded frame it keeps as well."""
        n = self.memory.nbytes()
        if self.renders:
            n += self.frames_bytes()
        return n, len(self.memory)

    def frames_bytes(self) -> int:
        """Bytes of the decoded frames the engine keeps (uint8)."""
        return int(sum(p.nbytes for p in self.engine.pixels))

    def finish(self) -> None:
        """Record the chunk's numbers with the cache's size after the write."""
        self.numbers.cache_bytes, self.numbers.points = self.cache_bytes()
        if self.renders:
            self.record.xyz_rgb_bytes = self.frames_bytes()
        self.record.chunks.append(self.numbers)


class PointCloudArm:
    """The baseline beside a shared engine: an explicit RGB point cloud, rendered at pixels and encoded
    (see the module docstring)."""

    def __init__(self, codec, device: torch.device, write_policy: str) -> None:
        self.device = device
        self.codec = codec
        self.record = ArmRecord("pointcloud")
        self.memory = PointCloudMemory(device=device, write_policy=write_policy)

    def _empty(self):
        return PointCloudMemory(device=self.device)

    @staticmethod
    def _clone(memory):
        return memory.clone()

    def lift(self, image: torch.Tensor, depth: torch.Tensor, camera: Cameras) -> None:
        self.memory = self.record.lift(self.memory, self._empty, self._clone, image, depth, camera)

    def read(self, cams: ChunkCameras) -> ArmRead:
        mem = self.memory
        (rgb, known, depth), render_s = timed_median(lambda: mem.render(cams.video))
        (cond, _), encode_s = timed(lambda: PointCloudMemory.encode_condition(self.codec, rgb, known))
        peak = held_bytes(mem) + measure_peak(lambda: PointCloudMemory.condition_videos(*mem.render(cams.video)[:2]))
        nums = ChunkNumbers(frames=cams.chunk.stop, read_s=render_s + encode_s, codec_s=encode_s, codec_encodes=2,
                            peak_bytes=peak, known_fraction=round(float(known[cams.positions].float().mean()), 6),
                            render_s=render_s, encode_s=encode_s)
        return ArmRead(cond, known, depth, nums)

    def write_positions(self, cams: ChunkCameras) -> list[int]:
        """Chunk frames whose content the write lifts (exact depth is needed there)."""
        # append: every new frame of the chunk (the overlap frame 0 is the previous chunk's last)
        return list(range(1, cams.chunk.real)) if self.memory.write_policy == "append" else cams.positions

    def write(self, read: ArmRead, result: ChunkResult, cams: ChunkCameras, gt_depth: torch.Tensor | None) -> None:
        """Lift the engine's decoded frames where the read did not cover them; depth of new content =
        ``gt_depth (L, H, W)`` when given (exact), else the read depth filled into the holes (timed
        as part of the write). The decode is the engine's (shared): ``write_decode_s``."""
        nums, label = read.numbers, cams.chunk.index + 1
        assert result.frames is not None  # the bench's engine decodes every chunk
        nums.write_decode_s = result.seconds["decode"]
        pos = self.write_positions(cams)
        values, rdepth, known, wcams = result.frames[pos], read.depth[pos], read.known[pos], cams.video[pos]
        if gt_depth is not None:
            depth = gt_depth[pos]
        else:
            depth, nums.write_depth_s = timed_median(lambda: fill_depth(rdepth, known))
        args = (values, depth, wcams, known)
        scratch = self._clone(self.memory)  # copied outside the measurement, as the engine arm's replay is
        nums.peak_bytes = max(nums.peak_bytes, held_bytes(self.memory) + measure_peak(
            lambda: scratch.write(*args, chunk=label)))
        before = len(self.memory)
        self.memory, s = timed_update(self.memory, self._clone, lambda m: m.write(*args, chunk=label))
        nums.write_s = s + nums.write_depth_s
        nums.points_added = len(self.memory) - before
        nums.frames_written = len(values)

    def fidelity(self, read: ArmRead, gt_rgb: torch.Tensor, cams: ChunkCameras) -> None:
        """PSNR of the decoded read (the encoded render) against the true render on known pixels (uncharged)."""
        pos = cams.positions
        self.record.fidelity(read.numbers, self.codec.decode(read.latents)[pos], gt_rgb[pos], read.known[pos])

    def finish(self, read: ArmRead) -> None:
        """Record the chunk's numbers with the memory's size after the write."""
        read.numbers.cache_bytes = self.memory.nbytes()
        read.numbers.points = len(self.memory)
        self.record.chunks.append(read.numbers)
        self.record.xyz_rgb_bytes = self.memory.nbytes_xyz_rgb()


def warmup(image: torch.Tensor, depth: torch.Tensor, cam: Cameras, codec, device: torch.device) -> None:
    """Run every memory kernel once on a quarter-size frame (untimed): first calls pay one-time costs."""
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
