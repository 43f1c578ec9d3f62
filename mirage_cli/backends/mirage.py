"""``mirage`` backend: the paper's own model (Wan2.2-TI2V-5B + trained VACE + LoRA) on mirage's memory.

The model is a folder written by ``mirage models convert`` (transformer = :class:`MirageTransformer3DModel`,
Wan2.2 VAE with 48 channels at 16x, UMT5, UniPC). One chunk is denoised as the reference's loop
(the loop of the paper's reference implementation, microsoft/LatentSpatialMemory at commit b2cd738):

- Sequence ``[R reference | T target | P preceding]`` latent frames, per-frame timesteps
  ``[0]*R + [0, t, ..., t] + [0]*P``. Target frame 0 is clean and re-pinned after every scheduler step
  (chunk 0: ``req.first_latent``; later chunks: ``req.preceding[-1]``, the previous chunk's last latent).
  Only the ``T`` target frames are stepped; references and preceding frames are clean inputs.
- Preceding frames: the ``P = preceding_frames`` latents *before* the overlap frame
  (``req.preceding[-1-P:-1]``), appended after the target.
- VACE context over the ``T + P`` non-reference frames, 96 channels:
  ``[memory read (48 ch, 0 where unknown) | latent of an all-white video (48 ch)]``; the preceding
  frames' read channels are the reads stored when they were generated (``req.preceding_read``).
  No mask channels. The white latent is one VAE encode per chunk shape, cached by the codec.
- Scheduler: diffusers ``UniPCMultistepScheduler`` (flow prediction, flow sigmas, shift 5) with the
  explicit sigmas ``linspace(0.999, 0, steps + 1)[:-1]`` (the reference's grid: with it diffusers' scheduler
  reproduces the reference's to ~2e-7, its default grid differs by ~1.7e-3 after 20 steps); 20 steps and
  guidance 1 (off) by default; with guidance > 1, ``uncond + g (cond - uncond)`` with the negative prompt.
- Noise from ``chunk_generator(seed, chunk_index)`` (CPU, device independent), as the wan-vace backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MirageError
from ..models.convert import converted_layout as layout_of
from ..models.wan_vae import WanVAECodec, placed_on
from . import ChunkRequest, InputsT, PrecedingReads, ProgressFn
from .specs import BACKENDS
from .wan_vace import MAX_SEQUENCE_LENGTH, WanBackendBase, chunk_generator, load_wan_folder, read_model_index

DEFAULT_SHIFT = BACKENDS["mirage"].defaults.shift
DEFAULT_PRECEDING_FRAMES = 2
WHITE = 1.0  # level of the VACE "score" video in [0, 1] (+1 in [-1, 1])


def reference_sigmas(steps: int) -> np.ndarray:
    """The reference's unshifted sigma grid ``linspace(0.999, 0, steps + 1)[:-1]`` (UniPC applies the shift)."""
    return np.linspace(0.999, 0.0, int(steps) + 1)[:-1]


def frame_timesteps(t: torch.Tensor, n_ref: int, n_target: int, n_prec: int) -> torch.Tensor:
    """Per-latent-frame timesteps ``(1, R + T + P)``: ``[0]*R + [0, t, ..., t] + [0]*P``."""
    ts = torch.zeros(1, n_ref + n_target + n_prec, dtype=torch.float32, device=t.device)
    ts[0, n_ref + 1:n_ref + n_target] = t.float()
    return ts


@dataclass(frozen=True)
class MirageInputs:
    """The mirage conditioning of one chunk (:meth:`MirageBackend.build_inputs`).

    pin: ``(C, h, w)`` clean target frame 0. reference: ``(1, C, R, h, w)``. preceding: ``(1, C, P, h, w)``.
    context: ``(1, 2C, T + P, h, w)`` VACE context in the transformer's dtype. cond / uncond: UMT5
    embeddings ``(1, L, D)`` (uncond None without guidance)."""

    pin: torch.Tensor
    reference: torch.Tensor
    preceding: torch.Tensor
    context: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor | None
    steps: int
    guidance: float


