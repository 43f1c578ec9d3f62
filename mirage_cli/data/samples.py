"""One training sample of the paper's model from one annotated clip window.

As the reference (microsoft/LatentSpatialMemory at b2cd738, ``data_process/``: clip sampling, the
memory projection, reference frames, VAE encoding); the deviations are listed in docs/training-data.md.

Given an :class:`~.clips.AnnotatedClip` (81 frames at 16 fps, cropped to ``W x H``):

- **Indices** (:func:`sample_indices`): ``t0`` uniform in ``[P, N - T]`` (``[8, 48]``), preceding frames
  ``t0-8 .. t0-1``, target frames ``t0 .. t0+32``, candidates = every other frame at least 2 frames from
  any of them, kept with stride 2. Drawn from a seeded RNG (the reference's is not seeded).
- **References** (:func:`choose_references`): voxel IoU of full-resolution occupancies, the reference's
  training rule (:func:`~mirage_cli.pipeline.covisibility.frame_iou_references`, voxel 0.1, IoU >= 0.04,
  at most 8, highest first); dynamic pixels are left out.
- **Latents**: Wan2.2 VAE (:class:`~mirage_cli.models.wan_vae.WanVAECodec`, posterior mode, normalised):
  target 33 frames -> 9 latents; preceding 8 frames -> 2 latents (the causal VAE encodes frame 0 alone,
  then groups of 4, and drops the 3 trailing frames, as the reference); each reference frame alone.
  Rounded to float16, the dtype mirage's memory and run directories store latents in.
- **Memory read** (:func:`memory_read`): target frame 0's latent lifted into mirage's own
  :class:`~mirage_cli.memory.latent.LatentMemory` with its depth and camera, configured as
  ``--backend mirage`` configures it at inference (splat mode from the backend's defaults, default
  intrinsics / depth reduction / patch settings), then read with :meth:`LatentMemory.read` at the
  cameras of the 9 target latent frames (frames ``t0 + 4j``) and the 2 preceding latent frames
  (``t0-8``, ``t0-4``). Poses are made relative to ``t0`` (frame 0 = identity), as at inference.
  Dynamic cells (any dynamic pixel in the cell) and cells without depth are not lifted.
- **Text**: the caption's UMT5 embedding (``(L, D)``, the prompt's tokens only).

Tensors (``TENSOR_KEYS``; ``C`` = 48, ``h, w = H/16, W/16``):

===================  ======================  =========  ===============================================
key                  shape                   dtype      meaning
===================  ======================  =========  ===============================================
``target``           ``(9, C, h, w)``        float16    latents of the 33 target frames
``target_read``      ``(9, C, h, w)``        float16    memory read at the 9 target latent frames, 0 = unknown
``target_known``     ``(9, h, w)``           bool       cells the read covered
``preceding``        ``(2, C, h, w)``        float16    latents of the 8 preceding frames
``preceding_read``   ``(2, C, h, w)``        float16    memory read at frames t0-8, t0-4
``preceding_known``  ``(2, h, w)``           bool
``reference``        ``(R, C, h, w)``        float16    reference frames' latents (each encoded alone), R <= 8
``target_c2w``       ``(9, 4, 4)``           float32    cameras of the target latent frames (relative to t0)
``preceding_c2w``    ``(2, 4, 4)``           float32
``reference_c2w``    ``(R, 4, 4)``           float32
``intrinsics``       ``(33 + 8 + R, 4)``     float32    normalised fx/W fy/H cx/W cy/H of target, preceding,
                                                        reference frames (in that order)
``text``             ``(L, D)``              bfloat16   UMT5 embedding of the caption's L tokens (optional)
===================  ======================  =========  ===============================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..backends.mirage import MirageBackend
from ..errors import MirageError
from ..geometry.cameras import Cameras, rigid_inverse
from ..memory.latent import INPUT_CHUNK, LatentMemory
from ..pipeline.covisibility import depth_voxel_keys, frame_iou_references
from .clips import AnnotatedClip, window_rng

TENSOR_KEYS = ("target", "target_read", "target_known", "preceding", "preceding_read", "preceding_known",
               "reference", "target_c2w", "preceding_c2w", "reference_c2w", "intrinsics", "text")
LATENT_DTYPE = torch.float16
TEXT_DTYPE = torch.bfloat16


@dataclass(frozen=True)
class SampleSpec:
    """The sample geometry (defaults: the reference's clip sampling and reference frames)."""

    target: int = 33
    preceding: int = 8
    min_gap: int = 2
    candidate_stride: int = 2
    max_references: int = 8
    voxel: float = 0.1
    iou_threshold: float = 0.04
    max_dynamic: float = 0.95


@dataclass(frozen=True)
class SampleIndices:
    """Frames of one sample, as indices into the clip window (0..N-1)."""

    t0: int
    preceding: tuple[int, ...]
    target: tuple[int, ...]
    candidates: tuple[int, ...]
    target_read: tuple[int, ...]  # the camera of each target latent frame: t0 + 4j
    preceding_read: tuple[int, ...]  # the camera of each preceding latent frame: t0 - 8, t0 - 4


@dataclass
class Sample:
    """One built sample: ``key`` (unique in the dataset, no dots), tensors (``TENSOR_KEYS``), metadata, caption."""

    key: str
    tensors: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)
    caption: str = ""


