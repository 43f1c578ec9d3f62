"""Codecs: the map between RGB frames and the latent grid the memory and the denoiser work in.

A codec encodes ``(T, 3, H, W)`` frames in ``[0, 1]`` to latents ``(T_lat, C, h, w)`` with
``h = H // spatial_factor``, ``w = W // spatial_factor`` and, for a causal video VAE with
``temporal_factor = 4``, ``T_lat = 1 + (T - 1) // 4`` (frame 0 alone, then groups of 4). Latent
frame ``j`` stands for video frame ``temporal_factor * j``: that is the camera the memory reads
and writes it with.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class Codec(Protocol):
    name: str
    channels: int
    spatial_factor: int
    temporal_factor: int

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(T, 3, H, W)`` in [0, 1] -> ``(T_lat, C, h, w)`` latents as the denoiser consumes them."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``(T_lat, C, h, w)`` -> ``(T, 3, H, W)`` frames in [0, 1]."""
        ...

    def latent_to_rgb(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` latent features -> ``(N, 3)`` approximate RGB in [0, 1] (for previews and PLY)."""
        ...


def latent_frames(num_frames: int, temporal_factor: int) -> int:
    """Number of latent frames for ``num_frames`` video frames (causal: 1 + (T-1)//tf)."""
    return 1 + (num_frames - 1) // temporal_factor


class PixelCodec:
    """Latent = pixels (3 channels, values in [0, 1]), optionally box-downscaled by an integer factor.

    Exact for ``spatial_factor == 1``: decode(encode(x)) == x. With a factor ``s`` the decode is a
    bilinear upsampling of the cell means (smooth, slightly soft).
    """

    name = "pixel"
    channels = 3
    temporal_factor = 1

    def __init__(self, spatial_factor: int = 1) -> None:
        if spatial_factor < 1:
            raise ValueError("spatial_factor must be >= 1")
        self.spatial_factor = int(spatial_factor)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float()
        s = self.spatial_factor
        if s > 1:
            x = F.avg_pool2d(x, s)
        return x

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = latents.float()
        s = self.spatial_factor
        if s > 1:
            x = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        return x.clamp(0, 1)

    def latent_to_rgb(self, features: torch.Tensor) -> torch.Tensor:
        return features.float().clamp(0, 1)

    def describe(self) -> dict:
        return {"name": self.name, "channels": self.channels, "spatial_factor": self.spatial_factor,
                "temporal_factor": self.temporal_factor}


def features_to_rgb(features: torch.Tensor, codec_name: str) -> torch.Tensor:
    """``(N, C)`` memory features -> ``(N, 3)`` colours in [0, 1].

    Exact for the pixel codec. For any other codec (whose latents are not colours without its
    decoder) this is a **pseudo-colour**: the three principal components of the features, each
    stretched over its 1st..99th percentile — good for seeing structure in a PLY, not true colour.
    """
    f = features.float()
    if codec_name.startswith("pixel"):
        return f[:, :3].clamp(0, 1)
    if f.shape[0] == 0:
        return torch.zeros(0, 3)
    centred = f - f.mean(0, keepdim=True)
    idx = torch.linspace(0, f.shape[0] - 1, min(f.shape[0], 20000)).long()  # a fixed subsample keeps it fast
    _, _, V = torch.linalg.svd(centred[idx], full_matrices=False)
    pcs = centred @ V[:3].T
    if pcs.shape[1] < 3:
        pcs = F.pad(pcs, (0, 3 - pcs.shape[1]))
    lo = torch.quantile(pcs[idx], 0.01, dim=0)
    hi = torch.quantile(pcs[idx], 0.99, dim=0)
    return ((pcs - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)
