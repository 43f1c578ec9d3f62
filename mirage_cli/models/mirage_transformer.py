"""``MirageTransformer3DModel``: the paper's network (Wan2.2-TI2V-5B DiT + trained VACE branch) in diffusers.

A subclass of diffusers' ``WanVACETransformer3DModel`` with the same ``__init__``, config and
parameter names (so ``from_pretrained``/``save_pretrained``, diffusers' checkpoint converter and
peft apply unchanged). Only ``forward`` is replaced, to add what the paper's model needs and the
stock forward cannot do (as the paper's reference implementation, microsoft/LatentSpatialMemory at
commit b2cd738, runs it; checked against diffusers 0.42):

1. **Per-frame / per-token timesteps** (Wan2.2 TI2V: clean frames get ``t = 0``). The stock VACE
   forward asserts a 1-D timestep (a flattened one would silently broadcast into a wrong batch);
   diffusers' plain ``WanTransformer3DModel`` already takes ``(B, seq_len)`` timesteps through
   ``condition_embedder(..., timestep_seq_len=...)``, which this forward reuses.
2. **Reference frames**: the sequence is ``[R reference | T target | P preceding]`` latent frames.
   Reference frames get RoPE time positions ``-R..-1`` and height positions ``h'..2h'-1`` (width
   ``0..w'-1``); target + preceding frames get time ``0..T+P-1``, height ``0..h'-1``. The VACE branch
   never sees the reference tokens (its input, timestep embedding and RoPE cover the ``T + P``
   frames only) and its hints are added to the non-reference tokens only.

Everything else is diffusers' own code: the patch embeddings, the condition embedder, the rotary
tables, ``WanTransformerBlock`` (the VACE blocks run through the same block forward, as their
attribute names are identical, plus their own ``proj_in``/``proj_out``), the output head.

This module imports diffusers at import time; ``import mirage_cli`` does not import it (the
package re-exports the class lazily).
"""

from __future__ import annotations

import torch
from diffusers import WanVACETransformer3DModel
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_wan import WanTransformerBlock


