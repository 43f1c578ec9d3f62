"""`mirage explore`: parse the options, start the web app (:mod:`mirage_cli.explore.app`), serve until Ctrl-C."""

from __future__ import annotations

import signal
import time
from dataclasses import replace
from pathlib import Path

import typer

from ..errors import MirageError
from ..pipeline.resources import MAX_PIXELS
from . import options
from .console import console, err_console


def register(app: typer.Typer) -> None:
    """Add the `explore` command to the root app."""
    app.command("explore")(explore_cmd)


def explore_cmd(
    ctx: typer.Context,
    image: Path | None = typer.Argument(None, help="Input image (without it the page asks for an upload)."),
    depth: str | None = typer.Option(None, "--depth", help="Input depth: FILE, 'model' or 'prior' \\[default: as mirage generate]."),
    backend: str = options.BACKEND,
    model: str | None = options.MODEL,
    out: Path | None = typer.Option(None, "--out", "-o", help="Session run directory \\[default: outputs/<image-stem>-explore]."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (another than 127.0.0.1 makes the page reachable from the network: a warning says so)."),
    port: int = typer.Option(7860, "--port", help="Port to serve on (the next free one if taken)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the session in this run directory."),
    step: float | None = typer.Option(None, "--step", help="Step length per W/S/A/D/R/F in reference depths \\[default: 0.1 of the depth ahead]."),
    angle: float = typer.Option(10.0, "--angle", help="Turn per Q/E in degrees."),
    width: int | None = typer.Option(None, "--width", help="Output width \\[default: the image's]."),
    height: int | None = typer.Option(None, "--height", help="Output height \\[default: the image's]."),
    max_pixels: int = typer.Option(MAX_PIXELS, "--max-pixels", show_default="1 MP = 1048576", help="Largest frame; a larger input is resized to fit."),
    fov: float | None = typer.Option(None, "--fov", help="Vertical field of view in degrees \\[default: 55]."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same steps + seed = same chunks)."),
    steps: int | None = options.STEPS,
    chunk_frames: int | None = options.CHUNK_FRAMES,
    prompt: str = typer.Option("", "--prompt", "-p", help="Text prompt of the first chunks (the page changes it)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run in --out (only a mirage run directory)."),
) -> None:
    """Walk through the world in a browser: one chunk per step, the memory in 3D, undo; the session is a run."""
    from ..pipeline.config import GenerateConfig, check_config

    if resume is not None and (image is not None or out is not None):
        raise MirageError("--resume: continues the session in DIR with its own options; give no IMAGE or --out with it")
    if step is not None and not step > 0:
        raise MirageError(f"--step: must be > 0 (got {step})")
    if not 0 < angle <= 180:
        raise MirageError(f"--angle: must be in (0, 180] degrees (got {angle})")
    cfg = GenerateConfig(image=str(image) if image else None, traj="explore", out=str(out) if out else None, backend=backend,
                         model=model, depth=depth, width=width, height=height, max_pixels=max_pixels, fov=fov, seed=seed,
                         steps=steps, chunk_frames=chunk_frames, prompt=prompt, device=device, overwrite=overwrite)
    if image is not None:
        check_config(cfg)  # every option error before torch's import
    from ..explore.app import ExploreApp, ExploreOptions, host_warning
    from ..explore.session import ExploreSession

    cfg = replace(cfg, traj=None)
    warn = lambda msg: err_console.print(f"[yellow]warning:[/] {msg}")  # noqa: E731
    if host_warning(host):
        warn(host_warning(host))
    if resume is not None:
        session = ExploreSession.resume(resume, warn=warn)
    elif image is not None:
        session = ExploreSession.create(cfg, warn=warn, note=lambda m: err_console.print(f"note: {m}", highlight=False))
    else:
        session = None
    uploads = (session.out.parent if session else Path(out or "outputs")) / "explore-uploads"
    app = ExploreApp(ExploreOptions(cfg, host=host, port=port, resume=resume, distance=step, angle=angle, uploads=uploads),
                     session, log=lambda m: err_console.print(m, highlight=False, markup=False))
    console.print(f"mirage explore: open {app.url}  (Ctrl-C ends the session)", highlight=False)
    if session is not None:
        console.print(f"session: {session.out}", highlight=False)

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    app.close()
    s = app.session
    if s is not None:
        if s.chunks_done:
            console.print(f"session ended: {s.chunks_done} chunk(s) in {s.out}/video.mp4\nrender the walked path again: "
                          f"mirage generate {s.run.record.config.image} --traj {s.out}/trajectory.json "
                          f"[--backend wan-vace]", highlight=False)
        else:
            console.print(f"session ended without a chunk ({s.out})", highlight=False)
