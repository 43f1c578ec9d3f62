"""`mirage generate`: parse the options, hand them to :func:`mirage_cli.pipeline.generate.generate`."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..backends.specs import BACKENDS
from ..errors import MirageError
from ..interrupts import raise_if_interrupted, sticky_interrupts
from ..pipeline.resources import MAX_PIXELS
from ..threads import apply_light_default, given_threads
from ..units import fmt_bytes
from . import options
from .console import Progress, console, err_console, plural


def register(app: typer.Typer) -> None:
    """Add the `generate` command to the root app."""
    app.command("generate", no_args_is_help=True)(generate_cmd)


def stops_on_ctrl_c(command: Callable) -> Callable:
    """Run ``command`` under :func:`~mirage_cli.interrupts.sticky_interrupts` (installed before the
    heavy imports, so no Ctrl-C of the startup is lost) and turn a KeyboardInterrupt into the
    "interrupted" line and exit 130 (said here: typer turns it into a silent exit 130 before the root
    handler could)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with sticky_interrupts():
                raise_if_interrupted()  # a Ctrl-C swallowed before the command began (torch's import)
                return command(*args, **kwargs)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


@stops_on_ctrl_c
def generate_cmd(
    ctx: typer.Context,
    image: Path | None = typer.Argument(None, help="Input image (frame 0 of the trajectory), or a geometry.npz. Not needed with --resume, nor when --traj is a geometry.npz."),
    traj: str | None = typer.Option(None, "--traj", "-t", help="Trajectory file (any supported format) or preset name (see `mirage traj list`)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory \\[default: outputs/<image-stem>-<traj-stem>]."),
    backend: str = options.BACKEND,
    model: str | None = options.MODEL,
    depth: str | None = typer.Option(None, "--depth", help="Input depth: FILE (.npy/.npz/.exr/.pfm/.png, a .png with --depth-scale), 'model' or 'prior' \\[default: sidecar, else cached depth model, else prior]."),
    depth_scale: float | None = typer.Option(None, "--depth-scale", help="Multiplier for depth file values (required for a PNG, e.g. 0.001 for mm)."),
    depth_model: str = typer.Option("depth-anything-v2-small", "--depth-model", help="Depth model for --depth model / automatic depth."),
    frames: int | None = typer.Option(None, "--frames", "-n", help="Resample the trajectory to N frames."),
    fps: float | None = typer.Option(None, "--fps", help="Output frame rate \\[default: the trajectory's]."),
    height: int | None = typer.Option(None, "--height", help="Output height (the image is resized) \\[default: the image's]."),
    width: int | None = typer.Option(None, "--width", help="Output width \\[default: the image's]."),
    max_pixels: int = typer.Option(MAX_PIXELS, "--max-pixels", show_default="1 MP = 1048576", help="Largest frame (width x height); a larger input is resized to fit (a note says so)."),
    fov: float | None = typer.Option(None, "--fov", help="Vertical field of view in degrees for every frame (overrides the trajectory's)."),
    intrinsics: str = typer.Option("crop", "--intrinsics", help="When the trajectory's image aspect differs from the image's: crop (resize to cover + centre-crop, square pixels) | stretch (per axis) | fov (keep the vertical fov)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same inputs + seed = same output on the same device)."),
    steps: int | None = options.STEPS,
    guidance: float | None = options.GUIDANCE,
    shift: float | None = options.SHIFT,
    prompt: str = typer.Option("", "--prompt", "-p", help="Text prompt (the network backends: wan-vace, mirage, spatia)."),
    negative_prompt: str = typer.Option("", "--negative-prompt", help="Negative prompt (wan-vace, mirage, spatia; with --guidance > 1; spatia: Wan's standard one when empty)."),
    prompt_file: Path | None = typer.Option(None, "--prompt-file", help="One prompt per chunk, one per non-empty line (the last repeats); replaces --prompt."),
    conditioning: str | None = typer.Option(None, "--conditioning", help="spatia: rgb (its explicit RGB point cloud rendered and VAE-encoded every chunk, as trained) | latent (mirage's latent memory read, experimental) \\[default: rgb]."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | fp32 | bf16 | fp16 (auto: bf16 on CUDA, fp32 on CPU)."),
    chunk_frames: int | None = options.CHUNK_FRAMES,
    downscale: int | None = typer.Option(None, "--downscale", help="preview: memory grid = image / N (faster, softer); must divide the frame size \\[default: auto: the smallest of 1, 2, 4, 8 giving at most 204,800 cells, e.g. 2 for 832x480, 1 for 416x240]."),
    cache_dump: str = typer.Option("final", "--cache-dump", help="final: the newest dump while running (for --resume), then final.safetensors | chunks: also every chunk's | none: nothing once done."),
    write_policy: str = typer.Option("new", "--write-policy", help="Memory write policy: new (only uncovered cells) | replace | average | append (every cell, as the paper's reference)."),
    splat: str | None = typer.Option(None, "--splat", help="Memory read: patch (each point covers its projected cell, no cracks) | point (nearest cell only, as the paper's reference) \\[default: point for --backend mirage, patch otherwise]."),
    memory: Path | None = typer.Option(None, "--memory", help="Start from a saved memory (a cache .safetensors, or a run's checkpoint directory) to keep exploring a world."),
    references: int | None = options.REFERENCES,
    preceding_frames: int = typer.Option(2, "--preceding-frames", help="mirage: latent frames before the overlap frame given as context, with the reads they were made from (0 allowed)."),
    start_frame: int = typer.Option(0, "--start-frame", help="Start at trajectory frame K (the input image is frame K; geometry.npz: frames[K], depths[K])."),
    cpu_offload: bool = options.CPU_OFFLOAD,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run in --out (only a mirage run directory)."),
    look_at_depth: float | None = typer.Option(None, "--look-at-depth", help="Presets by name (orbits, dolly_zoom, spiral): look-at depth in reference depths \\[default: placed from the input depth so the camera stays in the scene]."),
    traj_scale: float | None = typer.Option(None, "--traj-scale", help="Multiply the trajectory's translations by this, > 0 (a path made for another scene's units; generate warns when a path is out of scale)."),
    keep_latents: bool = typer.Option(False, "--keep-latents", help="Keep chunks/*.latents.safetensors of a finished run (only --resume needs them)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="No backend: write the plan, the depth and coverage.mp4 (what the memory alone sees, holes magenta) to check a path."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the interrupted run in this directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary (warnings still print)."),
    json_out: bool = typer.Option(False, "--json", help="Print the run record (run.json) as JSON on stdout."),
) -> None:
    """Make a camera-controlled video from IMAGE along --traj, keeping the scene in a latent memory."""
    from ..pipeline.config import GenerateConfig, read_prompt_file

    if resume is not None and (image is not None or traj is not None or out is not None):
        raise MirageError("--resume: continues with the options stored in DIR/run.json; give no IMAGE, --traj or --out with it")
    if resume is not None:
        refuse_with_resume(ctx)

    cfg = GenerateConfig(
        image=str(image) if image else None, traj=traj, out=str(out) if out else None, backend=backend, model=model,
        depth=depth, depth_scale=depth_scale, depth_model=depth_model, frames=frames, fps=fps, height=height, width=width,
        fov=fov, intrinsics=intrinsics, seed=seed, steps=steps, guidance=guidance, shift=shift, prompt=prompt, negative_prompt=negative_prompt,
        prompts=list(read_prompt_file(prompt_file)) if prompt_file is not None else None, conditioning=conditioning,
        device=device, dtype=dtype, chunk_frames=chunk_frames, downscale=downscale, cache_dump=cache_dump,
        write_policy=write_policy, splat=splat, memory=str(memory) if memory else None, references=references,
        preceding_frames=preceding_frames, start_frame=start_frame, cpu_offload=cpu_offload, overwrite=overwrite,
        max_pixels=max_pixels, keep_latents=keep_latents, look_at_depth=look_at_depth, traj_scale=traj_scale,
    )
    if resume is None:
        check_options(cfg)  # every option error answers before torch is imported (seconds of CPU)
    name = run_backend(resume) if resume is not None else backend
    if name in BACKENDS and not BACKENDS[name].samples:
        apply_light_default(given_threads(ctx))  # the preview's thread default, for a resumed preview run too
    from ..pipeline.engine import CancelToken
    from ..pipeline.generate import generate  # torch and the whole pipeline

    # warnings go to stderr even with --quiet / --json (they hide progress and the summary only)
    warn = lambda msg: err_console.print(f"[yellow]warning:[/] {msg}")  # noqa: E731
    note = (lambda msg: None) if quiet else (lambda msg: err_console.print(f"note: {msg}", highlight=False))  # noqa: E731
    show = not (quiet or json_out)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err_console, disable=not show, transient=True)
    with progress:
        record = generate(cfg, progress=progress, warn=warn, resume_dir=resume, quiet=quiet or json_out,
                          resume_device=device if resume is not None and _given(ctx, "device") else None, dry_run=dry_run,
                          note=note, cancel=CancelToken(also=raise_if_interrupted))
    if json_out:
        console.print_json(json.dumps(record))
    elif not quiet:
        (print_dry_run if dry_run else print_summary)(record)


