"""``mirage generate``: the chunked read -> denoise -> decode -> write -> dump loop.

Reads top to bottom like a diffusers pipeline: explicit ``prepare_*`` steps, then the loop.

Chunk plan: a chunk has ``L = 1 + temporal_factor * k`` frames (``--chunk-frames``, rounded to
that form) and shares its first frame with the previous chunk's last frame, so chunks start at
``0, L-1, 2(L-1), ...``. The last chunk is padded to the next valid length by repeating the last
camera, and the padding frames are dropped from the outputs, so any trajectory length works and
``video.mp4`` has exactly the trajectory's frames. Latent frame ``j`` of a chunk stands for the
chunk's video frame ``temporal_factor * j`` and is read and written with that frame's camera.

Memory labels: points lifted from the input image carry chunk label 0, points written by chunk
``k`` carry ``k + 1``.

Resume state: after each chunk its latents (``chunks/chunk_NNN.latents.safetensors``) and the
memory dump (whose metadata carries the run's chunk records) are written atomically; ``--resume``
restarts after the newest dump. Chunk latents are rounded to float16 as soon as they are made and
only the rounded values are used afterwards, so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..backends import Backend, ChunkRequest
from ..geometry.cameras import Cameras, backproject, project
from ..models.codecs import Codec, PixelCodec
from ..geometry.depth import check_depth_size, fill_depth, fit_scale_shift, input_depth_source, prior_depth
from ..errors import MirageError
from ..io import atomic_path, file_sha256, load_image, to_uint8, write_json, write_video
from ..memory.latent import INPUT_CHUNK, LatentMemory, reduce_depth
from ..models.registry import resolve_device
from .plan import Chunk, latent_frame_indices, plan_chunks, reference_depth, scale_cameras, written_latent_frames

LATENT_STORE_DTYPE = torch.float16
RUN_FORMAT = "mirage.run"


# --------------------------------------------------------------------------------------- config
@dataclass
class GenerateConfig:
    """Every option of ``mirage generate`` (the CLI fills it; run.json stores it for --resume)."""

    image: str | None = None
    traj: str | None = None
    out: str | None = None
    backend: str = "preview"
    model: str | None = None
    depth: str | None = None  # FILE | "prior" | "model" | None (sidecar, then model if cached, then prior)
    depth_scale: float | None = None
    depth_model: str = "depth-anything-v2-small"
    frames: int | None = None
    fps: float | None = None
    height: int | None = None
    width: int | None = None
    fov: float | None = None
    seed: int = 0
    steps: int = 30
    guidance: float = 5.0
    shift: float = 3.0
    prompt: str = ""
    negative_prompt: str = ""
    device: str = "auto"
    dtype: str = "auto"
    chunk_frames: int | None = None
    downscale: int | None = None  # preview grid = image / N; None = auto (see preview_downscale)
    cache_dump: str = "chunks"
    write_policy: str = "new"
    memory: str | None = None
    references: int = 2
    cpu_offload: bool = False
    overwrite: bool = False


@dataclass
class RunState:
    """What the loop carries from chunk to chunk (and what --resume rebuilds)."""

    memory: LatentMemory
    history_latents: list[torch.Tensor] = field(default_factory=list)  # (C, h, w) per generated latent frame
    history_frames: list[int] = field(default_factory=list)  # trajectory frame of each
    video: list = field(default_factory=list)  # uint8 (H, W, 3) frames so far
    records: list[dict] = field(default_factory=list)
    depth_model: object | None = None  # DepthModel: depth of new content when one is available
    reference_depth: float = 1.0  # median depth of the input (unit of relative trajectories)
    size: tuple[int, int] = (0, 0)  # (width, height) of the frames


# --------------------------------------------------------------------------------------- prepare_*
def prepare_out_dir(cfg: GenerateConfig, image: Path, traj_name: str) -> Path:
    """Resolve ``--out`` and make sure no earlier run is clobbered."""
    out = Path(cfg.out) if cfg.out else Path("outputs") / f"{image.stem}-{traj_name}"
    if out.exists() and not out.is_dir():
        raise MirageError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        is_run = (out / "run.json").exists()
        if not is_run:
            raise MirageError(f"{out}: not empty and not a mirage run directory (no run.json); "
                              "refusing to write there, choose another --out")
        if not cfg.overwrite:
            done = '"status": "done"' in (out / "run.json").read_text(errors="replace")
            hint = "" if done else f", --resume {out} to continue it"
            raise MirageError(f"{out}: holds an earlier run; pass --overwrite to replace it{hint}, or --out for another directory")
        for name in ("video.mp4", "run.json", "trajectory.json", "chunks", "cache"):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    try:
        (out / "chunks").mkdir(parents=True, exist_ok=True)
        (out / "cache").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MirageError(f"{out}: cannot write the output directory ({e.strerror or e})") from e
    return out


def prepare_image(path: Path, height: int | None, width: int | None, multiple: int) -> torch.Tensor:
    """Load the input image and bring it to ``height x width`` (default: its own size; one of the
    two given: the other follows the aspect ratio), rounded down to a multiple of ``multiple`` (the
    codec's grid: 16 for Wan, the preview's downscale). Returns ``(3, H, W)`` in [0, 1]."""
    image = load_image(path)
    H0, W0 = image.shape[-2:]
    if height and not width:
        width = max(1, round(W0 * height / H0))
    if width and not height:
        height = max(1, round(H0 * width / W0))
    H = (height or H0) // multiple * multiple
    W = (width or W0) // multiple * multiple
    if H < multiple or W < multiple:
        raise MirageError(f"{path}: a {width or W0}x{height or H0} frame is smaller than one {multiple}x{multiple} "
                          "grid cell; use a larger --height/--width or a smaller --downscale")
    if (H, W) != (H0, W0):
        image = F.interpolate(image[None], size=(H, W), mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)
    return image


def prepare_depth(cfg: GenerateConfig, image_path: Path, image: torch.Tensor, orig_size: tuple[int, int], fov_y: float,
                  device: torch.device, warn, show_progress: bool = True):
    """Depth of the input image at its (resized) size.

    Returns:
        ``(depth (H, W) float32, description, depth model or None)``; the model, when one was
        used, also gives depth to the new content of written chunks.
    """
    H, W = image.shape[-2:]
    model = None
    kind, depth = input_depth_source(cfg.depth, image_path, cfg.depth_scale)
    if kind.startswith("file:") or kind.startswith("sidecar:"):
        check_depth_size(depth, orig_size[0], orig_size[1], kind.split(":", 1)[1])
    elif kind in ("model", "auto"):
        from ..models.depth_model import load_depth_model

        model = load_depth_model(cfg.depth_model, device=str(device), required=(kind == "model"), progress=show_progress)
        if model is not None:
            depth, dkind = model.predict(image)
            kind = f"model:{cfg.depth_model}:{dkind}"
        else:
            kind = "prior"
            warn("no depth given (no --depth, no sidecar, no cached depth model): using the geometric prior (ground plane + far wall)")
    if kind == "prior":
        depth = prior_depth(H, W, fov_y)
    if tuple(depth.shape) != (H, W):
        depth = F.interpolate(depth[None, None], size=(H, W), mode="nearest-exact")[0, 0]
    return depth.float(), kind, model


def prepare_trajectory(cfg: GenerateConfig):
    """Load (and with ``--frames`` resample) the trajectory; raises MirageError on any problem."""
    from ..trajectories import load_trajectory, resample

    traj = load_trajectory(cfg.traj)
    return resample(traj, cfg.frames) if cfg.frames is not None else traj


def trajectory_cameras(traj, fov: float | None, width: int, height: int) -> Cameras:
    """``(N)`` cameras at the image size, poses relative to frame 0, ``--fov`` applied; translations
    still in the trajectory's units (``traj.scale == "relative"``: reference depths)."""
    cams = traj.cameras_for(width, height)
    return Cameras.from_fov(cams.c2w, fov, width, height) if fov is not None else cams


