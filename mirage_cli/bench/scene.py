"""What the bench runs on: the input image and depth, the trajectory's cameras, the chunk plan, and
the choices that follow from them (fidelity, depth of new content, what stands in for generation).

The scene rules are the ones ``mirage generate`` uses (:mod:`mirage_cli.pipeline.plan`): the same
chunk plan, the same reference depth (unit of relative trajectories) and the same scaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..data.scenes import default_camera, make_scene
from ..errors import MirageError
from ..geometry.cameras import Cameras
from ..io import load_image
from ..memory.latent import WRITE_POLICIES as LATENT_POLICIES
from ..pipeline.plan import Chunk, plan_chunks, reference_depth, scale_cameras
from ..trajectories import PRESETS, load_trajectory, resample
from .config import BenchConfig
from .factories import make_codec, make_denoiser, make_spatia

if TYPE_CHECKING:
    from ..backends import Backend
    from ..data.scenes import Scene
    from ..models.codecs import Codec


@dataclass(frozen=True)
class SceneData:
    """The input at the bench's frame size."""

    image: torch.Tensor  # (3, H, W) in [0, 1]
    depth: torch.Tensor  # (H, W) z-depth, 0 = unknown
    reference_depth: float  # scene unit of relative trajectories
    scene: Scene | None  # the synthetic scene (ground truth), else None
    label: str


@dataclass(frozen=True)
class BenchSetup:
    """Everything a bench run is made of, decided before the first chunk."""

    cfg: BenchConfig
    device: torch.device
    codec: Codec
    codec_weights: str  # none | random | real
    backend: Backend | None  # WanVACEBackend / MirageBackend / SpatiaBackend for --denoiser, else None
    denoiser_weights: str
    data: SceneData
    cams: Cameras  # (N,) every frame of every lap
    traj_info: dict
    chunks: list[Chunk]
    fidelity: bool  # decode both reads and compare with the true render
    exact_depth: bool  # new content lifted with the synthetic scene's exact depth (else filled read depth)
    content: str  # denoiser | ground-truth | preview-fill: what stands in for the generated chunk
    latent_policy: str  # the latent memory's write policy ("append" is the point cloud's only)

    @property
    def two_engines(self) -> bool:
        """One engine per arm (``--denoiser spatia``), else one engine with the point cloud beside it."""
        return self.cfg.two_engines

    @property
    def synthetic(self) -> bool:
        return self.data.scene is not None

    @property
    def grid(self) -> tuple[int, int]:
        """Latent grid ``(h, w)``."""
        f = self.codec.spatial_factor
        return self.cfg.height // f, self.cfg.width // f


def prepare(cfg: BenchConfig, device: torch.device) -> BenchSetup:
    """Read the scene and the trajectory (every input error comes here, in well under a second), then
    load the codec and denoiser (seconds); plan the chunks; decide the options."""
    data = prepare_scene(cfg)
    cams, traj_info = prepare_cameras(cfg, data)
    backend: Backend | None
    if cfg.two_engines:  # the model brings its VAE; the chunk plan is its spec's
        assert cfg.model is not None  # BenchConfig refused --denoiser spatia without --model
        backend, codec, denoiser_weights = make_spatia(cfg.model, device)
        codec_weights = denoiser_weights
        chunks = backend.spec.plan(len(cams), None, codec.temporal_factor)
    else:
        codec, codec_weights = make_codec(cfg.codec, device)
        backend, denoiser_weights = make_denoiser(cfg.denoiser, codec, device)
        chunks = plan_chunks(len(cams), cfg.chunk_frames, codec.temporal_factor)
    synthetic = data.scene is not None  # BenchConfig refused --fidelity on / --write-depth exact without it
    fidelity = not cfg.two_engines and (cfg.fidelity == "on" or (cfg.fidelity == "auto" and synthetic
                                                                  and codec_weights != "random"))
    if backend is not None and (denoiser_weights == "real" or cfg.two_engines):
        content = "denoiser"
    else:
        content = "ground-truth" if fidelity else "preview-fill"
    return BenchSetup(
        cfg=cfg, device=device, codec=codec, codec_weights=codec_weights, backend=backend,
        denoiser_weights=denoiser_weights, data=data, cams=cams, traj_info=traj_info,
        chunks=chunks, fidelity=fidelity,
        exact_depth=cfg.write_depth == "exact" or (cfg.write_depth == "auto" and fidelity), content=content,
        # append is the explicit cache's habit; the latent arm keeps "new" so the bench compares the
        # memory as mirage runs it against the baseline as its peers run it.
        latent_policy=cfg.write_policy if cfg.write_policy in LATENT_POLICIES and cfg.write_policy != "append" else "new")