def check_options(cfg) -> None:
    """The checks that need no torch, no file read and no model: ``check_config`` and whether
    ``--traj`` is a file or a preset name. ``generate`` repeats them (it is called by others too)."""
    from ..pipeline.config import check_config
    from ..trajectories.catalog import preset_name

    if not cfg.image and cfg.traj and cfg.traj.endswith(".npz"):  # may be a geometry.npz (its own image)
        cfg = replace(cfg, image=cfg.traj)
    check_config(cfg)
    preset_name(cfg.traj)


RESUME_ALLOWED = ("resume", "quiet", "json_out", "device")  # change nothing in the output (--device: checked in resume)


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # typer >= 0.20 has its own copy of click's enum: compare names
    return source is not None and source.name != "DEFAULT"


def run_backend(run_dir: Path) -> str | None:
    """The backend of the run in ``run_dir`` (None where its run.json is missing or damaged: the
    resume itself then says why, in one line)."""
    from ..pipeline.rundir import read_run

    try:
        return read_run(run_dir).config.backend
    except MirageError:
        return None


def refuse_with_resume(ctx: typer.Context) -> None:
    """A resume repeats the options in DIR/run.json: any other option given would be ignored, so it is refused."""
    for param in ctx.command.params:
        if param.param_type_name == "option" and param.name not in RESUME_ALLOWED and _given(ctx, param.name):
            opt = max(param.opts, key=len)
            raise MirageError(f"--resume: {opt} would be ignored (a resume repeats the options in DIR/run.json); "
                              "remove it (allowed with --resume: --quiet, --json, --threads, --device naming the run's device)")


