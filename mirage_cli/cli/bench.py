"""`mirage bench`: parse the options, hand them to :func:`mirage_cli.bench.loop.run_bench` (or
:func:`mirage_cli.bench.memory_speed.memory_speed_report`), print the table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..errors import MirageError
from ..threads import apply_light_default, given_threads
from .checks import check_output_parent
from .console import Progress, console, err_console


def register(app: typer.Typer) -> None:
    """Add the `bench` command to the root app."""
    # no help screen for a bare `mirage bench`: one line says which of the two modes to choose
    app.command("bench")(bench_cmd)


MEMORY_ONLY_OPTIONS = ("memory_only", "points", "device", "json_out", "quiet")
"""The options that apply to ``--memory-only``; any other given with it is refused, not dropped."""


def given_options(ctx: typer.Context, names=None) -> list[str]:
    """The longest spelling of each option the user gave on the command line (not defaults), of
    ``names`` only when given."""
    out = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)  # typer vendors click's enum: compare by name
        if param.param_type_name == "option" and source is not None and source.name != "DEFAULT" \
                and (names is None or param.name in names):
            out.append(max(param.opts, key=len))
    return out


def bench_cmd(
    ctx: typer.Context,
    compare: str | None = typer.Option(None, "--compare", help="Baseline to compare the latent memory with: pointcloud."),
    memory_only: bool = typer.Option(False, "--memory-only", help="Only time the latent memory's read/write/lift on a 60x104 latent grid."),
    points: int = typer.Option(200_000, "--points", help="--memory-only: points in the memory."),
    scene: str = typer.Option("synthetic", "--scene", help="'synthetic' (procedural room, exact depth, ground truth) or an IMAGE path."),
    depth: Path | None = typer.Option(None, "--depth", help="Depth of an IMAGE scene (.npy/.npz) (default: its sidecar IMAGE.depth.npy)."),
    traj: str | None = typer.Option(None, "--traj", "-t", help="Trajectory file or preset (default orbit_360; on the synthetic scene, presets orbit the room's centre)."),
    frames: int = typer.Option(25, "--frames", "-n", help="Total frames (all laps)."),
    laps: int = typer.Option(1, "--laps", help="Repeat the trajectory this many times (e.g. 2 laps of orbit_360)."),
    chunk_frames: int = typer.Option(9, "--chunk-frames", help="Frames per chunk, rounded down to 1+4k for Wan codecs."),
    codec: str = typer.Option("tiny", "--codec", help="tiny | pixel | wan2.1-vae | wan2.2-vae (real weights when cached, else random weights of the real architecture)."),
    height: int = typer.Option(240, "--height", help="Frame height."),
    width: int = typer.Option(416, "--width", help="Frame width."),
    denoiser: str = typer.Option("none", "--denoiser", help="none | tiny | wan2.1-1.3b (Wan2.1-VACE transformer; real weights when cached) | mirage (the paper's transformer, random weights; needs --codec wan2.2-vae) | mirage-tiny | spatia (--model: one engine per arm, rgb conditioning on the point cloud, latent on the memory)."),
    model: str | None = typer.Option(None, "--model", help="--denoiser spatia: a `mirage models convert --layout spatia` folder (its VAE is the codec; the chunk plan is Spatia's)."),
    steps: int = typer.Option(4, "--steps", help="Denoiser steps per chunk."),
    write_policy: str = typer.Option("new", "--write-policy", help="new | replace | average | append (both memories)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    fidelity: str = typer.Option("auto", "--fidelity", help="auto | on | off: decode both reads and compare with the true render (auto: synthetic scene and non-random codec)."),
    write_depth: str = typer.Option("auto", "--write-depth", help="Depth of new content: filled (each arm's read depth extended into holes, as generate does), exact (synthetic scene), auto (exact with fidelity)."),
    seed: int = typer.Option(0, "--seed", help="Scene texture seed and denoiser noise seed."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full report (config, totals, ratios, per-chunk arrays) to this file."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG of cache size and cumulative seconds against frames."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary (warnings still print)."),
) -> None:
    """Measure the latent memory against an explicit RGB point cloud on the same scene, trajectory and codec."""
    from ..bench.config import TWO_ENGINES, BenchConfig
    from ..bench.loop import run_bench
    from ..bench.plot import draw_plot
    from ..bench.report import notes, summary_table
    from ..io import write_json

    check_output_parent(json_out, "--json")
    check_output_parent(plot, "--plot")
    if memory_only:
        extra = [o for o in given_options(ctx) if o not in given_options(ctx, MEMORY_ONLY_OPTIONS)]
        if extra:
            raise MirageError(f"--memory-only times the latent memory alone; {', '.join(extra)} "
                              f"{'does' if len(extra) == 1 else 'do'} not apply (use --points, --device, --json)")
        if points < 1:
            raise MirageError(f"--points: must be >= 1 (got {points})")
        from ..bench.memory_speed import memory_speed_report
        from ..models.registry import resolve_device

        apply_light_default(given_threads(ctx))
        report = memory_speed_report(points=points, device=str(resolve_device(device)), print_report=not quiet)
        if json_out:
            write_json(json_out, report)
            console.print(f"report {json_out}", highlight=False)
        return
    if compare is None:
        raise MirageError("bench: choose --compare pointcloud (latent vs explicit memory) or --memory-only")
    if given_options(ctx, ("points",)):
        raise MirageError("--points applies to --memory-only only (--compare sizes the memory from the scene)")

    if denoiser in TWO_ENGINES:
        own = given_options(ctx, ("codec", "chunk_frames"))
        if own:
            raise MirageError(f"{', '.join(own)}: --denoiser {denoiser} uses its model's VAE and chunk plan")
    cfg = BenchConfig(compare=compare, scene=scene, depth=str(depth) if depth else None, traj=traj, frames=frames,
                      laps=laps, chunk_frames=chunk_frames, codec=codec, height=height, width=width, denoiser=denoiser,
                      steps=steps, write_policy=write_policy, device=device, fidelity=fidelity, write_depth=write_depth, seed=seed,
                      model=model)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err_console, disable=quiet, transient=False)
    with progress:
        report = run_bench(cfg, progress=progress, warn=lambda m: err_console.print(f"[yellow]warning:[/] {m}"))
    if json_out:
        write_json(json_out, report)
    if plot:
        draw_plot(report, plot)
    if quiet:
        return
    console.print(summary_table(report))
    for line in notes(report):
        console.print(line, highlight=False)
    if json_out:
        console.print(f"report {json_out}" + (f"\nplot   {plot}" if plot else ""), highlight=False)
    elif plot:
        console.print(f"plot   {plot}", highlight=False)

