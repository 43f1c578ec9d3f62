"""The bench loop: both arms on the same scene, trajectory, chunk plan, codec and process.

```
input image ──encode (shared)──▶ first latent          input image + depth ──▶ both memories (lift)
for each chunk (plan_chunks: 1 + 4k frames, one overlap frame):
  latent arm      READ  LatentMemory.read(latent-frame cameras)          splat in latent space
  pointcloud arm  READ  PointCloudMemory.render(every video frame)       splat at pixel resolution
                        + codec.encode(rendered video) + codec.encode(mask video)
  shared          DENOISE (--denoiser, timed once, charged to both)  ──▶ chunk latents
                  DECODE  codec.decode(chunk latents) (the output video; timed once, charged to both)
  latent arm      WRITE lift the newly revealed latent cells (depth at latent resolution)
  pointcloud arm  WRITE lift the newly revealed pixels of the decoded frames (pixel depth)
```

What stands in for generation. With ``--denoiser none`` the chunk content is the preview backend's
fill of the latent read (no codec, milliseconds, charged as "denoise"), or with ``--fidelity on``
(synthetic scene) the codec encoding of the true render of the chunk's frames (charged to neither
arm), which makes the read fidelity meaningful. With ``--denoiser tiny|wan2.1-1.3b`` the
Wan-VACE transformer runs ``--steps`` steps per chunk on the latent arm's read (timed once, charged
to both arms as "denoise"); its output becomes the chunk content only when its weights are real
(random weights give noise). Depth of new content (``--write-depth``): each arm's own read depth
extended into the holes (:func:`mirage_cli.geometry.depth.fill_depth`, latent vs pixel resolution,
as ``mirage generate`` does), or the synthetic scene's exact depth (``exact``; ``auto`` = exact when
fidelity is on, since the true renders are made anyway). A padded last chunk writes the latent
frames :func:`~mirage_cli.pipeline.plan.written_latent_frames` says, as ``mirage generate`` does.
What each arm is charged is in :mod:`mirage_cli.bench.report`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch

from .arms import ArmRead, ChunkCameras, ChunkContent, LatentArm, PointCloudArm, warmup
from .config import BenchConfig
from .measure import loadavg, timed
from .scene import BenchSetup, prepare


@dataclass
class SharedNumbers:
    """Work both arms share (seconds): charged to both, or to neither (``content_encode_s``, ``gt_render_s``)."""

    input_encode_s: float = 0.0
    denoise_s: list[float] = field(default_factory=list)  # per chunk
    decode_s: list[float] = field(default_factory=list)  # per chunk
    content_encode_s: float = 0.0  # ground-truth content encode (stand-in for generation)
    gt_render_s: float = 0.0


@dataclass
class BenchRun:
    """A finished bench run: what the report is built from."""

    setup: BenchSetup
    latent: LatentArm
    pointcloud: PointCloudArm
    shared: SharedNumbers
    wall_s: float
    load_start: list[float] | None


def run_bench(cfg: BenchConfig, progress=None, warn=print) -> dict:
    """Run both arms on the same loop; return the report (see :func:`mirage_cli.bench.report.build_report`)."""
    from ..models.registry import resolve_device
    from .report import build_report

    t_start, load_start = time.perf_counter(), loadavg()
    s = prepare(cfg, resolve_device(cfg.device))
    codec, device = s.codec, s.device
    image, depth0, cam0 = s.data.image.to(device), s.data.depth.to(device), s.cams[0]
    warmup(image, depth0, cam0, codec, device)

    shared = SharedNumbers()
    first_latent, shared.input_encode_s = timed(lambda: codec.encode(image[None])[0])
    lat, pc = LatentArm(codec, device, s.latent_policy), PointCloudArm(codec, device, cfg.write_policy)
    if s.backend is not None:  # the wan-vace context uses the latent of a grey video (one encode per chunk shape)
        from ..models.wan_vae import WanVAECodec

        vae = codec
        assert isinstance(vae, WanVAECodec)  # make_denoiser refuses a codec without a grey latent
        _, lat.record.setup_s = timed(lambda: vae.grey_latent(s.chunks[0].length, cfg.height, cfg.width))
    lat.lift(first_latent, depth0, cam0)
    pc.lift(image, depth0, cam0)

    task = progress.add_task(f"bench {cfg.codec}: latent vs pointcloud", total=len(s.chunks)) if progress else None
    preceding = None
    for chunk in s.chunks:
        preceding = run_chunk(s, ChunkCameras.of(chunk, s.cams, codec.temporal_factor), lat, pc, shared,
                              first_latent, preceding)
        if progress:
            progress.advance(task)
    return build_report(BenchRun(s, lat, pc, shared, time.perf_counter() - t_start, load_start))


def run_chunk(s: BenchSetup, cams: ChunkCameras, lat: LatentArm, pc: PointCloudArm, shared: SharedNumbers,
              first_latent: torch.Tensor, preceding: torch.Tensor | None) -> torch.Tensor:
    """Read -> (ground truth) -> generate -> decode -> write -> fidelity for one chunk, both arms.
    Returns the last written latent frame ``(1, C, h, w)`` (the next chunk's preceding latent)."""
    lread, pread = lat.read(cams), pc.read(cams)
    gt_rgb, gt_depth = _ground_truth(s, cams, lat, pc, shared)
    latents = _chunk_latents(s, cams, lread, gt_rgb, first_latent, preceding, shared)
    frames, decode_s = timed(lambda: s.codec.decode(latents))  # the output video; the point cloud reuses it
    shared.decode_s.append(decode_s)
    content = ChunkContent(latents, frames, decode_s)
    exact = gt_depth if s.exact_depth else None
    lat.write(lread, content, cams, exact)
    pc.write(pread, content, cams, exact)
    if s.fidelity:  # uncharged: decoded read vs the true render on known pixels
        assert gt_rgb is not None  # fidelity needs the synthetic scene: _ground_truth rendered it
        lat.fidelity(lread, gt_rgb, cams)
        pc.fidelity(pread, gt_rgb, cams)
    lat.finish(lread)
    pc.finish(pread)
    return latents[cams.written - 1 : cams.written]


def _ground_truth(s: BenchSetup, cams: ChunkCameras, lat: LatentArm, pc: PointCloudArm,
                  shared: SharedNumbers) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """True renders ``(L, 3, H, W)`` and depth ``(L, H, W)`` of the chunk frames fidelity, exact depth or
    ground-truth content need (zeros elsewhere); ``(None, None)`` when none does. Uncharged."""
    scene = s.data.scene  # None: not synthetic
    if scene is None or not (s.fidelity or s.exact_depth or s.content == "ground-truth"):
        return None, None
    L, H, W, device = cams.chunk.length, s.cfg.height, s.cfg.width, s.device
    if s.content == "ground-truth":
        need = list(range(L))
    else:
        wanted = set(cams.positions)
        if s.exact_depth:
            wanted |= set(lat.write_positions(cams)) | set(pc.write_positions(cams))
        need = sorted(wanted)
    (g_rgb, g_depth), sec = timed(lambda: scene.render(cams.video[need]))
    shared.gt_render_s += sec
    gt_rgb = torch.zeros(L, 3, H, W, device=device)
    gt_depth = torch.zeros(L, H, W, device=device)
    gt_rgb[need], gt_depth[need] = g_rgb.to(device), g_depth.to(device)
    return gt_rgb, gt_depth


def _chunk_latents(s: BenchSetup, cams: ChunkCameras, read: ArmRead, gt_rgb: torch.Tensor | None,
                   first_latent: torch.Tensor, preceding: torch.Tensor | None, shared: SharedNumbers) -> torch.Tensor:
    """The chunk's latents ``(T_lat, C, h, w)`` float32 (see the module docstring for what stands in
    for generation); the denoiser, or the preview fill, is timed once as the shared "denoise"."""
    from ..backends import ChunkRequest
    from ..backends.preview import PreviewBackend

    chunk = cams.chunk
    base = ChunkRequest(read_latents=read.latents, known=read.known, read_depth=read.depth, first_latent=first_latent,
                        preceding=preceding, chunk_index=chunk.index, num_frames=chunk.length)
    denoise_s = 0.0
    latents: torch.Tensor | None = None  # the first of the three sources below that applies
    backend = s.backend
    if backend is not None:
        req = replace(base, seed=s.cfg.seed, steps=s.cfg.steps, guidance=1.0)
        out, denoise_s = timed(lambda: backend.denoise(req))
        if s.content == "denoiser":
            latents = out
    if latents is None and s.content == "ground-truth":  # stands in for generation: uncharged
        truth = gt_rgb
        assert truth is not None  # ground-truth content is the synthetic scene's: _ground_truth rendered it
        encoded, sec = timed(lambda: s.codec.encode(truth))
        latents = encoded
        shared.content_encode_s += sec
    if latents is None:  # preview fill of the latent read (no codec, milliseconds): charged as denoise
        filled, sec = timed(lambda: PreviewBackend().denoise(base))
        latents = filled
        denoise_s += sec
    shared.denoise_s.append(denoise_s)
    return latents.float()
