"""``mirage eval recon``: generate every clip from its frame 0 along its cameras, score every frame.

Each clip runs through the same code as ``mirage generate`` (:func:`mirage_cli.pipeline.generate.start`
with a frozen :class:`~mirage_cli.pipeline.config.GenerateConfig`, then the chunk loop). Its inputs
are written to ``DIR/<clip>/inputs/`` (frame 0 as PNG, the cameras as a native trajectory with
absolute units, frame 0's depth as .npy when the clip has it) and its run directory is
``DIR/<clip>/run/``. The scored frames are the loop's uint8 frames (those ``video.mp4`` encodes;
the MP4's lossy compression is not part of the score).

Memory masks come from the memory read: before the loop, the memory holds only frame 0's lift,
and its known mask along every camera is the ``memory`` region; after the loop, the final memory's
read gives the known fraction and, decoded, the read fidelity on known cells.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import MirageError
from ..pipeline.config import GenerateConfig
from .metrics import clip_means, follow_masks, load_lpips, revisits, score_frames, to_float
from .sources import Clip

STRIP_FRAMES = 4
"""Comparison strips per clip: evenly spaced frames, plus the first revisit."""


def eval_recon(clips: list[Clip], base: GenerateConfig, out: Path, overwrite: bool = False,
               warn: Callable[[str], None] = print, progress: Callable[[str], None] | None = None) -> dict:
    """Run and score every clip; returns the ``eval.json`` document (also written, with eval.csv).

    Args:
        clips: from :func:`~mirage_cli.eval.sources.read_sources`.
        base: generate options shared by every clip (image, traj, depth, out, size are set per clip).
        out: the evaluation directory. overwrite: replace earlier runs in it.
    """
    from .report import write_outputs

    out.mkdir(parents=True, exist_ok=True)
    lpips_model, lpips_note = load_lpips()
    results = []
    for clip in clips:
        if progress:
            progress(clip.name)
        results.append(run_clip(clip, base, out / clip.name, overwrite, warn, lpips_model))
    doc = {
        "format": "mirage.eval",
        "version": 1,
        "config": {k: v for k, v in asdict(base).items() if k not in ("image", "traj", "depth", "out")},
        "protocol": {"frames": "1..N-1 (frame 0 is the input)", "psnr_ssim": "torchmetrics", "lpips": "lpips (alex)"
                     if lpips_model is not None else None, "psnr_cap_db": 100.0},
        "notes": [lpips_note] if lpips_note else [],
        "clips": results,
    }
    from .metrics import aggregate

    doc["aggregate"] = aggregate([r["means"] for r in results])
    write_outputs(doc, out)
    return doc


def clip_config(clip: Clip, base: GenerateConfig, clip_dir: Path, overwrite: bool) -> GenerateConfig:
    """Write the clip's inputs and return the generate options that run it (frame size = the clip's)."""
    from ..io import save_image
    from ..trajectories import Trajectory, save_trajectory

    inputs = clip_dir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    image = inputs / "frame0.png"
    save_image(image, to_float(clip.frames[:1])[0].float())
    traj = inputs / "trajectory.json"
    save_trajectory(Trajectory(clip.cameras, clip.fps, "native", scale="absolute", source=clip.source), traj)
    depth = None
    if clip.depth0 is not None:
        depth = inputs / "depth0.npy"
        np.save(depth, clip.depth0.numpy().astype(np.float32), allow_pickle=False)
    W, H = clip.size
    return replace(base, image=str(image), traj=str(traj), depth=str(depth) if depth else base.depth,
                   out=str(clip_dir / "run"), width=W, height=H, frames=None, fov=None, overwrite=overwrite)


def run_clip(clip: Clip, base: GenerateConfig, clip_dir: Path, overwrite: bool, warn, lpips_model=None) -> dict:
    """Generate one clip with the pipeline and score it. Returns its ``eval.json`` entry."""
    from ..pipeline.generate import start
    from ..pipeline.loop import run_loop

    t0 = time.perf_counter()
    cfg = clip_config(clip, base, clip_dir, overwrite)
    run = start(cfg, warn=warn, quiet=True)
    W, H = run.plan.size
    if (W, H) != clip.size:
        raise MirageError(f"{clip.name}: {clip.size[0]}x{clip.size[1]} frames are not a multiple of the backend's grid "
                          f"(the run would be {W}x{H}); crop the clip or choose --downscale")
    cams = run.plan.cams  # frame 0 = identity: the trajectory as the run uses it
    f = run.codec.spatial_factor
    _, known0, _ = run.state.memory.read(cams)  # only frame 0's lift so far
    run.state.video.kept = []  # score the frames themselves, before H.264
    run_loop(run, warn=warn)
    generated = np.stack(run.state.video.kept)
    _, known, read_lat = _final_read(run, cams)
    memory_mask = _to_pixels(known0, f)
    known_px = _to_pixels(known, f)
    follow = None
    if clip.depths is not None:
        follow = follow_masks(cams, clip.depths, to_float(clip.frames[:1])[0])
    from ..pipeline.plan import reference_depth

    unit = run.plan.reference_depth if clip.depth0 is None else reference_depth(clip.depth0)
    per_frame = score_frames(generated, clip.frames, memory_mask, known_px, read_lat, revisits(cams, unit), follow,
                             lpips_model)
    write_strips(clip_dir / "strips", generated, clip.frames, per_frame["revisit_of"])
    return {
        "name": clip.name, "source": clip.source, "synthetic": clip.synthetic, "frames": len(clip.frames),
        "size": [W, H], "run_dir": str(run.plan.out), "depth_source": run.plan.depth_source,
        "seconds": round(time.perf_counter() - t0, 3), "per_frame": per_frame, "means": clip_means(per_frame),
    }


def _final_read(run, cams):
    """The final memory read along every camera: ``(latents, known (N,h,w), decoded (N,3,H,W))``."""
    lat, known, _ = run.state.memory.read(cams)
    codec = run.codec
    with torch.no_grad():
        if codec.temporal_factor == 1:
            rgb = codec.decode(lat)
        else:  # a causal video VAE decodes a single latent frame to one frame
            rgb = torch.cat([codec.decode(lat[i:i + 1]) for i in range(len(lat))])
    return lat, known.cpu(), rgb.float().cpu().clamp(0, 1)


def _to_pixels(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Latent-cell mask ``(N, h, w)`` -> pixel mask ``(N, h*f, w*f)``."""
    return mask.cpu().repeat_interleave(factor, 1).repeat_interleave(factor, 2)


def strip_frames(n: int, revisit_of: list[int]) -> list[int]:
    """Which frames get a comparison strip: evenly spaced over 1..n-1, plus the first revisit."""
    picks = sorted({round(1 + i * (n - 2) / max(STRIP_FRAMES - 1, 1)) for i in range(STRIP_FRAMES)} if n > 2 else {n - 1})
    first_rev = next((t for t, r in enumerate(revisit_of) if r >= 0), None)
    return sorted(set(picks) | ({first_rev} if first_rev is not None else set()))


def write_strips(folder: Path, generated: np.ndarray, truth: np.ndarray, revisit_of: list[int]) -> list[Path]:
    """``generated | truth | |difference|`` PNGs for a few frames (difference amplified 4x, clipped)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in strip_frames(len(generated), revisit_of):
        diff = np.clip(np.abs(generated[t].astype(np.int16) - truth[t].astype(np.int16)) * 4, 0, 255).astype(np.uint8)
        strip = np.concatenate([generated[t], truth[t], diff], axis=1)
        p = folder / f"frame_{t:03d}.png"
        Image.fromarray(strip).save(p, format="PNG")
        paths.append(p)
    return paths