def print_dry_run(record: dict) -> None:
    """What a dry run checked and where its files are."""
    cov = record["coverage"]
    out = Path(record["outputs"]["run"]).parent
    console.print(f"[bold yellow]DRY RUN[/]: no backend ran. {record['trajectory']['frames']} frames in "
                  f"{plural(len(record['chunk_plan']), 'chunk')}; depth: {record['depth']['source']}")
    console.print(grid_line(record), highlight=False)
    worst = min(range(len(cov)), key=cov.__getitem__)
    console.print(f"memory coverage: mean {100 * sum(cov) / len(cov):.1f} %, lowest {100 * cov[worst]:.1f} % (frame {worst})")
    console.print(f"coverage {record['outputs']['video']} (holes magenta)\ndepth    {out / 'depth.png'} ({out / 'depth.npy'})\n"
                  f"record   {record['outputs']['run']}")


def print_summary(record: dict) -> None:
    """What was written where, and how long each stage took."""
    tot = record["totals"]
    b = record["backend"]
    spec = BACKENDS.get(b.get("name"))
    if spec is not None and not spec.samples:
        console.print(f"[bold yellow]{spec.name.upper()}[/]: no neural network ran; holes are filled by classical inpainting.")
    weights = " (random weights: a timing/test kit, the video is noise)" if b.get("weights") == "random" else ""
    console.print(f"{record['trajectory']['frames']} frames in {plural(len(record['chunks']), 'chunk')}, backend {b.get('name')}"
                  f"{weights}, {record['device']}, {plural(record.get('threads') or 1, 'thread')}")
    console.print(grid_line(record), highlight=False)
    t = Table(show_header=True)
    for col in ("stage", "seconds"):
        t.add_column(col)
    for k, v in tot["seconds"].items():
        t.add_row(k, f"{v:.2f}")
    t.add_row("total (wall)", f"{tot['wall_seconds']:.2f}")
    console.print(t)
    console.print(f"memory: {tot['memory_points']:,} points, {fmt_bytes(tot['memory_bytes'])}")
    o = {k: _shown(v) for k, v in record["outputs"].items()}
    console.print(f"video  {o['video']}\nchunks {Path(o['chunks'][0]).parent}/ ({plural(len(o['chunks']), 'mp4', 'mp4')})")
    if o["cache"]:
        console.print(f"cache  {Path(o['run']).parent / 'cache'}/ ({plural(len(o['cache']), 'dump')})")
    console.print(f"record {o['run']}")


def _shown(path):
    """run.json stores absolute paths; the summary shows them relative to the working directory when inside it."""
    if isinstance(path, list):
        return [_shown(p) for p in path]
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def grid_line(record: dict) -> str:
    """The latent grid and, for the preview, how to change it."""
    h, w = record["latent_grid"]
    img = record["image"]
    factor = record["codec"]["spatial_factor"]
    line = f"grid {w}x{h} (1/{factor} of {img['width']}x{img['height']})"
    spec = BACKENDS.get(record["backend"].get("name"))
    if spec is not None and not spec.codec.spatial_factor:  # a grid set by --downscale
        finer = "" if factor == 1 else f"; --downscale {max(1, factor // 2)} for a sharper, slower preview"
        line += f"{finer}; --downscale {factor * 2} for a faster, softer one"
    return line
