"""`mirage traj ...`: list presets, write a preset, convert a trajectory file, show one."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..errors import MirageError
from .checks import check_output_parent
from .console import err_console, print_trimmed

app = typer.Typer(
    help="Camera trajectories: presets, format conversion, inspection.",
    no_args_is_help=True,
)

FORMAT_HELP = "Output format: native | nerfstudio | realestate10k | nerf | colmap | worldscore | lyra2 | lingbot | worldplay."
# The trajectories package is imported inside the commands: it pulls in torch, and `mirage --help` should not.


def _emit(traj, out: str, fmt: str, convention: str, pose: str, quiet: bool = False) -> None:
    """Write ``traj`` to ``out`` (``-`` = stdout) and say where it went."""
    from ..trajectories import lost_in_writing, save_trajectory, trajectory_text  # deferred: torch

    if out == "-":
        typer.echo(trajectory_text(traj, fmt, convention=convention, pose=pose), nl=False)
        return
    paths = save_trajectory(traj, out, fmt, convention=convention, pose=pose)
    if not quiet:
        err_console.print(f"wrote {', '.join(str(p) for p in paths)} ({fmt}, {len(traj)} frames)", highlight=False)
        for line in lost_in_writing(traj, paths[0]):
            err_console.print(f"note: {line}", highlight=False)


@app.command("list")
def list_cmd() -> None:
    """List the presets, one line each: name, motion, parameters with their defaults."""
    from ..trajectories.catalog import CATALOG  # no torch: the names and defaults only

    width = max(len(n) for n in CATALOG)
    for name, p in CATALOG.items():
        params = " ".join(f"{k}={v:g}" for k, v in p.defaults().items())
        typer.echo(f"{name:<{width}}  {p.description}  [{params}]")


@app.command("preset", no_args_is_help=True)
def preset_cmd(
    name: str | None = typer.Argument(None, help="Preset name (see `mirage traj list`)."),
    output: str | None = typer.Option(None, "--output", "-o", help="Output file ('-' = stdout)."),
    all_dir: Path | None = typer.Option(None, "--all", help="Write every preset with its defaults into this folder."),
    frames: int | None = typer.Option(None, "--frames", "-n", help="Number of frames \\[default: 49; orbit_360: 81]."),
    fps: float | None = typer.Option(None, "--fps", help="Frames per second \\[default: 16]."),
    fov: float | None = typer.Option(None, "--fov", help="Vertical field of view of frame 0, degrees \\[default: 55]."),
    angle: float | None = typer.Option(None, "--angle", help="Total rotation in degrees (orbits, pans, tilts, spiral)."),
    distance: float | None = typer.Option(None, "--distance", help="Total travel in reference-depth units (truck, pedestal, dolly, dolly_zoom, spiral radius)."),
    look_at_depth: float | None = typer.Option(None, "--look-at-depth", help="Depth of the look-at point (orbits, dolly_zoom, spiral) \\[default: 1]."),
    zoom: float | None = typer.Option(None, "--zoom", help="Focal-length factor, >= 1 (zoom_in, zoom_out) \\[default: 1.5]."),
    width: int = typer.Option(832, "--width", help="render_width written to the file (intrinsics adapt to any size)."),
    height: int = typer.Option(480, "--height", help="render_height written to the file."),
    to: str = typer.Option("native", "--to", help=FORMAT_HELP),
    convention: str = typer.Option("opencv", "--convention", help="native only: opencv | opengl (opengl = what nerfstudio renders)."),
    pose: str = typer.Option("c2w", "--pose", help="native only: c2w | w2c."),
) -> None:
    """Write preset NAME (with parameter overrides) to a trajectory file."""
    from ..trajectories import make_preset, write_presets  # deferred: torch

    if all_dir is not None:
        if name or output or any(v is not None for v in (frames, fps, fov, angle, distance, look_at_depth, zoom)):
            raise MirageError("--all writes every preset with its defaults; give no NAME, -o or parameters with it")
        paths = write_presets(all_dir)
        err_console.print(f"wrote {len(paths)} presets to {all_dir}", highlight=False)
        return
    if not name or not output:
        raise MirageError("give a preset NAME and -o FILE (or --all DIR)")
    check_output_parent(output, "-o")
    traj = make_preset(name, frames=frames, fps=fps, fov=fov, angle=angle, distance=distance,
                       look_at_depth=look_at_depth, zoom=zoom, width=width, height=height)
    _emit(traj, output, to, convention, pose)


@app.command("convert", no_args_is_help=True)
def convert_cmd(
    source: str = typer.Argument(..., help="Trajectory file in any supported format (or a preset name)."),
    output: str = typer.Option(..., "--output", "-o", help="Output file ('-' = stdout; for colmap a folder or images.txt)."),
    to: str = typer.Option("native", "--to", help=FORMAT_HELP),
    frames: int | None = typer.Option(None, "--frames", "-n", help="Resample to N frames (slerp rotations, linear translation/intrinsics)."),
    fps: float | None = typer.Option(None, "--fps", help="Set the frame rate."),
    scale: str | None = typer.Option(None, "--scale", help="Declare the translations absolute | relative (units of the reference depth)."),
    relative: bool = typer.Option(False, "--relative", help="Re-express the poses relative to frame 0 (frame 0 = identity)."),
    depth_scale: float | None = typer.Option(None, "--depth-scale", help="Resolve a relative trajectory into scene units: translations x D (the scene's reference depth), then absolute."),
    absolute: bool = typer.Option(False, "--absolute", help="Declare the numbers absolute units as they are (same as --scale absolute)."),
    convention: str = typer.Option("opencv", "--convention", help="native only: opencv | opengl (opengl = what nerfstudio renders)."),
    pose: str = typer.Option("c2w", "--pose", help="native only: c2w | w2c."),
) -> None:
    """Convert SOURCE (format detected from its content) to a native (or other) trajectory file."""
    from ..trajectories import convert  # deferred: torch

    if absolute and scale not in (None, "absolute"):
        raise MirageError("--absolute and --scale relative contradict each other")
    check_output_parent(output, "-o")
    traj = convert(source, frames=frames, fps=fps, scale="absolute" if absolute else scale, relative=relative,
                   depth_scale=depth_scale)
    for note in traj.notes:  # e.g. frames reordered: the output keeps the new order
        err_console.print(f"note: {note}", highlight=False)
    _emit(traj, output, to, convention, pose)


def _table(s: dict) -> Table:
    unit = "x reference depth" if s["scale"] == "relative" else "units"
    lo, hi = s["fov_y_deg"]
    fov = f"{lo:.2f} deg" if abs(hi - lo) < 5e-3 else f"{lo:.2f} - {hi:.2f} deg"
    intr = "vertical fov only (adapts to any aspect)" if s["fov_only"] else "normalized intrinsics"
    rows = [
        ("file", s["source"]), ("format", s["format"]),
        ("frames", str(s["frames"])), ("fps", f"{s['fps']:g} ({s['seconds']:.2f} s)"),
        ("scale", s["scale"]), ("render size", "{} x {}".format(*s["render_size"])),
        ("intrinsics", intr), ("fov (vertical)", fov),
        ("path length", f"{s['path_length']:.4g} {unit}"),
        ("farthest from start", f"{s['max_distance_from_start']:.4g} {unit}"),
        ("largest rotation", f"{s['largest_rotation_deg']:.2f} deg from frame 0 (at frame {s['largest_rotation_frame']})"),
        ("largest step", f"{s['largest_step_rotation_deg']:.3f} deg between consecutive frames"),
    ]
    if "effective" in s:
        e = s["effective"]
        varies = any(abs(a - b) > 5e-3 for a, b in zip(e["min_px"], e["max_px"]))
        rows.append((f"pixels on {e['size'][0]}x{e['size'][1]}",
                     f"fx {e['fx_px']:.1f}  fy {e['fy_px']:.1f}  cx {e['cx_px']:.1f}  cy {e['cy_px']:.1f} px "
                     f"(frame 0{', varies over frames' if varies else ''}; --intrinsics {e['mode']})"))
    if "scene" in s:
        sc, ck = s["scene"], s["scale_check"]
        rows.append(("scene", f"median depth {ck['median_depth']:.4g} units, {ck['box_size']:.3g} median depths across "
                              f"(depth: {sc['source']})"))
        rows.append(("path in the scene", f"length {ck['path_length']:.4g} median depths, farthest {ck['farthest']:.4g} "
                                          f"from the start, {ck['outside']:.3g} scene sizes outside the scene"))
        verdict = ck["verdict"] + (f" (--traj-scale {ck['suggest']:g} would fit it)" if ck["suggest"] else "")
        rows.append(("scale check", verdict))
    for note in s["notes"]:
        rows.append(("note", note))
    if "preset" in s:
        params = " ".join(f"{k}={v:g}" for k, v in s["preset"].get("params", {}).items())
        rows.append(("preset", f"{s['preset'].get('name')} ({params})"))
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in rows:
        table.add_row(k, v)
    return table


@app.command("show", no_args_is_help=True)
def show_cmd(
    source: str = typer.Argument(..., help="Trajectory file in any supported format (or a preset name)."),
    plot: Path | None = typer.Option(None, "--plot", help="Also draw a PNG: top and side views of the camera centres."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of a table."),
    width: int | None = typer.Option(None, "--width", help="With --height: print the pixel focal lengths the cameras get on an image of this size."),
    height: int | None = typer.Option(None, "--height", help="Image height for --width."),
    intrinsics: str = typer.Option("crop", "--intrinsics", help="How the file's intrinsics meet that image: crop | stretch | fov (as `mirage generate --intrinsics`)."),
    image: Path | None = typer.Option(None, "--image", help="Check the path's scale against this image's scene (lifted with its depth): numbers, and with --plot the path over the points."),
    depth: str | None = typer.Option(None, "--depth", help="With --image: its depth FILE \\[default: the sidecar, else the geometric prior]."),
    depth_scale: float | None = typer.Option(None, "--depth-scale", help="With --image: multiplier for the depth file's values."),
    traj_scale: float | None = typer.Option(None, "--traj-scale", help="With --image: multiply the path's translations by this (as `mirage generate --traj-scale`)."),
) -> None:
    """Summarize a trajectory: format, frames, fps, fov range, path length, largest rotation; with --image, its scale in the scene."""
    from ..trajectories import load_trajectory, summarize  # deferred: torch

    check_output_parent(plot, "--plot")
    if image is None and (depth is not None or depth_scale is not None or traj_scale is not None):
        raise MirageError("--depth, --depth-scale and --traj-scale need --image (the scene to check the path against)")
    traj = load_trajectory(source)
    s = summarize(traj, width, height, intrinsics)
    scene = cams = None
    if image is not None:
        from ..trajectories.scale import check_scale, check_traj_scale, input_scene, scene_cameras

        check_traj_scale(None, traj_scale)
        scene = input_scene(image, traj, depth, depth_scale, colors=plot is not None)
        cams = scene_cameras(traj.cameras, traj.scale, scene, traj_scale)
        s["scene"] = {"image": str(image), "source": scene.source}
        s["scale_check"] = check_scale(cams, scene).to_json()
    if json_out:
        typer.echo(json.dumps(s, indent=2))
    else:
        print_trimmed(_table(s))
    warning = s.get("effective", {}).get("warning")
    if warning and not json_out:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if plot is not None:
        from ..trajectories.plot import plot_trajectory  # deferred: Pillow's drawing, only with --plot

        sub = None
        if scene is not None and image is not None:  # the scene is --image's
            ck = s["scale_check"]
            sub = (f"over {image.name} lifted with {scene.source}: path length {ck['path_length']:.3g} median depths "
                   f"(median depth {ck['median_depth']:.3g} units); scale check: {ck['verdict']}")
        plot_trajectory(traj, plot, scene=scene, cameras=cams, subtitle=sub)
        err_console.print(f"wrote {plot}", highlight=False)
