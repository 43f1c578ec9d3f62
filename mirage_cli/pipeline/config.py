"""The options of ``mirage generate`` (frozen, as the user gave them) and the run plan derived from them.

``GenerateConfig`` is what the CLI fills and what ``run.json`` stores under ``config`` (with the
derived choices -- preview downscale, chunk length, absolute output directory -- filled in, so a
``--resume`` repeats them). ``RunPlan`` holds everything else decided before the loop starts:
output directory, frame size, latent grid, cameras in scene units, chunk plan. Neither changes
while the loop runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..backends.specs import BACKEND_NAMES, BACKENDS, DEFAULT_BACKEND, backend_spec
from ..errors import MirageError
from ..geometry.modes import INTRINSICS_MODES
from ..memory.modes import LATENT_POLICIES as WRITE_POLICIES
from ..memory.modes import SPLAT_MODES
from ..trajectories.posestring import is_pose_string, parse_pose_string
from .resources import MAX_PIXELS

if TYPE_CHECKING:  # no torch at import: the option checks run before torch's import (seconds)
    import torch

    from ..geometry.cameras import Cameras
    from .plan import Chunk

DTYPES = ("auto", "fp32", "bf16", "fp16")
FRAME_SIDES = (16, 8192)  # px: the allowed frame width/height (--width/--height and an image's own size)
CACHE_DUMPS = ("none", "final", "chunks")  # final (default): incremental checkpoint + final dump; chunks: every dump
# Largest automatic preview grid. Measured (docs/performance.md "Threads", "Preview resolution"): the 832x480
# example at 1/1 (399,360 cells) takes about twice the seconds of 1/2 and misses the ~10 s goal on an
# idle 2-core machine; 1024x768 at 1/2 (196,608 cells) stays close to it, where the former cap
# (131,072) sent it to a visibly blurry 1/4.
PREVIEW_MAX_CELLS = 204_800


@dataclass(frozen=True)
class GenerateConfig:
    """Every option of ``mirage generate`` (the CLI fills it; run.json stores it for --resume)."""

    image: str | None = None
    traj: str | None = None
    out: str | None = None
    backend: str = DEFAULT_BACKEND
    model: str | None = None
    depth: str | None = None  # FILE | "prior" | "model" | None (sidecar, then model if cached, then prior)
    depth_scale: float | None = None
    depth_model: str = "depth-anything-v2-small"
    frames: int | None = None
    fps: float | None = None
    height: int | None = None
    width: int | None = None
    fov: float | None = None
    intrinsics: str = "crop"  # how a file's intrinsics meet an image of another aspect (geometry/intrinsics.py)
    seed: int = 0
    steps: int | None = None  # None = the backend's default (its spec's); run.json stores the effective value
    guidance: float | None = None
    shift: float | None = None
    prompt: str = ""
    # pipeline/prompts.py: prompts[i] from frame prompt_starts[i] on (eval worldscore's scenes), or without
    # prompt_starts one prompt per chunk, the last repeating (--prompt-file); None: `prompt` throughout
    prompts: list[str] | None = None
    prompt_starts: list[int] | None = None
    negative_prompt: str = ""
    conditioning: str | None = None  # a backend's --conditioning (spatia: rgb | latent); None = its default
    device: str = "auto"
    dtype: str = "auto"
    chunk_frames: int | None = None  # None = 9 for a per-frame codec (preview), 49 for Wan2.1, 33 for mirage
    downscale: int | None = None  # preview grid = image / N; None = auto (see preview_downscale)
    cache_dump: str = "final"  # the newest dump while running (what --resume needs) + final.safetensors
    write_policy: str = "new"
    # the memory read: "patch" (no cracks) | "point" (nearest cell, as the reference); None = the backend's default
    splat: str | None = None
    memory: str | None = None
    references: int | None = None  # None = the backend's default
    preceding_frames: int = 2  # mirage: latents before the overlap frame appended to each chunk (0 allowed)
    start_frame: int = 0  # first trajectory frame used (the input image is this frame); geometry.npz: also depths[K]
    cpu_offload: bool = False
    overwrite: bool = False
    max_pixels: int = MAX_PIXELS  # larger inputs are resized to fit (resources.py)
    keep_latents: bool = False  # keep chunks/*.latents.safetensors of a finished run
    look_at_depth: float | None = None  # presets by name: look-at depth in reference depths (None: from the input depth)
    traj_scale: float | None = None  # translations x this (trajectories/scale.py checks it, before any model loads)


@dataclass(frozen=True)
class RunSettings:
    """The sampling and memory options of a run once resolved: every default filled from the
    backend's spec, typed without None (``GenerateConfig`` keeps what run.json stores)."""

    steps: int
    guidance: float
    shift: float
    references: int
    splat: str
    chunk_frames: int

    @classmethod
    def of(cls, cfg: GenerateConfig) -> RunSettings:
        """``cfg``'s values where given, the spec's defaults elsewhere."""
        spec = backend_spec(cfg.backend)
        d = spec.defaults

        def pick(value, default):
            return default if value is None else value

        return cls(steps=pick(cfg.steps, d.steps), guidance=pick(cfg.guidance, d.guidance), shift=pick(cfg.shift, d.shift),
                   references=pick(cfg.references, d.references), splat=pick(cfg.splat, d.splat),
                   chunk_frames=pick(cfg.chunk_frames, spec.chunk_frames))


