"""`mirage cache ...`: inspect, export and render latent-memory cache files (``*.safetensors``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..errors import MirageError
from ..units import fmt_bytes
from .checks import check_output_parent
from .console import console, err_console

app = typer.Typer(
    help="Latent-memory cache files: inspect, export a point cloud, render a memory-only flythrough.",
    no_args_is_help=True,
)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def parse_color(text: str, option: str = "--holes") -> tuple[float, float, float]:
    """A colour option -> RGB in [0, 1]: ``#rgb``, ``#rrggbb``, ``rrggbb`` (no ``#``), ``rgb(...)``,
    ``hsl(...)`` or any CSS colour name (PIL's :func:`~PIL.ImageColor.getrgb`); alpha is ignored."""
    from PIL import ImageColor

    spec = text.strip()
    if len(spec) == 6 and all(c in "0123456789abcdefABCDEF" for c in spec):
        spec = "#" + spec  # bare hex, accepted since the first version of --holes
    try:
        rgb = ImageColor.getrgb(spec)
    except ValueError:
        raise MirageError(f"{option}: {text!r} is not a colour (use #rrggbb or a CSS colour name such as black)") from None
    return rgb[0] / 255, rgb[1] / 255, rgb[2] / 255


@app.command("inspect", no_args_is_help=True)
def inspect_cmd(
    file: Path = typer.Argument(..., help="Cache file (.safetensors) written by `mirage generate` or LatentMemory.save, or a checkpoint directory (MemoryCheckpoint)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
) -> None:
    """Summarise a cache: points, bytes, codec, channels, dtype, chunks, bounds, metadata."""
    from ..memory.checkpoint import cache_summary
    from ..memory.latent import LatentMemory

    info = cache_summary(file, LatentMemory.load(file))
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    t = Table(title=f"latent memory  {file}", show_header=False, title_justify="left")
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")  # a long value (the image hash) folds instead of losing its end
    n = info["points"]
    t.add_row("format", f"{info['format']} v{info['version']}  ({info['created_by'] or 'unknown writer'})")
    t.add_row("codec", f"{info['codec']}: {info['channels']} channels, 1/{info['spatial_factor']} spatial")
    t.add_row("points", f"{n:,}")
    t.add_row("memory", f"{fmt_bytes(info['bytes'])} ({info['bytes_per_point']:.0f} B/point, features {info['dtype']}); "
                        f"file {fmt_bytes(info['file_bytes'])}")
    t.add_row("write policy", f"{info['write_policy']}, splat {info['splat']}")
    k = info["observations"]
    t.add_row("observed views", f"{k} (free space in front of {'its' if k == 1 else 'their'} surfaces is kept free)"
              if k else "none (writes are not checked against observed free space)")
    if info["bounds"]:
        lo, hi = info["bounds"]
        t.add_row("bounds", f"x [{lo[0]:.3g}, {hi[0]:.3g}]  y [{lo[1]:.3g}, {hi[1]:.3g}]  z [{lo[2]:.3g}, {hi[2]:.3g}]")
        fp = info["footprint"]
        t.add_row("footprint", f"min {fp['min']:.3g}  median {fp['median']:.3g}  max {fp['max']:.3g} (world units)")
    chunks = info["chunks"]
    if chunks:
        items = sorted(chunks.items(), key=lambda kv: int(kv[0]))
        shown = "  ".join(f"{'input' if k == '0' else k}: {v:,}" for k, v in items[:12])
        more = f"  ... ({len(items) - 12} more)" if len(items) > 12 else ""
        t.add_row("points per chunk", shown + more)
    if info["image_hash"]:
        t.add_row("image hash", info["image_hash"])
    if info["extras"]:
        keys = sorted(info["extras"])
        ref = info["extras"].get("reference_depth")
        t.add_row("extras", ", ".join(keys) + (f"  (reference_depth {ref:.4g})" if isinstance(ref, (int, float)) else ""))
    console.print(t)


@app.command("export", no_args_is_help=True)
def export_cmd(
    file: Path = typer.Argument(..., help="Cache file (.safetensors) or checkpoint directory."),
    ply: Path = typer.Option(..., "--ply", help="Output point cloud (.ply, binary little-endian, float xyz + uchar rgb)."),
    convention: str = typer.Option("opencv", "--convention", help="Axes of the written points: opencv (as stored: y down, z forward) | opengl (y up, z backward)."),
) -> None:
    """Export the memory's points as a coloured PLY (exact colours for the pixel codec, a PCA pseudo-colour otherwise)."""
    from ..memory.export import export_ply
    from ..memory.latent import LatentMemory

    check_output_parent(ply, "--ply")
    mem = LatentMemory.load(file)
    n = export_ply(mem, ply, convention=convention)
    err_console.print(f"wrote {ply} ({n:,} points, {convention} axes)", highlight=False)


@app.command("render", no_args_is_help=True)
def render_cmd(
    file: Path = typer.Argument(..., help="Cache file (.safetensors) or checkpoint directory."),
    traj: str = typer.Option(..., "--traj", "-t", help="Trajectory file or preset name (frame 0 = the input image's camera)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output video (.mp4)."),
    width: int | None = typer.Option(None, "--width", help="Video width \\[default: the cache's 'width' extra, else 832; alone: the height follows the aspect ratio]."),
    height: int | None = typer.Option(None, "--height", help="Video height \\[default: the cache's 'height' extra, else 480; alone: the width follows the aspect ratio]."),
    fps: float | None = typer.Option(None, "--fps", help="Frames per second \\[default: the trajectory's]."),
    scale: float | None = typer.Option(None, "--scale", help="Multiply the trajectory's translations by this, > 0 \\[default: the reference depth for 'relative' trajectories, 1 otherwise]."),
    holes: str = typer.Option("#ff00ff", "--holes", help="Colour of cells the memory does not cover (#rrggbb or a CSS colour name: black, white, magenta, grey...)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing on success."),
) -> None:
    """Fly through the memory alone (no model): each latent cell shows what the memory holds, holes stay holes."""
    from ..memory.export import render_flythrough
    from ..memory.latent import LatentMemory
    from ..trajectories import load_trajectory

    hole = parse_color(holes)
    if output.suffix.lower() != ".mp4":
        raise MirageError(f"-o {output}: cache render writes an MP4 video; name the file .mp4")
    if fps is not None and not fps > 0:
        raise MirageError(f"--fps: must be > 0 (got {fps:g})")
    check_output_parent(output, "-o")
    mem = LatentMemory.load(file, device=_device(device))
    tr = load_trajectory(traj)
    out = render_flythrough(mem, tr, output, source=traj, width=width, height=height, fps=fps, scale=scale, holes=hole,
                            comment=f"mirage cache render of {file.name} (memory only, holes {holes})")
    if not quiet:
        err_console.print(
            f"wrote {output} ({out.frames} frames, {out.width}x{out.height}, {out.fps:g} fps; "
            f"translation scale {out.scale:.4g} from {out.scale_from}; {100 * out.known:.1f}% of cells known)",
            highlight=False)
