"""``spatia`` backend: Spatia's published VACE + LoRA for Wan2.2-TI2V-5B (ZhaoJingjing713/Spatia, CVPR 2026).

The network is the paper's (:class:`~mirage_cli.models.mirage_transformer.MirageTransformer3DModel`, the
same forward as Spatia's ``model_fn_wan_video``) with Spatia's VACE layout (8 blocks on layers 0, 4, ..., 28),
converted by ``mirage models convert --layout spatia``; the LoRA stays unfused and is switched per chunk
(:mod:`.lora`): **off in chunk 0, on from chunk 1** (Spatia ``Spatia/inference.py`` lines 486-493). One chunk
("round") follows ``Spatia/inference.py`` + ``wan/wan_video_new.py`` at 5dd3457:

- Sequence ``[R references | n_pin pinned | T - n_pin new]`` latent frames, per-frame timesteps
  ``[0]*R + [0]*n_pin + [t]*(T - n_pin)``. Chunk 0 pins the input image's latent (``n_pin = 1``); later
  chunks pin the VAE encode of the last ``overlap = 9`` decoded frames (one clip, causal: 3 latents).
  Pinned frames are re-pinned after every scheduler step.
- References (chunk >= 1): decoded frames chosen by the engine (one-to-one matching,
  ``pipeline/pixelcontext.py``), each VAE-encoded alone as a single image, RoPE'd before the target.
- VACE context (96 channels), ``--conditioning``:
  - ``rgb`` (as trained): ``[VAE(render of the explicit RGB point cloud, black holes) |
    VAE(hole mask: white holes, grey covered)]`` over every frame of the chunk (pinned frames included):
    Spatia feeds ``(255 - coverage) / 255`` to the VAE in [0, 1] (``Spatia/inference.py`` line 533,
    ``Spatia/wan/wan_video_new.py`` lines 587-594), i.e. mirage's levels ``0.5 + 0.5 (1 - coverage)``.
  - ``latent`` (EXPERIMENTAL, mirage's idea on Spatia's weights, never trained): ``[memory read where
    known, else the black-video latent | grey-video latent where known, else the white-video latent]``
    per cell; no VAE encode of any render (the constant-level latents are encoded once per chunk
    length and cached by the codec). References are the stored latents mirage chooses by co-visibility.
- UniPC (flow, shift 5, the reference sigma grid: Spatia's ``FlowUniPCMultistepScheduler`` is the same
  code as the reference's), 40 steps, CFG 3.5 with Wan's standard Chinese negative prompt when none is
  given, each prompt + ``" 4K, realistic, high quality, HDR."``.
- Noise: a CPU generator seeded with the run's seed **in every chunk** (Spatia's ``generate_noise``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MirageError
from ..models.convert import converted_layout as layout_of
from ..models.wan_vae import WanVAECodec, placed_on
from . import ChunkRequest, PixelHistory, PointRender, ProgressFn
from .lora import SwitchableLoRA, load_switchable_lora
from .mirage import MirageTransformerBackend, reference_sigmas
from .specs import BACKENDS
from .wan_vace import load_wan_folder, read_model_index

SPEC = BACKENDS["spatia"]
PROMPT_SUFFIX = " 4K, realistic, high quality, HDR."  # Spatia/inference.py: appended to every round's prompt
#: Wan's standard negative prompt (Wan2.2 shared_config ``sample_neg_prompt``), Spatia's default.
WAN_NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
                "低质量，JPEG压缩残留，"
                "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
                "杂乱的背景，三条腿，背景人很多，倒着走")
BLACK, GREY, WHITE = 0.0, 0.5, 1.0


def hole_mask_video(known: torch.Tensor) -> torch.Tensor:
    """``(L, H, W)`` coverage (bool or [0, 1]) -> ``(L, 3, H, W)`` levels ``0.5 + 0.5 (1 - coverage)``:
    white (1.0) holes, grey (0.5) covered pixels (Spatia's score video as its VAE sees it)."""
    cov = known.float()
    return (GREY + GREY * (1.0 - cov))[:, None].expand(-1, 3, -1, -1).contiguous()


def spatia_timesteps(t: torch.Tensor, n_ref: int, n_pin: int, n_target: int) -> torch.Tensor:
    """``(1, R + T)``: ``[0]*R + [0]*n_pin + [t]*(T - n_pin)``."""
    ts = torch.zeros(1, n_ref + n_target, dtype=torch.float32, device=t.device)
    ts[0, n_ref + n_pin:] = t.float()
    return ts


@dataclass(frozen=True)
class SpatiaInputs:
    """One chunk's conditioning. pin: ``(n_pin, C, h, w)``. reference: ``(1, C, R, h, w)``. context:
    ``(1, 2C, T, h, w)`` in the transformer's dtype. cond / uncond: UMT5 ``(1, L, D)``. lora: LoRA on."""

    pin: torch.Tensor
    reference: torch.Tensor
    context: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor | None
    steps: int
    guidance: float
    lora: bool


class SpatiaBackend(MirageTransformerBackend[SpatiaInputs]):
    """Backend protocol implementation for Spatia's weights (see the module docstring).

    Args: as :class:`~.mirage.MirageBackend`, plus ``conditioning`` (``rgb`` | ``latent``) and ``lora``
    (the :class:`~.lora.SwitchableLoRA` of the converted folder, or None: no LoRA)."""

    name = "spatia"
    spec = SPEC

    def __init__(self, transformer, text_encoder, tokenizer, codec: WanVAECodec, *, conditioning: str = "rgb",
                 lora: SwitchableLoRA | None = None, lora_note: str = "", **kw) -> None:
        kw["preceding_frames"] = 0
        super().__init__(transformer, text_encoder, tokenizer, codec, **kw)
        if conditioning not in SPEC.conditionings:
            raise MirageError(f"--conditioning: must be {' or '.join(SPEC.conditionings)} (got '{conditioning}')")
        self.conditioning = conditioning
        self.lora = lora
        self.lora_note = lora_note

    # ------------------------------------------------------------------------------ conditioning
    def _pins(self, req: ChunkRequest, hist: PixelHistory | None, dev) -> torch.Tensor:
        """``(n_pin, C, h, w)``: the input latent (chunk 0) or the VAE encode of the overlap frames (one clip)."""
        if req.chunk_index == 0 or hist is None or hist.overlap is None:
            return req.first_latent.to(dev, torch.float32)[None]
        return self.codec.encode(hist.overlap.to(dev)).float()

    def _references(self, req: ChunkRequest, hist: PixelHistory | None, shape, dev) -> torch.Tensor:
        """``(R, C, h, w)``: pixel references encoded one at a time as single images, else the request's latents."""
        if hist is not None and hist.references is not None and len(hist.references):
            return torch.cat([self.codec.encode(f[None].to(dev)).float() for f in hist.references])
        if req.reference is not None and len(req.reference):
            return req.reference.to(dev, torch.float32)
        return torch.zeros(0, *shape, device=dev)

    def context(self, req: ChunkRequest) -> torch.Tensor:
        """``(T, 2C, h, w)`` float32 VACE context for the ``--conditioning`` (see the module docstring)."""
        T, C, h, w = req.read_latents.shape
        dev = self.device
        if self.conditioning in SPEC.render_conditionings:
            render = req.extra(PointRender)
            if render is None:
                raise ValueError("spatia rgb conditioning: the request has no PointRender (the engine renders it)")
            video = render.rgb.to(dev).float()  # black (0) where no point lands
            return torch.cat([self.codec.encode(video), self.codec.encode(hole_mask_video(render.known.to(dev)))],
                             dim=1).float()
        sf, L = self.codec.spatial_factor, req.num_frames
        const = {v: self.codec.constant_latent(v, L, h * sf, w * sf).to(dev, torch.float32) for v in (BLACK, GREY, WHITE)}
        k = req.known.to(dev)[:, None]
        first = torch.where(k, req.read_latents.to(dev, torch.float32), const[BLACK])
        return torch.cat([first, torch.where(k, const[GREY], const[WHITE])], dim=1)

    def build_inputs(self, req: ChunkRequest) -> SpatiaInputs:
        """The chunk's conditioning: pinned latents, references, VACE context, text embeddings, LoRA state."""
        T, C, h, w, steps, guidance = self._check_request(req)
        dev = self.device
        hist = req.extra(PixelHistory)
        pin = self._pins(req, hist, dev)
        if pin.shape[1:] != (C, h, w) or len(pin) >= T:
            raise ValueError(f"spatia: pinned latents {tuple(pin.shape)} do not fit a {T}-frame chunk of {(C, h, w)}")
        ref = self._references(req, hist, (C, h, w), dev)
        ctx = self.context(req).permute(1, 0, 2, 3)[None].to(self.dtype)
        cond = self.encode_prompt((req.prompt or "") + PROMPT_SUFFIX)
        uncond = self.encode_prompt(req.negative_prompt or WAN_NEGATIVE) if guidance > 1.0 else None
        return SpatiaInputs(pin, ref.permute(1, 0, 2, 3)[None], ctx, cond, uncond, steps, guidance,
                            self.lora is not None and req.chunk_index >= SPEC.lora_from_chunk)

    # ------------------------------------------------------------------------------ sampler
    def sample(self, inputs: SpatiaInputs, req: ChunkRequest, progress: ProgressFn | None = None) -> torch.Tensor:
        """UniPC over the chunk's new frames; returns ``(T, C, h, w)`` float32 on ``req.read_latents``' device."""
        T, C, h, w = req.read_latents.shape
        dev = self.device
        pin, ref5, ctx, cond, uncond = inputs.pin, inputs.reference, inputs.context, inputs.cond, inputs.uncond
        steps, guidance, n_ref, n_pin = inputs.steps, inputs.guidance, inputs.reference.shape[2], len(inputs.pin)

        from diffusers import UniPCMultistepScheduler

        sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=self.shift, num_train_timesteps=self.num_train_timesteps)
        sched.set_timesteps(sigmas=reference_sigmas(steps), device=dev)
        # Spatia: torch.randn on the CPU with a generator seeded with the same seed in every round
        x = torch.randn((1, C, T, h, w), generator=torch.Generator("cpu").manual_seed(int(req.seed)),
                        dtype=torch.float32).to(dev)
        pinned = pin.permute(1, 0, 2, 3)  # (C, n_pin, h, w)
        x[0, :, :n_pin] = pinned
        if self.lora is not None:
            self.lora.set(inputs.lora)
        with placed_on(self.transformer, self.device, self.cpu_offload), torch.no_grad():
            for i, t in enumerate(sched.timesteps):
                ts = spatia_timesteps(t.to(dev), n_ref, n_pin, T)
                seq = torch.cat([ref5, x], dim=2).to(self.dtype)
                v = self._velocity(seq, ts, cond, ctx, n_ref)
                if uncond is not None:
                    vu = self._velocity(seq, ts, uncond, ctx, n_ref)
                    v = vu + guidance * (v - vu)
                x = sched.step(v[:, :, n_ref:], t, x, return_dict=False)[0].float()
                x[0, :, :n_pin] = pinned  # the input / re-encoded overlap stays clean
                if progress is not None:
                    progress(i + 1, steps)
        self._last = {"steps": steps, "guidance": guidance, "reference_frames": n_ref, "pinned_frames": n_pin,
                      "lora": inputs.lora}
        return x[0].permute(1, 0, 2, 3).contiguous().to(req.read_latents.device)

    def describe(self) -> dict:
        d = {**self._describe_common(),
             "scheduler": "UniPCMultistepScheduler (flow, sigmas linspace(0.999, 0, steps+1)[:-1])",
             "conditioning": self.conditioning, "experimental": self.conditioning in SPEC.experimental_conditionings,
             "last_chunk": dict(self._last), "prompt_suffix": PROMPT_SUFFIX,
             "lora": ({"switchable": True, "modules": self.lora.modules, "rank": self.lora.rank,
                       "on_from_chunk": SPEC.lora_from_chunk} if self.lora is not None else self.lora_note or None),
             "context": ("[VAE(RGB point-cloud render, black holes) | VAE(hole mask, white holes / grey covered)]"
                         if self.conditioning in SPEC.render_conditionings else
                         "[memory read, black latent where unknown | grey latent where known, white where unknown] "
                         "(EXPERIMENTAL: never trained with Spatia's weights)")}
        return d


