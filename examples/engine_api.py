"""The generation engine from Python: one ``mirage generate`` run through the pipeline's API.

Shows :func:`mirage_cli.pipeline.generate.generate`, the function the ``mirage generate`` command calls,
with a :class:`~mirage_cli.pipeline.config.GenerateConfig` (one field per command-line option, the same
defaults). It runs the ``preview`` backend (no neural network, no network access: the memory's read with its
holes filled by depth-aware inpainting in latent space) along the preset ``orbit_left``, 17 frames in chunks
of 9 at 416x240, from the shipped example ``examples/room.png`` and its depth sidecar ``room.depth.npy``
(picked up automatically, as on the command line). Then it opens what the run wrote: ``run.json`` (the
returned record), ``video.mp4`` and the final latent memory ``cache/final.safetensors``.

Equivalent command::

    mirage --threads 1 generate examples/room.png --traj orbit_left --frames 17 --width 416 --height 240 -o RUN

Run from the repository root (offline, CPU, about 5 s; ``--out DIR`` keeps the run directory)::

    python3 examples/engine_api.py [--out DIR]
"""

from __future__ import annotations

from pathlib import Path

import torch

from mirage_cli.io import read_video
from mirage_cli.memory import LatentMemory
from mirage_cli.pipeline.config import GenerateConfig
from mirage_cli.pipeline.generate import generate

from _outdir import run_with_out_dir  # examples/_outdir.py: the --out option

HERE = Path(__file__).resolve().parent


def main(out: Path) -> None:
    torch.set_num_threads(1)  # as `mirage --threads 1`
    config = GenerateConfig(image=str(HERE / "room.png"), traj="orbit_left", frames=17, width=416, height=240,
                            backend="preview", out=str(out / "run"), seed=0)
    record = generate(config, warn=lambda message: print(f"warning: {message}"), quiet=True)

    totals = record["totals"]
    print(f"run {record['status']}: {totals['frames']} frames in {len(record['chunks'])} chunks, "
          f"{totals['wall_seconds']:.1f} s ({record['backend']['name']} backend, {record['device']}, "
          f"{record['threads']} thread(s))")
    print(f"depth: {record['depth']['source']}, reference depth {record['depth']['reference_depth']:.2f}")
    print(f"latent grid: {record['latent_grid']}, chunk plan: "
          f"{[c['frames'] for c in record['chunk_plan']]} (first and last frame of each chunk)")

    video = read_video(record["outputs"]["video"])  # (T, H, W, 3) uint8
    print(f"video.mp4: {video.shape[0]} frames of {video.shape[2]}x{video.shape[1]}")

    memory = LatentMemory.load(record["outputs"]["cache"][-1])
    stats = memory.stats()
    print(f"final memory: {stats['points']:,} points, {stats['bytes'] / 1e6:.2f} MB, codec {stats['codec']}, "
          f"points per chunk {stats['points_per_chunk']}")


if __name__ == "__main__":
    run_with_out_dir(main, __doc__.splitlines()[0])
