"""Measure the timing table of docs/batch.md: N preview jobs sequential vs ``--workers 2`` vs ``--ray``.

Usage: ``python -m mirage_cli.batch.bench [--jobs 8] [--height 120 --width 208 --frames 17] [--out DIR]``

Each arm is one ``mirage batch`` command in a fresh process (start-up, worker processes and the
local Ray instance included, as a user would see it), on the shipped example image with a
different preset (or seed) per job. Prints a Markdown table with wall seconds, jobs per minute and
the machine: CPU count and the 1-minute load average before and after each arm (other work on
the machine slows every arm).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = ("orbit_left", "orbit_right", "pan_left", "pan_right", "dolly_in", "dolly_out", "truck_left", "truck_right")


def write_manifest(path: Path, jobs: int, height: int, width: int, frames: int) -> None:
    """``jobs`` preview rows on the example image (rendered next to the manifest, with its exact
    depth sidecar): presets in turn, a new seed per round."""
    from ..data.example import write_example

    image, _ = write_example(path.parent)
    rows = [{"id": f"job{i:03d}", "image": str(image), "traj": PRESETS[i % len(PRESETS)], "seed": i // len(PRESETS),
             "height": height, "width": width, "frames": frames} for i in range(jobs)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def time_arm(manifest: Path, out: Path, extra: list[str]) -> dict:
    """Run one ``mirage batch`` command; wall seconds and the load average around it."""
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "mirage_cli", "batch", str(manifest), "--out", str(out), "--quiet", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return {"wall": wall, "load": (load0, os.getloadavg()[0])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--width", type=int, default=208)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray arm")
    args = ap.parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="mirage-batch-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "jobs.jsonl"
    write_manifest(manifest, args.jobs, args.height, args.width, args.frames)
    arms = [("sequential (`--workers 1`)", "seq", []), ("`--workers 2`", "w2", ["--workers", "2"])]
    if not args.no_ray:
        arms.append(("`--ray` (local instance, 2 actors)", "ray", ["--ray", "local", "--workers", "2"]))
    print(f"{args.jobs} preview jobs, {args.width}x{args.height}, {args.frames} frames; "
          f"{os.cpu_count()} CPUs; runs in {root}\n")
    print("| arm | wall s | jobs/min | load avg (1 min) before / after |\n|---|---:|---:|---|")
    for label, name, extra in arms:
        r = time_arm(manifest, root / name, extra)
        print(f"| {label} | {r['wall']:.1f} | {args.jobs / r['wall'] * 60:.1f} | {r['load'][0]:.1f} / {r['load'][1]:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
