"""The bench report (a JSON-ready dict built from the run's dataclasses) and its rich table.

Charged to each arm (``memory_overhead_s``):

- latent: input lift + reads (latent splat) + writes (latent lift). No codec call.
- pointcloud: input lift (pixels) + reads (pixel render **and** the two encodes) + writes (pixel
  lift). The write also needs the chunk decoded to pixels; mirage decodes every chunk anyway for the
  output video, so that decode is shared and *excluded* from the headline (favouring the baseline);
  ``memory_overhead_incl_decode_s`` adds it for systems that would not decode otherwise.

``end_to_end_s`` = shared input encode + overhead + shared denoise + shared decode (+ for the latent
arm with a denoiser, the one-time grey-video latent its VACE context uses).

With two engines (``--denoiser spatia``, ``config.engines == 2``) each arm makes its own chunks: its
``denoise_s`` / ``decode_s`` (and ``per_chunk`` arrays of both) are its own, ``shared`` keeps only the
input encode, and the point-cloud arm's read is its engine's (cloud rebuilt and rendered) plus the
VAE encodes of the render and mask videos (:data:`TWO_ENGINES_CHARGED`).

Cache bytes are the stored payload of each memory (``nbytes``: points f32 + features/colours +
footprint f32 + patch axes f16 + chunk i32). Peak bytes are measured, not estimated: each memory
operation is replayed (untimed) under :class:`~mirage_cli.bench.measure.TensorPeak`; peak = bytes of
every tensor the memory held before the op (payload, keys, caches) + the highest live total during
it. The codec's own activations are not counted (they are the codec's, not the memory's).
"""

from __future__ import annotations

from dataclasses import asdict
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..units import fmt_bytes
from .arms import ArmRecord
from .config import BENCH_FORMAT
from .factories import codec_label
from .loop import BenchRun, SharedNumbers

if TYPE_CHECKING:
    from rich.console import JustifyMethod
from rich.table import Table

from .measure import loadavg, machine_info

#: Totals compared as pointcloud / latent.
RATIO_KEYS = ("cache_bytes", "read_s", "write_s", "memory_overhead_s", "memory_overhead_incl_decode_s",
              "end_to_end_s", "peak_bytes")

CHARGED = {
    "latent": "input lift + per chunk: read (splat of latent points into each latent frame) + write "
              "(lift newly revealed latent cells); no codec call",
    "pointcloud": "input lift (pixels) + per chunk: read (render every video frame at pixel resolution "
                  "+ codec encode of the rendered video + codec encode of the mask video) + write (lift "
                  "newly revealed pixels of the decoded frames); the decode of the chunk is the output "
                  "video's (shared): excluded from memory_overhead_s, included in "
                  "memory_overhead_incl_decode_s",
    "shared": "input encode, denoiser, decode of each chunk for the output video (in end_to_end_s of both)",
    "uncharged": "ground-truth renders and their encoding (stand-in for generation), fidelity decodes, "
                 "peak-memory replays, copies made to repeat writes",
    "timing": "torch.utils.benchmark: memory reads and depth fills: median of an adaptive autorange within "
              "0.5 s; writes and lifts: median of up to 5 calls on fresh copies within 0.5 s; codec, "
              "denoiser and decode calls: one call each",
}


#: What changes with two engines (``--denoiser spatia``): each arm makes, decodes and pays for its own chunks.
TWO_ENGINES_CHARGED = {
    "latent": "input lift + per chunk, the latent arm's own engine (conditioning latent): read (the engine's: "
              "splat of latent points into each latent frame, reference choice, depth fill) + write (lift newly "
              "revealed latent cells); no VAE encode of any render; its own denoise and decode",
    "pointcloud": "input lift + per chunk, the point-cloud arm's own engine (conditioning rgb): read (the "
                  "engine's: the explicit RGB cloud rebuilt from every 6th kept frame and rendered into every "
                  "video frame, reference matching) + the VAE encode of the rendered video and of the mask video "
                  "(inside the backend's conditioning, metered) + write; its own denoise (with the encodes of its "
                  "pinned overlap and reference images) and decode (write_decode_s); cache = its latent memory "
                  "(the kept frames' depth) + the decoded frames it keeps (cache_bytes_xyz_rgb_only: the frames)",
    "shared": "the input encode only: each arm has its own denoise and decode (per_chunk denoise_s / decode_s)",
}


