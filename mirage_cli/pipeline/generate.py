"""``mirage generate``: build a run (new or resumed), then run its chunk loop.

Reads top to bottom like a diffusers pipeline: :func:`start` (a new run from the options) and
:func:`resume` (an interrupted run from its directory) each validate everything, then build the
same :class:`~.loop.Run`; :func:`~.loop.run_loop` runs it. :func:`generate` is the entry the CLI calls.

Chunk plan (``plan.py``): a chunk has ``L = 1 + temporal_factor * k`` frames (``--chunk-frames``,
rounded to that form) and shares its first frame with the previous chunk's last frame. The last
chunk is padded by repeating the last camera and the padding frames are dropped from the outputs,
so ``video.mp4`` has exactly the trajectory's frames.

Resume: the run's own ``trajectory.json``, config and recorded depth scale are used (not the
files the user may have changed since), the memory comes from the newest dump and the history
from the stored chunk latents; the result is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..backends import Backend
from ..backends.specs import BackendSpec, backend_spec
from ..errors import MirageError
from ..geometry.intrinsics import aspect_differs
from ..io import file_sha256
from ..memory.latent import INPUT_CHUNK, LatentMemory
from ..models.codecs import Codec
from ..models.registry import resolve_device
from ..threads import current_threads
from ..trajectories import load_trajectory, save_trajectory
from ..trajectories.scale import preflight  # issue 29: path vs scene, one warning before any model loads
from .config import (
    FRAME_SIDES,
    GenerateConfig,
    RunPlan,
    RunSettings,
    check_config,
    preview_downscale,
    recorded_config,
    traj_stem,
    unused_options,
    with_absolute_paths,
    with_backend_defaults,
)
from .covisibility import IOU_THRESHOLD, depth_is_metric, voxel_size
from .dryrun import dry_run_parts, run_dry
from .engine import CancelToken, ChunkEngine, EngineSettings, round_latents
from .inputs import (
    NO_DEPTH,
    Loaders,
    check_memory_fits,
    grid_multiple,
    load_input_image,
    prepare_depth,
    prepare_image,
    prepare_trajectory,
    real_depth_hint,
    resume_depth_model,
    trajectory_cameras,
    with_geometry_image,
)
from .loop import Run, run_loop
from .persist import FrameList, RunWriter, open_video
from .placement import place_preset, placement_note, warn_behind
from .plan import reference_depth, scale_cameras
from .records import RUN_FORMAT, CodecInfo, DepthInfo, ImageInfo, PlannedChunk, RunRecord, TrajectoryInfo, now, versions
from .resources import available_ram, check_peak, estimate_peak, fit_max_pixels, output_size
from .rundir import (
    RunDir,
    chunk_latents,
    depth_file,
    final_dump,
    load_latents,
    load_reads,
    newest_dump,
    read_run,
    run_json,
    save_depth,
    trajectory_file,
)

Warn = Callable[[str], None]


def generate(cfg: GenerateConfig | None, progress=None, warn: Warn = print, resume_dir: Path | None = None,
             quiet: bool = False, resume_device: str | None = None, dry_run: bool = False, note: Warn | None = None,
             cancel: CancelToken | None = None) -> dict:
    """Run (or resume) one generation. Returns the run record (as written to ``run.json``).

    Everything that can fail on bad input is checked before the output directory is touched.

    Args:
        cfg: the options (ignored with ``resume_dir``). progress: a ``rich.progress.Progress`` or None.
        warn: callable for warnings. note: callable for information about choices made for the
            user (where a preset by name was placed); None: not said (``mirage batch``).
        resume_dir: continue the run in this directory (its run.json supplies the options; the
            trajectory comes from its ``trajectory.json`` and the scale from its recorded depth).
        quiet: silence the model libraries' own loading bars too.
        resume_device: ``--device`` given with ``resume_dir``: allowed only where it names the run's
            own device (another one would not reproduce the run bit for bit).
        dry_run: prepare the run, then write coverage.mp4 instead of running a backend (``dryrun.py``).
        cancel: stops the run between stages (the CLI's checks Ctrl-C); None: never cancelled.
    """
    cancel = cancel or CancelToken()
    if resume_dir is None and cfg is None:
        raise MirageError("generate: give the options, or a run directory to resume")
    if dry_run:
        assert cfg is not None
        run = start(cfg, warn=warn, quiet=quiet, dry_run=True, note=note, cancel=cancel)
        rundir = run.dir
        assert rundir is not None  # a new run holds its directory
        try:
            record = run_dry(run)
        except BaseException:
            rundir.abort()  # an --overwrite's earlier run is put back; the lock goes
            raise
        rundir.committed()  # the dry run replaced the earlier run
        rundir.close()  # and its lock file goes, as a real run's does
        return record.to_json()
    if resume_dir is not None:
        run = resume(Path(resume_dir), warn=warn, quiet=quiet, device=resume_device)
    else:
        assert cfg is not None
        run = start(cfg, warn=warn, quiet=quiet, note=note, cancel=cancel)
    return run_loop(run, progress=progress, warn=warn, cancel=cancel).to_json()


def start(cfg: GenerateConfig, warn: Warn = print, quiet: bool = False, dry_run: bool = False,
          loaders: Loaders | None = None, note: Warn | None = None, cancel: CancelToken | None = None) -> Run:
    """A new run: validate every input, then create the run directory and the first memory.
    ``dry_run``: with a stand-in codec of the real run's geometry and no backend (see ``dryrun.py``);
    ``loaders``: how models are obtained (default: loaded; ``mirage batch`` passes caching ones);
    ``note``: where information goes (see :func:`generate`)."""
    loaders = loaders or Loaders()
    t_start = time.perf_counter()
    given = with_geometry_image(cfg)
    check_config(given)
    spec = backend_spec(given.backend)
    for opt in unused_options(given):
        warn(f"{opt} does nothing with --backend {given.backend}" + (f" and --depth {given.depth}" if "depth" in opt else ""))
    cfg = with_absolute_paths(with_backend_defaults(given))
    if cfg.conditioning in spec.experimental_conditionings:
        warn(f"--conditioning {cfg.conditioning} is EXPERIMENTAL with --backend {spec.name}: the weights were never "
             "trained with it and its quality is unmeasured")
    device = resolve_device(cfg.device)
    assert cfg.image is not None and cfg.traj is not None  # check_config refused their absence
    image_path, traj_ref = Path(cfg.image), cfg.traj
    preflight(cfg.traj, image_path, cfg.depth, cfg.depth_scale, cfg.traj_scale, cfg.start_frame, cfg.memory, warn)
    image_raw, image_hash = load_input_image(image_path, cfg.start_frame), file_sha256(image_path)
    W0, H0 = image_raw.shape[-1], image_raw.shape[-2]
    fit = fit_max_pixels(W0, H0, cfg.width, cfg.height, cfg.max_pixels)
    if fit is not None:
        cfg = replace(cfg, width=fit[0], height=fit[1])  # said below, with the size after grid rounding
    # a size we chose to fit --max-pixels is rounded to the grid instead (its note says the result)
    check_frame_size(output_size(W0, H0, cfg.width, cfg.height), image_path,
                     cfg.downscale if not spec.samples and fit is None else None)
    memory = LatentMemory.load(cfg.memory, device=device) if cfg.memory else None
    if not spec.codec.spatial_factor and cfg.downscale is None and memory is not None and memory.codec == "pixel":
        cfg = replace(cfg, downscale=memory.spatial_factor)  # continue at the memory's own grid
    cfg = _with_downscale(cfg, spec, image_raw)
    codec, backend = dry_run_parts(cfg, spec, warn) if dry_run else loaders.codec_backend(cfg, show_progress=not quiet)
    if memory is not None:
        check_memory_fits(memory, codec, cfg)
    multiple = grid_multiple(spec, codec)
    image = prepare_image(image_path, cfg.height, cfg.width, multiple, cfg.start_frame, loaded=image_raw)
    raw_hw = (int(image_raw.shape[-2]), int(image_raw.shape[-1]))
    del image_raw  # the file-size float32 copy: the largest tensor of a huge input, not needed past here
    H, W = image.shape[-2:]
    if fit is not None:
        warn(f"{image_path}: {W0}x{H0} is above --max-pixels {cfg.max_pixels:,}; resized to {W}x{H}")
    distortion = (W / H) / (W0 / H0) - 1
    if aspect_differs((W0, H0), (W, H)):  # a resize is a per-axis stretch, never a crop: say so when it shows
        warn(f"{image_path}: {W0}x{H0} stretched to {W}x{H} frames: {100 * abs(distortion):.0f} % "
             f"{'wider' if distortion > 0 else 'narrower'} than the image "
             f"({stretch_cause((W0, H0), (cfg.width, cfg.height), multiple)})")
    tf = codec.temporal_factor

    def check_ram(frames: int) -> None:  # the peak-RAM estimate of a run `frames` long
        check_peak(estimate_peak((W0, H0), (W, H), (H // codec.spatial_factor, W // codec.spatial_factor), codec.channels,
                                 2, cfg.chunk_frames or spec.chunk_frames, tf, frames, spec.pixel_history),
                   available_ram(), cfg.frames)

    if cfg.frames is not None:
        check_ram(cfg.frames)  # before anything is made --frames long (the resampled trajectory, cameras, plan)
    traj = prepare_trajectory(cfg, (W, H), warn)
    check_ram(len(traj))
    cams = trajectory_cameras(traj, cfg.fov, W, H, cfg.intrinsics)
    fov0 = float(cams.fov_y_deg[0])  # the prior depth needs frame 0's fov
    depth, depth_source, depth_model = prepare_depth(cfg, image_path, image, raw_hw, fov0, device,
                                                     warn, show_progress=not quiet, loaders=loaders)
    traj, look_at = place_preset(traj, traj_ref, cfg.look_at_depth, cfg.frames, depth, cams[:1], reference_depth(depth))
    if look_at is not None and cfg.look_at_depth is None and note is not None:
        note(placement_note(traj_ref, look_at))

    # Every input is valid: only now the run directory is created (the trajectory is then used as
    # saved there, exactly as a resumed run will read it).
    (cancel or CancelToken()).check()  # a Ctrl-C swallowed while loading: stop before touching the run directory
    out = Path(cfg.out) if cfg.out else Path("outputs") / f"{image_path.stem}-{traj_stem(traj_ref)}"
    rundir = RunDir.open_new(out, cfg.overwrite, warn)  # locked; an earlier run moved aside until our first checkpoint
    try:
        save_trajectory(traj, trajectory_file(out))
        save_depth(out, depth)
        plan = _plan(replace(cfg, out=str(out.resolve())), out, image_path, image_hash, image, codec, spec,
                     reference_depth(depth), depth_source, device)
        warn_behind(plan.cams, depth, warn)
        first_latent = _first_latent(codec, image, device)
        memory = _first_memory(memory, plan, codec, first_latent, depth.to(device),
                               warn if depth_source == "prior" and cfg.depth is None else None)
        record = _new_record(plan, traj, codec, backend)
        record.config = recorded_config(record.config, given)
        record.trajectory.look_at_depth = look_at
        record.reference_selection = _reference_selection(plan, spec, warn)
        video = None if dry_run else open_video(plan, spec)
        return _assemble(plan, codec, backend, first_latent, memory, record, image, depth_model, t_start, video,
                         rundir=rundir, warn=warn, writable=not dry_run)
    except BaseException:
        rundir.abort()
        raise


def resume(run_dir: Path, warn: Warn = print, quiet: bool = False, device: str | None = None,
           loaders: Loaders | None = None) -> Run:
    """An interrupted run, continued after its newest checkpoint with the options it started with
    (the run directory stays locked until the run ends; ``device``: see :func:`generate`)."""
    loaders = loaders or Loaders()
    t_start = time.perf_counter()
    out = Path(run_dir)
    rundir = RunDir.open_resume(out, warn)
    try:
        record = read_run(out)
        if device is not None and str(resolve_device(device)) != record.device:
            raise MirageError(f"--device: the run in {out} ran on {record.device}; a resume on {resolve_device(device)} "
                              "would not reproduce it bit for bit (leave --device out)")
        dump, records = newest_dump(out)
        run = _reopen(out, record, loaders, quiet, t_start, dump, records, rundir=rundir, warn=warn)
        threads = current_threads()
        if record.device == "cpu" and isinstance(record.threads, int) and record.threads != threads:
            # CPU reductions (matmul, sums) group their terms by thread: another count changes the last bits
            warn(f"--resume: the run in {out} used {record.threads} CPU threads and this resume {threads}; the rest of "
                 f"the run may differ from an uninterrupted one in the last bits (give --threads {record.threads} for a "
                 "bit-identical continuation)")
        record.resumed_at = (record.resumed_at or []) + [now()]
        record.status = "running"
        record.threads = threads
        return run
    except BaseException:
        rundir.close()
        raise


def reopen(out: Path, loaders: Loaders | None = None, quiet: bool = True) -> Run:
    """A finished run rebuilt for reading, writing nothing (``mirage eval`` scores a run from its
    directory, so a resumed or earlier run scores exactly like a fresh one): the plan, the models,
    the final memory, the history, and in ``run.kept`` every frame exactly as the loop made it
    (decoded again from the kept chunk latents). Needs a run made with ``keep_latents`` and
    ``cache_dump`` final or chunks."""
    record = RunRecord.read(run_json(out))
    if record.status != "done":
        raise MirageError(f"{out}: the run is not finished ({record.status}); nothing to read")
    needed = [final_dump(out)] + [chunk_latents(out, c.index) for c in record.chunk_plan]
    missing = next((p for p in needed if not p.exists()), None)
    if missing is not None:
        raise MirageError(f"{missing}: missing (a run to read needs --keep-latents and --cache-dump final or chunks)")
    return _reopen(out, record, loaders or Loaders(), quiet, time.perf_counter(), final_dump(out), list(record.chunks))


def _reopen(out: Path, record: RunRecord, loaders: Loaders, quiet: bool, t_start: float, dump: Path,
            records: list, rundir: RunDir | None = None, warn: Warn = print) -> Run:
    """An existing run rebuilt from its directory with the options it started with: ``resume``
    (``rundir`` given: it continues, writing) and ``reopen`` (reading only) share it. The memory
    comes from ``dump``, the history from the stored latents of ``records``' chunks."""
    cfg = replace(record.config, out=str(out))
    check_config(cfg)
    spec = backend_spec(cfg.backend)
    cfg = with_absolute_paths(with_backend_defaults(cfg))  # the preview's run.json leaves its unused options null
    device = resolve_device(cfg.device)
    assert cfg.image is not None  # a recorded run has its image
    image_path = Path(cfg.image)
    image_raw, image_hash = load_input_image(image_path, cfg.start_frame), file_sha256(image_path)
    if record.image.sha256 != image_hash:
        raise MirageError(f"{image_path}: the image changed since the run in {out} started (hash differs); cannot "
                          f"{'resume' if rundir is not None else 'read it'}")
    cfg = _with_downscale(cfg, spec, image_raw)
    codec, backend = loaders.codec_backend(cfg, show_progress=not quiet)
    image = prepare_image(image_path, cfg.height, cfg.width, grid_multiple(spec, codec), cfg.start_frame, loaded=image_raw)
    del image_raw
    # The input depth only mattered for the first lift, which the checkpoint holds; its scale and model stay.
    depth_model = (resume_depth_model(cfg, record.depth.source, device, show_progress=not quiet, loaders=loaders)
                   if rundir is not None else None)
    plan = _plan(cfg, out, image_path, image_hash, image, codec, spec, record.depth.reference_depth, record.depth.source,
                 device)
    first_latent = _first_latent(codec, image, device)
    record.chunks = records
    video = open_video(plan, spec) if rundir is not None else FrameList()
    return _assemble(plan, codec, backend, first_latent, LatentMemory.load(dump, device=device), record, image,
                     depth_model, t_start, video, rundir=rundir, warn=warn, writable=rundir is not None)


def _assemble(plan: RunPlan, codec: Codec, backend: Backend, first_latent: torch.Tensor, memory: LatentMemory,
              record: RunRecord, image: torch.Tensor, depth_model, t_start: float, video, *, rundir: RunDir | None,
              warn: Warn, writable: bool) -> Run:
    """The one builder of a :class:`Run` (new, resumed, reopened): the engine on the plan, the
    chunks ``record.chunks`` holds replayed from their stored latents (bit-identical history and
    video), and the run directory's writer watching the engine."""
    spec, cfg, s = backend.spec, plan.config, plan.settings
    settings = EngineSettings(grid=plan.grid, seed=cfg.seed, steps=s.steps, guidance=s.guidance, prompt=cfg.prompt,
                              negative_prompt=cfg.negative_prompt, references=s.references,
                              voxel=voxel_size(plan.depth_source, plan.reference_depth)[0],
                              conditioning=cfg.conditioning or "")
    pixels: dict[str, Any] = {}
    if spec.pixel_history:  # the input's pixels and saved depth (the explicit cloud's frame 0), the cameras
        depth = torch.from_numpy(np.load(depth_file(plan.out), allow_pickle=False)).float().to(plan.device)
        pixels = dict(input_image=image.to(plan.device), input_depth=depth, cameras=plan.cams)
    engine = ChunkEngine(codec, backend, memory, first_latent, plan.cams[:1], settings, depth_model=depth_model,
                         first_frame=image if spec.exact_first_frame else None, **pixels)
    try:
        for chunk in plan.chunks[:len(record.chunks)]:
            path = chunk_latents(plan.out, chunk.index)
            frames_u8 = engine.replay(chunk, plan.cams[chunk.frames], load_latents(path).to(plan.device),
                                      load_reads(path, plan.device))
            assert frames_u8 is not None  # replay decodes by default
            video.append(frames_u8[chunk.new_from:])
    except BaseException:
        video.abort()
        raise
    writer = None
    if writable:
        writer = RunWriter(plan, record, video, spec, rundir, warn)
        writer.image = image
        engine.observers.append(writer)
    return Run(plan, engine, record, video, t_start, writer=writer, dir=rundir)


def input_memory(run: Run) -> LatentMemory:
    """The memory ``run`` started from: its input lifted with its saved depth (``depth.npy``)."""
    depth = torch.from_numpy(np.load(depth_file(run.plan.out), allow_pickle=False)).to(run.plan.device)
    return _first_memory(None, run.plan, run.codec, run.engine.first_latent, depth)


# ------------------------------------------------------------------------------------ shared steps
def check_frame_size(size: tuple[int, int], image_path: Path, downscale: int | None) -> None:
    """Refuse an output ``(W, H)`` outside 16..8192 pixels a side (the --width/--height bounds, for
    an image's own size too) and a user's preview ``--downscale`` that does not divide it (the frame
    would silently be cropped, e.g. 832 -> 831 pixels, an odd width)."""
    W, H = size
    lo, hi = FRAME_SIDES
    if not (lo <= W <= hi and lo <= H <= hi):
        raise MirageError(f"{image_path}: a {W}x{H} frame; frames must be between {lo} and {hi} pixels a side "
                          "(resize the image or give --width/--height)")
    if downscale and (W % downscale or H % downscale):
        divisors = [d for d in range(1, 17) if W % d == 0 and H % d == 0]
        raise MirageError(f"--downscale {downscale}: does not divide the {W}x{H} frame (it would be cropped to "
                          f"{W // downscale * downscale}x{H // downscale * downscale}); choose one of "
                          f"{', '.join(map(str, divisors))}")


def stretch_cause(image_size: tuple[int, int], asked: tuple[int | None, int | None], multiple: int) -> str:
    """Why the frames' aspect differs from the image's ``(W0, H0)`` and how to keep it: ``asked``
    ``(--width, --height)`` in another aspect, or the rounding down to multiples of ``multiple`` px
    (the codec's grid) of a size in the image's aspect (e.g. --width 128 alone: 128x74 -> 128x64)."""
    W0, H0 = image_size
    W, H = output_size(W0, H0, *asked)
    if aspect_differs((W0, H0), (W, H)):
        return "give one of --width/--height, or both in the image's aspect, to keep it"
    hint = f"{W}x{H} rounded down to multiples of {multiple} px, the backend's grid"
    fits = [(w, h) for w in range(multiple, 8193, multiple) for h in [round(H0 * w / W0) // multiple * multiple]
            if h >= multiple and not aspect_differs((W0, H0), (w, h))]
    if fits:
        w, h = min(fits, key=lambda s: abs(s[0] - W))
        hint += f"; a size whose both sides are multiples of {multiple} keeps it, e.g. --width {w} --height {h}"
    return hint


def _with_downscale(cfg: GenerateConfig, spec: BackendSpec, image_raw: torch.Tensor) -> GenerateConfig:
    """A pixel-codec backend's grid (the preview's): ``--downscale``, else automatic for the output
    size actually used (one of --width/--height alone: the other follows the aspect ratio; see
    preview_downscale). Backends with a fixed codec cell are left as they are."""
    if spec.codec.spatial_factor or cfg.downscale is not None:
        return cfg
    W, H = output_size(image_raw.shape[-1], image_raw.shape[-2], cfg.width, cfg.height)
    return replace(cfg, downscale=preview_downscale(W, H))


def _plan(cfg: GenerateConfig, out: Path, image_path: Path, image_hash: str, image: torch.Tensor, codec: Codec,
          spec: BackendSpec, ref_depth: float, depth_source: str, device: torch.device) -> RunPlan:
    """The run plan, from the run directory's own trajectory (the same for a new and a resumed run)."""
    H, W = image.shape[-2:]
    cams, saved = run_cameras(cfg, out, (W, H), ref_depth)
    cfg = replace(cfg, chunk_frames=cfg.chunk_frames or spec.chunk_frames)
    settings = RunSettings.of(cfg)
    try:
        chunks = tuple(spec.plan(len(cams), settings.chunk_frames, codec.temporal_factor))
    except ValueError as e:
        raise MirageError(f"--chunk-frames {cfg.chunk_frames}: {e}") from None
    return RunPlan(config=cfg, settings=settings, out=out, image_path=image_path, image_hash=image_hash, size=(W, H),
                   grid=(H // codec.spatial_factor, W // codec.spatial_factor), cams=cams, fps=cfg.fps or saved.fps,
                   chunks=chunks, reference_depth=ref_depth, depth_source=depth_source, device=device)


def run_cameras(cfg: GenerateConfig, out: Path, size: tuple[int, int], ref_depth: float):
    """The cameras a run uses, from its own ``trajectory.json``: ``(cameras (N) at size = (W, H),
    poses relative to frame 0 (frame 0 = identity), translations in scene units (a relative
    trajectory scaled by ``ref_depth``); the saved Trajectory)``. Needs no model (``mirage eval loop``
    reads a run's cameras with it)."""
    W, H = size
    saved = load_trajectory(trajectory_file(out))
    return scale_cameras(trajectory_cameras(saved, cfg.fov, W, H, cfg.intrinsics), saved.scale, ref_depth), saved


def _first_latent(codec: Codec, image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The input image's latent ``(C, h, w)``, rounded like every stored latent."""
    return round_latents(codec.encode(image[None].to(device))[0]).to(device)


def _first_memory(memory: LatentMemory | None, plan: RunPlan, codec: Codec, first_latent: torch.Tensor,
                  depth: torch.Tensor, warn_prior: Warn | None = None) -> LatentMemory:
    """The memory a new run starts from: the input image lifted with its depth ``(H, W)``, into a
    fresh memory or (``--memory``) into a saved one where that one does not already see it.
    ``warn_prior``: where the depth is the prior because none was found, says how much of the
    input a saved memory leaves to it (nothing said when the memory sees the whole input)."""
    cam0, cfg = plan.cams[0], plan.config
    if memory is not None:
        memory.write_policy = cfg.write_policy
        memory.splat = plan.settings.splat
        _, known0, _ = memory.read(cam0)
        unseen = float((~known0[0]).float().mean())
        if warn_prior is not None and unseen > 0:
            warn_prior(f"{NO_DEPTH}: {cfg.memory} does not see {100 * unseen:.1f} % of the input view; that part is "
                       f"lifted with the geometric prior (ground plane + far wall); {real_depth_hint(cfg)}")
        memory.lift(first_latent, depth, cam0, chunk=INPUT_CHUNK, mask=~known0[0])
        return memory
    memory = LatentMemory(codec.channels, codec.spatial_factor, codec=codec.name, device=plan.device,
                          write_policy=cfg.write_policy, image_hash=plan.image_hash, splat=plan.settings.splat)
    memory.lift(first_latent, depth, cam0, chunk=INPUT_CHUNK)
    return memory


def _reference_selection(plan: RunPlan, spec: BackendSpec, warn: Warn) -> dict | None:
    """How a ``voxel-iou`` backend (mirage) picks its references, for run.json; warns when the voxel
    had to be scaled because the depth is relative."""
    if spec.references != "voxel-iou" or not plan.config.references:
        return None
    voxel, how = voxel_size(plan.depth_source, plan.reference_depth)
    if not depth_is_metric(plan.depth_source):
        warn(f"references: the depth ({plan.depth_source}) is not metric, so the reference's 0.1 voxel is scaled by "
             f"the reference depth: {how}")
    return {"method": "voxel-iou", "voxel": voxel, "voxel_rule": how, "threshold": IOU_THRESHOLD}


def _new_record(plan: RunPlan, traj, codec: Codec, backend: Backend) -> RunRecord:
    """run.json of a new run before its first chunk."""
    cfg = plan.config
    W, H = plan.size
    return RunRecord(
        format=RUN_FORMAT, mirage_version=__version__, versions=versions(), status="running", started_at=now(),
        command=" ".join(["mirage"] + sys.argv[1:]), config=cfg, backend=backend.describe(),
        codec=CodecInfo(codec.name, codec.channels, codec.spatial_factor, codec.temporal_factor),
        model=cfg.model, seed=cfg.seed, device=str(plan.device), dtype=cfg.dtype,
        image=ImageInfo(str(plan.image_path), plan.image_hash, W, H),
        depth=DepthInfo(plan.depth_source, plan.reference_depth),
        trajectory=TrajectoryInfo(source=str(cfg.traj), format=traj.format, frames=len(plan.cams), fps=plan.fps,
                                  scale=traj.scale, saved=str(trajectory_file(plan.out))),
        latent_grid=list(plan.grid), threads=current_threads(),
        chunk_plan=[PlannedChunk(c.index, [c.start, c.stop - 1], c.length) for c in plan.chunks],
    )