@dataclass(frozen=True)
class RunPlan:
    """What a run is, decided before its first chunk (the same for a new and a resumed run).

    Attributes:
        config: the options with the derived choices filled in (``out`` absolute, ``downscale``
            for the preview, ``chunk_frames``); stored in run.json.
        settings: the resolved sampling and memory options (:class:`RunSettings`, no None).
        out: the run directory as given (output paths in run.json are spelled with it).
        image_path, image_hash: the input image (absolute) and its sha256.
        size: ``(width, height)`` of the frames in pixels. grid: ``(h, w)`` latent cells.
        cams: ``(N)`` cameras of the whole trajectory in scene units (relative trajectories scaled).
        fps: frames per second of the outputs. chunks: the chunk plan (``plan_chunks``).
        reference_depth: median input depth (unit of relative trajectories).
        depth_source: where the input depth came from (``sidecar:...``, ``model:...``, ``prior``...).
        device: where the memory and the loop's tensors live.
    """

    config: GenerateConfig
    settings: RunSettings
    out: Path
    image_path: Path
    image_hash: str
    size: tuple[int, int]
    grid: tuple[int, int]
    cams: Cameras
    fps: float
    chunks: tuple[Chunk, ...]
    reference_depth: float
    depth_source: str
    device: torch.device


