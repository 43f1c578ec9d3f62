"""Seconds and bytes per memory checkpoint after each chunk: a full save (``LatentMemory.save``, what a run
did through issue 20) against an incremental checkpoint append (``MemoryCheckpoint.append``, issue 21).

It replays the memory of a finished run kept with ``--cache-dump chunks`` (one dump per chunk; write
policy ``new`` or ``append``, whose chunks only add rows, so dump k is a prefix of dump k + 1): the
memory grows chunk by chunk as in the run, and after each chunk both checkpoints are written (atomic,
fsynced, with the dump's extras: the run's chunk records) into a temporary directory next to the run.
Checks at the end that the checkpoint loads bit-identical to the last dump.

Usage::

    PYTHONPATH=$PWD python3 -m mirage_cli generate examples/room.png --traj orbit_360 --frames 193 \\
        --out /tmp/orbit --threads 1 --cache-dump chunks
    PYTHONPATH=$PWD python3 scripts/checkpoint_timing.py /tmp/orbit
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mirage_cli.memory import LatentMemory
from mirage_cli.memory.checkpoint import MemoryCheckpoint


def main(run: Path) -> None:
    torch.set_num_threads(1)
    dumps = sorted((run / "cache").glob("chunk_*.safetensors"))
    if not dumps:
        sys.exit(f"{run}/cache: no chunk_*.safetensors (run generate with --cache-dump chunks)")
    mem = LatentMemory.load(dumps[0])
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory(dir=run) as tmp:
        ck = MemoryCheckpoint(Path(tmp) / "checkpoint")
        for k, dump in enumerate(dumps):
            target = LatentMemory.load(dump)
            if k:
                n = len(mem)
                if not torch.equal(target.points[:n], mem.points):
                    sys.exit(f"{dump}: not a prefix extension of the previous dump (write policy "
                             f"{target.write_policy!r}; use new or append)")
                for label in torch.unique(target.chunk[n:]).tolist():  # the rows the chunk added, as it added them
                    sel = (target.chunk == label).nonzero().squeeze(1)
                    sel = sel[sel >= n]
                    mem._append({"points": target.points[sel], "features": target.features[sel],
                                 "footprint": target.footprint[sel], "axes": target.axes[sel]}, label)
            extras = target.extras
            t = time.perf_counter()
            mem.save(Path(tmp) / "last.safetensors", extras=extras)
            full_s = time.perf_counter() - t
            full_b = (Path(tmp) / "last.safetensors").stat().st_size
            t = time.perf_counter()
            append_b = ck.append(mem, extras)
            append_s = time.perf_counter() - t
            rows.append((k, len(mem), full_s, full_b, append_s, append_b, ck.entries[-1].kind))
        back = LatentMemory.load(ck.directory)
        same = all(torch.equal(getattr(back, a), getattr(target, a))
                   for a in ("points", "features", "footprint", "axes", "chunk"))
    print(f"{'chunk':>5} {'points':>9} {'save s':>8} {'save MB':>8} {'append s':>9} {'append MB':>10} entry")
    for k, n, fs, fb, as_, ab, kind in rows:
        print(f"{k:>5} {n:>9,} {fs:>8.4f} {fb / 1e6:>8.2f} {as_:>9.4f} {ab / 1e6:>10.3f} {kind}")
    first = [r for r in rows if r[6] == "delta"][:3] or rows[:3]
    for name, col in (("full save", 2), ("checkpoint append", 4)):
        med = statistics.median(r[col] for r in first)
        print(f"{name}: last chunk {rows[-1][col]:.4f} s, median of the first three {med:.4f} s "
              f"(ratio {rows[-1][col] / med:.2f}); total {sum(r[col] for r in rows):.3f} s")
    print(f"checkpoint loads bit-identical to the last dump: {same}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