def check_model_folder(root: Path) -> None:
    """The folder must hold a Spatia-layout conversion (``mirage models convert --layout spatia``)."""
    read_model_index(root, "MirageTransformer3DModel", "a `mirage models convert --layout spatia` folder",
                     "convert Spatia's checkpoints first: `mirage models convert --layout spatia --base wan2.2-ti2v-5b "
                     "--vace step-8500.safetensors --lora lora_weights_10000.safetensors -o OUT`")
    if layout_of(root) != "spatia":
        raise MirageError(f"{root / 'mirage.json'}: a {layout_of(root)}-layout model; --backend spatia needs one "
                          "converted with --layout spatia (use --backend mirage for this one)")


def load_spatia(model_ref: str, device: str = "auto", dtype: str = "auto", cpu_offload: bool = False, *,
                shift: float = SPEC.defaults.shift, conditioning: str = "rgb", download: bool = False,
                progress: bool = True) -> tuple[SpatiaBackend, WanVAECodec]:
    """Load a ``--layout spatia`` folder into a :class:`SpatiaBackend` (its unfused LoRA attached, off)."""
    def transformer_cls():
        from ..models.mirage_transformer import MirageTransformer3DModel

        return MirageTransformer3DModel

    parts = load_wan_folder(model_ref, check_model_folder, transformer_cls, device, dtype, "fp32", tiling=True,
                            cpu_offload=cpu_offload, download=download, progress=progress)
    info = json.loads((parts.root / "mirage.json").read_text()).get("lora") or {}
    lora, note = None, "none (converted without --lora)"
    if info.get("file"):
        lora = load_switchable_lora(parts.modules[0], parts.root / info["file"])
    elif info:
        note = "fused at conversion: on in every chunk, chunk 0 included (Spatia runs round 0 without it)"
    return parts.backend(SpatiaBackend, shift=shift, conditioning=conditioning, lora=lora, lora_note=note)


def load_for_run(cfg, show_progress: bool = True) -> tuple[WanVAECodec, SpatiaBackend]:
    """The spec's loader: ``--model`` with the run's device, dtype, offload, shift and ``--conditioning``."""
    backend, codec = load_spatia(cfg.model, device=cfg.device, dtype=cfg.dtype, cpu_offload=cfg.cpu_offload,
                                 shift=cfg.shift, conditioning=cfg.conditioning or SPEC.conditionings[0],
                                 progress=show_progress)
    return codec, backend
