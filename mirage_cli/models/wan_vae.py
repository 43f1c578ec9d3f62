"""``WanVAECodec``: the Wan video VAE (diffusers ``AutoencoderKLWan``) as a :class:`~mirage_cli.models.codecs.Codec`.

Shapes (Wan2.1 VAE: ``C = 16``, ``s = 8``; Wan2.2 VAE: ``C = 48``, ``s = 16``; both ``temporal = 4``):

- ``encode``: frames ``(T, 3, H, W)`` in [0, 1] -> latents ``(1 + (T-1)//4, C, H/s, W/s)``. The VAE is
  causal: frame 0 is encoded alone, then groups of 4; frames beyond ``1 + 4k`` are dropped. The
  posterior **mode** is used (no sampling), normalised as the Wan pipelines do:
  ``(z - latents_mean) / latents_std`` -- the form the transformer consumes and the memory stores.
- ``decode``: latents ``(T_lat, C, h, w)`` -> frames ``(1 + 4 (T_lat - 1), 3, h s, w s)`` in [0, 1].

Policy: fp32 by default on every device (the Wan authors and diffusers' examples keep the VAE in
fp32 even when the transformer runs in bf16); spatial tiling (diffusers' 256 px tiles, stride 192)
for frames larger than one tile, so 720p decodes fit on small GPUs; optional CPU offload (weights
live on the CPU and visit the compute device for each call).

``encode_calls`` counts every VAE encoder invocation on video content (``encode`` and the first
``grey_latent`` / ``constant_latent`` of each shape), so tests can prove that reading the memory never encodes pixels.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING

import torch

from ..dtypes import dtype_name
from ..errors import MirageError
from .codecs import latent_frames
from .registry import dtype_kwargs, resolve_device, resolve_dtype, resolve_model, weights_kind

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import AutoencoderKLWan

#: Config of the Wan2.2 (TI2V-5B) VAE; ``AutoencoderKLWan()`` defaults are the Wan2.1 VAE.
WAN22_VAE_CONFIG = dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12,
                        out_channels=12, patch_size=2, scale_factor_spatial=16)
#: Tiny architectures (same classes) for tests and CPU smoke runs.
TINY_WAN21_VAE_CONFIG = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             temperal_downsample=[False, True, True])
TINY_WAN22_VAE_CONFIG = dict(base_dim=4, decoder_base_dim=4, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             temperal_downsample=[False, True, True], is_residual=True, in_channels=12,
                             out_channels=12, patch_size=2, scale_factor_spatial=16)

# Colour levels of the calibration patches behind latent_to_rgb (3 x 3 x 3 = 27 uniform patches).
_CAL_LEVELS = (0.1, 0.5, 0.9)
_CAL_CELLS = 4  # each patch is 4 x 4 latent cells; the central 2 x 2 are used (away from the borders)


@contextlib.contextmanager
def placed_on(module: torch.nn.Module, device: torch.device, offload: bool):
    """CPU offloading for one call: with ``offload``, move ``module``'s weights to ``device`` for the
    block and back to the CPU after it (emptying the CUDA cache); without, do nothing. Shared by
    the Wan VAE codec and the wan-vace backend's transformer."""
    if not offload:
        yield
        return
    module.to(device)
    try:
        yield
    finally:
        module.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()


