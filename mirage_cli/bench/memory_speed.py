"""Speed of the latent memory: read / write / lift of one latent grid against a large memory.

``python -m mirage_cli.bench.memory_speed [--points 200000] [--device cpu]`` prints the report; the
``mirage bench --memory-only`` command calls :func:`memory_speed_report`. Not a unit test: numbers
depend on the machine and its load, so the report names the machine.

Setup: the procedural room (:mod:`mirage_cli.data.scenes`) is lifted from many viewpoints at the latent
grid size (random ``channels``-channel fp16 features, exact depth) until the memory holds
``points`` points, the way an append-everything memory would grow. Then one chunk of ``frames``
latent frames on an orbit is read, and written back with the default ``"new"`` policy (the known
mask of that read), and written again as if every cell were new (the worst case).
"""

from __future__ import annotations

import argparse
import math
import os
import platform

import torch

from ..geometry.cameras import Cameras, look_at
from ..errors import MirageError
from ..memory.latent import LatentMemory
from ..data.scenes import make_scene
from .arms import clone_latent
from ..units import fmt_bytes
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


def _bench_inputs(height: int, width: int, channels: int, frames: int, dev: torch.device, seed: int):
    """The chunk a write stores: ``frames`` cameras on a ring in the room, their rendered latent-grid
    depth ``(T, h, w)`` and random fp32 latents ``(T, C, h, w)`` on ``dev``."""
    scene = make_scene("room", seed)
    center = torch.tensor(scene.center, dtype=torch.float64)
    c2w = _views(center, frames, 2.2, -0.1, 0.15, False)
    cams = Cameras.from_fov(c2w, 55.0, width, height)
    _, depth = scene.render(cams)
    g = torch.Generator().manual_seed(seed + 1)
    latents = torch.randn(frames, channels, height, width, generator=g).to(dev)
    return cams, depth.to(dev), latents


def _time_memory(mem: LatentMemory, cams: Cameras, depth: torch.Tensor, latents: torch.Tensor,
                 repeats: int) -> dict:
    """Median seconds of a read, of a write (policy new, with the read's known mask, and with every
    cell new) and of one lift, with the points each write adds."""
    (_, known, _), read_s = timed_median(lambda: mem.read(cams))

    def median_write(known_mask):
        """Median seconds of one write on fresh copies (writes must not accumulate), points it adds."""
        m, sec = timed_update(mem, clone_latent, lambda m: m.write(latents, depth, cams, known_mask, chunk=99),
                              max_samples=repeats)
        return sec, len(m) - len(mem)

    write_s, added = median_write(known)
    write_all_s, added_all = median_write(torch.zeros_like(known))
    _, lift_s = timed_median(lambda: LatentMemory(mem.channels, 1, device=mem.device).lift(latents[0], depth[0], cams[0]))
    return dict(known=known, read_s=read_s, write_s=write_s, added=added, write_all_s=write_all_s,
                added_all=added_all, lift_s=lift_s)


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
        "lift_ms": 1e3 * t["lift_s"],
        "copy_bandwidth_gb_s": bw / 1e9,
        "read_bytes_per_frame": rb,
        "read_x_bandwidth_limit": (read_s / frames) / (rb / bw),
        "write_bytes_per_frame": wb,
        "write_x_bandwidth_limit": (write_s / frames) / (wb / bw),
        "write_all_new_bytes_per_frame": wab,
        "write_all_new_x_bandwidth_limit": (write_all_s / frames) / (wab / bw),
    }


def _report_text(res: dict) -> str:
    """The printed report of :func:`memory_speed_report`'s measurements."""
    height, width = res["grid"]
    rb, wb, wab = res["read_bytes_per_frame"], res["write_bytes_per_frame"], res["write_all_new_bytes_per_frame"]
    return "\n".join([
        f"mirage memory speed: latent grid {height}x{width}, {res['channels']} channels float16, "
        f"{res['points']:,} points ({fmt_bytes(res['memory_bytes'])}), {res['frames']} frames per chunk",
        f"machine: {res['machine']}",
        f"read                 {res['read_ms_per_frame']:7.2f} ms/frame  {res['read_points_per_s'] / 1e6:7.1f} M points/s"
        f"  (known {100 * res['read_known_fraction']:.1f}% of cells)",
        f"write (policy new)   {res['write_ms_per_frame']:7.2f} ms/frame  {res['write_cells_per_s'] / 1e6:7.2f} M cells/s"
        f"   ({res['write_points_added']} points added)",
        f"write (all cells new){res['write_all_new_ms_per_frame']:7.2f} ms/frame  {res['write_all_new_cells_per_s'] / 1e6:7.2f} M cells/s"
        f"   ({res['write_all_new_points_added']} points added)",
        f"lift (one frame)     {res['lift_ms']:7.2f} ms",
        f"copy bandwidth {res['copy_bandwidth_gb_s']:.1f} GB/s; bytes touched per frame: read {rb / 1e6:.2f} MB "
        f"({res['read_x_bandwidth_limit']:.1f}x the copy time), write {wb / 1e6:.2f} MB "
        f"({res['write_x_bandwidth_limit']:.1f}x), write all new {wab / 1e6:.2f} MB ({res['write_all_new_x_bandwidth_limit']:.1f}x)",
    ])


def memory_speed_report(points: int = 200_000, height: int = 60, width: int = 104, channels: int = 16,
                        frames: int = 21, device: str = "cpu", repeats: int = 3, seed: int = 0,
                        print_report: bool = True) -> dict:
    """Time read / write / lift of an ``height x width`` latent grid against a ``points``-point memory.

    Returns a dict of the measurements (milliseconds per frame, points or cells per second) with
    the report text under ``"text"``; prints the text unless ``print_report`` is False.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MirageError("memory bench: --device cuda asked for, but this torch has no CUDA device")
    mem, build_s = timed(lambda: build_memory(points, height, width, channels, dev, seed))
    cams, depth, latents = _bench_inputs(height, width, channels, frames, dev, seed)
    res = _results(mem, dev, height, width, frames, build_s, _time_memory(mem, cams, depth, latents, repeats))
    res["text"] = _report_text(res)
    if print_report:
        print(res["text"])
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mirage_cli.bench.memory_speed", description=__doc__.split("\n")[0])
    p.add_argument("--points", default="200000", help="points in the memory; several: 50000,200000,800000")
    p.add_argument("--height", type=int, default=60)
    p.add_argument("--width", type=int, default=104)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--frames", type=int, default=21)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        for n in (int(x) for x in str(a.points).split(",")):
            memory_speed_report(n, a.height, a.width, a.channels, a.frames, a.device, a.repeats)
    except MirageError as e:
        print(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