class MirageTransformer3DModel(WanVACETransformer3DModel):
    """Wan VACE transformer with per-frame timesteps and RoPE-shifted reference frames (the Mirage model).

    The paper's configuration: ``patch_size=(1,2,2), num_attention_heads=24, attention_head_dim=128,
    in_channels=out_channels=48, text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30,
    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
    vace_layers=[0, 2, ..., 28], vace_in_channels=96``.
    """

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                control_hidden_states: torch.Tensor, num_ref_frames: int = 0,
                control_hidden_states_scale: torch.Tensor | None = None, return_dict: bool = True):
        """Predict the flow for a ``[reference | target | preceding]`` latent sequence.

        Args:
            hidden_states: ``(B, C, R + T + P, H, W)`` latents (``C = in_channels``, 48 for Wan2.2):
                the ``R = num_ref_frames`` reference frames first, then the target frames being
                denoised, then the preceding (already generated, clean) frames.
            timestep: flow-matching timestep in ``[0, 1000]``, one of
                ``(B,)`` (all tokens alike), ``(B, F)`` per latent frame (``F = R + T + P``; the
                reference's ``[0]*R + [0, t, ..., t] + [0]*P``) or ``(B, F * h' * w')`` per token
                (``h' = H / 2``, ``w' = W / 2`` after patching), as Wan2.2 TI2V's expanded timesteps.
                A batch of 1 is broadcast to ``B``.
            encoder_hidden_states: ``(B, L, text_dim)`` UMT5 embeddings.
            control_hidden_states: ``(B, vace_in_channels, T + P', H, W)`` VACE context for the
                non-reference frames (``P' <= P``; missing frames at the end are zero tokens, as
                diffusers and the reference pad).
            num_ref_frames: ``R``, the number of leading reference frames (0: none).
            control_hidden_states_scale: ``(len(vace_layers),)`` scale of each VACE hint (default 1).
            return_dict: return a ``Transformer2DModelOutput`` instead of a tuple.

        Returns:
            ``(B, out_channels, R + T + P, H, W)`` flow prediction for every frame (callers usually
            keep the target frames ``[R : R + T]``).

        Matches the reference network (``model_fn_wan_video`` with ``num_ref_frames``) up to the
        reference's float64 timestep sinusoid.
        """
        B, _, F, H, W = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        R = int(num_ref_frames)
        if R < 0 or R > F or R % p_t:
            raise ValueError(f"num_ref_frames={R} must be in [0, {F}] and divisible by the temporal patch {p_t}")
        f, h, w = F // p_t, H // p_h, W // p_w
        hw = h * w
        n_ref = (R // p_t) * hw  # reference tokens, first in the sequence
        scales = self._hint_scales(control_hidden_states, control_hidden_states_scale)

        # 1. Rotary embedding: diffusers' tables for the non-reference frames, shifted positions for the rest.
        rope = self._rotary(hidden_states, R // p_t, f - R // p_t, h, w)

        # 2. Patch embeddings (the VACE context is zero-padded to the non-reference token count).
        x, c = self._patch_embed(hidden_states, control_hidden_states, n_ref, hw)

        # 3. Timestep embedding: (B, 6, D) for a scalar per sample, else (B, n_tok, 6, D) per token.
        temb, tproj, enc = self._embed(timestep, encoder_hidden_states, B, f, hw)

        # 4. VACE hints from the non-reference tokens only.
        hints = self._vace_hints(x[:, n_ref:], c, enc, tproj, rope, n_ref, scales)

        # 5. DiT blocks; hints are added to the non-reference tokens after their layer.
        for i, block in enumerate(self.blocks):
            x = self._ckpt(block, x, enc, tproj, rope)
            if i in hints:
                hint, scale = hints[i]
                add = hint.to(x.device) * scale
                x = x + add if n_ref == 0 else torch.cat([x[:, :n_ref], x[:, n_ref:] + add], dim=1)

        # 6. Output head.
        out = self._head(x, temb, (B, f, h, w))
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    # ------------------------------------------------------------------------------ forward's steps
    def _hint_scales(self, control_hidden_states: torch.Tensor, scale: torch.Tensor | None) -> tuple:
        """One scale per VACE layer (``control_hidden_states_scale``, default 1 each)."""
        n = len(self.config.vace_layers)
        if scale is None:
            scale = control_hidden_states.new_ones(n)
        scales = torch.unbind(scale)
        if len(scales) != n:
            raise ValueError(f"control_hidden_states_scale has {len(scales)} entries, expected {n}")
        return scales

    def _patch_embed(self, hidden_states: torch.Tensor, control_hidden_states: torch.Tensor, n_ref: int, hw: int):
        """Tokens ``x`` ``(B, n_tok, D)`` of every frame and ``c`` ``(B, n_tok - n_ref, D)`` of the VACE
        context, zero-padded at the end to the non-reference token count (as diffusers and the reference)."""
        x = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()  # (B, n_tok, D)
        c = self.vace_patch_embedding(control_hidden_states).flatten(2).transpose(1, 2)
        n_main = x.shape[1] - n_ref
        if c.shape[1] > n_main:
            raise ValueError(f"control_hidden_states cover {c.shape[1] // hw} frames, more than the "
                             f"{n_main // hw} non-reference frames")
        return x, torch.cat([c, c.new_zeros(c.shape[0], n_main - c.shape[1], c.shape[2])], dim=1)

    def _vace_hints(self, x_v: torch.Tensor, c: torch.Tensor, enc: torch.Tensor, tproj: torch.Tensor, rope: tuple,
                    n_ref: int, scales: tuple) -> dict:
        """``{DiT layer: (hint (B, n_tok - n_ref, D), scale)}`` from the VACE blocks, which see the
        non-reference tokens ``x_v`` only (their timestep projection and RoPE cut alike)."""
        t_v = tproj[:, n_ref:] if tproj.ndim == 4 else tproj  # per token, or one per sample
        rope_v = tuple(r[:, n_ref:] for r in rope)
        layers = list(self.config.vace_layers)
        hints = {}
        for j, vb in enumerate(self.vace_blocks):
            if vb.proj_in is not None:
                c = vb.proj_in(c) + x_v
            # The VACE block's own forward only handles a 3-D temb; its attributes are those of
            # WanTransformerBlock, so the Wan2.2 per-token block forward applies to it unchanged.
            c = self._ckpt(WanTransformerBlock.forward, vb, c, enc, t_v, rope_v)
            hints[layers[j]] = (vb.proj_out(c), scales[j])
        return hints

    def _head(self, x: torch.Tensor, temb: torch.Tensor, bfhw: tuple[int, int, int, int]) -> torch.Tensor:
        """Output head (per-token modulation as WanTransformer3DModel for Wan2.2 TI2V) and unpatchify:
        ``(B, n_tok, D)`` -> ``(B, out_channels, F, H, W)``."""
        B, f, h, w = bfhw
        p_t, p_h, p_w = self.config.patch_size
        if temb.ndim == 3:
            shift, scale = (self.scale_shift_table.unsqueeze(0).to(temb.device) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        x = (self.norm_out(x.float()) * (1 + scale.to(x.device)) + shift.to(x.device)).type_as(x)
        x = self.proj_out(x)
        x = x.reshape(B, f, h, w, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    # ------------------------------------------------------------------------------ helpers
    def _ckpt(self, fn, *args):
        """Run a block, through gradient checkpointing when training with it enabled."""
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(fn, *args)
        return fn(*args)

    def _rotary(self, hidden_states: torch.Tensor, r: int, f_main: int, h: int, w: int):
        """``(cos, sin)``, each ``(1, (r + f_main) h w, 1, head_dim)``: reference tokens first.

        Reference frame ``k`` (0-based) has time position ``k - r`` and height positions ``h..2h-1``.
        diffusers' tables hold ``cos(p theta)``/``sin(p theta)`` for ``p >= 0``; a negative position
        ``-p`` is ``cos(p theta)``/``-sin(p theta)``.
        """
        cos, sin = self.rope(hidden_states[:, :, hidden_states.shape[2] - f_main * self.config.patch_size[0]:])
        if r == 0:
            return cos, sin
        rp = self.rope
        if max(r + 1, 2 * h, w) > rp.max_seq_len:
            raise ValueError(f"{r} reference frames / latent height {h} exceed rope_max_seq_len={rp.max_seq_len}")
        split = [rp.t_dim, rp.h_dim, rp.w_dim]
        tables = []
        for table, sign in ((rp.freqs_cos, 1.0), (rp.freqs_sin, -1.0)):
            ft, fh, fw = table.split(split, dim=1)
            t = sign * ft[1:r + 1].flip(0)  # positions -r..-1 -> |p| = r..1
            parts = [t.view(r, 1, 1, -1).expand(r, h, w, -1),
                     fh[h:2 * h].view(1, h, 1, -1).expand(r, h, w, -1),
                     fw[:w].view(1, 1, w, -1).expand(r, h, w, -1)]
            tables.append(torch.cat(parts, dim=-1).reshape(1, r * h * w, 1, -1))
        return (torch.cat([tables[0].to(cos), cos], dim=1), torch.cat([tables[1].to(sin), sin], dim=1))

    def _embed(self, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor, B: int, f: int, hw: int):
        """Condition embedder on a ``(B,)``, ``(B, f)`` or ``(B, f hw)`` timestep.

        Returns ``temb`` ``(B, D)`` or ``(B, f hw, D)``, ``tproj`` ``(B, 6, D)`` or ``(B, f hw, 6, D)``
        and the projected text embeddings. Per-frame timesteps are embedded once per frame and
        repeated over the frame's tokens (identical to embedding every token).
        """
        t = timestep
        if t.ndim == 0:
            t = t.reshape(1)
        if t.shape[0] == 1 and B > 1:
            t = t.expand(B, *t.shape[1:])
        if t.ndim == 1:
            if t.shape[0] != B:
                raise ValueError(f"timestep {tuple(timestep.shape)} does not match batch {B}")
            temb, tproj, enc, _ = self.condition_embedder(t, encoder_hidden_states, None)
            return temb, tproj.unflatten(1, (6, -1)), enc
        if t.ndim != 2 or t.shape[0] != B or t.shape[1] not in (f, f * hw):
            raise ValueError(f"timestep {tuple(timestep.shape)}: expected ({B},), ({B}, {f}) per latent frame "
                             f"or ({B}, {f * hw}) per token")
        seq = t.shape[1]
        temb, tproj, enc, _ = self.condition_embedder(t.flatten(), encoder_hidden_states, None, timestep_seq_len=seq)
        if seq == f and hw > 1:  # per frame -> per token
            temb = temb.repeat_interleave(hw, dim=1)
            tproj = tproj.repeat_interleave(hw, dim=1)
        return temb, tproj.unflatten(2, (6, -1)), enc
