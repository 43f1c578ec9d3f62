"""The ``prepare_*`` steps of ``mirage generate``: image, depth, trajectory, codec and backend.

Each validates its input and raises a one-line MirageError; none writes anything, so every bad
input is reported before the run directory is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..backends import Backend
from ..backends.specs import BackendSpec, backend_spec
from ..errors import MirageError
from ..geometry.cameras import Cameras
from ..geometry.depth import check_depth_size, input_depth_source, prior_depth
from ..io import load_image
from ..models.codecs import Codec
from ..models.depth_model import load_depth_model as load
from ..trajectories import load_trajectory, resample
from ..trajectories.formats.geometry_npz import geometry_frame, is_npz
from ..trajectories.scale import apply_traj_scale
from .config import GenerateConfig
from .resources import output_size


def is_geometry(path: str | Path | None) -> bool:
    """Whether ``path`` is a geometry.npz (judged by content, as every trajectory format)."""
    return path is not None and Path(path).is_file() and is_npz(Path(path))


def with_geometry_image(cfg: GenerateConfig) -> GenerateConfig:
    """IMAGE omitted and ``--traj`` a geometry.npz: the npz supplies the input frame (and its depth)."""
    return replace(cfg, image=cfg.traj) if not cfg.image and is_geometry(cfg.traj) else cfg


def load_input_image(path: Path, start_frame: int = 0) -> torch.Tensor:
    """The input image ``(3, H, W)`` in [0, 1]: an image file, or frame ``start_frame`` of a geometry.npz."""
    if is_geometry(path):
        return geometry_frame(path, start_frame)[0]
    return load_image(path)


def prepare_image(path: Path, height: int | None, width: int | None, multiple: int, start_frame: int = 0,
                  loaded: torch.Tensor | None = None) -> torch.Tensor:
    """Load the input image and bring it to ``height x width`` (default: its own size; one of the
    two given: the other follows the aspect ratio), rounded down to a multiple of ``multiple`` (the
    codec's grid: 16 for Wan2.1, 32 for Wan2.2, the preview's downscale). Returns ``(3, H, W)`` in [0, 1].

    ``loaded``: the image already read from ``path`` (:func:`load_input_image`), so that a huge
    input is decoded to float32 once, not twice (an 8000x6000 photo is 576 MB as float32)."""
    image = load_input_image(path, start_frame) if loaded is None else loaded
    H0, W0 = image.shape[-2:]
    width, height = output_size(W0, H0, width, height)
    H = height // multiple * multiple
    W = width // multiple * multiple
    if H < multiple or W < multiple:
        raise MirageError(f"{path}: a {width}x{height} frame is smaller than one {multiple}x{multiple} "
                          "grid cell; use a larger --height/--width or a smaller --downscale")
    if (H, W) != (H0, W0):
        image = F.interpolate(image[None], size=(H, W), mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)
    return image


def grid_multiple(spec: BackendSpec, codec: Codec) -> int:
    """What the frame size must be a multiple of: for Wan the VAE cell times the transformer's 2x2
    patch (16 for Wan2.1's 8x VAE, 32 for the Wan2.2 VAE of the mirage backend), the codec's cell
    for the preview (``spec.patch`` says which)."""
    return spec.grid_multiple(codec.spatial_factor)


NO_DEPTH = "no depth given (no --depth, no sidecar, no cached depth model)"


def real_depth_hint(cfg: GenerateConfig) -> str:
    return f"for real depth run `mirage models download {cfg.depth_model}` or pass --depth FILE"


def prepare_depth(cfg: GenerateConfig, image_path: Path, image: torch.Tensor, orig_size: tuple[int, int], fov_y: float,
                  device: torch.device, warn: Callable[[str], None], show_progress: bool = True, loaders: Loaders | None = None):
    """Depth of the input image at its (resized) size.

    Args:
        image: ``(3, H, W)`` the resized input. orig_size: ``(H0, W0)`` of the file (depth files
            must match it). fov_y: vertical fov of frame 0 in degrees (for the prior).

    Returns:
        ``(depth (H, W) float32, description, depth model or None)``; the model, when one was
        used, also gives depth to the new content of written chunks.
    """
    H, W = image.shape[-2:]
    model = None
    if cfg.depth is None and is_geometry(image_path):
        # the reference's data pipeline: depths[K] (metric), invalid where masks[K] is False
        _, depth, mask = geometry_frame(image_path, cfg.start_frame)
        if mask is not None:
            depth = torch.where(mask, depth, torch.zeros_like(depth))
        if not bool((depth > 0).any()):
            raise MirageError(f"{image_path}: depths[{cfg.start_frame}]: no valid depth (all <= 0 or masked)")
        return F.interpolate(depth[None, None], size=(H, W), mode="nearest-exact")[0, 0].float(), f"geometry:{image_path}", None
    doubts: list[str] = []  # a depth file that looks like disparity: said only once it is known to fit
    kind, loaded = input_depth_source(cfg.depth, image_path, cfg.depth_scale, doubts.append)
    if loaded is not None:  # kind "file:PATH" / "sidecar:PATH" (the only kinds that come with a depth)
        check_depth_size(loaded, orig_size[0], orig_size[1], kind.split(":", 1)[1])
        for doubt in doubts:
            warn(doubt)
        depth = loaded
    elif kind in ("model", "auto"):
        model = (loaders or Loaders()).depth_model(cfg.depth_model, device=str(device), required=(kind == "model"),
                                                   progress=show_progress)
        if model is not None:
            depth, dkind = model.predict(image)
            kind = f"model:{cfg.depth_model}:{dkind}"
        else:
            kind = "prior"
            if not cfg.memory:  # with --memory the memory supplies the scene: said where the input is lifted
                warn(f"{NO_DEPTH}: using the geometric prior (ground plane + far wall); {real_depth_hint(cfg)}")
    if kind == "prior":
        depth = prior_depth(H, W, fov_y)
    if tuple(depth.shape) != (H, W):
        depth = F.interpolate(depth[None, None], size=(H, W), mode="nearest-exact")[0, 0]
    return depth.float(), kind, model


def resume_depth_model(cfg: GenerateConfig, depth_source: str, device: torch.device, show_progress: bool = True,
                       loaders: Loaders | None = None):
    """On ``--resume`` the input depth is no longer needed (the dumps hold its lift), but a run whose
    depth came from a model keeps using that model for the new content of each chunk."""
    if not depth_source.startswith("model:"):
        return None
    return (loaders or Loaders()).depth_model(cfg.depth_model, device=str(device), required=True, progress=show_progress)


def prepare_trajectory(cfg: GenerateConfig, size: tuple[int, int], warn: Callable[[str], None]):
    """Load (and with ``--frames`` resample) the trajectory, translations times ``--traj-scale``;
    raises MirageError on any problem.

    Warns with the reader's notes (frames reordered, fps derived) and when the file's image aspect
    differs from the ``(W, H)`` frames (how its intrinsics are fitted then matters: ``--intrinsics``).
    """
    traj = apply_traj_scale(load_trajectory(cfg.traj), cfg.traj_scale)
    if cfg.start_frame:  # the input image is frame K; poses are re-expressed relative to it later
        if cfg.start_frame >= len(traj):  # one frame may remain, as --frames 1 allows a 1-frame video
            raise MirageError(f"--start-frame {cfg.start_frame}: the trajectory has {len(traj)} frames "
                              f"(0 to {len(traj) - 1})")
        traj = replace(traj, cameras=traj.cameras[cfg.start_frame:])
    for note in traj.notes:
        warn(note)
    aspect = traj.aspect_warning(*size, cfg.intrinsics)
    if aspect and cfg.fov is None:  # --fov replaces the file's intrinsics altogether
        warn(aspect)
    return resample(traj, cfg.frames) if cfg.frames is not None else traj


def trajectory_cameras(traj, fov: float | None, width: int, height: int, intrinsics: str = "crop") -> Cameras:
    """``(N)`` cameras at the image size, poses relative to frame 0, the file's intrinsics fitted to
    the image (``--intrinsics``), ``--fov`` applied; translations still in the trajectory's units
    (``traj.scale == "relative"``: reference depths)."""
    cams = traj.cameras_for(width, height, intrinsics)
    return Cameras.from_fov(cams.c2w, fov, width, height) if fov is not None else cams


def prepare_codec_backend(cfg: GenerateConfig, show_progress: bool = True) -> tuple[Codec, Backend]:
    """Build the codec and the backend named by ``--backend`` (``cfg.downscale`` already chosen),
    with the loader its spec names."""
    return backend_spec(cfg.backend).load(cfg, show_progress)


def load_depth_model(*args, **kwargs):
    """``models.depth_model.load_depth_model``, imported when first used (transformers is heavy)."""
    return load(*args, **kwargs)


@dataclass(frozen=True)
class Loaders:
    """How a run gets its models. The defaults load them; ``mirage batch`` workers pass caching
    loaders (same signatures) so that a worker loads each model once, not once per job."""

    codec_backend: Callable[..., tuple[Codec, Backend]] = prepare_codec_backend  # (cfg, show_progress=)
    depth_model: Callable = load_depth_model  # (ref, device=, required=, progress=) -> DepthModel | None


def check_memory_fits(memory, codec: Codec, cfg: GenerateConfig) -> None:
    """A ``--memory`` file must hold latents of the codec this run uses."""
    if memory.channels != codec.channels or memory.spatial_factor != codec.spatial_factor or memory.codec != codec.name:
        raise MirageError(
            f"{cfg.memory}: memory holds {memory.codec} latents ({memory.channels} channels at 1/{memory.spatial_factor} "
            f"scale), but the {cfg.backend} backend uses {codec.name} ({codec.channels} at 1/{codec.spatial_factor})"
        )