PREVIEW_MAX_CELLS = 131_072  # ~ a 256x512 grid: keeps a preview of a 480p image in seconds


def preview_downscale(width: int, height: int) -> int:
    """Auto ``--downscale`` for the preview: the smallest of 1, 2, 4, 8 whose grid has at most
    ``PREVIEW_MAX_CELLS`` cells (a 480x832 image -> 2; a 208x120 image -> 1, exact pixels)."""
    for s in (1, 2, 4, 8):
        if (width // s) * (height // s) <= PREVIEW_MAX_CELLS:
            return s
    return 8


def prepare_codec_backend(cfg: GenerateConfig, show_progress: bool = True) -> tuple[Codec, Backend]:
    """Build the codec and the backend named by ``--backend``."""
    if cfg.backend == "preview":
        from ..backends.preview import PreviewBackend

        return PixelCodec(cfg.downscale or 1), PreviewBackend()
    if cfg.backend == "wan-vace":
        from ..backends.wan_vace import load_wan_vace

        backend, codec = load_wan_vace(
            cfg.model or "wan2.1-vace-1.3b", device=cfg.device, dtype=cfg.dtype, cpu_offload=cfg.cpu_offload, shift=cfg.shift,
            progress=show_progress,
        )
        return codec, backend
    raise MirageError(f"--backend: unknown backend '{cfg.backend}' (choose preview or wan-vace)")


# --------------------------------------------------------------------------------------- helpers
def round_latents(x: torch.Tensor) -> torch.Tensor:
    """Round to the stored dtype and back, so resumed and uninterrupted runs see the same values."""
    return x.to(LATENT_STORE_DTYPE).float()


def select_references(read_depth: torch.Tensor, known: torch.Tensor, cams: Cameras, hist_frames: list[int], all_cams: Cameras, exclude: set[int], count: int, grid: tuple[int, int]) -> list[int]:
    """Pick up to ``count`` earlier latent frames most co-visible with this chunk.

    Co-visibility of an earlier camera = fraction of this chunk's known surface points (read
    depth back-projected, subsampled to <= 1024 points) that project inside that camera's image and
    in front of it. All candidates are scored in one batched projection. Returns history indices.
    """
    cand = [i for i in range(len(hist_frames)) if i not in exclude]
    if count <= 0 or not cand or not bool(known.any()):
        return []
    h, w = grid
    pts = []
    for t in range(len(cams)):
        if bool(known[t].any()):
            p = backproject(read_depth[t].double().cpu(), cams.c2w[t], cams.K(w, h)[t])
            pts.append(p[known[t].cpu()])
    P = torch.cat(pts)
    P = P[torch.linspace(0, len(P) - 1, min(len(P), 1024)).long()]
    sel = torch.tensor([hist_frames[i] for i in cand])
    uv, z = project(P, all_cams.w2c[sel], all_cams.K(w, h)[sel])
    inside = (z > 1e-6) & (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
    score = inside.double().mean(-1)
    order = sorted(range(len(cand)), key=lambda i: (-float(score[i]), -cand[i]))  # ties: most recent
    return [cand[i] for i in order[:count] if score[i] > 0]


def write_depth(read_depth: torch.Tensor, known: torch.Tensor, frames: torch.Tensor, tf: int, factor: int,
                depth_model=None) -> torch.Tensor:
    """Depth for writing a chunk's latent frames ``(T, h, w)``: the read depth where the memory
    covered the cell; elsewhere the depth model's prediction for the decoded frame, aligned to the
    read depth by a robust scale + shift fit on the covered cells, or (no model, or too few covered
    cells to fit) the read depth extended into the holes from the background side."""
    filled = fill_depth(read_depth, known)
    if depth_model is None:
        return filled
    out = filled.clone()
    for j in range(read_depth.shape[0]):
        ok = known[j] & (read_depth[j] > 0)
        if int(ok.sum()) < 32 or bool(ok.all()):
            continue
        pred, _ = depth_model.predict(frames[tf * j].clamp(0, 1))
        pred = reduce_depth(pred.to(read_depth.device), factor)
        scale, shift = fit_scale_shift(pred, read_depth[j], ok & (pred > 0))
        aligned = scale * pred + shift
        out[j] = torch.where(known[j] | (aligned <= 0), filled[j], aligned)
    return out


# --------------------------------------------------------------------------------------- checks
DTYPES = ("auto", "fp32", "bf16", "fp16")


def check_config(cfg: GenerateConfig) -> None:
    """Reject bad options with one line each, before anything is read or written."""
    from ..memory.latent import WRITE_POLICIES

    def bad(opt: str, why: str):
        raise MirageError(f"{opt}: {why}")

    if not cfg.image:
        bad("generate", "an IMAGE is required")
    if not cfg.traj:
        bad("--traj", "is required (a trajectory file or a preset name, see `mirage traj list`)")
    if cfg.backend not in ("preview", "wan-vace"):
        bad("--backend", f"unknown backend '{cfg.backend}' (choose preview or wan-vace)")
    if cfg.cache_dump not in ("none", "final", "chunks"):
        bad("--cache-dump", f"must be none, final or chunks (got '{cfg.cache_dump}')")
    if cfg.write_policy not in WRITE_POLICIES:
        bad("--write-policy", f"must be one of {', '.join(WRITE_POLICIES)} (got '{cfg.write_policy}')")
    if cfg.dtype not in DTYPES:
        bad("--dtype", f"must be one of {', '.join(DTYPES)} (got '{cfg.dtype}')")
    if cfg.downscale is not None and cfg.downscale < 1:
        bad("--downscale", f"must be >= 1 (got {cfg.downscale})")
    if cfg.chunk_frames is not None and cfg.chunk_frames < 2:
        bad("--chunk-frames", f"must be >= 2 (got {cfg.chunk_frames})")
    if cfg.frames is not None and cfg.frames < 1:
        bad("--frames", f"must be >= 1 (got {cfg.frames})")
    if cfg.fps is not None and not (math.isfinite(cfg.fps) and 0 < cfg.fps <= 1000):
        bad("--fps", f"must be a number in (0, 1000] (got {cfg.fps})")
    for opt, v in (("--height", cfg.height), ("--width", cfg.width)):
        if v is not None and not 16 <= v <= 8192:
            bad(opt, f"must be between 16 and 8192 pixels (got {v})")
    if cfg.fov is not None and not (math.isfinite(cfg.fov) and 1.0 <= cfg.fov <= 179.0):
        bad("--fov", f"must be between 1 and 179 degrees (got {cfg.fov})")
    if cfg.steps < 1:
        bad("--steps", f"must be >= 1 (got {cfg.steps})")
    if not (math.isfinite(cfg.guidance) and cfg.guidance >= 1.0):
        bad("--guidance", f"must be >= 1 (1 disables guidance; got {cfg.guidance})")
    if not (math.isfinite(cfg.shift) and cfg.shift > 0):
        bad("--shift", f"must be > 0 (got {cfg.shift})")
    if cfg.references < 0:
        bad("--references", f"must be >= 0 (got {cfg.references})")
    if cfg.depth_scale is not None and not (math.isfinite(cfg.depth_scale) and cfg.depth_scale > 0):
        bad("--depth-scale", f"must be > 0 (got {cfg.depth_scale})")


def absolute_paths(cfg: GenerateConfig) -> None:
    """Store file arguments as absolute paths so that ``--resume`` works from any directory."""
    cfg.image = str(Path(cfg.image).resolve())
    if cfg.depth not in (None, "prior", "model"):
        cfg.depth = str(Path(cfg.depth).resolve())
    if cfg.memory:
        cfg.memory = str(Path(cfg.memory).resolve())
    if Path(cfg.traj).exists():
        cfg.traj = str(Path(cfg.traj).resolve())


def traj_stem(traj: str) -> str:
    """``presets/orbit_left.json`` -> ``orbit_left``; ``preset:orbit_left`` -> ``orbit_left``."""
    return Path(traj.split(":", 1)[-1]).stem


# --------------------------------------------------------------------------------------- the loop
def generate(cfg: GenerateConfig, progress=None, warn=print, resume_dir: Path | None = None, quiet: bool = False) -> dict:
    """Run (or resume) one generation. Returns the run record (also written to ``run.json``).

    Everything that can fail on bad input is checked before the output directory is touched.

    Args:
        cfg: the options. progress: a ``rich.progress.Progress`` or None. warn: callable for warnings.
        resume_dir: continue the run in this directory (its run.json supplies ``cfg``; the
            trajectory comes from its ``trajectory.json`` and the scale from its recorded depth).
        quiet: silence the model libraries' own loading bars too.
    """
    t_start = time.perf_counter()
    old = None
    if resume_dir is not None:
        out = Path(resume_dir)
        cfg, old = load_resume_config(out), json.loads((out / "run.json").read_text())
    check_config(cfg)
    absolute_paths(cfg)
    device = resolve_device(cfg.device)
    image_path = Path(cfg.image)

    # 1. image, saved memory, codec + backend, trajectory, depth — all validated, nothing written yet
    image_raw = load_image(image_path)
    image_hash = file_sha256(image_path)
    if old is not None and old.get("image", {}).get("sha256") != image_hash:
        raise MirageError(f"{image_path}: the image changed since the run in {out} started (hash differs); cannot resume")
    memory = None
    if cfg.memory and old is None:
        memory = LatentMemory.load(cfg.memory, device=device)
        if cfg.backend == "preview" and cfg.downscale is None and memory.codec == "pixel":
            cfg.downscale = memory.spatial_factor  # continue at the memory's own grid
    if cfg.backend == "preview" and cfg.downscale is None:
        cfg.downscale = preview_downscale(cfg.width or image_raw.shape[-1], cfg.height or image_raw.shape[-2])
    codec, backend = prepare_codec_backend(cfg, show_progress=not quiet)
    if memory is not None and (memory.channels != codec.channels or memory.spatial_factor != codec.spatial_factor
                               or memory.codec != codec.name):
        raise MirageError(
            f"{cfg.memory}: memory holds {memory.codec} latents ({memory.channels} channels at 1/{memory.spatial_factor} "
            f"scale), but the {cfg.backend} backend uses {codec.name} ({codec.channels} at 1/{codec.spatial_factor})"
        )
    multiple = 16 if cfg.backend != "preview" else codec.spatial_factor
    image = prepare_image(image_path, cfg.height, cfg.width, multiple)
    H, W = image.shape[-2:]
    h, w = H // codec.spatial_factor, W // codec.spatial_factor
    if old is None:
        traj = prepare_trajectory(cfg)
        fov0 = float(trajectory_cameras(traj, cfg.fov, W, H).fov_y_deg[0])  # the prior depth needs frame 0's fov
        depth, depth_kind, depth_model = prepare_depth(cfg, image_path, image, tuple(image_raw.shape[-2:]),
                                                       fov0, device, warn, show_progress=not quiet)
        valid = depth > 0
        reference_depth = float(depth[valid].median()) if bool(valid.any()) else 1.0
    else:  # the depth only mattered for the first lift, which the dumps hold; keep its scale and model
        depth_kind, reference_depth = old["depth"]["source"], float(old["depth"]["reference_depth"])
        depth_model = None
        if depth_kind.startswith("model:"):
            from ..models.depth_model import load_depth_model

            depth_model = load_depth_model(cfg.depth_model, device=str(device), required=True, progress=not quiet)

    # 2. the run directory; the trajectory is used as saved there, so a resumed run reads the same cameras
    from ..trajectories import load_trajectory, save_trajectory

    if old is None:
        out = prepare_out_dir(cfg, image_path, traj_stem(cfg.traj))
        cfg.out = str(out.resolve())
        save_trajectory(traj, out / "trajectory.json")
    saved = load_trajectory(out / "trajectory.json")
    cams = trajectory_cameras(saved, cfg.fov, W, H)
    if saved.scale == "relative":  # presets are written in units of the scene's reference depth
        cams = cams.scaled(reference_depth)
    fps = cfg.fps or saved.fps
    N = len(cams)
    cfg.chunk_frames = cfg.chunk_frames or (9 if codec.temporal_factor == 1 else 49)
    chunks = plan_chunks(N, cfg.chunk_frames, codec.temporal_factor)

    # 3. the input latent and the memory
    first_latent = round_latents(codec.encode(image[None].to(device))[0]).to(device)  # (C, h, w)
    cam0 = cams[0]
    if old is not None:
        state = load_resume_state(out, codec, chunks, first_latent, device)
    else:
        if memory is not None:
            memory.write_policy = cfg.write_policy
            _, known0, _ = memory.read(cam0)
            memory.lift(first_latent, depth.to(device), cam0, chunk=INPUT_CHUNK, mask=~known0[0])
        else:
            memory = LatentMemory(codec.channels, codec.spatial_factor, codec=codec.name, device=device,
                                  write_policy=cfg.write_policy, image_hash=image_hash)
            memory.lift(first_latent, depth.to(device), cam0, chunk=INPUT_CHUNK)
        state = RunState(memory=memory, history_latents=[first_latent], history_frames=[0])
    state.depth_model, state.reference_depth, state.size = depth_model, reference_depth, (W, H)

    if old is not None:
        record = old
        record.setdefault("resumed_at", []).append(_now())
        record["status"] = "running"
    else:
        record = {
            "format": RUN_FORMAT,
            "mirage_version": __version__,
            "versions": _versions(),
            "status": "running",
            "started_at": _now(),
            "command": " ".join(["mirage"] + sys.argv[1:]),
            "config": asdict(cfg),
            "backend": backend.describe(),
            "codec": {"name": codec.name, "channels": codec.channels, "spatial_factor": codec.spatial_factor,
                      "temporal_factor": codec.temporal_factor},
            "model": cfg.model,
            "seed": cfg.seed,
            "device": str(device),
            "dtype": cfg.dtype,
            "image": {"path": str(image_path), "sha256": image_hash, "width": W, "height": H},
            "depth": {"source": depth_kind, "reference_depth": reference_depth},
            "trajectory": {"source": str(cfg.traj), "format": traj.format, "frames": N, "fps": fps,
                           "scale": traj.scale, "saved": str(out / "trajectory.json")},
            "latent_grid": [h, w],
            "chunk_plan": [{"index": c.index, "frames": [c.start, c.stop - 1], "padded_length": c.length} for c in chunks],
        }
    record["chunks"] = state.records
    write_json(out / "run.json", record)

    # 4. the loop
    task = progress.add_task("chunks", total=len(chunks), completed=len(state.records)) if progress else None
    try:
        for chunk in chunks[len(state.records):]:
            rec = run_chunk(chunk, cfg, codec, backend, state, cams, first_latent, (h, w), out, fps, progress, image_hash)
            state.records.append(rec)
            record["chunks"] = state.records
            write_json(out / "run.json", record)
            if progress:
                progress.advance(task)
    except BaseException as e:
        record["status"] = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        record["error"] = f"{type(e).__name__}: {e}"
        write_json(out / "run.json", record)
        warn(f"run {record['status']} after {len(state.records)} of {len(chunks)} chunks; finished chunks are kept. "
             f"Continue with: mirage generate --resume {out}")
        raise

    # 5. outputs
    t = time.perf_counter()
    write_video(out / "video.mp4", np.stack(state.video), fps, comment=_comment(backend))
    if cfg.cache_dump in ("final", "chunks"):
        state.memory.save(out / "cache" / "final.safetensors", extras=_dump_extras(state, image_hash))
    stats = state.memory.stats()
    record.pop("error", None)
    record.update({
        "status": "done",
        "finished_at": _now(),
        "backend": backend.describe(),  # after the run: steps/guidance actually used
        "totals": {
            "frames": len(state.video),
            "seconds": {k: round(sum(r["seconds"][k] for r in state.records), 4) for k in ("read", "denoise", "decode", "write", "dump")},
            "wall_seconds": round(time.perf_counter() - t_start, 3) + (old or {}).get("totals", {}).get("wall_seconds", 0.0),
            "finalize_seconds": round(time.perf_counter() - t, 3),
            "memory_points": stats["points"],
            "memory_bytes": stats["bytes"],
        },
        "outputs": {
            "video": str(out / "video.mp4"),
            "chunks": [str(out / "chunks" / f"chunk_{c.index:03d}.mp4") for c in chunks],
            "cache": sorted(str(p) for p in (out / "cache").glob("*.safetensors") if p.name != "last.safetensors"),
            "run": str(out / "run.json"),
        },
    })
    write_json(out / "run.json", record)
    last = out / "cache" / "last.safetensors"  # the rolling checkpoint goes only once the run is recorded done
    if last.exists():
        last.unlink()
    return record


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict:
    import platform

    v = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("diffusers", "transformers"):
        try:
            from importlib.metadata import version

            v[name] = version(name)
        except Exception:  # not installed: not needed by the preview
            v[name] = None
    return v


def run_chunk(chunk: Chunk, cfg: GenerateConfig, codec: Codec, backend: Backend, state: RunState,
              cams: Cameras, first_latent: torch.Tensor, grid: tuple[int, int], out: Path, fps: float, progress, image_hash: str) -> dict:
    """Read -> denoise -> decode -> write -> dump for one chunk. Returns its run.json record."""
    sec = {}
    tf = codec.temporal_factor
    lat_frames = latent_frame_indices(chunk, tf)
    lcams = Cameras(cams.c2w[lat_frames], cams.intrinsics[lat_frames], cams.width, cams.height)

    # READ: warp the memory into every latent frame's camera (no pixels, no encode)
    t = time.perf_counter()
    read_lat, known, read_depth = state.memory.read(lcams)  # (T,C,h,w), (T,h,w), (T,h,w)
    exclude = {len(state.history_frames) - 1}
    refs = select_references(read_depth, known, lcams, state.history_frames, cams, exclude, cfg.references, grid)
    sec["read"] = time.perf_counter() - t

    # DENOISE
    t = time.perf_counter()
    preceding = torch.stack(state.history_latents[-1:]) if chunk.index > 0 else None
    req = ChunkRequest(
        read_latents=read_lat, known=known, read_depth=read_depth, first_latent=first_latent,
        preceding=preceding, reference=torch.stack([state.history_latents[i] for i in refs]) if refs else None,
        chunk_index=chunk.index, num_frames=chunk.length, prompt=cfg.prompt, negative_prompt=cfg.negative_prompt,
        seed=cfg.seed, steps=cfg.steps, guidance=cfg.guidance,
    )
    step_task = progress.add_task(f"chunk {chunk.index} denoise", total=cfg.steps if backend.name != "preview" else 1) if progress else None
    cb = (lambda i, n: progress.update(step_task, completed=i, total=n)) if progress else None
    latents = round_latents(backend.denoise(req, progress=cb).float())
    if progress:
        progress.remove_task(step_task)
    sec["denoise"] = time.perf_counter() - t

    # DECODE
    t = time.perf_counter()
    frames = codec.decode(latents)  # (L, 3, H, W)
    real = chunk.stop - chunk.start
    frames_u8 = to_uint8(frames[:real])
    sec["decode"] = time.perf_counter() - t

    # WRITE: lift what the read did not cover
    t = time.perf_counter()
    wdepth = write_depth(read_depth, known, frames, tf, codec.spatial_factor, state.depth_model)
    # Only latent frames that are real trajectory frames are written (padding repeats the last camera).
    n_real_lat = 1 + math.ceil((real - 1) / tf)  # the padded last latent frame uses the last real camera
    added = state.memory.write(latents[:n_real_lat], wdepth[:n_real_lat], lcams[:n_real_lat], known[:n_real_lat], chunk=chunk.index + 1)
    sec["write"] = time.perf_counter() - t

    extend_history(state, chunk, latents, frames_u8, tf)

    # DUMP: chunk video, latents, memory (the dump is the resume checkpoint, written last)
    t = time.perf_counter()
    write_video(out / "chunks" / f"chunk_{chunk.index:03d}.mp4", frames_u8, fps)
    _save_latents(out / "chunks" / f"chunk_{chunk.index:03d}.latents.safetensors", latents, chunk)
    rec = {
        "index": chunk.index,
        "frames": [chunk.start, chunk.stop - 1],
        "latent_frames": len(lat_frames),
        "known_fraction": round(float(known[:n_real_lat].float().mean()), 6),
        "references": [state.history_frames[i] for i in refs],
        "points_added": int(added),
        "memory_points": len(state.memory),  # len/nbytes: cheap, unlike stats() (bounds, per-chunk counts)
        "memory_bytes": state.memory.nbytes(),
    }
    dump = out / "cache" / (f"chunk_{chunk.index:03d}.safetensors" if cfg.cache_dump == "chunks" else "last.safetensors")
    rec["seconds"] = {k: round(v, 4) for k, v in sec.items()} | {"dump": 0.0}
    state.memory.save(dump, extras=_dump_extras(state, image_hash, pending=rec))
    rec["seconds"]["dump"] = round(time.perf_counter() - t, 4)
    return rec


# --------------------------------------------------------------------------------------- resume
def _dump_extras(state: RunState, image_hash: str, pending: dict | None = None) -> dict:
    """Metadata of every dump: what `mirage cache render` needs to scale relative trajectories and
    size its frames, plus the chunk records that make the dump a resume checkpoint."""
    records = state.records + ([pending] if pending else [])
    return {"image_sha256": image_hash, "run_chunks": records, "chunks_done": len(records),
            "reference_depth": state.reference_depth, "width": state.size[0], "height": state.size[1]}


def _save_latents(path: Path, latents: torch.Tensor, chunk: Chunk) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({"latents": latents.to(LATENT_STORE_DTYPE).cpu().contiguous()}, str(tmp),
                  metadata={"format": "mirage.chunk-latents", "chunk": str(chunk.index), "frames": json.dumps([chunk.start, chunk.stop - 1])})


def _load_latents(path: Path) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))["latents"].float()
    except (SafetensorError, OSError, KeyError) as e:
        raise MirageError(f"{path}: cannot read chunk latents ({e}); cannot resume") from e