def arm_summary(rec: ArmRecord, shared: SharedNumbers, fidelity: bool, with_setup: bool) -> dict:
    """One arm's totals and per-chunk arrays (seconds, bytes)."""
    ch = rec.chunks
    pointcloud = rec.name == "pointcloud"
    read_s, write_s = sum(c.read_s for c in ch), sum(c.write_s for c in ch)
    overhead = rec.lift_s + read_s + write_s
    denoise_per = rec.denoise_s if rec.denoise_s is not None else shared.denoise_s  # own engine, or shared
    decode_per = rec.decode_s if rec.decode_s is not None else shared.decode_s
    denoise_s, decode_s = sum(denoise_per), sum(decode_per)
    setup = rec.setup_s if with_setup else 0.0
    out: dict[str, Any] = {  # JSON-ready: numbers, then the per_chunk arrays
        "cache_bytes": ch[-1].cache_bytes, "input_cache_bytes": rec.lift_bytes, "points": ch[-1].points,
        "lift_s": rec.lift_s, "read_s": read_s, "write_s": write_s, "codec_s": sum(c.codec_s for c in ch),
        "codec_encodes": sum(c.codec_encodes for c in ch), "memory_overhead_s": overhead,
        "denoise_s": denoise_s, "decode_s": decode_s,
        "end_to_end_s": shared.input_encode_s + setup + overhead + denoise_s + decode_s,
        "peak_bytes": max([rec.lift_peak] + [c.peak_bytes for c in ch]),
        "known_fraction": sum(c.known_fraction for c in ch) / len(ch), "read_psnr": rec.read_psnr,
    }
    if pointcloud:
        out["cache_bytes_xyz_rgb_only"] = rec.xyz_rgb_bytes
        for k in ("render_s", "encode_s", "write_decode_s"):
            out[k] = sum(getattr(c, k) for c in ch)
        out["memory_overhead_incl_decode_s"] = overhead + out["write_decode_s"]
    else:
        out["setup_s"] = setup
        out["memory_overhead_incl_decode_s"] = overhead
    records = [c.as_dict(pointcloud, fidelity) for c in ch]
    per_chunk = {k: [r[k] for r in records] for k in records[0]}
    per_chunk["cumulative_memory_overhead_s"] = list(accumulate((c.memory_overhead_s for c in ch), initial=rec.lift_s))[1:]
    steps = (c.memory_overhead_s + dn + dc for c, dn, dc in zip(ch, denoise_per, decode_per))
    start = shared.input_encode_s + setup + rec.lift_s
    per_chunk["cumulative_end_to_end_s"] = list(accumulate(steps, initial=start))[1:]
    if rec.denoise_s is not None:  # the arm's own engine made its chunks (two engines)
        per_chunk["denoise_s"], per_chunk["decode_s"] = list(denoise_per), list(decode_per)
    out["per_chunk"] = per_chunk
    return out


def _ratio(a, b) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def laps_summary(run: BenchRun, lat: dict, pc: dict) -> list[dict]:
    """Cache size at the end of each lap and its growth over the previous lap (``[]`` for one lap)."""
    cfg, chunks = run.setup.cfg, run.setup.chunks
    if cfg.laps <= 1:
        return []
    laps = []
    per = cfg.frames_per_lap - 1
    for k in range(1, cfg.laps + 1):
        i = next((j for j, c in enumerate(chunks) if c.stop >= 1 + k * per), len(chunks) - 1)
        laps.append({"lap": k, "end_frame": chunks[i].stop, "latent_cache_bytes": lat["per_chunk"]["cache_bytes"][i],
                     "pointcloud_cache_bytes": pc["per_chunk"]["cache_bytes"][i]})
    for prev, cur in zip(laps, laps[1:]):
        for arm in ("latent", "pointcloud"):
            before = prev[f"{arm}_cache_bytes"]
            cur[f"{arm}_growth"] = (cur[f"{arm}_cache_bytes"] - before) / before if before else None
    return laps


def _config_section(run: BenchRun) -> dict:
    s = run.setup
    describe = getattr(s.codec, "describe", None)
    # with two engines the backend's spec plans the chunks (--chunk-frames is refused): record none
    return asdict(s.cfg) | ({"chunk_frames": None} if s.two_engines else {}) | {
        "scene_label": s.data.label, "num_frames": len(s.cams), "chunks": len(s.chunks),
        "chunk_length": s.chunks[0].length, "chunk_lengths": [c.length for c in s.chunks],
        "latent_grid": list(s.grid), "reference_depth": s.data.reference_depth,
        "trajectory": s.traj_info, "codec": describe() if describe else {"name": s.codec.name},
        "latent_write_policy": s.latent_policy, "pointcloud_write_policy": s.cfg.write_policy,
        "content": s.content, "fidelity": s.fidelity, "new_content_depth": "exact" if s.exact_depth else "filled",
        "codec_label": (f"the model's VAE ({s.codec.channels} ch, {s.codec.spatial_factor}x)" if s.two_engines
                        else codec_label(s.cfg.codec, s.codec)),
        "denoiser": s.backend.describe() if s.backend is not None else None,
        "engines": 2 if s.two_engines else 1,  # 2: each arm its own engine and chunks (--denoiser spatia)
    }


