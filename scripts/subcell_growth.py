"""Where does a finer first lap's extra growth come from? (issue 12, item 4)

Runs ``mirage generate IMAGE --traj orbit_360 --frames N`` (preview backend) for each N with the
write of policy ``"new"`` instrumented: every cell a frame adds is classified as

- ``subcell``: a sub-cell miss. A stored point whose patch, grown by about half a cell (its world
  half-axes times ``--grow``; x2 = +0.5 cell for a patch seen at its lifting scale), covers the cell
  centre, and the cell's own written depth agrees with that point's depth within the memory's
  ``edge_tol`` (relative): the same surface re-lifted as a sliver.
- ``new``: everything else (genuinely new surface, or the same surface missed by more).

``subcell_in_cracks`` counts the sub-cell misses that lie between two opposite covered cells of
agreeing depth (a crack at most one cell wide, not the edge of the stored surface).

The classification reads the memory as it is just before the frame's points are added (the
points of earlier frames of the same write included).

``--rule`` also tries a candidate coverage rule for policy ``"new"`` (the cells it calls covered are
taken out of the cells the write adds; the read is unchanged):

- ``none``: the package's rule (only cells the read did not cover add points).
- ``grown``: the sub-cell misses above (``--grow``) count as covered.
- ``cross``: an unknown cell between two opposite covered neighbours (left/right, up/down or a
  diagonal pair) whose written depth agrees with its own within ``edge_tol`` counts as covered
  (a crack at most one cell wide in this view).
- ``ring``: any covered neighbour of the 3x3 neighbourhood with agreeing depth suffices.

Usage::

    PYTHONPATH=$PWD python3 scripts/subcell_growth.py examples/room.png 49 385 [--grow 2] [--rule grown]

Prints one JSON line per N: points at the end, points the writes added, the split, and the mean
known fraction of the reads made before generating (``run.json``'s ``known_per_frame``).
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from mirage_cli.memory import latent as latent_mod
from mirage_cli.memory.lifting import latent_K
from mirage_cli.memory.splat import splat_patches
from mirage_cli.pipeline.config import GenerateConfig
from mirage_cli.pipeline.generate import generate

COUNTS = {"new": 0, "subcell": 0, "crack": 0}


def _grown_depth(mem, camera, grow: float) -> torch.Tensor:
    """``(h, w)`` depth of the nearest stored patch grown ``grow`` times (0 = none) in one camera."""
    h, w = mem.latent_size(camera)
    if len(mem) == 0:
        return torch.zeros(h, w)
    _, dep = splat_patches(mem.points, mem._world_axes() * grow, mem.key, camera.w2c,
                           latent_K(camera, mem.spatial_factor), h, w, mem.max_radius + grow, mode="patch")
    return dep[0]


def _agrees(n: torch.Tensor, d: torch.Tensor, tol: float) -> torch.Tensor:
    return (n > 0) & ((n - d).abs() <= tol * d)


def _neighbour_rule(covered: torch.Tensor, d: torch.Tensor, tol: float, cross: bool) -> torch.Tensor:
    """Cells with depth-agreeing covered neighbours: two opposite ones (``cross``) or any one."""
    h, w = d.shape
    dp = torch.nn.functional.pad(torch.where(covered, d, torch.zeros_like(d)), (1, 1, 1, 1))

    def ok(di: int, dj: int) -> torch.Tensor:
        return _agrees(dp[1 + di : 1 + di + h, 1 + dj : 1 + dj + w], d, tol)

    if cross:
        return ((ok(0, -1) & ok(0, 1)) | (ok(-1, 0) & ok(1, 0)) | (ok(-1, -1) & ok(1, 1))
                | (ok(-1, 1) & ok(1, -1)))
    out = torch.zeros_like(covered)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            out |= ok(di, dj)
    return out


def instrument(grow: float, rule: str) -> None:
    """Wrap the memory's depth reduction (to keep the written depth) and the ``add`` of policy new."""
    depth_grid = latent_mod.LatentMemory._depth_grid
    write_frames = latent_mod.write_frames

    def keep_depth(self, depth, h, w, what):
        d = depth_grid(self, depth, h, w, what)
        if what == "write depth":
            self._measured_depth = d if d.ndim == 3 else d[None]
        return d

    def measured(memory, policy, cameras, valid, known, add, values, *args, **kw):
        d = memory._measured_depth

        def add_counted(t, cells):
            dt, tol = d[t], memory.edge_tol
            agree = _agrees(_grown_depth(memory, cameras[t], grow), dt, tol)
            covered = (dt > 0) & ~cells  # what policy new calls covered (valid cells it does not add)
            if rule == "grown":
                cells = cells & ~agree
            elif rule in ("cross", "ring"):
                cells = cells & ~_neighbour_rule(covered, dt, tol, rule == "cross")
            sub = int((cells & agree).sum())
            COUNTS["crack"] += int((cells & agree & _neighbour_rule(covered, dt, tol, cross=True)).sum())
            COUNTS["subcell"] += sub
            COUNTS["new"] += int(cells.sum()) - sub
            return add(t, cells)

        return write_frames(memory, policy, cameras, valid, known, add_counted, values, *args, **kw)

    latent_mod.LatentMemory._depth_grid = keep_depth
    latent_mod.write_frames = measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("image")
    ap.add_argument("frames", type=int, nargs="+")
    ap.add_argument("--grow", type=float, default=2.0, help="patch growth factor of the sub-cell test")
    ap.add_argument("--rule", choices=("none", "grown", "cross", "ring"), default="none",
                    help="candidate coverage rule to try (see the module docstring)")
    args = ap.parse_args()
    instrument(args.grow, args.rule)
    for n in args.frames:
        COUNTS.update(new=0, subcell=0, crack=0)
        with tempfile.TemporaryDirectory() as out:
            rec = generate(GenerateConfig(image=args.image, traj="orbit_360", frames=n, out=out),
                           quiet=True, warn=lambda m: None)
        chunks = rec["chunks"]
        added = sum(c["points_added"] for c in chunks)
        known = [k for c in chunks for k in c["known_per_frame"]]
        print(json.dumps({"rule": args.rule, "grow": args.grow, "frames": n,
                          "points": chunks[-1]["memory_points"], "added_by_writes": added,
                          "new": COUNTS["new"], "subcell": COUNTS["subcell"],
                          "subcell_in_cracks": COUNTS["crack"],
                          "subcell_share": round(COUNTS["subcell"] / max(1, added), 4),
                          "mean_known": round(sum(known) / len(known), 6)}), flush=True)


if __name__ == "__main__":
    main()