class WanVAECodec:
    """Codec around ``AutoencoderKLWan`` (see the module docstring for shapes and policy).

    Attributes:
        name: ``"wan2.1-vae"`` or ``"wan2.2-vae"`` (from the config: 48 latent channels -> Wan2.2).
        channels: latent channels ``C`` (``vae.config.z_dim``).
        spatial_factor: pixels per latent cell along each axis (8 or 16).
        temporal_factor: 4.
        encode_calls: VAE encoder invocations on video content (encode + uncached grey latents).
        calibration_calls: encoder invocations spent fitting the ``latent_to_rgb`` map (at most one).
        weights: ``"real"`` or ``"random"``.
    """

    temporal_factor = 4

    def __init__(self, vae: AutoencoderKLWan, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = torch.float32, tiling: bool = True, *, offload: bool = False,
                 weights: str = "real", source: str = "") -> None:
        cfg = vae.config
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device) if isinstance(dtype, str) else dtype
        self.offload = bool(offload) and self.device.type != "cpu"
        if next(vae.parameters()).dtype != self.dtype:
            vae = vae.to(dtype=self.dtype)
        self.vae = vae.to("cpu" if self.offload else self.device).eval().requires_grad_(False)
        self.channels = int(cfg.z_dim)
        self.spatial_factor = int(getattr(cfg, "scale_factor_spatial", None) or 2 ** len(cfg.temperal_downsample))
        self.temporal_factor = int(getattr(cfg, "scale_factor_temporal", None) or 2 ** sum(cfg.temperal_downsample))
        self.name = "wan2.2-vae" if self.channels == 48 else "wan2.1-vae"
        mean, std = list(cfg.latents_mean), list(cfg.latents_std)
        if len(mean) != self.channels or len(std) != self.channels:
            raise MirageError(f"VAE config {source or ''}: latents_mean/std have {len(mean)}/{len(std)} entries, "
                              f"expected z_dim={self.channels}")
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.tiling = bool(tiling)
        if self.tiling:
            self.vae.enable_tiling()
        self.weights = weights
        self.source = source
        self.encode_calls = 0
        self.calibration_calls = 0
        self._constant: dict[tuple[float, int, int, int], torch.Tensor] = {}
        self._rgb_map: torch.Tensor | None = None

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path_or_ref: str | os.PathLike, subfolder: str | None = "vae",
                        device: str | torch.device = "auto", dtype: str | torch.dtype = torch.float32,
                        tiling: bool = True, *, offload: bool = False, download: bool = False) -> WanVAECodec:
        """Load an ``AutoencoderKLWan`` from ``NAME | REPO_ID | DIR`` (+ ``subfolder``) through the Hub layout.

        A directory that is itself the VAE folder (``config.json`` at its root) is accepted too.
        """
        ref = os.fspath(path_or_ref)
        if os.path.isdir(ref) and subfolder and not os.path.isdir(os.path.join(ref, subfolder)) \
                and os.path.isfile(os.path.join(ref, "config.json")):
            subfolder = None
        root = resolve_model(ref, [subfolder] if subfolder else None, download=download)
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        from diffusers import AutoencoderKLWan

        cfg_dir = root / subfolder if subfolder else root
        _check_class(cfg_dir / "config.json", "AutoencoderKLWan")
        try:
            vae = AutoencoderKLWan.from_pretrained(root, subfolder=subfolder, use_safetensors=True,
                                                   **dtype_kwargs("diffusers", dt))
        except Exception as e:  # corrupt or foreign files: one line
            raise MirageError(f"could not load the VAE from {cfg_dir}: {first_line(e)}") from e
        return cls(vae, dev, dt, tiling, offload=offload, weights=weights_kind(cfg_dir), source=str(cfg_dir))

    @classmethod
    def random(cls, kind: str = "wan2.1", device: str | torch.device = "cpu",
               dtype: str | torch.dtype = torch.float32, tiny: bool = False, seed: int = 0,
               tiling: bool = True) -> WanVAECodec:
        """The real architecture (``"wan2.1"`` | ``"wan2.2"``) with random weights, seeded, for timing runs.

        Timing of a codec does not depend on its weight values, so ``mirage bench`` uses this when the
        real weights are absent (and says so). ``tiny=True`` builds a few-kilobyte version for tests.
        The Wan2.2 random VAE uses ``latents_mean = 0``, ``latents_std = 1`` (the real statistics come
        with the real weights).
        """
        from diffusers import AutoencoderKLWan

        if kind not in ("wan2.1", "wan2.2"):
            raise MirageError(f"unknown VAE kind '{kind}' (use wan2.1 or wan2.2)")
        cfg = dict((TINY_WAN21_VAE_CONFIG if kind == "wan2.1" else TINY_WAN22_VAE_CONFIG) if tiny else
                   ({} if kind == "wan2.1" else WAN22_VAE_CONFIG))
        if kind == "wan2.2":
            cfg.update(latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = AutoencoderKLWan(**cfg)
        dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
        return cls(vae, dev, dtype, tiling, weights="random", source=f"random {kind}{' tiny' if tiny else ''}")

    # ------------------------------------------------------------------------------ codec
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(T, 3, H, W)`` in [0, 1] -> ``(1 + (T-1)//4, C, H/s, W/s)`` normalised latents (float32).

        Returned on the device of ``frames``.
        """
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise MirageError(f"{self.name}: expected frames (T, 3, H, W), got {tuple(frames.shape)}")
        H, W = frames.shape[-2:]
        self._check_size(H, W)
        self.encode_calls += 1
        return self._encode(frames).to(frames.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``(T_lat, C, h, w)`` normalised latents -> ``(1 + 4 (T_lat-1), 3, h s, w s)`` in [0, 1] (float32)."""
        if latents.ndim != 4 or latents.shape[1] != self.channels:
            raise MirageError(f"{self.name}: expected latents (T, {self.channels}, h, w), got {tuple(latents.shape)}")
        with placed_on(self.vae, self.device, self.offload), torch.no_grad():
            dev = self.device
            z = latents.to(dev, torch.float32).permute(1, 0, 2, 3)[None]  # (1, C, T, h, w)
            z = z * self._std.to(dev) + self._mean.to(dev)
            x = self.vae.decode(z.to(self.dtype)).sample  # (1, 3, T', H, W) in [-1, 1]
            out = ((x[0].float() + 1) / 2).clamp(0, 1).permute(1, 0, 2, 3).contiguous()
        return out.to(latents.device)

    def grey_latent(self, num_frames: int, height: int, width: int) -> torch.Tensor:
        """Latent ``(T_lat, C, h, w)`` of a neutral grey (0.5) video of ``num_frames`` x ``height`` x ``width``.

        This is what the VACE pipeline's encoder sees in masked-out regions (pixel 0 in [-1, 1]).
        See :meth:`constant_latent` (one encoder call per shape, cached).
        """
        return self.constant_latent(0.5, num_frames, height, width)

    def constant_latent(self, value: float, num_frames: int, height: int, width: int) -> torch.Tensor:
        """Latent ``(T_lat, C, h, w)`` of a uniform video of level ``value`` in [0, 1] (0.5 grey, 1.0 white).

        The causal VAE gives latent frame 0 a different value from the later frames, so the whole
        video is encoded. Computed once per ``(value, shape)`` (one encoder call, counted in
        ``encode_calls``) and cached on the instance; returns a copy on this codec's device.
        """
        t_lat = latent_frames(int(num_frames), self.temporal_factor)
        key = (float(value), t_lat, int(height), int(width))
        if key not in self._constant:
            self._check_size(height, width)
            frames = torch.full((1 + self.temporal_factor * (t_lat - 1), 3, key[2], key[3]), float(value))
            self.encode_calls += 1
            self._constant[key] = self._encode(frames).to(self.device)
        return self._constant[key].clone()

    def latent_to_rgb(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` normalised latent features -> ``(N, 3)`` approximate RGB in [0, 1] (previews, PLY).

        An affine map fitted once per codec by ridge least squares on the VAE's own encodings of 27
        uniform colour patches (levels 0.1/0.5/0.9 per channel, each 4x4 latent cells, centre 2x2
        cells used). It needs no published factors and works for any weights (real or random); it is
        an approximation (the VAE is not linear), good for seeing what the memory holds. Costs one
        batched encoder call on the first use, counted in ``calibration_calls`` (not ``encode_calls``).
        """
        if features.ndim != 2 or features.shape[1] != self.channels:
            raise MirageError(f"{self.name}: expected features (N, {self.channels}), got {tuple(features.shape)}")
        if self._rgb_map is None:
            self._rgb_map = self._fit_rgb_map()
        f = features.float()
        a = torch.cat([f, torch.ones_like(f[:, :1])], dim=1)
        return (a @ self._rgb_map.to(f.device)).clamp(0, 1)

    def describe(self) -> dict:
        return {"name": self.name, "channels": self.channels, "spatial_factor": self.spatial_factor,
                "temporal_factor": self.temporal_factor, "weights": self.weights, "device": str(self.device),
                "dtype": dtype_name(self.dtype), "tiling": self.tiling, "offload": self.offload,
                "source": self.source}

    # ------------------------------------------------------------------------------ internals
    def _check_size(self, height: int, width: int) -> None:
        s = self.spatial_factor
        if height % s or width % s:
            raise MirageError(f"{self.name}: frame size {width}x{height} must be divisible by {s}")

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Batch-free encode ``(T, 3, H, W)`` [0, 1] -> ``(T_lat, C, h, w)`` float32 on ``self.device``."""
        with placed_on(self.vae, self.device, self.offload), torch.no_grad():
            dev = self.device
            x = (frames.to(dev, torch.float32) * 2 - 1).permute(1, 0, 2, 3)[None].to(self.dtype)
            z = self.vae.encode(x).latent_dist.mode().float()  # (1, C, T_lat, h, w)
            z = (z - self._mean.to(dev)) / self._std.to(dev)
            return z[0].permute(1, 0, 2, 3).contiguous()

    def _fit_rgb_map(self) -> torch.Tensor:
        levels = torch.tensor(_CAL_LEVELS)
        rgb = torch.cartesian_prod(levels, levels, levels)  # (27, 3)
        size = _CAL_CELLS * self.spatial_factor
        patches = rgb.view(-1, 3, 1, 1, 1).expand(-1, 3, 1, size, size)  # (27, 3, 1, S, S)
        self.calibration_calls += 1
        with placed_on(self.vae, self.device, self.offload), torch.no_grad():
            dev = self.device
            z = self.vae.encode((patches.to(dev) * 2 - 1).to(self.dtype)).latent_dist.mode().float()
            z = (z - self._mean.to(dev)) / self._std.to(dev)  # (27, C, 1, 4, 4)
        c0 = _CAL_CELLS // 2 - 1
        feats = z[:, :, 0, c0:c0 + 2, c0:c0 + 2].mean(dim=(2, 3)).cpu()  # (27, C)
        a = torch.cat([feats, torch.ones(len(feats), 1)], dim=1).double()
        lam = 1e-3 * a.pow(2).sum(0).mean()
        m = torch.linalg.solve(a.T @ a + lam * torch.eye(a.shape[1], dtype=a.dtype), a.T @ rgb.double())
        return m.float()  # (C + 1, 3)


def _check_class(config_path, expected: str) -> None:
    try:
        cls = json.loads(open(config_path).read()).get("_class_name")
    except (OSError, ValueError) as e:
        raise MirageError(f"{config_path}: unreadable config ({first_line(e)})") from e
    if cls != expected:
        raise MirageError(f"{config_path}: holds {'a ' + cls if cls else 'no diffusers model'}, expected {expected}")


def first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
