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

import torch
import torch.nn.functional as F

from . import __version__
from .backends import Backend, ChunkRequest
from .camera import Cameras, backproject, project
from .codecs import Codec, PixelCodec
from .depth import check_depth_size, fill_depth, fit_scale_shift, input_depth_source, prior_depth
from .errors import MirageError
from .io import atomic_path, file_sha256, load_image, to_uint8, write_json, write_video
from .memory.latent import INPUT_CHUNK, LatentMemory, reduce_depth
from .models import resolve_device

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
class Chunk:
    """One chunk of the plan: trajectory frames ``[start, stop)``, padded to ``length`` frames."""

    index: int
    start: int
    stop: int
    length: int

    @property
    def frames(self) -> list[int]:
        """Trajectory frame of every (padded) chunk frame: the last camera repeats as padding."""
        return [min(self.start + i, self.stop - 1) for i in range(self.length)]


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


# --------------------------------------------------------------------------------------- plan
def valid_chunk_length(n: int, temporal_factor: int) -> int:
    """Round ``n`` down to ``1 + temporal_factor * k`` with ``k >= 1``."""
    k = max(1, (n - 1) // temporal_factor)
    return 1 + temporal_factor * k


def plan_chunks(num_frames: int, chunk_frames: int, temporal_factor: int) -> list[Chunk]:
    """Split ``num_frames`` trajectory frames into overlapping chunks (see the module docstring)."""
    L = valid_chunk_length(chunk_frames, temporal_factor)
    if num_frames <= 1:
        return [Chunk(0, 0, 1, L)]
    chunks, start = [], 0
    while True:
        stop = min(start + L, num_frames)
        real = stop - start
        length = L if real == L else 1 + temporal_factor * math.ceil((real - 1) / temporal_factor)
        chunks.append(Chunk(len(chunks), start, stop, max(length, 1 + temporal_factor)))
        if stop >= num_frames:
            return chunks
        start = stop - 1


def latent_frame_indices(chunk: Chunk, temporal_factor: int) -> list[int]:
    """Trajectory frame index of each latent frame of ``chunk``."""
    frames = chunk.frames
    return [frames[temporal_factor * j] for j in range(1 + (chunk.length - 1) // temporal_factor)]


# --------------------------------------------------------------------------------------- prepare_*
def prepare_out_dir(cfg: GenerateConfig, image: Path, traj_name: str) -> Path:
    """Resolve ``--out`` and make sure no earlier run is clobbered."""
    out = Path(cfg.out) if cfg.out else Path("outputs") / f"{image.stem}-{traj_name}"
    if out.exists() and not out.is_dir():
        raise MirageError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise MirageError(
                f"{out}: output directory is not empty; pass --overwrite to replace that run, "
                f"--resume {out} to continue it, or --out for another directory"
            )
        if not (out / "run.json").exists():
            raise MirageError(f"{out}: not a mirage run directory (no run.json); refusing to overwrite it")
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
    """Load the input image and bring it to ``height x width`` (default: its own size) rounded
    down to a multiple of ``multiple`` (the codec's grid). Returns ``(3, H, W)`` in [0, 1]."""
    image = load_image(path)
    H0, W0 = image.shape[-2:]
    H = (height or H0) // multiple * multiple
    W = (width or W0) // multiple * multiple
    if H < multiple or W < multiple:
        raise MirageError(f"{path}: image is too small ({W0}x{H0}); need at least {multiple}x{multiple}")
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
        from .depth_model import load_depth_model

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


def prepare_trajectory(cfg: GenerateConfig, width: int, height: int):
    """Load the trajectory: ``(Trajectory, Cameras (N) at the image size)``, poses relative to frame 0,
    translations still in the trajectory's units (``traj.scale == "relative"``: reference depths)."""
    from .trajectory import load_trajectory, resample

    traj = load_trajectory(cfg.traj)
    if cfg.frames is not None:
        if cfg.frames < 1:
            raise MirageError(f"--frames must be >= 1 (got {cfg.frames})")
        traj = resample(traj, cfg.frames)
    cams = traj.cameras_for(width, height)
    if cfg.fov is not None:
        if not 1.0 <= cfg.fov <= 179.0:
            raise MirageError(f"--fov must be in (1, 179) degrees (got {cfg.fov})")
        cams = Cameras.from_fov(cams.c2w, cfg.fov, width, height)
    return traj, cams


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
        from .backends.preview import PreviewBackend

        return PixelCodec(cfg.downscale or 1), PreviewBackend()
    if cfg.backend == "wan-vace":
        from .backends.wan_vace import load_wan_vace

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


# --------------------------------------------------------------------------------------- the loop
def generate(cfg: GenerateConfig, progress=None, warn=print, resume_dir: Path | None = None, quiet: bool = False) -> dict:
    """Run (or resume) one generation. Returns the run record (also written to ``run.json``).

    Args:
        cfg: the options. progress: a ``rich.progress.Progress`` or None. warn: callable for warnings.
        resume_dir: continue the run in this directory (its run.json supplies ``cfg``).
        quiet: silence the model libraries' own loading bars too.
    """
    t_start = time.perf_counter()
    if resume_dir is not None:
        cfg, out = load_resume_config(resume_dir), Path(resume_dir)
    if not cfg.image:
        raise MirageError("generate: an IMAGE is required")
    if not cfg.traj:
        raise MirageError("generate: --traj is required (a trajectory file or a preset name, see `mirage traj list`)")
    if cfg.cache_dump not in ("none", "final", "chunks"):
        raise MirageError(f"--cache-dump: must be none, final or chunks (got '{cfg.cache_dump}')")
    if cfg.downscale is not None and cfg.downscale < 1:
        raise MirageError(f"--downscale must be >= 1 (got {cfg.downscale})")
    if cfg.chunk_frames is not None and cfg.chunk_frames < 2:
        raise MirageError(f"--chunk-frames must be >= 2 (got {cfg.chunk_frames})")
    device = resolve_device(cfg.device)
    image_path = Path(cfg.image)

    # 1. image, trajectory (validated before anything is written), codec + backend
    image_raw = load_image(image_path)
    image_hash = file_sha256(image_path)
    if resume_dir is not None:
        old = json.loads((out / "run.json").read_text())
        if old.get("image", {}).get("sha256") != image_hash:
            raise MirageError(f"{image_path}: the image changed since the run in {out} started (hash differs); cannot resume")
    if cfg.backend == "preview" and cfg.downscale is None:
        w0, h0 = (cfg.width or image_raw.shape[-1]), (cfg.height or image_raw.shape[-2])
        cfg.downscale = preview_downscale(w0, h0)
    codec, backend = prepare_codec_backend(cfg, show_progress=not quiet)
    multiple = 16 if codec.spatial_factor > 1 and cfg.backend != "preview" else codec.spatial_factor
    image = prepare_image(image_path, cfg.height, cfg.width, multiple)
    H, W = image.shape[-2:]
    h, w = H // codec.spatial_factor, W // codec.spatial_factor
    traj, cams = prepare_trajectory(cfg, W, H)
    depth, depth_kind, depth_model = prepare_depth(cfg, image_path, image, tuple(image_raw.shape[-2:]),
                                                   float(cams.fov_y_deg[0]), device, warn, show_progress=not quiet)
    valid = depth > 0
    reference_depth = float(depth[valid].median()) if bool(valid.any()) else 1.0
    if traj.scale == "relative":  # presets are written in units of the scene's reference depth
        cams = cams.scaled(reference_depth)
    N = len(cams)
    chunk_frames = cfg.chunk_frames or (9 if codec.temporal_factor == 1 else 49)
    chunks = plan_chunks(N, chunk_frames, codec.temporal_factor)
    if resume_dir is None:
        out = prepare_out_dir(cfg, image_path, Path(str(cfg.traj)).stem)
        cfg.out = str(out)
    from .trajectory import save_trajectory

    if resume_dir is None:
        save_trajectory(traj, out / "trajectory.json")
    cfg.chunk_frames = chunk_frames

    # 2. the input latent and the memory
    first_latent = round_latents(codec.encode(image[None].to(device))[0]).to(device)  # (C, h, w)
    cam0 = cams[0]
    state: RunState
    if resume_dir is not None:
        state = load_resume_state(out, codec, chunks, first_latent, device)
    else:
        if cfg.memory:
            memory = LatentMemory.load(cfg.memory, device=device)
            if memory.channels != codec.channels or memory.spatial_factor != codec.spatial_factor:
                raise MirageError(
                    f"{cfg.memory}: memory has {memory.channels} channels at 1/{memory.spatial_factor} scale, "
                    f"but the {cfg.backend} codec needs {codec.channels} at 1/{codec.spatial_factor}"
                )
            memory.write_policy = cfg.write_policy
            _, known0, _ = memory.read(cam0)
            memory.lift(first_latent, depth.to(device), cam0, chunk=INPUT_CHUNK, mask=~known0[0])
        else:
            memory = LatentMemory(codec.channels, codec.spatial_factor, codec=codec.name, device=device,
                                  write_policy=cfg.write_policy, image_hash=image_hash)
            memory.lift(first_latent, depth.to(device), cam0, chunk=INPUT_CHUNK)
        state = RunState(memory=memory, history_latents=[first_latent], history_frames=[0])
    state.depth_model, state.reference_depth, state.size = depth_model, reference_depth, (W, H)

    record = {
        "format": RUN_FORMAT,
        "mirage_version": __version__,
        "status": "running",
        "command": " ".join(["mirage"] + sys.argv[1:]) if resume_dir is None else _old_command(out),
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
        "trajectory": {"source": str(cfg.traj), "format": traj.format, "frames": N, "fps": cfg.fps or traj.fps,
                       "scale": traj.scale},
        "latent_grid": [h, w],
        "chunk_plan": [{"index": c.index, "frames": [c.start, c.stop - 1], "padded_length": c.length} for c in chunks],
        "chunks": state.records,
    }
    fps = cfg.fps or traj.fps
    write_json(out / "run.json", record)

    # 3. the loop
    task = progress.add_task("chunks", total=len(chunks), completed=len(state.records)) if progress else None
    for chunk in chunks[len(state.records):]:
        rec = run_chunk(chunk, chunks, cfg, codec, backend, state, cams, first_latent, (h, w), out, fps, progress, image_hash)
        state.records.append(rec)
        record["chunks"] = state.records
        write_json(out / "run.json", record)
        if progress:
            progress.advance(task)

    # 4. outputs
    t = time.perf_counter()
    write_video(out / "video.mp4", torch.from_numpy(_stack(state.video)).numpy(), fps, comment=_comment(backend))
    if cfg.cache_dump in ("final", "chunks"):
        state.memory.save(out / "cache" / "final.safetensors", extras=_dump_extras(state, image_hash))
    last = out / "cache" / "last.safetensors"
    if last.exists():
        last.unlink()
    stats = state.memory.stats()
    record.update({
        "status": "done",
        "backend": backend.describe(),  # after the run: steps/guidance actually used
        "totals": {
            "frames": len(state.video),
            "seconds": {k: round(sum(r["seconds"][k] for r in state.records), 4) for k in ("read", "denoise", "decode", "write", "dump")},
            "wall_seconds": round(time.perf_counter() - t_start, 3),
            "finalize_seconds": round(time.perf_counter() - t, 3),
            "memory_points": stats["points"],
            "memory_bytes": stats["bytes"],
        },
        "outputs": {
            "video": str(out / "video.mp4"),
            "chunks": [str(out / "chunks" / f"chunk_{c.index:03d}.mp4") for c in chunks],
            "cache": sorted(str(p) for p in (out / "cache").glob("*.safetensors")),
            "run": str(out / "run.json"),
        },
    })
    write_json(out / "run.json", record)
    return record


def run_chunk(chunk: Chunk, chunks: list[Chunk], cfg: GenerateConfig, codec: Codec, backend: Backend, state: RunState,
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
    before = state.memory.stats()["points"]
    wdepth = write_depth(read_depth, known, frames, tf, codec.spatial_factor, state.depth_model)
    # Only latent frames that are real trajectory frames are written (padding repeats the last camera).
    n_real_lat = 1 + (real - 1) // tf
    added = state.memory.write(latents[:n_real_lat], wdepth[:n_real_lat], lcams[:n_real_lat], known[:n_real_lat], chunk=chunk.index + 1)
    sec["write"] = time.perf_counter() - t

    extend_history(state, chunk, latents, frames_u8, tf)

    # DUMP: chunk video, latents, memory (the dump is the resume checkpoint, written last)
    t = time.perf_counter()
    write_video(out / "chunks" / f"chunk_{chunk.index:03d}.mp4", frames_u8, fps)
    _save_latents(out / "chunks" / f"chunk_{chunk.index:03d}.latents.safetensors", latents, chunk)
    stats = state.memory.stats()
    rec = {
        "index": chunk.index,
        "frames": [chunk.start, chunk.stop - 1],
        "latent_frames": len(lat_frames),
        "known_fraction": round(float(known[:n_real_lat].float().mean()), 6),
        "references": [state.history_frames[i] for i in refs],
        "points_added": int(added) if added is not None else stats["points"] - before,
        "memory_points": stats["points"],
        "memory_bytes": stats["bytes"],
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


def _old_command(out: Path) -> str:
    return json.loads((out / "run.json").read_text()).get("command", "")


def extend_history(state: RunState, chunk: Chunk, latents: torch.Tensor, frames_u8, tf: int) -> None:
    """Append a finished chunk's latent frames and video frames. Its frame 0 is already there
    (the input image for chunk 0, the previous chunk's last frame otherwise), so it is skipped."""
    real = chunk.stop - chunk.start
    lat_frames = latent_frame_indices(chunk, tf)
    for j in range(1, 1 + (real - 1) // tf):
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


def _stack(frames: list):
    import numpy as np

    return np.stack(frames)


def _comment(backend: Backend) -> str:
    d = backend.describe()
    return f"mirage {__version__} backend={d.get('name')}" + (" PREVIEW (no neural network)" if d.get("name") == "preview" else "")
