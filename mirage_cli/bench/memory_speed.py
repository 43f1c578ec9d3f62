"""Speed of the latent memory: read / write / lift of one latent grid against a large memory.

``python -m mirage_cli.bench.memory_speed [--points 200000] [--device cpu]`` prints the report; the
``mirage bench --memory-only`` command calls :func:`memory_speed_report`. Not a unit test: numbers
depend on the machine and its load, so the report names the machine.

Setup: the procedural room (:mod:`mirage_cli.data.scenes`) is lifted from many viewpoints at the latent
grid size (random ``channels``-channel fp16 features, exact depth) until the memory holds
``points`` points, the way an append-everything memory would grow. Then one chunk of ``frames``
latent frames on an orbit is read, and written back with the default ``"new"`` policy (the known
mask of that read), and written again as if every cell were new (the worst case).

The write is also timed with pixel-resolution depth (the chunk rendered at ``PIXEL_FACTOR`` x the
latent grid, reduced by the memory's :func:`~mirage_cli.memory.lifting.reduce_depth`), with the
``"append"`` policy, and against a *reference-style write*: our minimal re-implementation of the
write policy of the paper's reference implementation (microsoft/LatentSpatialMemory), not its code:
append every valid cell of every frame (:func:`reference_style_write`).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys

import torch

from ..data.scenes import make_scene
from ..errors import MirageError
from ..geometry.cameras import Cameras, look_at
from ..memory import compiled
from ..memory.latent import LatentMemory
from ..memory.lifting import latent_K
from ..units import fmt_bytes
from .arms import clone_latent
from .measure import cpu_name, loadavg, timed, timed_median, timed_update


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"{platform.system()} {platform.machine()}, {cpu_name()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")


def _views(center: torch.Tensor, n: int, radius: float, height: float, phase: float, outward: bool) -> torch.Tensor:
    poses = []
    for k in range(n):
        a = phase + 2 * math.pi * k / n
        eye = center + torch.tensor([radius * math.sin(a), height, -radius * math.cos(a)], dtype=torch.float64)
        target = center + (eye - center) * (3.0 if outward else 0.0)
        target[1] = center[1]
        poses.append(look_at(eye, target))
    return torch.stack(poses)


def copy_bandwidth(device: torch.device, mib: int = 64) -> float:
    """Measured copy bandwidth in bytes/s (read + write counted): median time to copy ``mib`` MiB."""
    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    _, sec = timed_median(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / sec


def read_bytes(points: int, cells: int, channels: int) -> int:
    """Bytes a read must touch per frame: each point's position (12 B), world half-axes (24 B) and key
    (8 B), and per cell the winner (8 B), its depth (4 B), the fp16 feature gathered and the fp32 one written."""
    return points * (12 + 24 + 8) + cells * (8 + 4 + channels * (2 + 4))


def write_bytes(cells: int, channels: int, added: int, point_bytes: int) -> int:
    """Bytes a write must touch per frame: the frame's fp32 latents and depth, and the new points."""
    return cells * (channels * 4 + 4) + added * point_bytes


def build_memory(points: int, height: int, width: int, channels: int, device: torch.device,
                 seed: int = 0) -> LatentMemory:
    """A memory of exactly ``points`` points lifted from views of the room (random fp16 features)."""
    scene = make_scene("room", seed)
    center = torch.tensor(scene.center, dtype=torch.float64)
    per_view = height * width
    n_views = max(1, math.ceil(points / per_view))
    rings = [(2.5, 0.0, 0.0, False), (1.0, -0.5, 0.3, True), (2.0, 0.4, 0.7, False), (0.5, 0.2, 1.1, True)]
    per_ring = math.ceil(n_views / len(rings))
    c2w = torch.cat([_views(center, per_ring, r, y, ph, out) for r, y, ph, out in rings])[:n_views]
    cams = Cameras.from_fov(c2w, 55.0, width, height)
    _, depth = scene.render(cams)
    g = torch.Generator().manual_seed(seed)
    mem = LatentMemory(channels, 1, codec="bench", device=device)
    for k in range(n_views):
        feats = torch.randn(channels, height, width, generator=g)
        mem.lift(feats.to(device), depth[k].to(device), cams[k], chunk=k)
    return mem.select(torch.arange(min(points, len(mem)), device=device))