def check_config(cfg: GenerateConfig) -> None:
    """Reject bad options with one line each, before anything is read or written (no torch needed)."""
    def bad(opt: str, why: str):
        raise MirageError(f"{opt}: {why}")

    if not cfg.image:
        bad("generate", "an IMAGE is required")
    if not cfg.traj:
        bad("--traj", "is required (a trajectory file or a preset name, see `mirage traj list`)")
    if cfg.backend not in BACKENDS:
        bad("--backend", f"unknown backend '{cfg.backend}' (choose {', '.join(BACKEND_NAMES)})")
    if cfg.cache_dump not in CACHE_DUMPS:
        bad("--cache-dump", f"must be none, final or chunks (got '{cfg.cache_dump}')")
    if cfg.write_policy not in WRITE_POLICIES:
        bad("--write-policy", f"must be one of {', '.join(WRITE_POLICIES)} (got '{cfg.write_policy}')")
    if cfg.splat is not None and cfg.splat not in SPLAT_MODES:
        bad("--splat", f"must be one of {', '.join(SPLAT_MODES)} (got '{cfg.splat}')")
    if cfg.dtype not in DTYPES:
        bad("--dtype", f"must be one of {', '.join(DTYPES)} (got '{cfg.dtype}')")
    for opt, v, low in (("--downscale", cfg.downscale, 1), ("--chunk-frames", cfg.chunk_frames, 2), ("--frames", cfg.frames, 1)):
        if v is not None and v < low:
            bad(opt, f"must be >= {low} (got {v})")
    if cfg.fps is not None and not (math.isfinite(cfg.fps) and 0 < cfg.fps <= 1000):
        bad("--fps", f"must be a number in (0, 1000] (got {cfg.fps})")
    for opt, v in (("--height", cfg.height), ("--width", cfg.width)):
        if v is not None and not FRAME_SIDES[0] <= v <= FRAME_SIDES[1]:
            bad(opt, f"must be between {FRAME_SIDES[0]} and {FRAME_SIDES[1]} pixels (got {v})")
    if cfg.intrinsics not in INTRINSICS_MODES:
        bad("--intrinsics", f"must be {', '.join(INTRINSICS_MODES)} (got '{cfg.intrinsics}')")
    if cfg.fov is not None and not (math.isfinite(cfg.fov) and 1.0 <= cfg.fov <= 179.0):
        bad("--fov", f"must be between 1 and 179 degrees (got {cfg.fov})")
    if cfg.steps is not None and cfg.steps < 1:
        bad("--steps", f"must be >= 1 (got {cfg.steps})")
    if cfg.guidance is not None and not (math.isfinite(cfg.guidance) and cfg.guidance >= 1.0):
        bad("--guidance", f"must be >= 1 (1 disables guidance; got {cfg.guidance})")
    if cfg.shift is not None and not (math.isfinite(cfg.shift) and cfg.shift > 0):
        bad("--shift", f"must be > 0 (got {cfg.shift})")
    for opt, v in (("--references", cfg.references), ("--preceding-frames", cfg.preceding_frames),
                   ("--start-frame", cfg.start_frame)):
        if v is not None and v < 0:
            bad(opt, f"must be >= 0 (got {v})")
    spec = BACKENDS[cfg.backend]
    if cfg.conditioning is not None and spec.conditionings and cfg.conditioning not in spec.conditionings:
        bad("--conditioning", f"must be {' or '.join(spec.conditionings)} for --backend {cfg.backend} "
            f"(got '{cfg.conditioning}')")
    if cfg.prompts is not None and not cfg.prompts:
        bad("--prompt-file", "holds no prompt (one prompt per non-empty line, one line per chunk)")
    if BACKENDS[cfg.backend].model_required and not cfg.model:
        bad("--model", BACKENDS[cfg.backend].missing_model)
    if cfg.look_at_depth is not None and not (math.isfinite(cfg.look_at_depth) and cfg.look_at_depth > 0):
        bad("--look-at-depth", f"must be > 0 (got {cfg.look_at_depth})")
    if cfg.depth_scale is not None and not (math.isfinite(cfg.depth_scale) and cfg.depth_scale > 0):
        bad("--depth-scale", f"must be > 0 (got {cfg.depth_scale})")
    if cfg.max_pixels < 256:
        bad("--max-pixels", f"must be >= 256 (got {cfg.max_pixels})")


def unused_options(cfg: GenerateConfig) -> list[str]:
    """The options given (different from their default) that do nothing with this configuration."""
    defaults = GenerateConfig()
    ignored = backend_spec(cfg.backend).ignores_options()
    unused = [opt for name, opt in ignored.items() if getattr(cfg, name) != getattr(defaults, name)]
    if cfg.depth_scale is not None and cfg.depth in ("prior", "model"):
        unused.append("--depth-scale")  # scales depth *files* only
    if cfg.depth_model != defaults.depth_model and cfg.depth not in (None, "model"):
        unused.append("--depth-model")  # a depth file or the prior was chosen
    return unused