def dump_extras(path: Path) -> dict:
    """The JSON ``extras`` of a memory dump's metadata (without loading its tensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("extras", "{}"))
    except Exception as e:  # a truncated dump from a killed run is skipped, not fatal
        return {"unreadable": str(e)}


def load_resume_config(out: Path) -> GenerateConfig:
    run = out / "run.json"
    if not run.exists():
        raise MirageError(f"{out}: no run.json here; nothing to resume")
    try:
        data = json.loads(run.read_text())
        cfg = GenerateConfig(**data["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise MirageError(f"{run}: not a readable mirage run record ({e})") from e
    if data.get("status") == "done":
        raise MirageError(f"{out}: this run is already complete; nothing to resume")
    cfg.out = str(out)
    return cfg


def extend_history(state: RunState, chunk: Chunk, latents: torch.Tensor, frames_u8, tf: int) -> None:
    """Append a finished chunk's latent frames and video frames. Its frame 0 is already there
    (the input image for chunk 0, the previous chunk's last frame otherwise), so it is skipped."""
    real = chunk.stop - chunk.start
    lat_frames = latent_frame_indices(chunk, tf)
    for j in range(1, 1 + math.ceil((real - 1) / tf)):
        state.history_latents.append(latents[j])
        state.history_frames.append(lat_frames[j])
    state.video.extend(list(frames_u8[1:] if chunk.index > 0 else frames_u8))


def load_resume_state(out: Path, codec: Codec, chunks: list[Chunk], first_latent: torch.Tensor, device) -> RunState:
    """Rebuild the loop state from the newest memory dump and the saved chunk latents."""
    dumps = sorted((out / "cache").glob("chunk_*.safetensors")) + [p for p in [out / "cache" / "last.safetensors"] if p.exists()]
    best, best_n = None, 0
    for p in dumps:
        n = int(dump_extras(p).get("chunks_done", 0))
        if n > best_n:
            best, best_n = p, n
    if best is None:
        raise MirageError(f"{out}: no finished chunk to resume from (no cache dump); start the run again with --overwrite")
    memory = LatentMemory.load(best, device=device)
    records = dump_extras(best)["run_chunks"]
    state = RunState(memory=memory, history_latents=[first_latent], history_frames=[0], records=list(records))
    for chunk in chunks[: len(records)]:
        latents = _load_latents(out / "chunks" / f"chunk_{chunk.index:03d}.latents.safetensors").to(device)
        frames_u8 = to_uint8(codec.decode(latents)[: chunk.stop - chunk.start])
        extend_history(state, chunk, latents, frames_u8, codec.temporal_factor)
    return state


def _comment(backend: Backend) -> str:
    d = backend.describe()
    return f"mirage {__version__} backend={d.get('name')}" + (" PREVIEW (no neural network)" if d.get("name") == "preview" else "")
