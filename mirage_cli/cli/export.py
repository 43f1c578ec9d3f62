"""`mirage export RUN --to colmap|nerfstudio OUT`: a finished run as a 3D-reconstruction dataset."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from .console import Progress, err_console


def register(app: typer.Typer) -> None:
    """Add the `export` command to the root app."""
    app.command("export", no_args_is_help=True)(export_cmd)


def export_cmd(
    run: Path = typer.Argument(..., help="Run directory of a finished `mirage generate`."),
    out: Path = typer.Argument(..., help="Output folder (images/, sparse/0/ or transforms.json, ...)."),
    to: str = typer.Option(..., "--to", help="colmap (sparse/0 model: COLMAP, gsplat, nerfstudio) | nerfstudio (transforms.json + sparse_pc.ply)."),
    every: int = typer.Option(1, "--every", help="Keep every N-th frame (frame 0, N, 2N, ...)."),
    depth: bool = typer.Option(False, "--depth", help="Also write the memory's depth per frame (depth/*.png, 16-bit millimetres of scene units)."),
    binary: bool = typer.Option(False, "--binary", help="colmap: write the binary model (.bin) instead of text."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty OUT (files of the same name are replaced)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing on success."),
) -> None:
    """Export RUN's frames, exact cameras and memory points as a COLMAP model or a nerfstudio dataset."""
    from ..export.dataset import export_run
    from ..export.run import open_run

    frames = len(open_run(run, "nothing to export").cameras[::every]) if every >= 1 else 0
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, disable=quiet, transient=True)
    with progress:
        task = progress.add_task("frames", total=frames)
        result = export_run(run, to, out, every=every, depth=depth, binary=binary, overwrite=overwrite,
                            tick=lambda n: progress.update(task, completed=n))
    if not quiet:
        err_console.print(f"wrote {out} ({to}: {len(result.frames)} frames, {result.points:,} points; "
                          f"{', '.join(str(p.relative_to(out)) for p in result.files)})", highlight=False)
    if result.depth_clipped:
        err_console.print(f"[yellow]warning:[/] {result.depth_clipped:,} depth pixels beyond 65.535 scene units were "
                          "clipped in the 16-bit depth PNGs", highlight=False)
