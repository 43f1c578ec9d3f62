"""Camera trajectories from Python: a preset, resampled, written in another format and read back.

Shows the public API of :mod:`mirage_cli.trajectories` (the functions behind ``mirage traj``):

1. make the preset ``orbit_left`` (``load_trajectory`` takes a preset name or a file; preset
   parameters such as ``angle`` override the defaults that ``mirage traj list`` prints);
2. resample it to 25 frames (rotations slerped, translations and intrinsics linear; first and last
   camera kept);
3. save it as a nerfstudio ``camera_path.json`` (OpenGL axes on disk) and read it back: the
   reader detects the format from the content and converts to the project's conventions (OpenCV
   axes, camera-to-world, normalized intrinsics), so the poses come back as they were;
4. resolve the relative translations (units of the scene's reference depth) into scene units and
   write the RealEstate10K text format, which keeps absolute units only;
5. print the summary ``mirage traj show`` prints.

Run from the repository root (offline, CPU, under 2 s; ``--out DIR`` keeps the files)::

    python3 examples/trajectories_api.py [--out DIR]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mirage_cli.trajectories import adjust, detect_format, load_trajectory, resample, save_trajectory, summarize

from _outdir import run_with_out_dir  # examples/_outdir.py: the --out option


def rounded(value):
    """``value`` with its floats (also inside a list) rounded to 4 decimals, for printing."""
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


def main(out: Path) -> None:
    torch.set_num_threads(1)  # as `mirage --threads 1`
    orbit = load_trajectory("orbit_left", angle=30.0)  # a preset by name, one parameter overridden
    print(f"preset {orbit.source}: {len(orbit)} frames at {orbit.fps:g} fps, scale {orbit.scale}, "
          f"params {orbit.meta['preset']['params']}")

    short = resample(orbit, 25)
    assert torch.allclose(short.cameras.c2w[-1], orbit.cameras.c2w[-1])  # the end point is kept
    print(f"resampled to {len(short)} frames ({len(short) / short.fps:.2f} s at {short.fps:g} fps)")

    path = out / "orbit_left.camera_path.json"
    save_trajectory(short, path, "nerfstudio")
    back = load_trajectory(path)
    error = float((back.cameras.c2w - short.cameras.c2w).abs().max())
    print(f"wrote {path.name} (detected as {detect_format(path)!r} when read back); "
          f"largest pose difference after the round trip: {error:.1e}")
    assert back.scale == "relative" and error < 1e-6

    reference_depth = 5.0  # e.g. the median depth of the input image, in metres
    metric = adjust(back, depth_scale=reference_depth)  # translations x 5, then scale "absolute"
    realestate = out / "orbit_left.realestate10k.txt"
    save_trajectory(metric, realestate, "realestate10k")
    print(f"wrote {realestate.name}: {len(load_trajectory(realestate))} frames in scene units "
          f"(a camera moved {summarize(metric)['max_distance_from_start']:.2f} m at most)")

    summary = summarize(back, width=832, height=480)  # the numbers of `mirage traj show --json`
    keys = ("format", "frames", "fps", "fov_y_deg", "path_length", "largest_rotation_deg")
    print("summary (as `mirage traj show --json`): " + json.dumps({k: rounded(summary[k]) for k in keys}))


if __name__ == "__main__":
    run_with_out_dir(main, __doc__.splitlines()[0])