#: Pixels per latent cell of the pixel-resolution depth (Wan2.1's spatial factor: 60x104 -> 480x832).
PIXEL_FACTOR = 8


def _bench_inputs(height: int, width: int, channels: int, frames: int, dev: torch.device, seed: int,
                  factor: int = 1):
    """The chunk a write stores: ``frames`` cameras on a ring in the room (images of ``factor`` x the
    ``height x width`` latent grid), their rendered depth ``(T, factor * height, factor * width)`` and
    random fp32 latents ``(T, C, height, width)`` on ``dev``."""
    scene = make_scene("room", seed)
    center = torch.tensor(scene.center, dtype=torch.float64)
    c2w = _views(center, frames, 2.2, -0.1, 0.15, False)
    cams = Cameras.from_fov(c2w, 55.0, factor * width, factor * height)
    _, depth = scene.render(cams)
    g = torch.Generator().manual_seed(seed + 1)
    latents = torch.randn(frames, channels, height, width, generator=g).to(dev)
    return cams, depth.to(dev), latents


def reference_style_write(points: torch.Tensor, features: torch.Tensor, latents: torch.Tensor,
                          depth: torch.Tensor, cameras: Cameras, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference-style write: our re-implementation of the *policy* of the paper's reference
    implementation (microsoft/LatentSpatialMemory), not its code, as the yardstick for our write.

    Every valid cell of every frame is appended: the depth is brought to the latent grid by a plain
    downsample (the pixel nearest each cell centre, ``depth[f // 2 :: f, f // 2 :: f]``; latent-grid
    depth is used as is), valid cells (finite, ``> 0``) are unprojected at their centres with the
    cameras, and positions and fp16 features are concatenated onto the stored tensors, once per
    chunk. No footprint or patch axes, no content key, no coverage test.

    Args:
        points: ``(N, 3)`` float32 stored positions; features: ``(N, C)`` fp16 stored features.
        latents: ``(T, C, h, w)`` latents of the chunk's frames.
        depth: ``(T, h, w)`` latent-grid or ``(T, h * f, w * f)`` pixel z-depth.
        cameras: the ``T`` cameras (image size ``h * f x w * f``); factor: pixels per latent cell ``f``.
    Returns:
        the new ``(N + M, 3)`` positions and ``(N + M, C)`` features.
    """
    T, C, h, w = latents.shape
    if depth.shape[-2:] != (h, w):
        depth = depth[..., factor // 2 :: factor, factor // 2 :: factor][..., :h, :w]
    valid = torch.isfinite(depth) & (depth > 0)
    t, i, j = valid.nonzero(as_tuple=True)
    z = depth[t, i, j].float()
    K = latent_K(cameras, factor).to(depth.device, torch.float32)[t]
    c2w = cameras.c2w.to(depth.device, torch.float32)[t]
    cam = torch.stack([(j + 0.5 - K[:, 0, 2]) / K[:, 0, 0] * z, (i + 0.5 - K[:, 1, 2]) / K[:, 1, 1] * z, z], dim=1)
    world = (c2w[:, :3, :3] @ cam[:, :, None])[:, :, 0] + c2w[:, :3, 3]
    feats = latents.permute(0, 2, 3, 1)[t, i, j].half()
    return torch.cat([points, world]), torch.cat([features, feats])


def _copy_as(mem: LatentMemory, policy: str, factor: int, room: int) -> LatentMemory:
    """An independent copy of ``mem`` that writes with ``policy`` and takes ``factor``-pixel cells,
    with spare capacity for ``room`` more points: the steady state of a long run, whose buffers grow
    by doubling (one copy of all points per doubling, not per write; a fresh copy would charge that
    whole copy to the one write timed)."""
    m = clone_latent(mem)
    m.write_policy, m.spatial_factor = policy, factor
    m.reserve(room)
    return m


def _time_memory(mem: LatentMemory, cams: Cameras, depth: torch.Tensor, latents: torch.Tensor,
                 repeats: int, pixel: tuple[Cameras, torch.Tensor]) -> dict:
    """Median seconds of a read, of writes (policy new with the read's known mask, every cell new,
    policy append; latent-grid depth and the ``pixel = (cameras, depth)`` pixel-resolution depth), of
    the reference-style write and of one lift, with the points each write adds."""
    (_, known, _), read_s = timed_median(lambda: mem.read(cams))
    pcams, pdepth = pixel

    def median_write(known_mask, policy="new", factor=1, c=cams, d=depth):
        """Median seconds of one write on fresh copies (writes must not accumulate), points it adds."""
        m, sec = timed_update(mem, lambda m: _copy_as(m, policy, factor, latents.shape[0] * latents[0, 0].numel()),
                              lambda m: m.write(latents, d, c, known_mask, chunk=99), max_samples=repeats)
        return sec, len(m) - len(mem)

    def reference(c, d, factor):
        (pts, _), sec = timed_median(lambda: reference_style_write(mem.points, mem.features, latents, d, c, factor))
        return sec, pts.shape[0] - len(mem)

    t = dict(known=known, read_s=read_s)
    t["write_s"], t["added"] = median_write(known)
    t["write_all_s"], t["added_all"] = median_write(torch.zeros_like(known))
    t["write_append_s"], t["added_append"] = median_write(None, "append")
    t["write_pixel_s"], t["added_pixel"] = median_write(known, "new", PIXEL_FACTOR, pcams, pdepth)
    t["write_append_pixel_s"], t["added_append_pixel"] = median_write(None, "append", PIXEL_FACTOR, pcams, pdepth)
    t["reference_s"], t["added_reference"] = reference(cams, depth, 1)
    t["reference_pixel_s"], t["added_reference_pixel"] = reference(pcams, pdepth, PIXEL_FACTOR)
    _, t["lift_s"] = timed_median(lambda: LatentMemory(mem.channels, 1, device=mem.device).lift(latents[0], depth[0], cams[0]))
    return t


def _results(mem: LatentMemory, dev: torch.device, height: int, width: int, frames: int, build_s: float,
             t: dict) -> dict:
    """The report's measurements (ms per frame, points or cells per second, x the copy-bandwidth
    limit) from the timings ``t`` of :func:`_time_memory`."""
    channels = mem.channels
    read_s, write_s, write_all_s, added, added_all = (t[k] for k in ("read_s", "write_s", "write_all_s", "added", "added_all"))
    cells = frames * height * width
    bw = copy_bandwidth(dev)
    point_bytes = mem.nbytes() // max(1, len(mem)) + 8 + 24  # stored row + key + cached world axes
    rb = read_bytes(len(mem), height * width, channels)
    wb = write_bytes(height * width, channels, added / frames, point_bytes)
    wab = write_bytes(height * width, channels, added_all / frames, point_bytes)
    return {
        "machine": _machine(dev),
        "splat": compiled.describe(dev.type),  # which splat the read ran
        "device": str(dev),
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,  # --threads / MIRAGE_THREADS
        "loadavg": loadavg(),
        "points": len(mem),
        "grid": [height, width],
        "channels": channels,
        "dtype": "float16",
        "frames": frames,
        "memory_bytes": mem.nbytes(),
        "build_s": build_s,
        "read_ms_per_frame": 1e3 * read_s / frames,
        "read_points_per_s": len(mem) * frames / read_s,
        "read_known_fraction": float(t["known"].float().mean()),
        "write_ms_per_frame": 1e3 * write_s / frames,
        "write_points_added": int(added),
        "write_cells_per_s": cells / write_s,
        "write_all_new_ms_per_frame": 1e3 * write_all_s / frames,
        "write_all_new_points_added": int(added_all),
        "write_all_new_cells_per_s": cells / write_all_s,
        **_write_comparison(t, frames),
        "lift_ms": 1e3 * t["lift_s"],
        "copy_bandwidth_gb_s": bw / 1e9,
        "read_bytes_per_frame": rb,
        "read_x_bandwidth_limit": (read_s / frames) / (rb / bw),
        "write_bytes_per_frame": wb,
        "write_x_bandwidth_limit": (write_s / frames) / (wb / bw),
        "write_all_new_bytes_per_frame": wab,
        "write_all_new_x_bandwidth_limit": (write_all_s / frames) / (wab / bw),
    }


#: Issue 12's goal for the write: at most this many times the reference-style write's time, with
#: latent-grid depth and with pixel depth.
WRITE_GOAL_X_REFERENCE = {"latent": 2.0, "pixel": 3.0}
#: The writes compared with the reference-style write: (report key, timing key, reference timing key).
_WRITES = (("write", "write", "reference"), ("write_append", "write_append", "reference"),
           ("write_pixel_depth", "write_pixel", "reference_pixel"),
           ("write_append_pixel_depth", "write_append_pixel", "reference_pixel"))


def _write_comparison(t: dict, frames: int) -> dict:
    """The writes against the reference-style write (keys of :func:`memory_speed_report`)."""
    res = {"reference_write_ms_per_frame": 1e3 * t["reference_s"] / frames,
           "reference_write_points_added": int(t["added_reference"]),
           "reference_write_pixel_depth_ms_per_frame": 1e3 * t["reference_pixel_s"] / frames,
           "reference_write_pixel_depth_points_added": int(t["added_reference_pixel"])}
    met = {"new": True, "append": True}
    for key, tk, ref in _WRITES:
        if key != "write":  # policy new with latent-grid depth: the existing write_* keys
            res[f"{key}_ms_per_frame"] = 1e3 * t[f"{tk}_s"] / frames
            res[f"{key}_points_added"] = int(t["added" + tk[len("write"):]])
        ratio = res[f"{key}_x_reference"] = t[f"{tk}_s"] / t[f"{ref}_s"]
        policy = "append" if "append" in key else "new"
        met[policy] &= ratio <= WRITE_GOAL_X_REFERENCE["pixel" if "pixel" in key else "latent"]
    res["write_goal_met"], res["write_append_goal_met"] = bool(met["new"]), bool(met["append"])
    return res


def _comparison_lines(res: dict) -> list[str]:
    """The report's lines for the writes against the reference-style write."""
    f, goal = PIXEL_FACTOR, WRITE_GOAL_X_REFERENCE
    lines = ["write vs a reference-style write (our re-implementation of the reference's append-every-cell "
             "policy, not its code), ms/frame:",
             f"  reference-style      latent depth {res['reference_write_ms_per_frame']:7.2f}   "
             f"pixel depth ({f}x) {res['reference_write_pixel_depth_ms_per_frame']:7.2f}"]
    for policy, key in (("new", "write"), ("append", "write_append")):
        lines.append(f"  mirage policy {policy:<6} latent depth {res[f'{key}_ms_per_frame']:7.2f} "
                     f"({res[f'{key}_x_reference']:.1f}x)  pixel depth ({f}x) "
                     f"{res[f'{key}_pixel_depth_ms_per_frame']:7.2f} ({res[f'{key}_pixel_depth_x_reference']:.1f}x)")
    verdict = {True: "met", False: "NOT met"}
    lines.append(f"  goal (<= {goal['latent']:g}x latent, <= {goal['pixel']:g}x pixel depth): policy new (the default) "
                 f"{verdict[res['write_goal_met']]}, policy append {verdict[res['write_append_goal_met']]}")
    return lines


def _report_text(res: dict) -> str:
    """The printed report of :func:`memory_speed_report`'s measurements."""
    height, width = res["grid"]
    rb, wb, wab = res["read_bytes_per_frame"], res["write_bytes_per_frame"], res["write_all_new_bytes_per_frame"]
    return "\n".join([
        f"mirage memory speed: latent grid {height}x{width}, {res['channels']} channels float16, "
        f"{res['points']:,} points ({fmt_bytes(res['memory_bytes'])}), {res['frames']} frames per chunk",
        f"machine: {res['machine']}; splat: {res['splat']}",
        f"read                 {res['read_ms_per_frame']:7.2f} ms/frame  {res['read_points_per_s'] / 1e6:7.1f} M points/s"
        f"  (known {100 * res['read_known_fraction']:.1f}% of cells)",
        f"write (policy new)   {res['write_ms_per_frame']:7.2f} ms/frame  {res['write_cells_per_s'] / 1e6:7.2f} M cells/s"
        f"   ({res['write_points_added']} points added)",
        f"write (all cells new){res['write_all_new_ms_per_frame']:7.2f} ms/frame  "
        f"{res['write_all_new_cells_per_s'] / 1e6:7.2f} M cells/s"
        f"   ({res['write_all_new_points_added']} points added)",
        *_comparison_lines(res),
        f"lift (one frame)     {res['lift_ms']:7.2f} ms",
        f"copy bandwidth {res['copy_bandwidth_gb_s']:.1f} GB/s; bytes touched per frame: read {rb / 1e6:.2f} MB "
        f"({res['read_x_bandwidth_limit']:.1f}x the copy time), write {wb / 1e6:.2f} MB "
        f"({res['write_x_bandwidth_limit']:.1f}x), write all new {wab / 1e6:.2f} MB "
        f"({res['write_all_new_x_bandwidth_limit']:.1f}x)",
    ])


def memory_speed_report(points: int = 200_000, height: int = 60, width: int = 104, channels: int = 16,
                        frames: int = 21, device: str = "cpu", repeats: int = 3, seed: int = 0,
                        print_report: bool = True) -> dict:
    """Time read / write / lift of an ``height x width`` latent grid against a ``points``-point memory.

    Returns a dict of the measurements (milliseconds per frame, points or cells per second) with
    the report text under ``"text"``; prints the text unless ``print_report`` is False. The writes
    against the reference-style write (:func:`reference_style_write`), all medians per latent frame:

    - ``reference_write_ms_per_frame`` / ``reference_write_pixel_depth_ms_per_frame`` (and
      ``..._points_added``): the reference-style write with latent-grid depth / with pixel depth
      (``PIXEL_FACTOR`` x the grid, downsampled by taking the pixel nearest each cell centre).
    - ``write_ms_per_frame`` (policy ``"new"``, latent-grid depth), ``write_append_ms_per_frame``,
      ``write_pixel_depth_ms_per_frame``, ``write_append_pixel_depth_ms_per_frame`` (pixel depth
      reduced by ``reduce_depth``), each with ``..._points_added`` and ``..._x_reference``: its time
      divided by the reference-style write's with the same depth resolution.
    - ``write_goal_met`` / ``write_append_goal_met``: policy ``"new"`` (the default) / ``"append"``
      within :data:`WRITE_GOAL_X_REFERENCE` with both depth resolutions.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MirageError("memory bench: --device cuda asked for, but this torch has no CUDA device")
    mem, build_s = timed(lambda: build_memory(points, height, width, channels, dev, seed))
    cams, depth, latents = _bench_inputs(height, width, channels, frames, dev, seed)
    pcams, pdepth, _ = _bench_inputs(height, width, channels, frames, dev, seed, PIXEL_FACTOR)
    t = _time_memory(mem, cams, depth, latents, repeats, (pcams, pdepth))
    res = _results(mem, dev, height, width, frames, build_s, t)
    res["text"] = _report_text(res)
    if print_report:
        print(res["text"])
    return res


def _count(text: str, minimum: int = 1) -> int:
    """An integer option >= ``minimum`` (argparse type: a bad value is its one-line usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def _point_counts(text: str) -> list[int]:
    """``--points``: one count or several, comma-separated, each >= 1."""
    parts = [x.strip() for x in str(text).split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r}: empty entry in the list")
    return [_count(x) for x in parts]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mirage_cli.bench.memory_speed", description=__doc__.split("\n")[0])
    p.add_argument("--points", type=_point_counts, default=[200_000],
                   help="points in the memory; several: 50000,200000,800000")
    p.add_argument("--height", type=_count, default=60)
    p.add_argument("--width", type=_count, default=104)
    p.add_argument("--channels", type=_count, default=16)
    p.add_argument("--frames", type=_count, default=21)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=_count, default=3)
    p.add_argument("--threads", type=lambda t: _count(t, 0), default=0, help="torch CPU threads (0 = torch default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        try:
            device = torch.device(a.device)
        except RuntimeError:
            raise MirageError(f"--device: unknown device {a.device!r} (cpu, cuda, cuda:N)") from None
        for n in a.points:
            memory_speed_report(n, a.height, a.width, a.channels, a.frames, str(device), a.repeats)
    except MirageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
