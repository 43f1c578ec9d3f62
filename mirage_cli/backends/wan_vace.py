"""``wan-vace`` backend: Wan2.1-VACE denoising driven directly by the latent memory.

The VACE control context is built **from the memory read, with no VAE encode per chunk**. For a
chunk of ``T`` latent frames of ``C x h x w`` (Wan2.1 VAE: ``C = 16``, cell = 8 x 8 pixels):

====================  ==========  ==============================================================
part                  channels    value
====================  ==========  ==============================================================
inactive latents      ``C``       ``read_latents`` where ``known``, the grey-video latent elsewhere
reactive latents      ``C``       the grey-video latent everywhere
mask                  ``s * s``   ``1 - known`` (1 = generate, 0 = keep), repeated on all 64 channels
====================  ==========  ==============================================================

giving ``control_hidden_states`` of shape ``(1, 2C + s*s, T, h, w) = (1, 96, T, h, w)``.

Why this is what ``WanVACEPipeline`` would build: the pipeline thresholds a pixel mask, encodes
``video * (1 - mask)`` (inactive) and ``video * mask`` (reactive) in [-1, 1] -- so masked-out pixels
are 0, i.e. neutral grey -- and reshapes the mask's 8 x 8 pixel block under each latent cell into
64 channels ``(T, h, 8, w, 8) -> (64, T, h, w)`` (channel ``8 * dy + dx``), then resamples it in time
(nearest-exact) to the latent frame count. In mirage the "video" is the memory rendered into the
chunk's cameras and the holes are grey: its inactive latent is, per cell, the memory's latent where
known and the grey latent elsewhere (the memory stores the very latents an encode would give), and
its reactive latent is the latent of an all-grey video. The known-mask is already per latent cell
and per latent frame, so every 8 x 8 block is uniform and the 64 channels are all equal to
``1 - known`` -- no reshaping or temporal resampling is needed. The grey latents come from one VAE
encode per chunk shape, cached by the codec.

Sampling: classifier-free guidance (``guidance > 1``: ``uncond + g (cond - uncond)`` with the
negative prompt), a stateless flow-matching Euler scheduler (diffusers'
``FlowMatchEulerDiscreteScheduler`` with ``shift``; Wan's own UniPC corrector would partly undo
the pinning below), timestep ``(B,)``. Pinned frames -- frame 0 of chunk 0 = the input image's
latent, frame 0 of a later chunk = the previous chunk's overlap frame ``preceding[-1]`` -- are
held at ``(1 - sigma) x0 + sigma eps`` after every step (exact at ``sigma = 0``) and marked
"keep" in the context. Noise comes from a CPU ``torch.Generator`` seeded with
``seed * 1_000_003 + chunk_index``, so a seed gives the same video on any device count/order.
Reference latents (``req.reference``) are prepended as VACE reference frames exactly as the
pipeline does (inactive = latent, reactive = 0, mask = 0) and dropped from the output.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Generic

import torch

from ..dtypes import dtype_name
from ..errors import MirageError
from ..models.registry import (
    VACE_SUBFOLDERS,
    dtype_kwargs,
    hf_progress,
    resolve_device,
    resolve_dtype,
    resolve_model,
    weights_kind,
)
from ..models.wan_vae import WanVAECodec, first_line, placed_on
from . import ChunkRequest, InputsT, ProgressFn
from .specs import BACKENDS

MAX_SEQUENCE_LENGTH = 512  # UMT5 tokens, as WanVACEPipeline


def clean_prompt(text: str) -> str:
    """The Wan pipelines' prompt cleaning: ftfy fix, double HTML unescape, collapse whitespace.

    A re-implementation of ``prompt_clean`` (= ``whitespace_clean(basic_clean(text))``) in
    ``diffusers/pipelines/wan/pipeline_wan.py`` (diffusers 0.42), which every Wan pipeline applies
    before tokenizing. It is re-implemented, not imported, because diffusers does not make it
    public API (a module-level helper, exported nowhere, undocumented) and it raises a NameError
    when ftfy is missing (in diffusers 0.42 the VACE, I2V and video-to-video pipelines call
    ``ftfy.fix_text`` without checking that ftfy was imported). tests/test_wan_vace.py checks it against
    diffusers' own.
    """
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:  # ftfy is a dependency; degrade gracefully rather than fail
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def build_vace_context(read: torch.Tensor, known: torch.Tensor, grey: torch.Tensor, mask_channels: int,
                       reference: torch.Tensor | None = None) -> torch.Tensor:
    """VACE control latents from a memory read (see the module docstring).

    Args:
        read: ``(T, C, h, w)`` latents read from the memory (any value where unknown).
        known: ``(T, h, w)`` bool, cells the read covered.
        grey: ``(T, C, h, w)`` latent of a grey video of the chunk's length and size.
        mask_channels: ``spatial_factor ** 2`` (64 for the Wan2.1 VAE).
        reference: ``(R, C, h, w)`` reference latents to prepend, or None.

    Returns:
        ``(1, 2C + mask_channels, R + T, h, w)`` float32: ``[inactive | reactive | mask]``.
    """
    T, C, h, w = read.shape
    if known.shape != (T, h, w) or grey.shape != read.shape:
        raise ValueError(f"read {tuple(read.shape)}, known {tuple(known.shape)}, grey {tuple(grey.shape)} disagree")
    k = known.to(torch.bool)[:, None]
    inactive = torch.where(k, read.float(), grey.float())
    reactive = grey.float()
    mask = (~k).float().expand(T, mask_channels, h, w)
    ctx = torch.cat([inactive, reactive, mask], dim=1)  # (T, 2C + M, h, w)
    if reference is not None and len(reference):
        ref = reference.float().to(ctx.device)
        zeros = torch.zeros(len(ref), C + mask_channels, h, w, device=ctx.device)
        ctx = torch.cat([torch.cat([ref, zeros], dim=1), ctx], dim=0)
    return ctx.permute(1, 0, 2, 3)[None].contiguous()


def chunk_generator(seed: int, chunk_index: int) -> torch.Generator:
    """The CPU generator for a chunk's initial noise."""
    return torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + int(chunk_index)) % (2**63 - 1))


