"""``mirage bench --compare pointcloud``: the latent memory against an explicit RGB point cloud.

Both arms run the **same loop** on the same scene, trajectory, chunk plan, codec and process:

```
input image ──encode (shared)──▶ first latent          input image + depth ──▶ both memories (lift)
for each chunk (plan_chunks: 1 + 4k frames, one overlap frame):
  latent arm      READ  LatentMemory.read(latent-frame cameras)          splat in latent space
  pointcloud arm  READ  PointCloudMemory.render(every video frame)       splat at pixel resolution
                        + codec.encode(rendered video) + codec.encode(mask video)
  shared          DENOISE (--denoiser, timed once, charged to both)  ──▶ chunk latents
                  DECODE  codec.decode(chunk latents) (the output video; timed once, charged to both)
  latent arm      WRITE lift the newly revealed latent cells (depth at latent resolution)
  pointcloud arm  WRITE lift the newly revealed pixels of the decoded frames (pixel depth)
```

What stands in for generation. With ``--denoiser none`` the chunk content is the preview backend's
fill of the latent read (no codec, milliseconds, charged as "denoise"), or with ``--fidelity on``
(synthetic scene) the codec encoding of the true render of the chunk's frames (charged to neither
arm), which makes the read fidelity meaningful. With ``--denoiser tiny|wan2.1-1.3b`` the
Wan-VACE transformer runs ``--steps`` steps per chunk on the latent arm's read (timed once, charged to
both arms as "denoise"); its output becomes the chunk content only when its weights are real (random
weights give noise). Depth of new content (``--write-depth``): each arm's own read depth extended
into the holes (:func:`mirage_cli.geometry.depth.fill_depth`, latent vs pixel resolution, as ``mirage
generate`` does), or the synthetic scene's exact depth (``exact``; ``auto`` = exact when fidelity is
on, since the true renders are made anyway).

Charged to each arm (``memory_overhead_s``):

- latent: input lift + reads (latent splat) + writes (latent lift). No codec call.
- pointcloud: input lift (pixels) + reads (pixel render **and** the two encodes) + writes (pixel
  lift). The write also needs the chunk decoded to pixels; mirage decodes every chunk anyway for the
  output video, so that decode is shared and *excluded* from the headline (favouring the baseline);
  ``memory_overhead_incl_decode_s`` adds it for systems that would not decode otherwise.

``end_to_end_s`` = shared input encode + overhead + shared denoise + shared decode (+ for the latent
arm with a denoiser, the one-time grey-video latent its VACE context uses).

Cache bytes are the stored payload of each memory (``nbytes``: points f32 + features/colours +
footprint f32 + patch axes f16 + chunk i32). Peak bytes are measured, not estimated: each memory operation is replayed
(untimed) under a ``TorchDispatchMode`` that tracks every tensor created by a torch op until it is
freed; peak = bytes of every tensor the memory held before the op (payload, keys, caches) + the highest live total
during it. The codec's own activations are not counted (they are the codec's, not the memory's).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import __version__
from ..geometry.cameras import Cameras
from ..errors import MirageError

BENCH_FORMAT = "mirage.bench"
CODECS = ("tiny", "pixel", "wan2.1-vae", "wan2.2-vae")
DENOISERS = ("none", "tiny", "wan2.1-1.3b")
COMPARES = ("pointcloud",)
POLICIES = ("new", "replace", "average", "append")

#: Wan2.1-VACE-1.3B transformer (Hub config of Wan-AI/Wan2.1-VACE-1.3B-diffusers).
WAN21_VACE_13B_CONFIG = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                             out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                             cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
                             vace_layers=list(range(0, 30, 2)), vace_in_channels=96)


# --------------------------------------------------------------------------------------- config
@dataclass
class BenchConfig:
    """Every option of ``mirage bench`` (the CLI fills it; the JSON report stores it)."""

    compare: str = "pointcloud"
    scene: str = "synthetic"  # "synthetic" or an image path
    depth: str | None = None  # depth file for an image scene (default: its sidecar)
    traj: str | None = None  # FILE | PRESET [default orbit_360]
    frames: int = 25
    laps: int = 1
    chunk_frames: int = 9
    codec: str = "tiny"
    height: int = 240
    width: int = 416
    denoiser: str = "none"
    steps: int = 4
    write_policy: str = "new"
    device: str = "auto"
    fidelity: str = "auto"  # auto | on | off
    write_depth: str = "auto"  # auto | exact | filled
    seed: int = 0


# --------------------------------------------------------------------------------------- helpers
class TensorPeak:
    """Peak bytes of live tensors created by torch ops inside ``with`` (a ``TorchDispatchMode``).

    Every tensor an op returns is counted once per storage until the last tensor viewing that
    storage is garbage-collected; views of tensors made outside the block are not counted. Works on
    any device; scratch memory that a kernel allocates and frees internally is not visible.
    """

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        meter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                ins = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        meter._track(t, ins)
                return out

        self._mode = _Mode()
        self.live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0

    def _track(self, t: torch.Tensor, inputs: set[int]) -> None:
        if t.device.type == "meta":
            return
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr == 0:
            return
        entry = self.live.get(ptr)
        if entry is None:
            if ptr in inputs:  # a view of something made before the block
                return
            entry = self.live[ptr] = [0, st.nbytes()]
            self.current += entry[1]
            self.peak = max(self.peak, self.current)
        entry[0] += 1
        weakref.finalize(t, self._release, ptr)

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            self.current -= entry[1]
            del self.live[ptr]

    def __enter__(self) -> "TensorPeak":
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def measure_peak(fn) -> int:
    """Run ``fn()`` under :class:`TensorPeak`; return the peak transient bytes (results are dropped)."""
    with TensorPeak() as meter:
        out = fn()
        del out
    return int(meter.peak)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """``(fn(), seconds)``, synchronising CUDA around the call."""
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t


def timed_median(fn, device: torch.device, budget_s: float = 0.5, max_repeat: int = 5):
    """``(fn(), median seconds)`` over repeated calls: repeats while the total stays under ``budget_s``
    (at most ``max_repeat`` calls), so millisecond operations get a stable median and slow ones run once."""
    times = []
    while True:
        out, s = timed(fn, device)
        times.append(s)
        if len(times) >= max_repeat or sum(times) >= budget_s:
            return out, statistics.median(times)


def timed_update(memory, clone, update, device: torch.device, budget_s: float = 0.5, max_repeat: int = 5):
    """Time ``update(copy)`` on fresh copies of ``memory`` (``clone(memory)``, untimed) like
    :func:`timed_median`; returns ``(the last updated copy, median seconds)``."""
    times = []
    while True:
        m = clone(memory)
        _, s = timed(lambda: update(m), device)
        times.append(s)
        if len(times) >= max_repeat or sum(times) >= budget_s:
            return m, statistics.median(times)


def machine_info(device: torch.device) -> dict:
    """Where the numbers were measured."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "mirage": __version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _psnr(mse_sum: float, count: int) -> float | None:
    if count == 0:
        return None
    mse = mse_sum / count
    return float(10 * math.log10(1.0 / max(mse, 1e-12)))


