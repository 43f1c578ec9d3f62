"""Resource bounds of a run, decided before anything is written.

- Frame size: the input is resized to fit ``--max-pixels`` (a note says so); an explicit
  ``--width/--height`` above it is refused (the user asked for exactly that size).
- Peak host memory: estimated from the frame size, the latent grid, the chunk length and the
  number of frames (the terms below); a run whose estimate exceeds ``RAM_FRACTION`` of the
  available RAM is refused with the estimate and the options that reduce it. The estimate is an
  upper-side approximation of the loop's own tensors (model weights are not counted: they live
  on the accelerator or are reported by their loaders).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import MirageError

MAX_PIXELS = 1_048_576  # default --max-pixels: 1 MP (720p and 1024x1024 pass; 1080p and larger inputs are resized)
RAM_FRACTION = 0.8  # refuse above this share of the available RAM: leave room for the OS and the models
POINT_BYTES_FIXED = 12 + 4 + 12 + 4  # xyz f32, footprint f32, axes 2x3 f16, chunk i32 (+ features)


def output_size(W0: int, H0: int, width: int | None, height: int | None) -> tuple[int, int]:
    """The frame size before rounding to the codec grid: ``--width/--height`` (one given: the other
    follows the aspect ratio), else the image's own ``(W0, H0)``."""
    if height and not width:
        width = max(1, round(W0 * height / H0))
    if width and not height:
        height = max(1, round(H0 * width / W0))
    return width or W0, height or H0


def fit_max_pixels(W0: int, H0: int, width: int | None, height: int | None, max_pixels: int) -> tuple[int, int] | None:
    """The ``(width, height)`` to use instead when the image's own size exceeds ``max_pixels``
    (aspect kept), None when it fits. Raises MirageError for an explicit size above it."""
    W, H = output_size(W0, H0, width, height)
    if W * H <= max_pixels:
        return None
    if width or height:
        raise MirageError(f"--width/--height: {W}x{H} = {W * H:,} pixels is above --max-pixels {max_pixels:,}; "
                          "choose a smaller size or raise --max-pixels")
    s = math.sqrt(max_pixels / (W * H))
    return max(1, int(W * s)), max(1, int(H * s))


@dataclass(frozen=True)
class PeakEstimate:
    """Estimated peak bytes of a run's host memory, by term."""

    image: int  # the decoded input at its file size (float32, decoded once; two copies while made channels-first)
    memory: int  # the latent memory's points (input lift + newly revealed content, bounded by the scene)
    read: int  # one chunk's read: latents, known, depth and the splat's working buffers
    chunk: int  # one chunk's latents and decoded frames (float32 with its temporaries, uint8)
    history: int  # every written latent frame, kept for reference selection
    pixels: int = 0  # spec pixel_history (Spatia): decoded frames kept, the RGB cloud rebuilt, its render

    @property
    def total(self) -> int:
        return self.image + self.memory + self.read + self.chunk + self.history + self.pixels


def estimate_peak(image_size: tuple[int, int], size: tuple[int, int], grid: tuple[int, int], channels: int,
                  feature_bytes: int, chunk_frames: int, temporal_factor: int, frames: int,
                  pixel_history: bool = False) -> PeakEstimate:
    """Args: image_size, size: ``(W, H)`` of the file and of the frames; grid: ``(h, w)`` latent
    cells; channels, feature_bytes: latent channels and bytes per stored feature; chunk_frames:
    frames per chunk; temporal_factor: frames per latent frame; frames: trajectory length;
    pixel_history: the backend keeps every decoded frame and, each chunk, rebuilds an RGB point cloud
    from every ``MAP_STRIDE``-th of them and renders it into the chunk's frames (Spatia's loop,
    :mod:`~mirage_cli.pipeline.pixelcontext`): bounded here before the voxel downsample."""
    cells = grid[0] * grid[1]
    latent_frames = chunk_frames // temporal_factor + 1
    W0, H0 = image_size
    W, H = size
    pixels = 0
    if pixel_history:
        from .pixelcontext import MAP_STRIDE  # deferred: torch (this module stays light)

        kept = frames * H * W * 3  # uint8 frames
        cloud = 2 * math.ceil(frames / MAP_STRIDE) * H * W * (POINT_BYTES_FIXED + 4)  # points + colours, while built
        render = 2 * chunk_frames * H * W * (3 * 4 + 1 + 4 + 8)  # rgb f32, known, depth f32, index i64 (+ temporaries)
        pixels = kept + cloud + render
    return PeakEstimate(
        image=2 * 3 * W0 * H0 * 4,
        memory=2 * cells * (POINT_BYTES_FIXED + channels * feature_bytes),  # ~ twice the input's view
        read=latent_frames * cells * (channels * 4 + 4 + 1 + 4) * 3,  # outputs + ~2x splat buffers
        # decoded float32 frames live with up to 3 float copies (the decoder's clamp, to_uint8's
        # clamp / scale temporaries), plus the uint8 frames
        chunk=latent_frames * channels * cells * 4 + chunk_frames * H * W * (4 * 3 * 4 + 3),
        history=(frames // temporal_factor + 1) * channels * cells * 4,
        pixels=pixels,
    )


def available_ram() -> int:
    """Bytes of RAM available to a new allocation now: psutil's available RAM, or less where the
    process's address-space limit (``ulimit -v``, RLIMIT_AS) leaves less room above what it maps."""
    import psutil

    available = int(psutil.virtual_memory().available)
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, AttributeError, OSError, ValueError):  # no such limit on this platform
        return available
    if limit == resource.RLIM_INFINITY:
        return available
    return max(0, min(available, limit - int(psutil.Process().memory_info().vms)))


def check_peak(est: PeakEstimate, available: int, frames: int | None = None) -> None:
    """Refuse a run whose estimate exceeds ``RAM_FRACTION`` of ``available`` bytes. ``frames``: the
    ``--frames`` given, named first when the run's length is the largest term (its history)."""
    if est.total <= RAM_FRACTION * available:
        return
    gb = 1024 ** 3
    by_frames = est.history + est.pixels  # what grows with the run's length
    if frames is not None and by_frames >= max(est.image, est.memory, est.read, est.chunk):
        raise MirageError(f"--frames {frames:,}: this run needs about {est.total / gb:.1f} GB of RAM "
                          f"({by_frames / gb:.1f} GB of it for the frames kept), {available / gb:.1f} GB are "
                          "available; lower --frames")
    raise MirageError(f"this run needs about {est.total / gb:.1f} GB of RAM, {available / gb:.1f} GB are available; "
                      "reduce --width/--height or --max-pixels, raise --downscale, or lower --chunk-frames/--frames")