def umt5_embeddings(tokenizer, text_encoder, text: str, max_sequence_length: int,
                    device: torch.device) -> tuple[torch.Tensor, int]:
    """UMT5 embeddings of an already cleaned prompt (:func:`clean_prompt`), as ``WanVACEPipeline._get_t5_prompt_embeds``
    (diffusers 0.42, ``pipelines/wan/pipeline_wan_vace.py``): padded to ``max_sequence_length`` tokens, truncated past it.

    Returns ``(emb, n)``: ``emb`` ``(1, L, D)`` in the encoder's dtype on ``device`` (where the encoder runs),
    zero past the prompt's ``n`` tokens."""
    tok = tokenizer([text], padding="max_length", max_length=max_sequence_length, truncation=True,
                    add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    n = int(tok.attention_mask.gt(0).sum())
    with torch.no_grad():
        h = text_encoder(tok.input_ids.to(device), tok.attention_mask.to(device)).last_hidden_state
    emb = torch.zeros_like(h)
    emb[:, :n] = h[:, :n]
    return emb, n


class WanBackendBase(Generic[InputsT]):
    """What the Wan backends share: module placement, UMT5 prompt encoding, request checks, describe, and
    ``denoise`` = :meth:`sample` after :meth:`build_inputs`, generic over the subclass's inputs record.

    Subclasses set ``name``, call :meth:`_setup` from their ``__init__`` and implement the two halves.
    """

    name = "wan"

    def _setup(self, transformer, text_encoder, tokenizer, codec: WanVAECodec, *, device: torch.device,
               dtype: torch.dtype, shift: float, num_train_timesteps: int, cpu_offload: bool, model: str,
               weights: str, max_sequence_length: int) -> None:
        self.transformer = transformer.eval().requires_grad_(False)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.codec = codec
        self.device = torch.device(device)
        self.dtype = dtype
        self.shift = float(shift)
        self.num_train_timesteps = int(num_train_timesteps)
        self.cpu_offload = bool(cpu_offload) and self.device.type != "cpu"
        self.model = model
        self.weights = weights
        self.max_sequence_length = int(max_sequence_length)
        self._prompt_cache: dict[str, torch.Tensor] = {}
        self._last: dict = {}
        self.patch = tuple(int(p) for p in transformer.config.patch_size)
        # Where the text encoder runs: the compute device, or the CPU when offloading (UMT5-XXL alone is 11.4 GB).
        self.text_device = torch.device("cpu") if self.cpu_offload else self.device
        self.text_encoder.to(self.text_device)
        if not self.cpu_offload:
            self.transformer.to(self.device)

    # ------------------------------------------------------------------------------ prompts
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """UMT5 embeddings ``(1, L, D)`` (``L = 512``, zero past the prompt's tokens), cached per prompt."""
        text = clean_prompt(prompt or "")
        if text not in self._prompt_cache:
            emb, _ = umt5_embeddings(self.tokenizer, self.text_encoder, text, self.max_sequence_length, self.text_device)
            self._prompt_cache[text] = emb.to(self.device, self.dtype)
        return self._prompt_cache[text]

    # ------------------------------------------------------------------------------ the two halves
    def build_inputs(self, req: ChunkRequest) -> InputsT:
        """The chunk's conditioning (the subclass's typed record)."""
        raise NotImplementedError

    def sample(self, inputs: InputsT, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        """Sample the chunk's latents ``(T, C, h, w)`` float32 from :meth:`build_inputs`' record."""
        raise NotImplementedError

    def denoise(self, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        """Denoise one chunk; returns ``(T, C, h, w)`` float32 on the device of ``req.read_latents``."""
        return self.sample(self.build_inputs(req), req, progress)

    # ------------------------------------------------------------------------------ checks
    def _check_request(self, req: ChunkRequest) -> tuple[int, int, int, int, int, float]:
        """Validate a request against the codec and the transformer; returns ``(T, C, h, w, steps, guidance)``."""
        read, known = req.read_latents, req.known
        if read.ndim != 4 or known.shape != (read.shape[0], *read.shape[2:]):
            raise ValueError(f"read_latents {tuple(read.shape)} / known {tuple(known.shape)}: "
                             "expected (T, C, h, w) / (T, h, w)")
        T, C, h, w = read.shape
        sf, tf = self.codec.spatial_factor, self.codec.temporal_factor
        if C != self.codec.channels:
            raise MirageError(f"{self.name}: the memory holds {C}-channel latents but {self.codec.name} has "
                              f"{self.codec.channels} (was the cache made with another codec?)")
        ph, pw = self.patch[1], self.patch[2]
        if h % ph or w % pw:
            raise MirageError(f"{self.name}: frame size {w * sf}x{h * sf} must be divisible by "
                              f"{sf * pw}x{sf * ph} (VAE {sf} x transformer patch {ph})")
        if req.num_frames not in (1, 1 + tf * (T - 1)):
            raise ValueError(f"num_frames {req.num_frames} does not match {T} latent frames (1 + {tf}(T-1))")
        steps, guidance = int(req.steps), float(req.guidance)
        if steps < 1:
            raise MirageError(f"{self.name}: --steps must be >= 1 (got {steps})")
        return T, C, h, w, steps, guidance

    def _describe_common(self) -> dict:
        cfg = self.transformer.config
        return {
            "name": self.name, "model": self.model, "device": str(self.device), "dtype": dtype_name(self.dtype),
            "weights": self.weights, "steps": self._last.get("steps"), "guidance": self._last.get("guidance"),
            "shift": self.shift, "num_train_timesteps": self.num_train_timesteps, "cpu_offload": self.cpu_offload,
            "text_encoder_device": str(self.text_device),
            "transformer": {"class": type(self.transformer).__name__, "num_layers": cfg.num_layers,
                            "dim": cfg.num_attention_heads * cfg.attention_head_dim,
                            "vace_layers": list(cfg.vace_layers), "patch_size": list(self.patch),
                            "params_m": round(sum(p.numel() for p in self.transformer.parameters()) / 1e6, 3)},
            "text_encoder": type(self.text_encoder).__name__, "vae": self.codec.name,
            "prompts_cached": len(self._prompt_cache),
        }


@dataclass(frozen=True)
class WanVACEInputs:
    """The wan-vace conditioning of one chunk (:meth:`WanVACEBackend.build_inputs`).

    context: ``(1, 2C + s^2, R + T_seq, h, w)`` VACE context in the transformer's dtype. pins:
    sequence index -> clean latent ``(C, h, w)`` held during sampling. n_ref / n_extra: reference
    and extra preceding frames. t_seq: frames sampled (extra preceding + chunk). cond / uncond:
    UMT5 embeddings ``(1, L, D)`` (uncond None without guidance)."""

    context: torch.Tensor
    pins: dict[int, torch.Tensor]
    n_ref: int
    n_extra: int
    t_seq: int
    cond: torch.Tensor
    uncond: torch.Tensor | None
    steps: int
    guidance: float


class WanVACEBackend(WanBackendBase[WanVACEInputs]):
    """Backend protocol implementation around ``WanVACETransformer3DModel`` + UMT5 + ``WanVAECodec``.

    Args:
        transformer, text_encoder, tokenizer: loaded diffusers/transformers modules.
        codec: the chunk codec (its grey latents build the context; the loop decodes with it).
        device / dtype: compute device and transformer/text-encoder dtype.
        shift: flow-matching timestep shift (3.0 for 480p, 5.0 is Wan's choice for 720p).
        cpu_offload: for small GPUs: the text encoder runs on the CPU (once per prompt, cached; as Wan's
            ``--t5_cpu``), the transformer and VAE live in CPU memory and visit the GPU only while they run.
        conditioning_scale: VACE hint scale for every VACE layer.
        preceding_frames: how many of ``req.preceding`` to use: 1 pins the overlap frame only; ``k > 1``
            also prepends ``preceding[-k:-1]`` as extra pinned frames (temporal context), dropped
            from the output.
    """

    name = "wan-vace"
    spec = BACKENDS["wan-vace"]

    def __init__(self, transformer, text_encoder, tokenizer, codec: WanVAECodec, *, device: torch.device,
                 dtype: torch.dtype, shift: float = 3.0, num_train_timesteps: int = 1000, cpu_offload: bool = False,
                 model: str = "", weights: str = "real", conditioning_scale: float = 1.0,
                 preceding_frames: int = 1, max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> None:
        cfg = transformer.config
        self.mask_channels = codec.spatial_factor ** 2
        if cfg.in_channels != codec.channels or cfg.vace_in_channels != 2 * codec.channels + self.mask_channels:
            raise MirageError(
                f"{model}: transformer expects {cfg.in_channels} latent / {cfg.vace_in_channels} VACE channels but "
                f"the VAE gives {codec.channels} / {2 * codec.channels + self.mask_channels} "
                f"(2 x {codec.channels} + {codec.spatial_factor}^2)")
        self.conditioning_scale = float(conditioning_scale)
        self.preceding_frames = max(1, int(preceding_frames))
        self._setup(transformer, text_encoder, tokenizer, codec, device=device, dtype=dtype, shift=shift,
                    num_train_timesteps=num_train_timesteps, cpu_offload=cpu_offload, model=model, weights=weights,
                    max_sequence_length=max_sequence_length)

    # ------------------------------------------------------------------------------ conditioning
    def build_inputs(self, req: ChunkRequest) -> WanVACEInputs:
        """The chunk's conditioning: the VACE context over ``[extra preceding | chunk]`` frames
        (pinned frames as known latents), the pins, the text embeddings."""
        T, C, h, w, steps, guidance = self._check_request(req)
        read, known = req.read_latents, req.known
        sf, tf = self.codec.spatial_factor, self.codec.temporal_factor
        dev = self.device

        # Sequence = [extra preceding frames (pinned)] + chunk frames; pins = {index: clean latent}.
        read = read.to(dev, torch.float32)
        known = known.to(dev, torch.bool)
        pins: dict[int, torch.Tensor] = {}
        extra = torch.zeros(0, C, h, w, device=dev)
        if req.preceding is not None and len(req.preceding):
            prec = req.preceding.to(dev, torch.float32)
            extra = prec[-self.preceding_frames:-1] if self.preceding_frames > 1 else extra
            pins[len(extra)] = prec[-1]
        elif req.chunk_index == 0:
            pins[0] = req.first_latent.to(dev, torch.float32)
        n_extra = len(extra)
        seq_read = torch.cat([extra, read], 0)
        seq_known = torch.cat([torch.ones(n_extra, h, w, dtype=torch.bool, device=dev), known], 0)
        for i, lat in pins.items():
            seq_read[i] = lat
            seq_known[i] = True
        t_seq = len(seq_read)
        grey = self.codec.grey_latent(1 + tf * (t_seq - 1), h * sf, w * sf).to(dev, torch.float32)
        ref = req.reference.to(dev) if req.reference is not None and len(req.reference) else None
        n_ref = 0 if ref is None else len(ref)
        ctx = build_vace_context(seq_read, seq_known, grey, self.mask_channels, ref).to(self.dtype)
        cond = self.encode_prompt(req.prompt)
        uncond = self.encode_prompt(req.negative_prompt) if guidance > 1.0 else None
        return WanVACEInputs(ctx, pins, n_ref, n_extra, t_seq, cond, uncond, steps, guidance)

    # ------------------------------------------------------------------------------ sampler
    def sample(self, inputs: WanVACEInputs, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        """Flow-matching Euler steps; returns ``(T, C, h, w)`` float32 on the device of ``req.read_latents``."""
        C, h, w = req.read_latents.shape[1:]
        dev = self.device
        pins, n_ref, n_extra, steps, guidance = inputs.pins, inputs.n_ref, inputs.n_extra, inputs.steps, inputs.guidance
        ctx, cond, uncond = inputs.context, inputs.cond, inputs.uncond
        noise = torch.randn((1, C, n_ref + inputs.t_seq, h, w), generator=chunk_generator(req.seed, req.chunk_index),
                            dtype=torch.float32).to(dev)
        pin_idx = [n_ref + i for i in pins]
        pin_x0 = torch.stack([pins[i] for i in pins], dim=1)[None] if pins else None  # (1, C, P, h, w)

        def hold(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            if pin_x0 is not None:
                x[:, :, pin_idx] = (1 - sigma) * pin_x0 + sigma * noise[:, :, pin_idx]
            return x

        from diffusers import FlowMatchEulerDiscreteScheduler

        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=self.num_train_timesteps, shift=self.shift)
        sched.set_timesteps(steps, device=dev)
        sigmas = sched.sigmas.to(dev, torch.float32)
        scale = torch.full((len(self.transformer.config.vace_layers),), self.conditioning_scale, device=dev,
                           dtype=self.dtype)
        x = hold(noise.clone(), sigmas[0])
        with placed_on(self.transformer, self.device, self.cpu_offload), torch.no_grad():
            for i, t in enumerate(sched.timesteps):
                ts = t.expand(1).to(dev)
                v = self._velocity(x, ts, cond, ctx, scale)
                if uncond is not None:
                    vu = self._velocity(x, ts, uncond, ctx, scale)
                    v = vu + guidance * (v - vu)
                x = sched.step(v, t, x, return_dict=False)[0].float()
                x = hold(x, sigmas[i + 1])
                if progress is not None:
                    progress(i + 1, steps)
        self._last = {"steps": steps, "guidance": guidance, "reference_frames": n_ref, "extra_preceding": n_extra,
                      "pinned_frames": len(pins)}
        out = x[0, :, n_ref + n_extra:].permute(1, 0, 2, 3).float().contiguous()
        return out.to(req.read_latents.device)

    def _velocity(self, x, ts, emb, ctx, scale) -> torch.Tensor:
        return self.transformer(hidden_states=x.to(self.dtype), timestep=ts, encoder_hidden_states=emb,
                                control_hidden_states=ctx, control_hidden_states_scale=scale,
                                return_dict=False)[0].float()

    # ------------------------------------------------------------------------------ misc
    def describe(self) -> dict:
        return {**self._describe_common(), "scheduler": "FlowMatchEulerDiscreteScheduler",
                "conditioning_scale": self.conditioning_scale, "preceding_frames": self.preceding_frames,
                "context": "memory read (no VAE encode per chunk)"}


def load_wan_vace(model_ref: str, device: str = "auto", dtype: str = "auto", cpu_offload: bool = False,
                  shift: float = 3.0, *, vae_dtype: str | torch.dtype = "fp32", tiling: bool = True,
                  download: bool = False, conditioning_scale: float = 1.0, preceding_frames: int = 1,
                  progress: bool = True) -> tuple[WanVACEBackend, WanVAECodec]:
    """Load any diffusers-layout Wan2.1-VACE folder (``NAME | REPO_ID | DIR``) into a backend and its codec.

    The model is resolved first (no diffusers import), so a missing model fails in milliseconds with
    :class:`MirageError`. Transformer and text encoder use ``dtype`` (``auto``: bf16 on CUDA, fp32 on
    CPU); the VAE uses ``vae_dtype`` (fp32 by default). ``cpu_offload`` runs the text encoder on the
    CPU and keeps transformer and VAE weights in CPU memory, moving each to the GPU only while it runs.
    ``progress=False`` silences the libraries' weight-loading bars (for ``--quiet``).
    """
    def transformer_cls():
        from diffusers import WanVACETransformer3DModel

        return WanVACETransformer3DModel

    parts = load_wan_folder(model_ref, _read_index, transformer_cls, device, dtype, vae_dtype, tiling=tiling,
                            cpu_offload=cpu_offload, download=download, progress=progress)
    return parts.backend(WanVACEBackend, shift=shift, conditioning_scale=conditioning_scale,
                         preceding_frames=preceding_frames)


def load_for_run(cfg, show_progress: bool = True) -> tuple[WanVAECodec, WanVACEBackend]:
    """The spec's loader: ``--model`` (default: the spec's) with the run's device, dtype, offload and shift."""
    backend, codec = load_wan_vace(cfg.model or str(WanVACEBackend.spec.default_model), device=cfg.device, dtype=cfg.dtype,
                                   cpu_offload=cfg.cpu_offload, shift=cfg.shift, progress=show_progress)
    return codec, backend


@dataclass
class WanFolder:
    """A loaded diffusers Wan folder: ``modules = (transformer, text_encoder, tokenizer, codec)``."""

    root: Path
    device: torch.device
    dtype: torch.dtype
    modules: tuple
    num_train_timesteps: int
    weights: str
    model: str  # the reference it was loaded from (NAME | REPO_ID | DIR), for describe()
    cpu_offload: bool

    def backend(self, backend_cls, **options) -> tuple:
        """``(backend_cls(...) around these modules, the codec)``; ``options``: the backend's own
        (shift, preceding frames, ...)."""
        backend = backend_cls(*self.modules, device=self.device, dtype=self.dtype,
                              num_train_timesteps=self.num_train_timesteps, cpu_offload=self.cpu_offload,
                              model=self.model, weights=self.weights, **options)
        return backend, self.modules[3]


def load_wan_folder(model_ref, check_index, transformer_cls, device, dtype, vae_dtype, *, tiling: bool = True,
                    cpu_offload: bool = False, download: bool = False, progress: bool = True) -> WanFolder:
    """Resolve ``NAME | REPO_ID | DIR`` (no diffusers import yet, so a missing model fails in milliseconds),
    check its ``model_index.json`` with ``check_index(root)``, then load the components with the class
    ``transformer_cls()`` returns (a callable, so diffusers is imported only after resolution)."""
    root = resolve_model(model_ref, list(VACE_SUBFOLDERS), download=download)
    check_index(root)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    vdt = resolve_dtype(vae_dtype, dev)
    tokenizer, text_encoder, transformer, codec = load_wan_components(
        root, transformer_cls(), dev, dt, vdt, tiling=tiling, cpu_offload=cpu_offload, progress=progress)
    sched_cfg = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    return WanFolder(root, dev, dt, (transformer, text_encoder, tokenizer, codec),
                     int(sched_cfg.get("num_train_timesteps", 1000)), weights_kind(root), os.fspath(model_ref), cpu_offload)


def load_wan_components(root: Path, transformer_cls, device: torch.device, dtype: torch.dtype,
                        vae_dtype: torch.dtype, *, tiling: bool = True, cpu_offload: bool = False,
                        progress: bool = True) -> tuple:
    """Tokenizer, UMT5 text encoder, transformer (``transformer_cls``) and :class:`WanVAECodec` of a resolved
    diffusers Wan folder; any loading failure is one :class:`MirageError` line naming the component."""
    from transformers import AutoTokenizer, UMT5EncoderModel

    def load(what: str, fn):
        try:
            return fn()
        except MirageError:
            raise
        except Exception as e:  # corrupt/foreign files: one line naming the component
            raise MirageError(f"could not load {what} from {root / what}: {first_line(e)}") from e

    with hf_progress(progress):
        tokenizer = load("tokenizer", lambda: AutoTokenizer.from_pretrained(root / "tokenizer"))
        text_encoder = load("text_encoder", lambda: UMT5EncoderModel.from_pretrained(
            root / "text_encoder", use_safetensors=True, **dtype_kwargs("transformers", dtype)))
        transformer = load("transformer", lambda: transformer_cls.from_pretrained(
            root, subfolder="transformer", use_safetensors=True, **dtype_kwargs("diffusers", dtype)))
        codec = WanVAECodec.from_pretrained(root, subfolder="vae", device=device, dtype=vae_dtype, tiling=tiling,
                                            offload=cpu_offload)
    if text_encoder.config.d_model != transformer.config.text_dim:
        raise MirageError(f"{root}: text encoder width {text_encoder.config.d_model} != transformer text_dim "
                          f"{transformer.config.text_dim}")
    return tokenizer, text_encoder, transformer, codec


def read_model_index(root: Path, transformer_class: str, kind: str, hint: str) -> dict:
    """Read ``model_index.json`` and check its transformer class; ``kind``/``hint`` word the one-line errors."""
    path = root / "model_index.json"
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise MirageError(f"{root} has no model_index.json (expected {kind})") from None
    except (OSError, ValueError) as e:
        raise MirageError(f"{path}: unreadable ({first_line(e)})") from e
    tr = index.get("transformer") or [None, None]
    if tr[1] != transformer_class:
        raise MirageError(f"{path}: transformer is {tr[1]}, expected {transformer_class} ({hint})")
    return index


def check_model_folder(root: Path) -> None:
    """The spec's model check (``--dry-run`` calls it without loading weights): a Wan2.1-VACE folder."""
    _read_index(root)


def _read_index(root: Path) -> dict:
    """Validate ``model_index.json``: a single-transformer Wan VACE pipeline."""
    index = read_model_index(root, "WanVACETransformer3DModel", "a diffusers Wan-VACE folder",
                             "the wan-vace backend needs a Wan-VACE model")
    path = root / "model_index.json"
    tr2 = index.get("transformer_2") or [None, None]
    if tr2[1] is not None:
        raise MirageError(f"{path}: two-stage models (transformer_2, Wan2.2 A14B) are not supported yet; "
                          "use a Wan2.1-VACE model")
    return index