def with_backend_defaults(cfg: GenerateConfig) -> GenerateConfig:
    """Fill the options the user left out (None) with the backend's defaults (its spec's
    :class:`~mirage_cli.backends.specs.SamplingDefaults`), so run.json records the effective values
    and a ``--resume`` repeats them."""
    spec = backend_spec(cfg.backend)
    d = spec.defaults
    cfg = replace(cfg, **{k: getattr(d, k) for k in ("steps", "guidance", "shift", "references", "splat")
                          if getattr(cfg, k) is None})
    if cfg.conditioning is None and spec.conditionings:
        cfg = replace(cfg, conditioning=spec.conditionings[0])
    return cfg


def read_prompt_file(path: str | Path) -> tuple[str, ...]:
    """The prompts of a ``--prompt-file``: one per non-empty line, stripped (Spatia's ``--prompt_path``:
    one line per round; the last line repeats when there are fewer lines than chunks, extra lines are
    unused). Raises MirageError for an unreadable or empty file."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MirageError(f"{p}: cannot read the prompt file ({e})") from None
    prompts = tuple(x.strip() for x in lines if x.strip())
    if not prompts:
        raise MirageError(f"{p}: the prompt file holds no prompt (one prompt per non-empty line)")
    return prompts


def recorded_config(cfg: GenerateConfig, given: GenerateConfig) -> GenerateConfig:
    """``cfg`` as run.json stores it: for a backend that does not sample (the preview), the sampling
    options the user did not give (None in ``given``) stay null, not the diffusion defaults it never
    used (given ones are kept as given, so a caller can compare them); :func:`with_backend_defaults`
    fills them again on ``--resume``, so the run repeats exactly."""
    if backend_spec(cfg.backend).samples:
        return cfg
    return replace(cfg, steps=cfg.steps if given.steps is not None else None,
                   guidance=cfg.guidance if given.guidance is not None else None,
                   shift=cfg.shift if given.shift is not None else None,
                   references=cfg.references if given.references is not None else None)


def with_absolute_paths(cfg: GenerateConfig) -> GenerateConfig:
    """File arguments as absolute paths, so that ``--resume`` works from any directory."""
    if cfg.image is None or cfg.traj is None:
        raise MirageError("generate: an IMAGE and a --traj are required")  # check_config said so first
    depth = cfg.depth if cfg.depth in (None, "prior", "model") else str(Path(cfg.depth).resolve())
    return replace(
        cfg, image=str(Path(cfg.image).resolve()), depth=depth,
        memory=str(Path(cfg.memory).resolve()) if cfg.memory else cfg.memory,
        traj=str(Path(cfg.traj).resolve()) if Path(cfg.traj).exists() else cfg.traj,
    )


def preview_downscale(width: int, height: int) -> int:
    """Auto ``--downscale`` for the preview, from the output size ``width x height`` actually used:
    the smallest of 1, 2, 4, 8 whose grid has at most ``PREVIEW_MAX_CELLS`` cells (832x480 -> 2,
    1024x768 -> 2, 416x240 -> 1: exact pixels)."""
    for s in (1, 2, 4, 8):
        if (width // s) * (height // s) <= PREVIEW_MAX_CELLS:
            return s
    return 8


def traj_stem(traj: str) -> str:
    """A folder-name stem for a trajectory: ``presets/orbit_left.json`` -> ``orbit_left``;
    ``preset:orbit_left`` -> ``orbit_left``; the pose string ``"w-20, left-5"`` -> ``w20_left5`` (no
    spaces or commas in the default output folder)."""
    if is_pose_string(traj):
        try:
            return "_".join(f"{step.action}{step.latents}" for step in parse_pose_string(traj))
        except MirageError:  # a bad pose string is refused where the trajectory is loaded
            pass
    return Path(traj.split(":", 1)[-1]).stem