class MirageTransformerBackend(WanBackendBase[InputsT]):
    """What the backends around a :class:`MirageTransformer3DModel` share (``mirage``, ``spatia``): the
    channel checks, the transformer call. Generic over the subclass's inputs record.

    Args: as :class:`MirageBackend`.
    """

    def __init__(self, transformer, text_encoder, tokenizer, codec: WanVAECodec, *, device: torch.device,
                 dtype: torch.dtype, shift: float = DEFAULT_SHIFT, num_train_timesteps: int = 1000,
                 preceding_frames: int = DEFAULT_PRECEDING_FRAMES, cpu_offload: bool = False, model: str = "",
                 weights: str = "real", max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> None:
        cfg = transformer.config
        if cfg.in_channels != codec.channels or cfg.vace_in_channels != 2 * codec.channels:
            raise MirageError(f"{model}: transformer expects {cfg.in_channels} latent / {cfg.vace_in_channels} VACE "
                              f"channels but the VAE gives {codec.channels} / {2 * codec.channels} "
                              "(read + white latent); is this a `mirage models convert` folder?")
        if int(preceding_frames) < 0:
            raise MirageError(f"mirage: preceding frames must be >= 0 (got {preceding_frames})")
        self.preceding_frames = int(preceding_frames)
        self._setup(transformer, text_encoder, tokenizer, codec, device=device, dtype=dtype, shift=shift,
                    num_train_timesteps=num_train_timesteps, cpu_offload=cpu_offload, model=model, weights=weights,
                    max_sequence_length=max_sequence_length)

    def _velocity(self, seq, ts, emb, ctx, n_ref) -> torch.Tensor:
        return self.transformer(hidden_states=seq, timestep=ts, encoder_hidden_states=emb,
                                control_hidden_states=ctx, num_ref_frames=n_ref, return_dict=False)[0].float()


class MirageBackend(MirageTransformerBackend[MirageInputs]):
    """Backend protocol implementation around :class:`MirageTransformer3DModel` + UMT5 + the Wan2.2 VAE codec.

    Args:
        transformer: a ``MirageTransformer3DModel`` (48 latent channels, 96 VACE channels).
        text_encoder, tokenizer: UMT5 and its tokenizer.
        codec: the Wan2.2 :class:`WanVAECodec` (its white latents build the context).
        device / dtype: compute device and transformer/text-encoder dtype.
        shift: flow shift of the UniPC scheduler (5, as the reference).
        preceding_frames: ``P``, how many latents before the overlap frame to append (0 allowed).
        cpu_offload: as the wan-vace backend (text encoder on the CPU, transformer visits the GPU per chunk).
    """

    name = "mirage"
    spec = BACKENDS["mirage"]

    # ------------------------------------------------------------------------------ context
    def vace_context(self, scene: torch.Tensor) -> torch.Tensor:
        """``(1, 2C, F, h, w)`` context from the read latents ``scene`` ``(F, C, h, w)`` (0 where unknown)."""
        F, C, h, w = scene.shape
        sf, tf = self.codec.spatial_factor, self.codec.temporal_factor
        white = self.codec.constant_latent(WHITE, 1 + tf * (F - 1), h * sf, w * sf).to(scene.device, torch.float32)
        return torch.cat([scene.float(), white], dim=1).permute(1, 0, 2, 3)[None].contiguous()

    def _split(self, req: ChunkRequest, dev: torch.device):
        """Pinned frame-0 latent ``(C, h, w)``, preceding latents ``(P, C, h, w)`` and their stored reads."""
        read = req.read_latents
        C, h, w = read.shape[1:]
        prec = req.preceding
        if prec is None or not len(prec):
            empty = torch.zeros(0, C, h, w, device=dev)
            return req.first_latent.to(dev, torch.float32), empty, empty
        if prec.shape[1:] != read.shape[1:]:
            raise ValueError(f"preceding {tuple(prec.shape)} does not match read_latents {tuple(read.shape)}")
        n = min(self.preceding_frames, len(prec) - 1)
        lat = prec[len(prec) - 1 - n:len(prec) - 1].to(dev, torch.float32)
        stored = req.extra(PrecedingReads)
        if stored is None:  # no stored read: nothing known
            scene = torch.zeros_like(lat)
        else:
            if stored.latents.shape != prec.shape:
                raise ValueError(f"preceding reads {tuple(stored.latents.shape)} != preceding {tuple(prec.shape)}")
            scene = stored.latents[len(prec) - 1 - n:len(prec) - 1].to(dev, torch.float32)
            scene = scene * stored.known[len(prec) - 1 - n:len(prec) - 1].to(dev, torch.float32)[:, None]
        return prec[-1].to(dev, torch.float32), lat, scene

    # ------------------------------------------------------------------------------ conditioning
    def build_inputs(self, req: ChunkRequest) -> MirageInputs:
        """The chunk's conditioning (what a trainer feeds the transformer too): pinned frame 0, the
        preceding latents, the references, the 96-channel VACE context, the text embeddings."""
        T, C, h, w, steps, guidance = self._check_request(req)
        read, known = req.read_latents, req.known
        dev = self.device
        pin, prec, prec_scene = self._split(req, dev)
        ref = (req.reference.to(dev, torch.float32) if req.reference is not None and len(req.reference)
               else torch.zeros(0, C, h, w, device=dev))
        scene = torch.cat([read.to(dev, torch.float32) * known.to(dev, torch.float32)[:, None], prec_scene], 0)
        ctx = self.vace_context(scene).to(self.dtype)
        cond = self.encode_prompt(req.prompt)
        uncond = self.encode_prompt(req.negative_prompt) if guidance > 1.0 else None
        return MirageInputs(pin, ref.permute(1, 0, 2, 3)[None], prec.permute(1, 0, 2, 3)[None], ctx, cond, uncond,
                            steps, guidance)

    # ------------------------------------------------------------------------------ sampler
    def sample(self, inputs: MirageInputs, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        """UniPC over the ``T`` target frames; returns ``(T, C, h, w)`` float32 on ``req.read_latents``' device."""
        T, C, h, w = req.read_latents.shape
        dev = self.device
        pin, ref5, prec5, ctx, cond, uncond = inputs.pin, inputs.reference, inputs.preceding, inputs.context, \
            inputs.cond, inputs.uncond
        steps, guidance = inputs.steps, inputs.guidance
        n_ref, n_prec = ref5.shape[2], prec5.shape[2]

        from diffusers import UniPCMultistepScheduler

        sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=self.shift, num_train_timesteps=self.num_train_timesteps)
        sched.set_timesteps(sigmas=reference_sigmas(steps), device=dev)
        x = torch.randn((1, C, T, h, w), generator=chunk_generator(req.seed, req.chunk_index),
                        dtype=torch.float32).to(dev)
        x[:, :, 0] = pin
        with placed_on(self.transformer, self.device, self.cpu_offload), torch.no_grad():
            for i, t in enumerate(sched.timesteps):
                ts = frame_timesteps(t.to(dev), n_ref, T, n_prec)
                seq = torch.cat([ref5, x, prec5], dim=2).to(self.dtype)
                v = self._velocity(seq, ts, cond, ctx, n_ref)
                if uncond is not None:
                    vu = self._velocity(seq, ts, uncond, ctx, n_ref)
                    v = vu + guidance * (v - vu)
                x = sched.step(v[:, :, n_ref:n_ref + T], t, x, return_dict=False)[0].float()
                x[:, :, 0] = pin  # target frame 0 stays the clean overlap / input latent
                if progress is not None:
                    progress(i + 1, steps)
        self._last = {"steps": steps, "guidance": guidance, "reference_frames": n_ref, "preceding_frames": n_prec}
        return x[0].permute(1, 0, 2, 3).contiguous().to(req.read_latents.device)

    # ------------------------------------------------------------------------------ misc
    def describe(self) -> dict:
        return {**self._describe_common(),
                "scheduler": "UniPCMultistepScheduler (flow, sigmas linspace(0.999, 0, steps+1)[:-1])",
                "preceding_frames": self.preceding_frames, "last_chunk": dict(self._last),
                "context": "[memory read | white-video latent] (no VAE encode per chunk beyond the cached white latent)"}


def load_mirage(model_ref: str, device: str = "auto", dtype: str = "auto", cpu_offload: bool = False, *,
                shift: float = DEFAULT_SHIFT, vae_dtype: str | torch.dtype = "fp32", tiling: bool = True,
                download: bool = False, preceding_frames: int = DEFAULT_PRECEDING_FRAMES,
                progress: bool = True) -> tuple[MirageBackend, WanVAECodec]:
    """Load a ``mirage models convert`` folder (``DIR | REPO_ID``) into a :class:`MirageBackend` and its codec.

    Resolution happens first (no diffusers import), so a missing model fails in milliseconds.
    dtype/device/offload policy as :func:`~mirage_cli.backends.wan_vace.load_wan_vace`.
    """
    def transformer_cls():
        from ..models.mirage_transformer import MirageTransformer3DModel

        return MirageTransformer3DModel

    parts = load_wan_folder(model_ref, check_model_folder, transformer_cls, device, dtype, vae_dtype, tiling=tiling,
                            cpu_offload=cpu_offload, download=download, progress=progress)
    return parts.backend(MirageBackend, shift=shift, preceding_frames=preceding_frames)


def load_for_run(cfg, show_progress: bool = True) -> tuple[WanVAECodec, MirageBackend]:
    """The spec's loader: ``--model`` with the run's device, dtype, offload, shift and preceding frames."""
    backend, codec = load_mirage(cfg.model, device=cfg.device, dtype=cfg.dtype, cpu_offload=cfg.cpu_offload,
                                 shift=cfg.shift, preceding_frames=cfg.preceding_frames, progress=show_progress)
    return codec, backend


def check_model_folder(root: Path) -> None:
    """The folder must hold a Mirage transformer (written by ``mirage models convert``)."""
    read_model_index(root, "MirageTransformer3DModel", "a `mirage models convert` folder",
                     "convert the paper's checkpoints first: `mirage models convert --base wan2.2-ti2v-5b "
                     "--vace FILE --lora FILE -o OUT`")
    if layout_of(root) != "mirage":
        raise MirageError(f"{root / 'mirage.json'}: a {layout_of(root)}-layout model (converted with --layout "
                          f"{layout_of(root)}); run it with --backend {layout_of(root)}")
