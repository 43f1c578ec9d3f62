"""The training objective: rectified flow with per-frame timesteps, on the mirage backend's own conditioning.

As the reference's trainer (microsoft/LatentSpatialMemory/scripts/train.py at b2cd738), with diffusers' flow-matching conventions
(``FlowMatchEulerDiscreteScheduler``: ``x_s = (1 - s) x0 + s eps``, shifted sigmas
``shift * u / (1 + (shift - 1) u)``, ``diffusers/schedulers/scheduling_flow_match_euler_discrete.py``):

- one sigma per **target frame**, ``u ~ U[0, 1)`` shifted by ``shift`` (5), shared by the batch; target
  frame 0 gets ``sigma = 0`` (the clean image / overlap latent, pinned at inference too);
- noise per sample; model input ``[R reference | noisy target | P preceding]``, timesteps
  ``[0]*R + 1000 * sigma + [0]*P`` per latent frame;
- prediction target ``eps - x0``; loss = MSE in fp32 over target frames ``1..T-1`` only (references,
  preceding frames and target frame 0 are excluded).

The conditioning (pinned frame, references, preceding latents, the 96-channel VACE context) is built by
:meth:`MirageBackend.build_inputs <mirage_cli.backends.mirage.MirageBackend.build_inputs>` itself, the
code ``--backend mirage`` runs at inference, through :class:`StoredConditioning`: a ``MirageBackend``
whose white-video latent and text embeddings come from the shards (``mirage data prepare`` computed them
with the same VAE and text encoder) instead of a VAE encode and a UMT5 call per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..backends import ChunkRequest, PrecedingReads
from ..backends.mirage import WHITE, MirageBackend
from ..backends.specs import BACKENDS
from ..backends.wan_vace import MAX_SEQUENCE_LENGTH
from ..data.shards import DatasetExtras, TrainingSample
from ..errors import MirageError
from ..models.codecs import latent_frames

NUM_TRAIN_TIMESTEPS = 1000

#: ``model_fn(seq (B, C, F, h, w), timesteps (B, F), text (B, L, D), context (B, 2C, T + P, h, w), R)`` -> flow.
ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


class _StoredWhite:
    """The codec surface ``build_inputs`` uses, answering ``constant_latent`` from ``dataset.safetensors``."""

    def __init__(self, white: dict[int, torch.Tensor], source: str) -> None:
        geo = BACKENDS["mirage"].codec
        self.name, self.channels = geo.name, geo.channels
        self.spatial_factor, self.temporal_factor = geo.spatial_factor, geo.temporal_factor
        self._white, self._source = white, source

    def constant_latent(self, value: float, num_frames: int, height: int, width: int) -> torch.Tensor:
        t_lat = latent_frames(int(num_frames), self.temporal_factor)
        lat = self._white.get(t_lat)
        if value != WHITE or lat is None:
            raise MirageError(f"{self._source}: no white_{t_lat} latent (written by `mirage data prepare` for "
                              f"{sorted(self._white)} latent frames)")
        size = (height // self.spatial_factor, width // self.spatial_factor)
        if tuple(lat.shape[2:]) != size:
            raise MirageError(f"{self._source}: white_{t_lat} is {tuple(lat.shape[2:])} latent cells, the samples "
                              f"{size}")
        return lat.float().clone()


class StoredConditioning(MirageBackend):
    """:class:`MirageBackend`'s conditioning (``build_inputs``, unchanged) without its networks: the
    white-video latents come from the shards' ``dataset.safetensors`` and each prompt's UMT5 embedding
    from its sample (:meth:`set_texts`), zero-padded to 512 tokens as ``encode_prompt`` pads.

    Args:
        extras: :func:`~mirage_cli.data.shards.load_extras` of the shard folder. patch: the
            transformer's ``patch_size``. source: the shard folder (for messages).
    """

    def __init__(self, extras: DatasetExtras, patch: Sequence[int], source: str) -> None:  # noqa: D107
        # No super().__init__: there is no transformer, text encoder or VAE to hold.
        self.codec = _StoredWhite(extras.white, source)  # type: ignore[assignment]
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.patch = tuple(int(p) for p in patch)
        self.preceding_frames = 0
        self.max_sequence_length = MAX_SEQUENCE_LENGTH
        self._texts: dict[str, torch.Tensor] = {}
        if extras.empty_text is None:
            raise MirageError(f"{source}: dataset.safetensors has no empty_text (prepared with --no-text?): the "
                              "trainer needs the text embeddings")
        self.empty_text = self.pad_text(extras.empty_text)

    def pad_text(self, emb: torch.Tensor) -> torch.Tensor:
        """``(L, D)`` -> ``(1, 512, D)`` float32, zero past the tokens (as ``encode_prompt``'s output)."""
        n = min(int(emb.shape[0]), self.max_sequence_length)
        out = torch.zeros(1, self.max_sequence_length, emb.shape[1])
        out[0, :n] = emb[:n].float()
        return out

    def set_texts(self, texts: dict[str, torch.Tensor]) -> None:
        self._texts = texts

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        return self._texts[prompt]


@dataclass(frozen=True)
class Batch:
    """One micro-batch. x0: ``(B, C, T, h, w)`` target latents; reference ``(B, C, R, h, w)``; preceding
    ``(B, C, P, h, w)``; context ``(B, 2C, T + P, h, w)``; text ``(B, 512, D)``; keys: the samples' keys."""

    x0: torch.Tensor
    reference: torch.Tensor
    preceding: torch.Tensor
    context: torch.Tensor
    text: torch.Tensor
    keys: tuple[str, ...]


#: The tensors :func:`make_batch` reads from a sample (``mirage data prepare``'s layout) and their ranks.
SAMPLE_TENSORS = {"target": 4, "target_read": 4, "target_known": 3, "preceding": 4, "preceding_read": 4,
                  "preceding_known": 3, "reference": 4, "text": 2}


def check_sample(sample: TrainingSample, channels: int, text_dim: int, source: str) -> None:
    """A sample the trainer can use: every :data:`SAMPLE_TENSORS` entry with its rank, ``channels`` latent
    channels (the base's), ``text_dim`` text features (the base's), matching latent grids.

    Raises:
        MirageError: one line naming the sample and the tensor (shards of another model or another tool).
    """
    t = sample.tensors
    where = f"{source}: sample {sample.key}"
    for name, rank in SAMPLE_TENSORS.items():
        if name not in t:
            raise MirageError(f"{where}: no '{name}' tensor (not written by `mirage data prepare` for the trainer"
                              + ("; prepared with --no-text?" if name == "text" else "") + ")")
        if t[name].dim() != rank:
            raise MirageError(f"{where}: '{name}' has {t[name].dim()} dimensions, expected {rank}")
    T, C, h, w = t["target"].shape
    if C != channels:
        raise MirageError(f"{where}: latents have {C} channels, the base model {channels} (shards prepared "
                          "with another VAE?)")
    for name in ("target_read", "preceding", "preceding_read", "reference"):
        if t[name].shape[1:] != (C, h, w):
            raise MirageError(f"{where}: '{name}' is {tuple(t[name].shape)}, expected (N, {C}, {h}, {w})")
    if t["text"].shape[1] != text_dim:
        raise MirageError(f"{where}: text embeddings have {t['text'].shape[1]} features, the base model "
                          f"{text_dim} (another text encoder?)")


def sample_request(sample: TrainingSample, n_ref: int, n_prec: int, prompt: str,
                   drop_memory: bool = False) -> ChunkRequest:
    """The :class:`ChunkRequest` the engine would build for this sample's chunk: the target's memory read,
    frame 0 as the overlap latent (``preceding[-1]``) after the ``n_prec`` preceding latents nearest to it,
    their stored reads, the ``n_ref`` best references.

    ``drop_memory`` (``--memory-dropout``): every read, the target's and the preceding frames' stored
    ones, is "nothing known" (zeros, ``known`` all False): what the engine gives for an empty memory."""
    t = sample.tensors
    target = t["target"].float()
    T, C, h, w = target.shape
    prec = t["preceding"].float()[len(t["preceding"]) - n_prec:]
    prec_read = t["preceding_read"].float()[len(t["preceding"]) - n_prec:]
    prec_known = t["preceding_known"][len(t["preceding"]) - n_prec:]
    read, known = t["target_read"].float(), t["target_known"]
    if drop_memory:
        read, known = torch.zeros_like(read), torch.zeros_like(known, dtype=torch.bool)
        prec_read, prec_known = torch.zeros_like(prec_read), torch.zeros_like(prec_known, dtype=torch.bool)
    ref = t["reference"].float()[:n_ref] if n_ref else None
    return ChunkRequest(
        read_latents=read, known=known, read_depth=torch.zeros(T, h, w),
        first_latent=target[0], preceding=torch.cat([prec, target[:1]]), reference=ref,
        num_frames=1 + 4 * (T - 1), prompt=prompt, steps=1, guidance=1.0,
        extras=(PrecedingReads(torch.cat([prec_read, torch.zeros(1, C, h, w)]),
                               torch.cat([prec_known, torch.zeros(1, h, w, dtype=torch.bool)])),))


def make_batch(samples: Sequence[TrainingSample], cond: StoredConditioning, n_ref: int, n_prec: int,
               drop_text: Sequence[bool], drop_memory: Sequence[bool] | None = None) -> Batch:
    """Stack the samples' conditioning (each through ``build_inputs``); ``drop_text[i]``: sample ``i``
    gets the empty prompt; ``drop_memory[i]`` (default: none): its memory reads are "nothing known"."""
    cond.preceding_frames = n_prec
    parts = []
    for s, drop, forget in zip(samples, drop_text, drop_memory or [False] * len(samples)):
        if "text" not in s.tensors:
            raise MirageError(f"sample {s.key}: no 'text' tensor (prepared with --no-text?): the trainer needs "
                              "the caption embeddings")
        cond.set_texts({"": cond.empty_text, s.key: cond.pad_text(s.tensors["text"])})
        inputs = cond.build_inputs(sample_request(s, n_ref, n_prec, "" if drop else s.key, forget))
        parts.append((s.tensors["target"].float().permute(1, 0, 2, 3), inputs))
    return Batch(torch.stack([x for x, _ in parts]), torch.cat([i.reference for _, i in parts]),
                 torch.cat([i.preceding for _, i in parts]), torch.cat([i.context.float() for _, i in parts]),
                 torch.cat([i.cond for _, i in parts]), tuple(s.key for s in samples))


def sample_sigmas(n_frames: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """``(T,)`` sigmas: ``u ~ U[0, 1)`` per frame, ``shift u / (1 + (shift - 1) u)``, frame 0 = 0."""
    u = torch.rand(n_frames, generator=generator, dtype=torch.float64)
    s = (shift * u / (1 + (shift - 1) * u)).float()
    s[0] = 0.0
    return s


def frame_timesteps(sigmas: torch.Tensor, n_ref: int, n_prec: int, batch: int) -> torch.Tensor:
    """``(B, R + T + P)`` timesteps ``[0]*R + 1000 sigma + [0]*P``."""
    z = sigmas.new_zeros
    return torch.cat([z(n_ref), NUM_TRAIN_TIMESTEPS * sigmas, z(n_prec)]).expand(batch, -1)


def flow_loss(model_fn: ModelFn, batch: Batch, sigmas: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The reference's loss for one batch at the given ``sigmas (T,)`` (``sigmas[0]`` must be 0) and
    ``noise`` (like ``batch.x0``): fp32 MSE between the prediction on target frames ``1..`` and ``eps - x0``."""
    x0 = batch.x0
    B, _, T = x0.shape[:3]
    R, P = batch.reference.shape[2], batch.preceding.shape[2]
    if sigmas.shape != (T,) or float(sigmas[0]) != 0.0:
        raise ValueError(f"sigmas {tuple(sigmas.shape)} must be ({T},) with sigmas[0] = 0")
    s = sigmas.view(1, 1, T, 1, 1).to(x0)
    xt = (1 - s) * x0 + s * noise
    xt[:, :, 0] = x0[:, :, 0]
    seq = torch.cat([batch.reference, xt, batch.preceding], dim=2)
    ts = frame_timesteps(sigmas.to(x0), R, P, B)
    pred = model_fn(seq, ts, batch.text, batch.context, R)[:, :, R:R + T]
    target = noise - x0
    return torch.nn.functional.mse_loss(pred[:, :, 1:].float(), target[:, :, 1:].float())


def transformer_fn(model: torch.nn.Module) -> ModelFn:
    """``model_fn`` of a ``MirageTransformer3DModel`` (the call ``MirageBackend._velocity`` makes)."""
    def fn(seq, ts, text, ctx, n_ref):
        return model(hidden_states=seq, timestep=ts, encoder_hidden_states=text, control_hidden_states=ctx,
                     num_ref_frames=n_ref, return_dict=False)[0]
    return fn