# --------------------------------------------------------------------------------------- prepare
def make_codec(name: str, device: torch.device):
    """``(codec, weights)`` for ``--codec``; Wan VAEs use cached real weights, else random weights."""
    if name == "pixel":
        from ..models.codecs import PixelCodec

        return PixelCodec(1), "none"
    from ..models.wan_vae import WanVAECodec

    if name == "tiny":
        return WanVAECodec.random("wan2.1", device=device, tiny=True, tiling=False), "random"
    if name in ("wan2.1-vae", "wan2.2-vae"):
        try:  # real weights when cached (never downloads)
            codec = WanVAECodec.from_pretrained(name, device=device, tiling=False)
            return codec, codec.weights
        except MirageError:
            return WanVAECodec.random(name.split("-")[0], device=device, tiling=False), "random"
    raise MirageError(f"--codec: unknown codec '{name}' (choose {', '.join(CODECS)})")


class _ZeroTextEncoder(torch.nn.Module):
    """Stands in for UMT5 with random weights: zero prompt embeddings of the transformer's width.

    The text encoder runs once per prompt (cached), not per chunk, so it is no part of the per-chunk
    cost the bench measures.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(last_hidden_state=torch.zeros(*input_ids.shape, self.dim, device=input_ids.device))


def make_denoiser(name: str, codec, device: torch.device):
    """``(backend | None, weights)`` for ``--denoiser`` (a :class:`WanVACEBackend` around ``codec``)."""
    if name == "none":
        return None, "none"
    if name not in DENOISERS:
        raise MirageError(f"--denoiser: unknown denoiser '{name}' (choose {', '.join(DENOISERS)})")
    from ..backends.wan_vace import WanVACEBackend
    from ..models.registry import resolve_dtype

    C, f = codec.channels, codec.spatial_factor
    if not hasattr(codec, "grey_latent"):
        raise MirageError(f"--denoiser {name} needs a Wan VAE codec (tiny, wan2.1-vae or wan2.2-vae), not --codec {codec.name}")
    dtype = resolve_dtype("auto", device)
    if name == "tiny":
        from ..models.tiny import tiny_vace_components

        parts = tiny_vace_components(seed=0, in_channels=C, out_channels=C, vace_in_channels=2 * C + f * f)
        backend = WanVACEBackend(parts["transformer"], parts["text_encoder"], parts["tokenizer"], codec, device=device,
                                 dtype=torch.float32, model="tiny", weights="random")
        return backend, "random"
    if (C, f) != (16, 8):
        raise MirageError(f"--denoiser {name} needs the Wan2.1 latent space (16 channels, 8x); --codec {codec.name} "
                          f"gives {C} channels at {f}x (use --codec wan2.1-vae or tiny)")
    try:  # real weights when cached (never downloads)
        from ..backends.wan_vace import load_wan_vace

        backend, _ = load_wan_vace("wan2.1-vace-1.3b", device=str(device), dtype="auto")
        backend.codec = codec
        return backend, backend.weights
    except MirageError:
        pass
    from diffusers import WanVACETransformer3DModel

    from ..models.tiny import tiny_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = WanVACETransformer3DModel(**WAN21_VACE_13B_CONFIG)
    if dtype != torch.float32:  # as from_pretrained does: the listed modules stay in fp32
        keep = tuple(getattr(transformer, "_keep_in_fp32_modules", None) or ())
        for mod_name, module in transformer.named_modules():
            if not any(k in mod_name.split(".") for k in keep):
                for p in module.parameters(recurse=False):
                    p.data = p.data.to(dtype)
    backend = WanVACEBackend(transformer, _ZeroTextEncoder(WAN21_VACE_13B_CONFIG["text_dim"]), tiny_tokenizer(), codec,
                             device=device, dtype=dtype, model="wan2.1-vace-1.3b (random weights)", weights="random")
    return backend, "random"


@dataclass
class SceneData:
    image: torch.Tensor  # (3, H, W) in [0, 1]
    depth: torch.Tensor  # (H, W) z-depth
    reference_depth: float
    scene: object | None  # scenes.Scene for the synthetic scene (ground truth), else None
    label: str


def prepare_scene(cfg: BenchConfig, multiple: int) -> SceneData:
    """The input image and its depth at ``height x width``."""
    H, W = cfg.height, cfg.width
    if H < multiple or W < multiple or H % multiple or W % multiple:
        raise MirageError(f"--height/--width {H}x{W}: must be positive multiples of {multiple} for --codec {cfg.codec}"
                          + (f" with --denoiser {cfg.denoiser}" if cfg.denoiser != "none" else ""))
    if cfg.scene == "synthetic":
        from ..data.scenes import default_camera, make_scene

        if cfg.depth:
            raise MirageError("--depth only applies to an image --scene (the synthetic scene has exact depth)")
        scene = make_scene("room", seed=cfg.seed)
        rgb, depth = scene.render(default_camera(W, H))
        return SceneData(rgb[0], depth[0], float(depth[0][depth[0] > 0].median()), scene, "synthetic room (exact depth)")
    import torch.nn.functional as F

    from ..geometry.depth import load_depth_file, sidecar_for
    from ..io import load_image

    path = Path(cfg.scene)
    image = load_image(path)
    dpath = Path(cfg.depth) if cfg.depth else sidecar_for(path)
    if dpath is None:
        raise MirageError(f"{path}: the bench needs the image's depth: pass --depth FILE (.npy/.npz) or put "
                          f"{path.stem}.depth.npy next to it")
    depth = load_depth_file(dpath)
    if tuple(depth.shape) != tuple(image.shape[-2:]):
        raise MirageError(f"{dpath}: depth is {depth.shape[1]}x{depth.shape[0]} but the image is "
                          f"{image.shape[2]}x{image.shape[1]}")
    image = F.interpolate(image[None], size=(H, W), mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)
    depth = F.interpolate(depth[None, None], size=(H, W), mode="nearest-exact")[0, 0]
    valid = depth > 0
    ref = float(depth[valid].median()) if bool(valid.any()) else 1.0
    return SceneData(image, depth, ref, None, f"image {path.name} (depth {dpath.name})")


def prepare_cameras(cfg: BenchConfig, data: SceneData) -> tuple[Cameras, dict]:
    """The bench trajectory: ``--traj`` (default ``orbit_360``) resampled so that ``--laps`` laps make
    ``--frames`` frames, scaled by the reference depth when relative.

    On the synthetic scene a preset's ``look_at_depth`` is set to the room's centre (so an orbit runs
    on the object-free ring inside the room) and every camera must stay inside the room.
    """
    from ..trajectories import PRESETS, load_trajectory, resample

    name = cfg.traj or "orbit_360"
    if cfg.frames < 2:
        raise MirageError(f"--frames must be >= 2 (got {cfg.frames})")
    if cfg.laps < 1:
        raise MirageError(f"--laps must be >= 1 (got {cfg.laps})")
    if (cfg.frames - 1) % cfg.laps:
        raise MirageError(f"--frames {cfg.frames}: frames - 1 must be divisible by --laps {cfg.laps} "
                          f"(each lap has the same frames, sharing its first frame with the previous lap's last)")
    overrides = {}
    is_preset = not Path(name).exists() and name.removeprefix("preset:") in PRESETS
    if is_preset and data.scene is not None and "look_at_depth" in PRESETS[name.removeprefix("preset:")].params:
        overrides["look_at_depth"] = float(data.scene.center[2]) / data.reference_depth
    traj = load_trajectory(name, **overrides)
    per_lap = (cfg.frames - 1) // cfg.laps + 1
    traj = resample(traj, per_lap)
    lap = traj.cameras_for(cfg.width, cfg.height)
    if traj.scale == "relative":
        lap = lap.scaled(data.reference_depth)
    closed = bool((lap.c2w[-1] - lap.c2w[0]).abs().max() < 1e-4)
    idx = list(range(per_lap)) + [i for _ in range(cfg.laps - 1) for i in range(1, per_lap)]
    cams = Cameras(lap.c2w[idx], lap.intrinsics[idx], cfg.width, cfg.height)
    if data.scene is not None:
        lo = torch.tensor(data.scene.room_lo, dtype=torch.float64) + 0.05
        hi = torch.tensor(data.scene.room_hi, dtype=torch.float64) - 0.05
        out = ((cams.centers < lo) | (cams.centers > hi)).any(dim=1).nonzero()
        if len(out):
            i = int(out[0])
            c = ", ".join(f"{v:.2f}" for v in cams.centers[i].tolist())
            raise MirageError(f"{name}: frame {i}: camera at ({c}) leaves the synthetic room (x in [-4, 4], "
                              f"y in [-2.4, 1.4], z in [-3, 9]); choose a smaller motion")
    info = {"source": name, "format": traj.format, "scale": traj.scale, "laps": cfg.laps, "frames_per_lap": per_lap,
            "closed": closed, "preset_overrides": overrides}
    return cams, info


# --------------------------------------------------------------------------------------- the arms
class Arm:
    """Per-chunk measurements of one arm."""

    KEYS = ("frames", "read_s", "write_s", "codec_s", "memory_overhead_s", "cache_bytes", "points", "points_added",
            "peak_bytes", "known_fraction", "psnr")

    def __init__(self, name: str) -> None:
        self.name = name
        self.chunks: list[dict] = []
        self.lift_s = 0.0
        self.lift_peak = 0
        self.lift_bytes = 0
        self.xyz_rgb_bytes = 0
        self.setup_s = 0.0
        self.mse = [0.0, 0]

    def add_fidelity(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> float | None:
        """Accumulate squared error of ``pred`` vs ``gt`` ``(T, 3, H, W)`` on ``mask (T, H, W)``; chunk PSNR."""
        m = mask[:, None].expand_as(gt)
        if not bool(m.any()):
            return None
        err = ((pred.float() - gt.float()) ** 2)[m]
        s, n = float(err.sum()), int(err.numel())
        self.mse[0] += s
        self.mse[1] += n
        return _psnr(s, n)

    def per_chunk(self) -> dict:
        return {k: [c.get(k) for c in self.chunks] for k in self.chunks[0]} if self.chunks else {}


def _held_bytes(memory) -> int:
    """Bytes of every tensor a memory object holds (its payload, derived keys, caches, nested memories)."""
    seen: set[int] = set()

    def walk(x, depth: int = 0) -> int:
        if isinstance(x, torch.Tensor):
            st = x.untyped_storage()
            if st.data_ptr() in seen:
                return 0
            seen.add(st.data_ptr())
            return st.nbytes()
        if isinstance(x, (tuple, list)):
            return sum(walk(v, depth) for v in x)
        if depth < 2 and hasattr(x, "__dict__") and type(x).__module__.startswith("mirage_cli.memory"):
            return sum(walk(v, depth + 1) for v in vars(x).values())
        return 0

    return walk(memory)


def _upsample_mask(known: torch.Tensor, factor: int) -> torch.Tensor:
    return known.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1) if factor > 1 else known


# --------------------------------------------------------------------------------------- the bench
def run_bench(cfg: BenchConfig, progress=None, warn=print) -> dict:
    """Run both arms on the same loop; return the report (see the module docstring)."""
    from ..backends import ChunkRequest
    from ..backends.preview import PreviewBackend
    from ..geometry.depth import fill_depth
    from ..pipeline.plan import latent_frame_indices, plan_chunks
    from ..memory.latent import WRITE_POLICIES as LATENT_POLICIES
    from ..memory.latent import LatentMemory
    from ..memory.pointcloud import PointCloudMemory
    from ..models.registry import resolve_device

    t_start = time.perf_counter()
    load_start = _loadavg()
    _validate(cfg)
    device = resolve_device(cfg.device)

    # 1. codec, denoiser, scene, trajectory, plan
    codec, codec_weights = make_codec(cfg.codec, device)
    f, tf, C = codec.spatial_factor, codec.temporal_factor, codec.channels
    data = prepare_scene(cfg, f * (2 if cfg.denoiser != "none" else 1))
    cams, traj_info = prepare_cameras(cfg, data)
    backend, denoiser_weights = make_denoiser(cfg.denoiser, codec, device)
    H, W = cfg.height, cfg.width
    chunks = plan_chunks(len(cams), cfg.chunk_frames, tf)
    synthetic = data.scene is not None
    fidelity = cfg.fidelity == "on" or (cfg.fidelity == "auto" and synthetic and codec_weights != "random")
    if fidelity and not synthetic:
        raise MirageError("--fidelity on needs the synthetic scene (ground-truth renders)")
    if cfg.write_depth == "exact" and not synthetic:
        raise MirageError("--write-depth exact needs the synthetic scene (an image scene has no true depth for new views)")
    exact_depth = cfg.write_depth == "exact" or (cfg.write_depth == "auto" and fidelity)
    if backend is not None and denoiser_weights == "real":
        content = "denoiser"
    else:
        content = "ground-truth" if fidelity else "preview-fill"
    latent_policy = cfg.write_policy if cfg.write_policy in LATENT_POLICIES else "new"
    image, depth0 = data.image.to(device), data.depth.to(device)
    cam0 = cams[0]

    # 2. warm-up (untimed): the first call of a torch kernel pays one-time costs
    _warmup(image, depth0, cam0, C, f, device)

    # 3. shared: the input latent; one-time grey latent for the latent arm's VACE context
    shared = {"input_encode_s": 0.0, "denoise_s": [], "decode_s": [], "content_encode_s": 0.0, "gt_render_s": 0.0}
    first_latent, shared["input_encode_s"] = timed(lambda: codec.encode(image[None])[0], device)
    lat_arm, pc_arm = Arm("latent"), Arm("pointcloud")
    if backend is not None:  # the wan-vace context uses the latent of a grey video (one encode per chunk shape)
        _, lat_arm.setup_s = timed(lambda: codec.grey_latent(chunks[0].length, H, W), device)

    # 4. lift the input into both memories
    lmem = LatentMemory(C, f, codec=codec.name, device=device, write_policy=latent_policy)
    pmem = PointCloudMemory(device=device, write_policy=cfg.write_policy)
    lat_arm.lift_peak = measure_peak(lambda: LatentMemory(C, f, device=device).lift(first_latent, depth0, cam0))
    pc_arm.lift_peak = measure_peak(lambda: PointCloudMemory(device=device).lift(image, depth0, cam0))
    lmem, lat_arm.lift_s = timed_update(lmem, _latent_clone, lambda m: m.lift(first_latent, depth0, cam0, chunk=0), device)
    pmem, pc_arm.lift_s = timed_update(pmem, PointCloudMemory.clone, lambda m: m.lift(image, depth0, cam0, chunk=0), device)
    lat_arm.lift_bytes, pc_arm.lift_bytes = lmem.nbytes(), pmem.nbytes()

    task = progress.add_task(f"bench {cfg.codec}: latent vs pointcloud", total=len(chunks)) if progress else None
    preceding = None
    for chunk in chunks:
        frames_idx = chunk.frames  # trajectory frame of each (padded) video frame
        lat_idx = latent_frame_indices(chunk, tf)
        vcams = Cameras(cams.c2w[frames_idx], cams.intrinsics[frames_idx], W, H)
        lcams = Cameras(cams.c2w[lat_idx], cams.intrinsics[lat_idx], W, H)
        real = chunk.stop - chunk.start
        n_real_lat = 1 + (real - 1) // tf
        pos = [tf * j for j in range(n_real_lat)]  # chunk video frame of each real latent frame
        wp_pos = list(range(1, real)) if cfg.write_policy == "append" else pos  # frames the point cloud writes
        L = chunk.length
        lrec: dict = {"frames": chunk.stop}
        prec: dict = {"frames": chunk.stop}

        # READ, latent arm: splat in latent space, every latent frame of the chunk
        (read_lat, known_l, depth_l), lrec["read_s"] = timed_median(lambda: lmem.read(lcams), device)
        lrec["codec_s"] = 0.0
        lrec["peak_bytes"] = _held_bytes(lmem) + measure_peak(lambda: lmem.read(lcams))
        lrec["known_fraction"] = round(float(known_l[:n_real_lat].float().mean()), 6)

        # READ, pointcloud arm: render every video frame at pixel resolution, encode render + mask video
        (rgb_p, known_p, depth_p), render_s = timed_median(lambda: pmem.render(vcams), device)
        (pc_lat, _), encode_s = timed(lambda: PointCloudMemory.encode_condition(codec, rgb_p, known_p), device)
        prec.update(render_s=render_s, encode_s=encode_s, codec_s=encode_s, read_s=render_s + encode_s)
        prec["peak_bytes"] = _held_bytes(pmem) + measure_peak(
            lambda: PointCloudMemory.condition_videos(*pmem.render(vcams)[:2]))
        prec["known_fraction"] = round(float(known_p[pos].float().mean()), 6)

        # ground truth (uncharged): only what fidelity, exact depth or ground-truth content need
        gt_rgb = gt_depth = None
        if synthetic and (fidelity or exact_depth or content == "ground-truth"):
            need = list(range(L)) if content == "ground-truth" else sorted(set(pos) | (set(wp_pos) if exact_depth else set()))
            gcams = Cameras(vcams.c2w[need], vcams.intrinsics[need], W, H)
            (g_rgb, g_depth), s = timed(lambda: data.scene.render(gcams), device)
            shared["gt_render_s"] += s
            gt_rgb = torch.zeros(L, 3, H, W, device=device)
            gt_depth = torch.zeros(L, H, W, device=device)
            gt_rgb[need], gt_depth[need] = g_rgb.to(device), g_depth.to(device)

        # DENOISE (shared, timed once): on the latent arm's read
        denoise_s = 0.0
        latents = None
        if backend is not None:
            req = ChunkRequest(read_latents=read_lat, known=known_l, read_depth=depth_l, first_latent=first_latent,
                               preceding=preceding, chunk_index=chunk.index, num_frames=L, seed=cfg.seed,
                               steps=cfg.steps, guidance=1.0)
            out, denoise_s = timed(lambda: backend.denoise(req), device)
            if content == "denoiser":
                latents = out
        if latents is None and content == "ground-truth":  # stands in for generation: uncharged
            latents, s = timed(lambda: codec.encode(gt_rgb), device)
            shared["content_encode_s"] += s
        if latents is None:  # preview fill of the latent read (no codec, milliseconds): charged as denoise
            req = ChunkRequest(read_latents=read_lat, known=known_l, read_depth=depth_l, first_latent=first_latent,
                               preceding=preceding, chunk_index=chunk.index, num_frames=L)
            latents, s = timed(lambda: PreviewBackend().denoise(req), device)
            denoise_s += s
        latents = latents.float()
        shared["denoise_s"].append(denoise_s)

        # DECODE (shared): the output video; the point-cloud write reuses these frames
        frames, decode_s = timed(lambda: codec.decode(latents), device)
        shared["decode_s"].append(decode_s)
        prec["write_decode_s"] = decode_s

        # WRITE, latent arm: newly revealed latent cells of the real latent frames
        wl = (latents[:n_real_lat],
              gt_depth[pos] if exact_depth else fill_depth(depth_l[:n_real_lat], known_l[:n_real_lat]),
              lcams[:n_real_lat], known_l[:n_real_lat])
        lrec["write_depth_s"] = 0.0
        if not exact_depth:  # depth for the holes is part of the write (timed separately, added below)
            _, lrec["write_depth_s"] = timed_median(lambda: fill_depth(depth_l[:n_real_lat], known_l[:n_real_lat]), device)
        lrec["peak_bytes"] = max(lrec["peak_bytes"], _held_bytes(lmem) + measure_peak(
            lambda: _latent_clone(lmem).write(*wl, chunk=chunk.index + 1)))
        before = len(lmem)
        lmem, s = timed_update(lmem, _latent_clone, lambda m: m.write(*wl, chunk=chunk.index + 1), device)
        lrec["write_s"] = s + lrec["write_depth_s"]
        lrec["points_added"] = len(lmem) - before

        # WRITE, pointcloud arm: newly revealed pixels of the decoded frames (append: every new frame)
        wp_cams = Cameras(vcams.c2w[wp_pos], vcams.intrinsics[wp_pos], W, H)
        wp = (frames[wp_pos], gt_depth[wp_pos] if exact_depth else fill_depth(depth_p[wp_pos], known_p[wp_pos]),
              wp_cams, known_p[wp_pos])
        prec["write_depth_s"] = 0.0
        if not exact_depth:
            _, prec["write_depth_s"] = timed_median(lambda: fill_depth(depth_p[wp_pos], known_p[wp_pos]), device)
        prec["peak_bytes"] = max(prec["peak_bytes"], _held_bytes(pmem) + measure_peak(
            lambda: pmem.clone().write(*wp, chunk=chunk.index + 1)))
        before = len(pmem)
        pmem, s = timed_update(pmem, PointCloudMemory.clone, lambda m: m.write(*wp, chunk=chunk.index + 1), device)
        prec["write_s"] = s + prec["write_depth_s"]
        prec["points_added"] = len(pmem) - before

        # FIDELITY (uncharged): decoded read vs the true render, on known pixels of the real latent frames
        if fidelity:
            dec_l = codec.decode(read_lat)[pos]
            lrec["psnr"] = lat_arm.add_fidelity(dec_l, gt_rgb[pos], _upsample_mask(known_l[:n_real_lat], f))
            dec_p = codec.decode(pc_lat)[pos]
            prec["psnr"] = pc_arm.add_fidelity(dec_p, gt_rgb[pos], known_p[pos])

        for rec, mem, arm in ((lrec, lmem, lat_arm), (prec, pmem, pc_arm)):
            rec["cache_bytes"] = mem.nbytes()
            rec["points"] = len(mem)
            rec["memory_overhead_s"] = rec["read_s"] + rec["write_s"]
            arm.chunks.append(rec)
        pc_arm.xyz_rgb_bytes = pmem.nbytes_xyz_rgb()
        preceding = latents[n_real_lat - 1 : n_real_lat]
        if progress:
            progress.advance(task)

    return _report(cfg, codec, codec_weights, backend, denoiser_weights, device, data, cams, traj_info, chunks,
                   lat_arm, pc_arm, shared, content, fidelity, exact_depth, latent_policy,
                   (H // f, W // f), time.perf_counter() - t_start, load_start)


def _validate(cfg: BenchConfig) -> None:
    if cfg.compare not in COMPARES:
        raise MirageError(f"--compare: unknown baseline '{cfg.compare}' (choose {', '.join(COMPARES)})")
    if cfg.codec not in CODECS:
        raise MirageError(f"--codec: unknown codec '{cfg.codec}' (choose {', '.join(CODECS)})")
    if cfg.denoiser not in DENOISERS:
        raise MirageError(f"--denoiser: unknown denoiser '{cfg.denoiser}' (choose {', '.join(DENOISERS)})")
    if cfg.write_policy not in POLICIES:
        raise MirageError(f"--write-policy: unknown policy '{cfg.write_policy}' (choose {', '.join(POLICIES)})")
    if cfg.fidelity not in ("auto", "on", "off"):
        raise MirageError(f"--fidelity: must be auto, on or off (got '{cfg.fidelity}')")
    if cfg.write_depth not in ("auto", "exact", "filled"):
        raise MirageError(f"--write-depth: must be auto, exact or filled (got '{cfg.write_depth}')")
    if cfg.chunk_frames < 2:
        raise MirageError(f"--chunk-frames must be >= 2 (got {cfg.chunk_frames})")
    if cfg.denoiser != "none" and cfg.steps < 1:
        raise MirageError(f"--steps must be >= 1 (got {cfg.steps})")


def _latent_clone(memory):
    return memory.select(torch.arange(len(memory), device=memory.device))


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _warmup(image, depth, cam, C, f, device) -> None:
    from ..memory.latent import LatentMemory
    from ..memory.pointcloud import PointCloudMemory

    small = Cameras(cam.c2w, cam.intrinsics, max(f, cam.width // 4 // f * f), max(f, cam.height // 4 // f * f))
    import torch.nn.functional as F

    img = F.interpolate(image[None], size=(small.height, small.width), mode="area")[0]
    dep = F.interpolate(depth[None, None], size=(small.height, small.width), mode="nearest")[0, 0]
    lm = LatentMemory(C, f, device=device)
    lm.lift(torch.zeros(C, small.height // f, small.width // f, device=device), dep, small)
    _, known, _ = lm.read(small)
    lm.write(torch.zeros(1, C, small.height // f, small.width // f, device=device), dep[None], small, known, chunk=1)
    pm = PointCloudMemory(device=device)
    pm.lift(img, dep, small)
    rgb, known, _ = pm.render(small)
    PointCloudMemory.condition_videos(rgb, known)
    pm.write(img[None], dep[None], small, known, chunk=1)


def _arm_summary(arm: Arm, shared: dict, with_grey: bool) -> dict:
    ch = arm.chunks
    read_s = sum(c["read_s"] for c in ch)
    write_s = sum(c["write_s"] for c in ch)
    codec_s = sum(c["codec_s"] for c in ch)
    overhead = arm.lift_s + read_s + write_s
    decode_s = sum(shared["decode_s"])
    denoise_s = sum(shared["denoise_s"])
    setup = arm.setup_s if with_grey else 0.0
    out = {
        "cache_bytes": ch[-1]["cache_bytes"],
        "input_cache_bytes": arm.lift_bytes,
        "points": ch[-1]["points"],
        "lift_s": arm.lift_s,
        "read_s": read_s,
        "write_s": write_s,
        "codec_s": codec_s,
        "memory_overhead_s": overhead,
        "denoise_s": denoise_s,
        "decode_s": decode_s,
        "end_to_end_s": shared["input_encode_s"] + setup + overhead + denoise_s + decode_s,
        "peak_bytes": max([arm.lift_peak] + [c["peak_bytes"] for c in ch]),
        "known_fraction": sum(c["known_fraction"] for c in ch) / len(ch),
        "read_psnr": _psnr(*arm.mse),
    }
    if arm.name == "pointcloud":
        out["cache_bytes_xyz_rgb_only"] = arm.xyz_rgb_bytes
        out["render_s"] = sum(c["render_s"] for c in ch)
        out["encode_s"] = sum(c["encode_s"] for c in ch)
        out["write_decode_s"] = sum(c["write_decode_s"] for c in ch)
        out["memory_overhead_incl_decode_s"] = overhead + out["write_decode_s"]
    else:
        out["setup_s"] = setup
        out["memory_overhead_incl_decode_s"] = overhead
    pc = arm.per_chunk()
    cum, cum_e2e = [], []
    acc = arm.lift_s
    acc_e2e = shared["input_encode_s"] + setup + arm.lift_s
    for i, c in enumerate(ch):
        acc += c["memory_overhead_s"]
        acc_e2e += c["memory_overhead_s"] + shared["denoise_s"][i] + shared["decode_s"][i]
        cum.append(acc)
        cum_e2e.append(acc_e2e)
    pc["cumulative_memory_overhead_s"] = cum
    pc["cumulative_end_to_end_s"] = cum_e2e
    out["per_chunk"] = pc
    return out


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def _report(cfg, codec, codec_weights, backend, denoiser_weights, device, data, cams, traj_info, chunks, lat_arm,
            pc_arm, shared, content, fidelity, exact_depth, latent_policy, grid, wall, load_start) -> dict:
    lat = _arm_summary(lat_arm, shared, backend is not None)
    pc = _arm_summary(pc_arm, shared, False)
    keys = ("cache_bytes", "read_s", "write_s", "memory_overhead_s", "memory_overhead_incl_decode_s", "end_to_end_s",
            "peak_bytes")
    ratios = {k: _ratio(pc[k], lat[k]) for k in keys}
    ratios["cache_bytes_vs_xyz_rgb_only"] = _ratio(pc["cache_bytes_xyz_rgb_only"], lat["cache_bytes"])
    kinds = {k for k in (codec_weights, denoiser_weights) if k != "none"}
    weights = "random" if "random" in kinds else "real" if kinds else "none"
    laps = []
    if cfg.laps > 1:
        per = traj_info["frames_per_lap"] - 1
        for k in range(1, cfg.laps + 1):
            end = 1 + k * per
            i = next((j for j, c in enumerate(chunks) if c.stop >= end), len(chunks) - 1)
            laps.append({"lap": k, "end_frame": chunks[i].stop, "latent_cache_bytes": lat["per_chunk"]["cache_bytes"][i],
                         "pointcloud_cache_bytes": pc["per_chunk"]["cache_bytes"][i]})
        for k in range(1, len(laps)):
            for arm in ("latent", "pointcloud"):
                prev = laps[k - 1][f"{arm}_cache_bytes"]
                laps[k][f"{arm}_growth"] = (laps[k][f"{arm}_cache_bytes"] - prev) / prev if prev else None
    describe = getattr(codec, "describe", None)
    return {
        "format": BENCH_FORMAT,
        "mirage_version": __version__,
        "config": asdict(cfg) | {
            "scene_label": data.label, "num_frames": len(cams), "chunks": len(chunks),
            "chunk_length": chunks[0].length, "latent_grid": list(grid), "reference_depth": data.reference_depth,
            "trajectory": traj_info, "codec": describe() if describe else {"name": codec.name},
            "latent_write_policy": latent_policy, "pointcloud_write_policy": cfg.write_policy,
            "content": content, "fidelity": fidelity, "new_content_depth": "exact" if exact_depth else "filled",
            "codec_label": _codec_label(cfg.codec, codec),
            "denoiser": backend.describe() if backend is not None else None,
        },
        "weights": weights,
        "weights_detail": {"codec": codec_weights, "denoiser": denoiser_weights},
        "device": str(device),
        "machine": machine_info(device) | {"loadavg_start": load_start, "loadavg_end": _loadavg()},
        "shared": {"input_encode_s": shared["input_encode_s"], "denoise_s": sum(shared["denoise_s"]),
                   "decode_s": sum(shared["decode_s"]), "uncharged_content_encode_s": shared["content_encode_s"],
                   "uncharged_gt_render_s": shared["gt_render_s"],
                   "per_chunk": {"denoise_s": shared["denoise_s"], "decode_s": shared["decode_s"]}},
        "latent": lat,
        "pointcloud": pc,
        "ratios": ratios,
        "laps": laps,
        "charged": {
            "latent": "input lift + per chunk: read (splat of latent points into each latent frame) + write "
                      "(lift newly revealed latent cells); no codec call" +
                      ("; end_to_end also has the one-time grey-video latent of the VACE context" if backend else ""),
            "pointcloud": "input lift (pixels) + per chunk: read (render every video frame at pixel resolution "
                          "+ codec encode of the rendered video + codec encode of the mask video) + write (lift "
                          "newly revealed pixels of the decoded frames); the decode of the chunk is the output "
                          "video's (shared): excluded from memory_overhead_s, included in "
                          "memory_overhead_incl_decode_s",
            "shared": "input encode, denoiser, decode of each chunk for the output video (in end_to_end_s of both)",
            "uncharged": "ground-truth renders and their encoding (stand-in for generation), fidelity decodes, "
                         "peak-memory replays, copies made to repeat writes",
            "timing": "memory operations: median of up to 5 calls within 0.5 s (writes on fresh copies); codec, "
                      "denoiser and decode calls: one call each",
        },
        "wall_s": wall,
    }


# --------------------------------------------------------------------------------------- output
def _codec_label(name: str, codec) -> str:
    if name == "tiny":
        return "tiny (Wan2.1-VAE layout, 16 ch, 8x, tiny random weights)"
    if name == "pixel":
        return "pixel (3 ch, 1x)"
    return f"{name} ({codec.channels} ch, {codec.spatial_factor}x)"


def _fmt_bytes(n: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


def _fmt_s(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_ratio(r) -> str:
    return "—" if r is None else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def summary_table(report: dict):
    """A rich table: one row per measure, the two arms and pointcloud / latent."""
    from rich.table import Table

    c = report["config"]
    lat, pc, r = report["latent"], report["pointcloud"], report["ratios"]
    title = (f"mirage bench — latent memory vs RGB point cloud — codec {c['codec_label']}, {report['weights_detail']['codec']} "
             f"weights, {c['width']}x{c['height']}, {c['num_frames']} frames in {c['chunks']} chunks of "
             f"{c['chunk_length']}, {report['device']}, write policy {c['pointcloud_write_policy']}")
    t = Table(title=title, show_header=True, title_justify="left")
    t.add_column("measure")
    t.add_column("latent", justify="right")
    t.add_column("pointcloud", justify="right")
    t.add_column("pointcloud / latent", justify="right")

    def row(label, key, fmt, ratio_key=None):
        t.add_row(label, fmt(lat[key]) if lat.get(key) is not None else "—",
                  fmt(pc[key]) if pc.get(key) is not None else "—",
                  _fmt_ratio(r.get(ratio_key or key)) if (ratio_key or key) in r else "")

    row("cache size (final)", "cache_bytes", _fmt_bytes)
    row("points (final)", "points", lambda n: f"{n:,}")
    row("peak memory of the memory", "peak_bytes", _fmt_bytes)
    row("lift of the input", "lift_s", _fmt_s)
    row("read (total)", "read_s", _fmt_s)
    t.add_row("  of which codec encode", _fmt_s(lat["codec_s"]), _fmt_s(pc["codec_s"]), "")
    row("write (total)", "write_s", _fmt_s)
    row("memory overhead", "memory_overhead_s", _fmt_s)
    row("  + write-decode", "memory_overhead_incl_decode_s", _fmt_s)
    t.add_row("denoise (shared)", _fmt_s(lat["denoise_s"]), _fmt_s(pc["denoise_s"]), "")
    t.add_row("decode (shared)", _fmt_s(lat["decode_s"]), _fmt_s(pc["decode_s"]), "")
    row("end to end", "end_to_end_s", _fmt_s)
    if lat.get("read_psnr") is not None or pc.get("read_psnr") is not None:
        row("read PSNR on known pixels", "read_psnr", lambda v: f"{v:.2f} dB")
    t.add_row("known fraction of reads", f"{lat['known_fraction']:.3f}", f"{pc['known_fraction']:.3f}", "")
    return t


def draw_plot(report: dict, path: str | os.PathLike) -> None:
    """PNG with two panels: cache size and cumulative seconds against frames, both arms (Pillow only)."""
    from PIL import Image, ImageDraw, ImageFont

    from ..io import atomic_path

    font = ImageFont.load_default()
    Wd, Hd = 1200, 520
    img = Image.new("RGB", (Wd, Hd), "white")
    d = ImageDraw.Draw(img)
    c = report["config"]
    d.text((20, 10), f"mirage bench: latent memory vs RGB point cloud - codec {c['codec_label']}, {c['width']}x{c['height']}, "
                     f"write policy {c['pointcloud_write_policy']}, {report['device']}", fill="black", font=font)
    colors = {"latent": (31, 119, 180), "pointcloud": (214, 39, 40)}
    lat_x = [1] + report["latent"]["per_chunk"]["frames"]  # frame 1: the input image, lifted
    series_bytes = {a: [report[a]["input_cache_bytes"] / 1e6] + [b / 1e6 for b in report[a]["per_chunk"]["cache_bytes"]]
                    for a in colors}
    series_s = {}
    for a in colors:
        pc = report[a]["per_chunk"]
        start = report["shared"]["input_encode_s"] + report[a].get("setup_s", 0.0) + report[a]["lift_s"]
        series_s[a] = [start] + pc["cumulative_end_to_end_s"]
    series_o = {a: [report[a]["lift_s"]] + report[a]["per_chunk"]["cumulative_memory_overhead_s"] for a in colors}
    _panel(d, font, (60, 50, 560, 450), lat_x, series_bytes, {}, "cache size (MB)", "frames", colors)
    _panel(d, font, (660, 50, 1160, 450), lat_x, series_s, series_o, "cumulative seconds", "frames", colors,
           dashed_label="memory overhead")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    ticks, v = [], start
    while v <= hi + step * 0.5:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _panel(d, font, box, xs, solid: dict, dashed: dict, ylabel: str, xlabel: str, colors: dict, dashed_label: str = "") -> None:
    x0, y0, x1, y1 = box
    allv = [v for s in list(solid.values()) + list(dashed.values()) for v in s] or [0, 1]
    yt = _nice_ticks(0.0, max(allv) or 1.0)
    xt = _nice_ticks(0.0, max(xs) or 1.0)
    ymax, xmax = yt[-1], xt[-1]

    def px(x, y):
        return x0 + (x1 - x0) * x / xmax, y1 - (y1 - y0) * y / ymax

    d.rectangle(box, outline="black")
    for v in yt:
        _, yy = px(0, v)
        d.line([(x0 - 5, yy), (x0, yy)], fill="black")
        d.line([(x0, yy), (x1, yy)], fill=(230, 230, 230))
        lab = f"{v:g}"
        d.text((x0 - 8 - d.textlength(lab, font=font), yy - 6), lab, fill="black", font=font)
    for v in xt:
        xx, _ = px(v, 0)
        d.line([(xx, y1), (xx, y1 + 5)], fill="black")
        lab = f"{v:g}"
        d.text((xx - d.textlength(lab, font=font) / 2, y1 + 8), lab, fill="black", font=font)
    d.text(((x0 + x1) / 2 - d.textlength(xlabel, font=font) / 2, y1 + 24), xlabel, fill="black", font=font)
    d.text((x0, y0 - 16), ylabel, fill="black", font=font)
    for name, ys in solid.items():
        pts = [px(x, y) for x, y in zip(xs, ys)]
        d.line(pts, fill=colors[name], width=3)
        for p in pts:
            d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colors[name])
    for name, ys in dashed.items():
        pts = [px(x, y) for x, y in zip(xs, ys)]
        for a, b in zip(pts[:-1], pts[1:]):
            n = max(1, int(math.dist(a, b) / 8))
            for k in range(0, n, 2):
                p = (a[0] + (b[0] - a[0]) * k / n, a[1] + (b[1] - a[1]) * k / n)
                q = (a[0] + (b[0] - a[0]) * min(k + 1, n) / n, a[1] + (b[1] - a[1]) * min(k + 1, n) / n)
                d.line([p, q], fill=colors[name], width=2)
    # legend
    lx, ly = x0 + 10, y0 + 10
    entries = [(f"{n} (end to end)" if dashed else n, colors[n], False) for n in solid]
    entries += [(f"{n} ({dashed_label})", colors[n], True) for n in dashed]
    wbox = max(d.textlength(e[0], font=font) for e in entries) + 44
    d.rectangle([lx, ly, lx + wbox, ly + 16 * len(entries) + 6], fill="white", outline="black")
    for i, (label, col, dash) in enumerate(entries):
        yy = ly + 11 + 16 * i
        if dash:
            for k in range(0, 24, 8):
                d.line([(lx + 6 + k, yy), (lx + 10 + k, yy)], fill=col, width=2)
        else:
            d.line([(lx + 6, yy), (lx + 30, yy)], fill=col, width=3)
        d.text((lx + 36, yy - 6), label, fill="black", font=font)
