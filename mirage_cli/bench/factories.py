"""The codec and the denoiser of ``mirage bench``: real weights when cached (never downloads), else
random weights of the real architecture (timing of a network does not depend on its weight values).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from ..backends.mirage import MirageBackend
from ..backends.spatia import load_spatia
from ..backends.wan_vace import WanVACEBackend, load_wan_vace
from ..errors import MirageError
from ..models.codecs import PixelCodec
from ..models.registry import resolve_dtype
from ..models.tiny import TINY_MIRAGE_VACE, TINY_WAN22_TRANSFORMER_CONFIG, tiny_tokenizer, tiny_vace_components
from ..models.wan_vae import WanVAECodec
from .config import CODECS, DENOISERS, denoiser_problem

if TYPE_CHECKING:
    from ..backends import Backend
    from ..models.codecs import Codec

#: Wan2.1-VACE-1.3B transformer (Hub config of Wan-AI/Wan2.1-VACE-1.3B-diffusers).
WAN21_VACE_13B_CONFIG: dict[str, Any] = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                             out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                             cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
                             vace_layers=list(range(0, 30, 2)), vace_in_channels=96)

#: The paper's transformer: Wan2.2-TI2V-5B + VACE on every other layer, the configuration of the reference
#: implementation (microsoft/LatentSpatialMemory): 7.6 B parameters, DiT 5.0 B + VACE 2.6 B.
MIRAGE_CONFIG: dict[str, Any] = dict(patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48,
                     out_channels=48, text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True,
                     qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
                     vace_layers=list(range(0, 30, 2)), vace_in_channels=96)


def make_codec(name: str, device: torch.device) -> tuple[Codec, str]:
    """``(codec, weights)`` for ``--codec``; Wan VAEs use cached real weights, else random weights."""
    if name == "pixel":
        return PixelCodec(1), "none"
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
        return SimpleNamespace(last_hidden_state=torch.zeros(*input_ids.shape, self.dim, device=input_ids.device))


def make_denoiser(name: str, codec, device: torch.device) -> tuple[Backend | None, str]:
    """``(backend | None, weights)`` for ``--denoiser`` (a :class:`WanVACEBackend` around ``codec``)."""
    if name == "none":
        return None, "none"
    if name not in DENOISERS:
        raise MirageError(f"--denoiser: unknown denoiser '{name}' (choose {', '.join(DENOISERS)})")
    C, f = codec.channels, codec.spatial_factor
    problem = denoiser_problem(name, codec.name, (C, f) if hasattr(codec, "grey_latent") else None)
    if problem:  # BenchConfig checked the user's options; this guards direct callers
        raise MirageError(problem)
    if name.startswith("mirage"):
        tiny = name == "mirage-tiny"
        dtype = torch.float32 if tiny else resolve_dtype("auto", device)
        return _random_mirage(codec, device, dtype, tiny), "random"
    if name == "tiny":
        parts = tiny_vace_components(seed=0, in_channels=C, out_channels=C, vace_in_channels=2 * C + f * f)
        backend = WanVACEBackend(parts["transformer"], parts["text_encoder"], parts["tokenizer"], codec, device=device,
                                 dtype=torch.float32, model="tiny", weights="random")
        return backend, "random"
    try:  # real weights when cached (never downloads)
        backend, _ = load_wan_vace("wan2.1-vace-1.3b", device=str(device), dtype="auto")
        backend.codec = codec
        return backend, backend.weights
    except MirageError:
        pass
    return _random_wan21_vace(codec, device, resolve_dtype("auto", device)), "random"


def make_spatia(model: str, device: torch.device) -> tuple[Backend, Codec, str]:
    """``(backend, its VAE, weights)`` for ``--denoiser spatia --model DIR``: Spatia's network as
    ``mirage generate --backend spatia`` loads it (``--conditioning`` is set per arm by the bench)."""
    dtype = "fp32" if resolve_dtype("auto", device) == torch.float32 else "auto"
    backend, codec = load_spatia(model, device=str(device), dtype=dtype, progress=False)
    return backend, codec, backend.weights


def _random_wan21_vace(codec, device: torch.device, dtype: torch.dtype):
    """A :class:`WanVACEBackend` with the Wan2.1-VACE-1.3B transformer at random weights (seed 0)."""
    from diffusers import WanVACETransformer3DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = WanVACETransformer3DModel(**WAN21_VACE_13B_CONFIG)
    _cast(transformer, dtype)  # as from_pretrained does: the listed modules stay in fp32
    return WanVACEBackend(transformer, _ZeroTextEncoder(WAN21_VACE_13B_CONFIG["text_dim"]), tiny_tokenizer(), codec,
                          device=device, dtype=dtype, model="wan2.1-vace-1.3b (random weights)", weights="random")


def _random_mirage(codec, device: torch.device, dtype: torch.dtype, tiny: bool):
    """A :class:`MirageBackend` around ``codec`` with the paper's transformer (or the tiny kit's) at
    random weights (seed 0): no trained weights are published, and timing does not depend on them."""
    from ..models.mirage_transformer import MirageTransformer3DModel

    config = {**TINY_WAN22_TRANSFORMER_CONFIG, **TINY_MIRAGE_VACE} if tiny else MIRAGE_CONFIG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = MirageTransformer3DModel(**config)
    _cast(transformer, dtype)
    label = "mirage-tiny (random weights)" if tiny else "mirage Wan2.2-TI2V-5B + VACE (random weights)"
    return MirageBackend(transformer, _ZeroTextEncoder(config["text_dim"]), tiny_tokenizer(), codec, device=device,
                         dtype=dtype, model=label, weights="random")


def _cast(transformer, dtype: torch.dtype) -> None:
    """As ``from_pretrained(torch_dtype=...)`` does: every parameter to ``dtype`` except the modules the
    class keeps in fp32."""
    if dtype == torch.float32:
        return
    keep = tuple(getattr(transformer, "_keep_in_fp32_modules", None) or ())
    for mod_name, module in transformer.named_modules():
        if not any(k in mod_name.split(".") for k in keep):
            for p in module.parameters(recurse=False):
                p.data = p.data.to(dtype)


def codec_label(name: str, codec) -> str:
    """How the report and the table name the ``--codec``."""
    if name == "tiny":
        return "tiny (Wan2.1-VAE layout, 16 ch, 8x, tiny random weights)"
    if name == "pixel":
        return "pixel (3 ch, 1x)"
    return f"{name} ({codec.channels} ch, {codec.spatial_factor}x)"