def sample_indices(n: int, spec: SampleSpec, rng: np.random.Generator, temporal_factor: int = 4) -> SampleIndices:
    """Draw ``t0`` uniformly in ``[P, n - T]`` and derive every index set (see the module docstring)."""
    P, T = spec.preceding, spec.target
    if n < P + T:
        raise MirageError(f"a clip of {n} frames is shorter than preceding + target = {P + T}")
    t0 = int(rng.integers(P, n - T + 1))
    prec = tuple(range(t0 - P, t0))
    tgt = tuple(range(t0, t0 + T))
    used = prec + tgt
    cand = [c for c in range(n) if min(abs(c - u) for u in used) >= spec.min_gap][::spec.candidate_stride]
    tf = temporal_factor
    return SampleIndices(t0, prec, tgt, tuple(cand), tuple(tgt[0] + tf * j for j in range(1 + (T - 1) // tf)),
                         tuple(prec[0] + tf * j for j in range(1 + (P - 1) // tf)))


def latent_cells(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """``(H, W)`` bool pixels -> ``(H/f, W/f)`` bool cells holding any of them."""
    H, W = mask.shape
    return mask.reshape(H // factor, factor, W // factor, factor).any(dim=3).any(dim=1)


def relative_cameras(clip: AnnotatedClip, t0: int):
    """Every frame's :class:`~mirage_cli.geometry.cameras.Cameras`, poses relative to frame ``t0``."""
    c2w = torch.from_numpy(clip.c2w)
    rel = rigid_inverse(c2w[t0]) @ c2w
    H, W = clip.frames.shape[1:3]
    K = torch.from_numpy(clip.K)
    intr = K / torch.tensor([W, H, W, H], dtype=torch.float64)
    return Cameras(rel, intr, W, H)


def inference_splat() -> str:
    """The splat mode ``--backend mirage`` reads its memory with (its spec's default)."""
    return MirageBackend.spec.defaults.splat


def memory_read(latent0: torch.Tensor, depth0: torch.Tensor, cells0: torch.Tensor, cams, lift: int,
                frames: list[int], codec_name: str, spatial_factor: int):
    """Lift ``latent0 (C, h, w)`` with pixel depth ``depth0 (H, W)`` at camera ``cams[lift]`` (only the
    cells ``cells0 (h, w)``) into a fresh :class:`LatentMemory` set up as at inference, and read it
    at ``cams[frames]``. Returns ``(latents (F, C, h, w), known (F, h, w), memory)``."""
    memory = LatentMemory(latent0.shape[0], spatial_factor, codec=codec_name, splat=inference_splat())
    memory.lift(latent0, depth0, cams[lift], chunk=INPUT_CHUNK, mask=cells0)
    latents, known, _ = memory.read(cams[frames])
    return latents * known[:, None].to(latents.dtype), known, memory


def choose_references(clip: AnnotatedClip, idx: SampleIndices, spec: SampleSpec) -> tuple[list[int], list[float]]:
    """The reference frames of a sample and their IoUs (see the module docstring)."""
    if spec.max_references <= 0 or not idx.candidates:
        return [], []
    c2w = torch.from_numpy(clip.c2w)
    K = torch.from_numpy(clip.K)
    keys = {}
    for f in list(idx.target) + list(idx.candidates):
        d = torch.from_numpy(clip.depth[f])
        valid = d > 0
        if clip.dynamic is not None:
            valid &= ~torch.from_numpy(clip.dynamic[f])
        Kf = torch.tensor([[K[f, 0], 0, K[f, 2]], [0, K[f, 1], K[f, 3]], [0, 0, 1]], dtype=torch.float64)
        keys[f] = depth_voxel_keys(d, c2w[f], Kf, valid, spec.voxel)
    return frame_iou_references(keys, list(idx.target), list(idx.candidates), spec.max_references, spec.iou_threshold)


def build_samples(clip: AnnotatedClip, models, spec: SampleSpec, count: int, seed: int,
                  caption: str, caption_source: str, text: bool = True,
                  captioner: Callable[[torch.Tensor], tuple[str, str]] | None = None) -> list[Sample]:
    """``count`` samples of one clip window (each its own ``t0``; see the module docstring).

    ``captioner``: when given, each sample's caption is ``captioner(target frames (33, 3, H, W) in [0, 1])``
    -> ``(caption, source)`` instead of ``caption`` (the reference captions the target frames).

    Raises:
        MirageError: the clip fails the reference's quality filter (a frame >= 95 % dynamic) or its
            size does not fit the VAE.
    """
    from ..pipeline.engine import round_latents

    codec = models.codec
    N, H, W = clip.frames.shape[:3]
    sf = codec.spatial_factor
    if H % (2 * sf) or W % (2 * sf):
        raise MirageError(f"--size {W}x{H}: must be a multiple of {2 * sf} pixels a side (VAE {sf}x, patch 2)")
    if clip.dynamic is not None:
        frac = clip.dynamic.reshape(N, -1).mean(1)
        if frac.max() >= spec.max_dynamic:
            f = int(frac.argmax())
            raise MirageError(f"{clip.ref.folder}: mask: frame {clip.window.indices[f]} is {100 * frac[f]:.0f} % dynamic "
                              f"(the reference drops clips with a frame >= {100 * spec.max_dynamic:.0f} %)")
    rng = window_rng(seed, clip.ref.name, "sample")
    frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
    out = []
    for k in range(count):
        idx = sample_indices(N, spec, rng, codec.temporal_factor)
        cams = relative_cameras(clip, idx.t0)
        refs, ious = choose_references(clip, idx, spec)
        if captioner is not None:
            caption, caption_source = captioner(frames[list(idx.target)])
        target = round_latents(codec.encode(frames[list(idx.target)]))
        prec = round_latents(codec.encode(frames[list(idx.preceding)]))
        reference = (torch.cat([round_latents(codec.encode(frames[r:r + 1])) for r in refs]) if refs
                     else target.new_zeros(0, *target.shape[1:]))
        depth0 = torch.from_numpy(clip.depth[idx.t0]).clone()
        cells = latent_cells(depth0 > 0, sf)
        if clip.dynamic is not None:
            dyn = torch.from_numpy(clip.dynamic[idx.t0])
            depth0[dyn] = 0
            cells &= ~latent_cells(dyn, sf)
        reads = list(idx.target_read) + list(idx.preceding_read)
        read, known, _ = memory_read(target[0], depth0, cells, cams, idx.t0, reads, codec.name, sf)
        nt = len(idx.target_read)
        all_frames = list(idx.target) + list(idx.preceding) + refs
        tensors = {
            "target": target.to(LATENT_DTYPE), "target_read": read[:nt].to(LATENT_DTYPE), "target_known": known[:nt],
            "preceding": prec.to(LATENT_DTYPE), "preceding_read": read[nt:].to(LATENT_DTYPE),
            "preceding_known": known[nt:], "reference": reference.to(LATENT_DTYPE),
            "target_c2w": cams.c2w[list(idx.target_read)].float(), "preceding_c2w": cams.c2w[list(idx.preceding_read)].float(),
            "reference_c2w": cams.c2w[refs].float() if refs else torch.zeros(0, 4, 4),
            "intrinsics": cams.intrinsics[all_frames].float(),
        }
        if text and models.text is not None:
            tensors["text"] = models.text.embed(caption).to(TEXT_DTYPE)
        src = clip.window.indices
        meta = {
            "clip": clip.ref.name, "folder": clip.ref.folder, "layout": clip.ref.layout, "sample": k,
            "size": [W, H], "latent_grid": [H // sf, W // sf], "fps": clip.window.fps,
            "window": {"source_frames": [src[0], src[-1]], "crop": [clip.window.x0, clip.window.y0]},
            "t0": idx.t0, "preceding": list(idx.preceding), "target": list(idx.target),
            "candidates": list(idx.candidates), "references": refs, "reference_iou": [round(x, 6) for x in ious],
            "target_read_frames": list(idx.target_read), "preceding_read_frames": list(idx.preceding_read),
            "source_frames": {"t0": src[idx.t0], "references": [src[r] for r in refs]},
            "known_fraction": [round(float(x), 6) for x in known.float().mean(dim=(1, 2))],
            "caption_source": caption_source, "text_tokens": int(tensors["text"].shape[0]) if "text" in tensors else None,
            "memory": {"splat": inference_splat(), "lifted_frame": idx.t0, "codec": codec.name},
            "seed": seed,
        }
        key = f"{clip.ref.name}-{k:03d}".replace(".", "_")
        out.append(Sample(key, tensors, meta, caption))
    return out
