"""The bench loop: both arms on the same scene, trajectory, chunk plan, codec and process.

The latent arm is a :class:`~mirage_cli.pipeline.engine.ChunkEngine`, the object ``mirage generate``
runs (``bench/engines.py``): its read, denoise, decode, write and their seconds are the engine's.
The bench has no chunk loop of its own beyond "for each chunk: step the engine(s)".

```
input image ──encode (shared)──▶ first latent          input image + depth ──▶ every memory (lift)
--denoiser none | tiny | wan2.1-1.3b | mirage | mirage-tiny: one engine, the point cloud beside it
for each chunk (plan_chunks: 1 + 4k frames, one overlap frame):
  pointcloud arm  READ  PointCloudMemory.render(every video frame)       splat at pixel resolution
                        + codec.encode(rendered video) + codec.encode(mask video)
  latent arm      ChunkEngine.step: READ   LatentMemory.read(latent-frame cameras)   splat in latent space
                                    DENOISE the stand-in (below; timed once, charged to both arms)
                                    DECODE  the output video (timed once, charged to both)
                                    WRITE   lift the newly revealed latent cells
  pointcloud arm  WRITE lift the newly revealed pixels of the engine's decoded frames (pixel depth)
--denoiser spatia --model DIR: two engines, one Spatia network (the backend's spec plan: 121, then 81
frames overlapping by 9)
  pointcloud arm  ChunkEngine.step, conditioning rgb: READ = the explicit RGB cloud rebuilt and
                  rendered into every frame + VAE encode of the render and of the mask video (inside
                  the backend's conditioning; metered and charged to the read); its own denoise, decode, write
  latent arm      ChunkEngine.step, conditioning latent: READ = the latent memory read (no VAE encode
                  of any render); its own denoise, decode, write
```

What stands in for generation with one engine (:class:`~mirage_cli.bench.engines.StandIn`, the
engine's backend). With ``--denoiser none`` the chunk content is the preview backend's fill of the
latent read (no codec, milliseconds, charged as "denoise"), or with ``--fidelity on`` (synthetic
scene) the codec encoding of the true render of the chunk's frames (charged to neither arm), which
makes the read fidelity meaningful. With ``--denoiser tiny|wan2.1-1.3b|mirage|mirage-tiny`` the
network runs ``--steps`` steps per chunk on the engine's request (timed once, charged to both arms as
"denoise"); its output becomes the chunk content only when its weights are real (random weights
give noise). With ``--denoiser spatia`` each arm's content is its own network output. Depth of new
content (``--write-depth``): each arm's own read depth extended into the holes
(:func:`mirage_cli.geometry.depth.fill_depth`, latent vs pixel resolution, as ``mirage generate``
does), or the synthetic scene's exact depth (``exact``; ``auto`` = exact when fidelity is on, since
the true renders are made anyway). What each arm is charged is in :mod:`mirage_cli.bench.report`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..models.registry import resolve_device
from ..models.wan_vae import WanVAECodec
from ..pipeline.engine import ChunkObserver
from .arms import ArmRecord, ChunkCameras, EngineArm, PointCloudArm, clone_latent, warmup
from .config import BenchConfig
from .engines import StandIn, first_latent, latent_memory, make_engine, spatia_pair
from .measure import loadavg, timed
from .scene import BenchSetup, prepare


@dataclass
class SharedNumbers:
    """Work both arms share (seconds): charged to both, or to neither (``content_encode_s``,
    ``gt_render_s``). With two engines (``--denoiser spatia``) only the input encode is shared."""

    input_encode_s: float = 0.0
    denoise_s: list[float] = field(default_factory=list)  # per chunk
    decode_s: list[float] = field(default_factory=list)  # per chunk
    content_encode_s: float = 0.0  # ground-truth content encode (stand-in for generation)
    gt_render_s: float = 0.0


@dataclass
class BenchRun:
    """A finished bench run: what the report is built from."""

    setup: BenchSetup
    latent: ArmRecord
    pointcloud: ArmRecord
    shared: SharedNumbers
    wall_s: float
    load_start: list[float] | None


def run_bench(cfg: BenchConfig, progress=None, warn=print, observers: Sequence[ChunkObserver] = ()) -> dict:
    """Run both arms chunk by chunk; return the report (see :func:`mirage_cli.bench.report.build_report`).

    ``observers``: told after every chunk of every engine of the bench (as ``mirage generate``'s run
    directory is), with the :class:`~mirage_cli.pipeline.engine.ChunkResult` and the engine."""
    from .report import build_report

    t_start, load_start = time.perf_counter(), loadavg()
    s = prepare(cfg, resolve_device(cfg.device))
    codec, device = s.codec, s.device
    image, depth0, cam0 = s.data.image.to(device), s.data.depth.to(device), s.cams[0]
    warmup(image, depth0, cam0, codec, device)
    shared = SharedNumbers()
    latent0, shared.input_encode_s = timed(lambda: first_latent(codec, image))
    what = f"--denoiser {cfg.denoiser}" if s.two_engines else cfg.codec
    task = progress.add_task(f"bench {what}: latent vs pointcloud", total=len(s.chunks)) if progress else None

    def lift(record: ArmRecord):  # a latent memory lifted with the input, measured into the arm's record
        return record.lift(latent_memory(s, codec), lambda: latent_memory(s, codec), clone_latent, latent0, depth0, cam0)

    lat_rec = ArmRecord("latent")
    if s.two_engines:
        assert s.backend is not None  # prepare loaded the network both arms share
        rgb_b, lat_b, rgb_meter, lat_meter, (rgb_c, lat_c) = spatia_pair(s.backend)
        pc_rec = ArmRecord("pointcloud", denoise_s=[], decode_s=[])
        lat_rec.denoise_s, lat_rec.decode_s = [], []
        pc = EngineArm(pc_rec, make_engine(s, rgb_b, rgb_meter, lift(pc_rec), latent0, rgb_c), rgb_meter)
        lat = EngineArm(lat_rec, make_engine(s, lat_b, lat_meter, lift(lat_rec), latent0, lat_c), lat_meter)
        for arm in (pc, lat):
            arm.engine.observers.extend(observers)
        for chunk in s.chunks:
            cams = ChunkCameras.of(chunk, s.cams, codec.temporal_factor)
            _, gt_depth = ground_truth(s, cams, None, shared)
            exact = gt_depth if s.exact_depth else None
            for arm in (pc, lat):
                arm.meter.num_frames = chunk.length
                arm.step(cams, exact)
                arm.finish()
            if progress:
                progress.advance(task)
        return build_report(BenchRun(s, lat_rec, pc_rec, shared, time.perf_counter() - t_start, load_start))

    standin = StandIn(s.backend, s.content, codec)
    if s.backend is not None:  # the wan-vace context uses the latent of a grey video (one encode per chunk shape)
        vae = codec
        assert isinstance(vae, WanVAECodec)  # make_denoiser refuses a codec without a grey latent
        _, lat_rec.setup_s = timed(lambda: vae.grey_latent(s.chunks[0].length, cfg.height, cfg.width))
    lat = EngineArm(lat_rec, make_engine(s, standin, codec, lift(lat_rec), latent0))
    lat.engine.observers.extend(observers)
    pc_arm = PointCloudArm(codec, device, cfg.write_policy)
    pc_arm.lift(image, depth0, cam0)
    for chunk in s.chunks:
        cams = ChunkCameras.of(chunk, s.cams, codec.temporal_factor)
        pread = pc_arm.read(cams)
        gt_rgb, gt_depth = ground_truth(s, cams, pc_arm, shared)
        standin.truth = gt_rgb
        exact = gt_depth if s.exact_depth else None
        result = lat.step(cams, exact)
        shared.denoise_s.append(standin.charged_s)
        shared.content_encode_s += standin.uncharged_s
        shared.decode_s.append(result.seconds["decode"])
        pc_arm.write(pread, result, cams, exact)
        if s.fidelity:  # uncharged: decoded read vs the true render on known pixels
            assert gt_rgb is not None  # fidelity needs the synthetic scene: ground_truth rendered it
            lat.fidelity_read(result, gt_rgb, cams)
            pc_arm.fidelity(pread, gt_rgb, cams)
        lat.finish()
        pc_arm.finish(pread)
        if progress:
            progress.advance(task)
    return build_report(BenchRun(s, lat_rec, pc_arm.record, shared, time.perf_counter() - t_start, load_start))


def ground_truth(s: BenchSetup, cams: ChunkCameras, pc: PointCloudArm | None,
                 shared: SharedNumbers) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """True renders ``(L, 3, H, W)`` and depth ``(L, H, W)`` of the chunk frames that fidelity, exact
    depth or ground-truth content need (zeros elsewhere); ``(None, None)`` when none does. Uncharged.
    Exact depth is needed at every written latent frame's video frame (the engine's write) and at
    the point cloud's write positions."""
    scene = s.data.scene  # None: not synthetic
    if scene is None or not (s.fidelity or s.exact_depth or s.content == "ground-truth"):
        return None, None
    L, H, W, device = cams.chunk.length, s.cfg.height, s.cfg.width, s.device
    if s.content == "ground-truth":
        need = list(range(L))
    else:
        wanted = set(cams.positions)
        if s.exact_depth:
            tf = s.codec.temporal_factor
            wanted |= set(range(0, L, tf)[:cams.written]) | set(pc.write_positions(cams) if pc else ())
        need = sorted(wanted)
    (g_rgb, g_depth), sec = timed(lambda: scene.render(cams.video[need]))
    shared.gt_render_s += sec
    gt_rgb = torch.zeros(L, 3, H, W, device=device)
    gt_depth = torch.zeros(L, H, W, device=device)
    gt_rgb[need], gt_depth[need] = g_rgb.to(device), g_depth.to(device)
    return gt_rgb, gt_depth
