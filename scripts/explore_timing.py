"""Seconds per explorer step (one chunk, preview backend) on this machine: ``mirage explore``'s
session on examples/room.png (at its own 832x480 or --width), N steps forward, then one undo.

    PYTHONPATH=. python3 scripts/explore_timing.py [N] [--threads T] [--width W]
"""

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mirage_cli.explore.moves import Step
from mirage_cli.explore.session import ExploreSession
from mirage_cli.pipeline.config import GenerateConfig

ap = argparse.ArgumentParser()
ap.add_argument("steps", nargs="?", type=int, default=5)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--width", type=int, default=None, help="output width (default: the image's 832)")
args = ap.parse_args()
torch.set_num_threads(args.threads)
image = Path(__file__).resolve().parents[1] / "examples" / "room.png"
with tempfile.TemporaryDirectory() as tmp:
    s = ExploreSession.create(GenerateConfig(image=str(image), out=str(Path(tmp) / "run"), width=args.width), warn=lambda m: None)
    d, times = s.default_distance(), []
    for _ in range(args.steps):
        t = time.perf_counter()
        s.step(Step("key", key="W", distance=d))
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    s.undo()
    undo = time.perf_counter() - t
    s.finish()
print(f"{platform.processor() or platform.machine()}, {args.threads} thread(s), {s.plan.size[0]}x{s.plan.size[1]}, "
      f"chunk {s.chunk_length} frames: step median {statistics.median(times):.2f} s (min {min(times):.2f}, "
      f"max {max(times):.2f}) over {args.steps}; undo {undo:.2f} s")