def build_report(run: BenchRun) -> dict:
    """The full report: config, weights, machine, shared work, both arms, ratios, laps."""
    s, sh = run.setup, run.shared
    lat = arm_summary(run.latent, sh, s.fidelity, s.backend is not None)
    pc = arm_summary(run.pointcloud, sh, s.fidelity, s.two_engines)
    ratios = {k: _ratio(pc[k], lat[k]) for k in RATIO_KEYS}
    ratios["cache_bytes_vs_xyz_rgb_only"] = _ratio(pc["cache_bytes_xyz_rgb_only"], lat["cache_bytes"])
    kinds = {k for k in (s.codec_weights, s.denoiser_weights) if k != "none"}
    charged = dict(CHARGED)
    if s.two_engines:
        charged |= TWO_ENGINES_CHARGED
    elif s.backend is not None:
        charged["latent"] += "; end_to_end also has the one-time grey-video latent of the VACE context"
    return {
        "format": BENCH_FORMAT,
        "mirage_version": __version__,
        "config": _config_section(run),
        "weights": "random" if "random" in kinds else "real" if kinds else "none",
        "weights_detail": {"codec": s.codec_weights, "denoiser": s.denoiser_weights},
        "device": str(s.device),
        "machine": machine_info(s.device) | {"loadavg_start": run.load_start, "loadavg_end": loadavg()},
        "shared": {"input_encode_s": sh.input_encode_s, "denoise_s": sum(sh.denoise_s), "decode_s": sum(sh.decode_s),
                   "uncharged_content_encode_s": sh.content_encode_s, "uncharged_gt_render_s": sh.gt_render_s,
                   "per_chunk": {"denoise_s": sh.denoise_s, "decode_s": sh.decode_s}},
        "latent": lat,
        "pointcloud": pc,
        "ratios": ratios,
        "laps": laps_summary(run, lat, pc),
        "charged": charged,
        "wall_s": run.wall_s,
    }


# --------------------------------------------------------------------------------------- the table
def fmt_s(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_ratio(r) -> str:
    return "—" if r is None else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def _lengths(config: dict) -> str:
    """``of 9`` when every chunk has one length, else ``of 121, then 81`` (Spatia's plan); older reports
    have only ``chunk_length``."""
    lengths = config.get("chunk_lengths") or [config["chunk_length"]]
    if len(set(lengths)) == 1:
        return f"of {lengths[0]}"
    return "of " + ", then ".join(str(n) for n in dict.fromkeys(lengths))


def summary_table(report: dict):
    """A rich table: one row per measure, the two arms and pointcloud / latent."""
    c = report["config"]
    lat, pc, r = report["latent"], report["pointcloud"], report["ratios"]
    title = (f"mirage bench — latent memory vs RGB point cloud — codec {c['codec_label']}, {report['weights_detail']['codec']} "
             f"weights, {c['width']}x{c['height']}, {c['num_frames']} frames in "
             f"{c['chunks']} chunk{'s' if c['chunks'] != 1 else ''} {_lengths(c)}, {report['device']}, "
             f"write policy {c['pointcloud_write_policy']}")
    t = Table(title=title, show_header=True, title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("measure", "left"), ("latent", "right"), ("pointcloud", "right"), ("pointcloud / latent", "right"))
    for name, justify in columns:
        t.add_column(name, justify=justify)

    def row(label, key, fmt):
        t.add_row(label, fmt(lat[key]) if lat.get(key) is not None else "—",
                  fmt(pc[key]) if pc.get(key) is not None else "—", fmt_ratio(r.get(key)) if key in r else "")

    row("cache size (final)", "cache_bytes", fmt_bytes)
    row("points (final)", "points", lambda n: f"{n:,}")
    row("peak memory of the memory", "peak_bytes", fmt_bytes)
    row("lift of the input", "lift_s", fmt_s)
    row("read (total)", "read_s", fmt_s)
    t.add_row("  of which codec encode", fmt_s(lat["codec_s"]), fmt_s(pc["codec_s"]), "")
    row("write (total)", "write_s", fmt_s)
    row("memory overhead", "memory_overhead_s", fmt_s)
    row("  + write-decode", "memory_overhead_incl_decode_s", fmt_s)
    whose = "each arm's own" if c.get("engines") == 2 else "shared"
    t.add_row(f"denoise ({whose})", fmt_s(lat["denoise_s"]), fmt_s(pc["denoise_s"]), "")
    t.add_row(f"decode ({whose})", fmt_s(lat["decode_s"]), fmt_s(pc["decode_s"]), "")
    row("end to end", "end_to_end_s", fmt_s)
    if lat.get("read_psnr") is not None or pc.get("read_psnr") is not None:
        row("read PSNR on known pixels", "read_psnr", lambda v: f"{v:.2f} dB")
    t.add_row("known fraction of reads", f"{lat['known_fraction']:.3f}", f"{pc['known_fraction']:.3f}", "")
    return t


def notes(report: dict) -> list[str]:
    """The lines printed under the table: weights, chunk content, cache growth per lap."""
    out = [f"weights: {report['weights']} (codec {report['weights_detail']['codec']}, "
           f"denoiser {report['weights_detail']['denoiser']}); chunk content: {report['config']['content']}"]
    for lap in report["laps"][1:]:
        out.append(f"lap {lap['lap']}: cache growth latent {lap['latent_growth']:+.1%}, "
                   f"pointcloud {lap['pointcloud_growth']:+.1%}")
    return out