def prepare_scene(cfg: BenchConfig) -> SceneData:
    """The input image and its depth at ``height x width`` (BenchConfig checked the size)."""
    H, W = cfg.height, cfg.width
    if cfg.scene == "synthetic":
        scene = make_scene("room", seed=cfg.seed)
        rgb, depth = scene.render(default_camera(W, H))
        return SceneData(rgb[0], depth[0], reference_depth(depth[0]), scene, "synthetic room (exact depth)")
    return _image_scene(cfg)


def _image_scene(cfg: BenchConfig) -> SceneData:
    """``--scene IMAGE`` with ``--depth`` (or its sidecar), resized to ``height x width``."""
    from ..geometry.depth import load_depth_file, sidecar_for

    path = Path(cfg.scene)
    image = load_image(path)
    dpath = Path(cfg.depth) if cfg.depth else sidecar_for(path)
    if dpath is None:
        raise MirageError(f"{path}: the bench needs the image's depth: pass --depth FILE (.npy/.npz) or put "
                          f"{path.stem}.depth.npy next to it")
    depth = load_depth_file(dpath)
    if tuple(depth.shape) != tuple(image.shape[-2:]):
        raise MirageError(f"{dpath}: depth is {depth.shape[1]}x{depth.shape[0]} but the image is "
                          f"{image.shape[2]}x{image.shape[1]}")
    size = (cfg.height, cfg.width)
    image = F.interpolate(image[None], size=size, mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)
    depth = F.interpolate(depth[None, None], size=size, mode="nearest-exact")[0, 0]
    return SceneData(image, depth, reference_depth(depth), None, f"image {path.name} (depth {dpath.name})")


def prepare_cameras(cfg: BenchConfig, data: SceneData) -> tuple[Cameras, dict]:
    """The bench trajectory: ``--traj`` (default ``orbit_360``) resampled so that ``--laps`` laps make
    ``--frames`` frames, scaled by the reference depth when relative.

    On the synthetic scene a preset's ``look_at_depth`` is set to the room's centre (so an orbit runs
    on the object-free ring inside the room) and every camera must stay inside the room.
    Returns ``(cameras (N,), trajectory info for the report)``.
    """
    name = cfg.traj or "orbit_360"
    overrides = {}
    is_preset = not Path(name).exists() and name.removeprefix("preset:") in PRESETS
    if is_preset and data.scene is not None and "look_at_depth" in PRESETS[name.removeprefix("preset:")].params:
        overrides["look_at_depth"] = float(data.scene.center[2]) / data.reference_depth
    per_lap = cfg.frames_per_lap
    traj = resample(load_trajectory(name, **overrides), per_lap)
    lap = scale_cameras(traj.cameras_for(cfg.width, cfg.height), traj.scale, data.reference_depth)
    closed = bool((lap.c2w[-1] - lap.c2w[0]).abs().max() < 1e-4)
    idx = list(range(per_lap)) + [i for _ in range(cfg.laps - 1) for i in range(1, per_lap)]
    cams = Cameras(lap.c2w[idx], lap.intrinsics[idx], cfg.width, cfg.height)
    if data.scene is not None:
        check_inside_room(name, cams, data.scene)
    info = {"source": name, "format": traj.format, "scale": traj.scale, "laps": cfg.laps, "frames_per_lap": per_lap,
            "closed": closed, "preset_overrides": overrides}
    return cams, info


def check_inside_room(name: str, cams: Cameras, scene) -> None:
    """A camera outside the synthetic room sees its outside walls: a one-line error naming the frame."""
    lo = torch.tensor(scene.room_lo, dtype=torch.float64) + 0.05
    hi = torch.tensor(scene.room_hi, dtype=torch.float64) - 0.05
    out = ((cams.centers < lo) | (cams.centers > hi)).any(dim=1).nonzero()
    if len(out):
        i = int(out[0])
        c = ", ".join(f"{v:.2f}" for v in cams.centers[i].tolist())
        raise MirageError(f"{name}: frame {i}: camera at ({c}) leaves the synthetic room (x in [-4, 4], "
                          f"y in [-2.4, 1.4], z in [-3, 9]); choose a smaller motion")
