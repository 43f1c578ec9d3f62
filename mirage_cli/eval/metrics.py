"""Reconstruction metrics: generated frames against true frames, per region, per frame, per clip.

Library per metric (none is hand-written):

- PSNR and SSIM: ``torchmetrics.functional.image`` (``data_range`` 1, frames as float in [0, 1]).
  A region's PSNR is torchmetrics' PSNR of the region's pixel values; its SSIM is the mean of
  torchmetrics' full SSIM map (11x11 Gaussian window, computed on the whole frame) over the region.
  PSNR of identical pixels is infinite; it is reported as :data:`PSNR_CAP` per frame and left out
  of every mean (a capped value would dominate it): ``capped_frames`` counts those frames instead.
- LPIPS: the ``lpips`` package (AlexNet), only when the package, its linear-layer weights and the
  torchvision AlexNet weights are all on this machine; nothing is downloaded. Otherwise the LPIPS
  fields are absent and :func:`load_lpips` says why.

Regions (masks ``(H, W)`` bool): ``all`` pixels; ``memory``: pixels whose surface frame 0 saw (the
known mask of the memory holding only frame 0's lift, read along the cameras); revisits are whole
frames whose camera returns near an earlier camera after leaving it (:func:`revisits`).
Frame 0 is the input and is left out of every clip mean.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

from ..geometry.cameras import Cameras, backproject, project

PSNR_CAP = 100.0
"""dB reported for identical pixels (JSON has no infinity)."""
FOLLOW_DEPTH_TOL = 0.01
"""Relative z-depth agreement for a frame-t pixel to count as frame 0's surface (occlusion test)."""
REVISIT_NEAR = (0.05, 5.0)
"""A camera is near an earlier one within 0.05 reference depths and 5 degrees of viewing direction..."""
REVISIT_AWAY = (0.25, 15.0)
"""...after some camera in between was at least 0.25 reference depths or 15 degrees away from it."""
REGIONS = ("all", "memory")
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Student-t 0.975 quantiles for 1..30 degrees of freedom (1.96 beyond): the 95 % interval over clips."""


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float | None:
    """torchmetrics PSNR (dB, data range 1) of ``(3, H, W)`` frames on ``mask`` ``(H, W)``; None
    for an empty mask, :data:`PSNR_CAP` for identical pixels."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    if mask is not None:
        if not bool(mask.any()):
            return None
        pred, target = pred[:, mask], target[:, mask]
    value = float(peak_signal_noise_ratio(pred.double(), target.double(), data_range=1.0))
    return min(value, PSNR_CAP)


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """torchmetrics' full SSIM map of ``(3, H, W)`` frames, channels averaged: ``(H, W)``.

    Computed in float32: the frames come from uint8, so float64 adds no accuracy, only time."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _, full = structural_similarity_index_measure(pred[None].float(), target[None].float(), data_range=1.0,
                                                 return_full_image=True)
    return full[0].mean(0)


def ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
         smap: torch.Tensor | None = None) -> float | None:
    """SSIM of ``(3, H, W)`` frames: the mean of :func:`ssim_map` (or the given ``smap``) over
    ``mask`` ``(H, W)`` (all pixels when None); None for an empty mask."""
    if mask is not None and not bool(mask.any()):
        return None
    smap = ssim_map(pred, target) if smap is None else smap
    return float(smap.mean() if mask is None else smap[mask].mean())


# ------------------------------------------------------------------------------------ LPIPS
def lpips_missing() -> str | None:
    """Why LPIPS cannot run offline here (None: it can; see :func:`load_lpips`), without loading it."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return "LPIPS not computed: the lpips package is not installed (pip install lpips, then its weights)"
    lin = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
    if not lin.exists():
        return f"LPIPS not computed: {lin} is missing"
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if not backbone.exists():
        return f"LPIPS not computed: torchvision's AlexNet weights are not cached ({backbone})"
    return None


def load_lpips():
    """``(model, None)`` when LPIPS can run offline, else ``(None, why)``.

    The model is ``lpips.LPIPS(net="alex", spatial=True)``: a per-pixel map, so regions work as for
    SSIM. It needs the package's own ``weights/v0.1/alex.pth`` and torchvision's AlexNet weights in
    the torch hub cache; without them this returns the reason rather than downloading.
    """
    why = lpips_missing()
    if why is not None:
        return None, why
    import lpips

    model = lpips.LPIPS(net="alex", spatial=True, verbose=False).eval()
    return model, None


def lpips_map(model, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LPIPS map ``(H, W)`` of ``(3, H, W)`` frames in [0, 1] (the package wants [-1, 1])."""
    with torch.no_grad():
        return model(pred[None].float() * 2 - 1, target[None].float() * 2 - 1)[0, 0]


# ------------------------------------------------------------------------------------ geometry
def revisits(cams: Cameras, unit: float) -> list[int]:
    """For each frame, the earliest earlier frame it revisits, else -1.

    Frame t revisits s < t when their cameras are near (:data:`REVISIT_NEAR`, distance in units of
    ``unit``, e.g. the reference depth) and some frame between them was away from t's camera
    (:data:`REVISIT_AWAY`) -- the camera left and came back, so t sees again what s saw.
    """
    c = cams.centers
    fwd = cams.c2w[:, :3, 2]
    dist = torch.cdist(c, c) / max(unit, 1e-9)
    ang = torch.rad2deg(torch.arccos((fwd @ fwd.T).clamp(-1, 1)))
    near = (dist <= REVISIT_NEAR[0]) & (ang <= REVISIT_NEAR[1])
    away = (dist >= REVISIT_AWAY[0]) | (ang >= REVISIT_AWAY[1])
    out = []
    for t in range(len(cams)):
        hit = -1
        for s in range(t):
            if near[t, s] and bool(away[t, s + 1:t].any()):
                hit = s
                break
        out.append(hit)
    return out


def follow_masks(cams: Cameras, depths: torch.Tensor, frame0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame 0 reprojected into every frame with the true cameras and depths.

    A pixel of frame t is frame 0's surface when its true depth, back-projected and projected into
    frame 0, lands inside frame 0 where frame 0's depth agrees within :data:`FOLLOW_DEPTH_TOL`.

    Args:
        cams: ``(N)`` cameras; depths: ``(N, H, W)`` true z-depth; frame0: ``(3, H, W)`` true frame 0.
    Returns:
        ``(reprojected (N, 3, H, W) frame 0's colour there (nearest pixel), mask (N, H, W) bool)``.
    """
    N, H, W = depths.shape
    K = cams.K()
    w2c0 = cams.w2c[0]
    d0 = depths[0].double()
    reproj = torch.zeros(N, 3, H, W, dtype=frame0.dtype)
    masks = torch.zeros(N, H, W, dtype=torch.bool)
    for t in range(N):
        pts = backproject(depths[t].double(), cams.c2w[t], K[t]).reshape(-1, 3)
        uv, z = project(pts, w2c0, K[0])
        iu, iv = uv[:, 0].floor().long(), uv[:, 1].floor().long()
        inside = (z > 0) & (iu >= 0) & (iu < W) & (iv >= 0) & (iv < H) & (depths[t].reshape(-1) > 0)
        iu, iv = iu.clamp(0, W - 1), iv.clamp(0, H - 1)
        seen = inside & ((d0[iv, iu] - z).abs() <= FOLLOW_DEPTH_TOL * z.abs())
        reproj[t] = frame0[:, iv, iu].reshape(3, H, W)
        masks[t] = seen.reshape(H, W)
    return reproj, masks


# ------------------------------------------------------------------------------------ scoring
def to_float(frames_u8: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float64 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames_u8)).permute(0, 3, 1, 2).double() / 255.0


def score_frames(generated: np.ndarray, truth: np.ndarray, memory_mask: torch.Tensor, known: torch.Tensor | None = None,
                 read_rgb: torch.Tensor | None = None, revisit: list[int] | None = None,
                 follow: tuple[torch.Tensor, torch.Tensor] | None = None, lpips_model=None) -> dict[str, list]:
    """Per-frame metrics of one clip.

    Args:
        generated, truth: ``(N, H, W, 3)`` uint8.
        memory_mask: ``(N, H, W)`` bool, frame 0's surface (the memory region).
        known: ``(N, H, W)`` bool, known in the final memory; read_rgb: ``(N, 3, H, W)`` that
            memory's read, decoded (both optional: the read-fidelity fields).
        revisit: :func:`revisits` of the cameras. follow: :func:`follow_masks` (optional).
        lpips_model: from :func:`load_lpips`, or None (no LPIPS fields).
    Returns:
        ``{field: [value per frame]}``; a value is None where its region is empty.
    """
    gen, tru = to_float(generated), to_float(truth)
    N = len(gen)
    out: dict[str, list] = {"frame": list(range(N))}

    def put(key, value):
        out.setdefault(key, []).append(None if value is None else round(float(value), 6))

    for t in range(N):
        masks = {"all": None, "memory": memory_mask[t]}
        smap = ssim_map(gen[t], tru[t])  # one map per frame, averaged over each region
        lm = lpips_map(lpips_model, gen[t], tru[t]) if lpips_model is not None else None
        for region, m in masks.items():
            put(f"psnr_{region}", psnr(gen[t], tru[t], m))
            put(f"ssim_{region}", ssim(gen[t], tru[t], m, smap))
            if lm is not None:
                empty = m is not None and not bool(m.any())
                put(f"lpips_{region}", None if empty else (lm.mean() if m is None else lm[m].mean()))
        put("memory_fraction", memory_mask[t].double().mean())
        if known is not None:
            put("known_fraction", known[t].double().mean())
            put("read_psnr_known", psnr(read_rgb[t].double(), tru[t], known[t]) if read_rgb is not None else None)
        if follow is not None:
            reproj, fm = follow
            put("follow_psnr", psnr(gen[t], reproj[t].double(), fm[t]) if t > 0 else None)
            put("follow_psnr_truth", psnr(tru[t], reproj[t].double(), fm[t]) if t > 0 else None)
    out["revisit_of"] = list(revisit) if revisit is not None else [-1] * N
    return out


def clip_means(per_frame: dict[str, list]) -> dict[str, float | None]:
    """Mean of every per-frame field over frames 1.. (frame 0 is the input), None values skipped;
    plus ``*_revisit``: the all-pixel metrics over revisiting frames only (None without revisits).

    A PSNR at :data:`PSNR_CAP` (identical pixels: infinite) is left out of its mean -- one such
    frame would lift a clip's ~23 dB to ~30 -- so a PSNR mean is over the frames that differ (None
    when none does); ``capped_frames`` counts the frames 1.. whose ``psnr_all`` is capped."""
    rev = per_frame["revisit_of"]
    out: dict[str, float | None] = {}
    for key, vals in per_frame.items():
        if key in ("frame", "revisit_of"):
            continue
        out[key] = _mean(vals[1:], key)
        if key.endswith("_all"):
            out[key.replace("_all", "_revisit")] = _mean([v for v, r in zip(vals, rev) if r >= 0], key)
    out["revisit_frames"] = float(sum(r >= 0 for r in rev))
    if "psnr_all" in per_frame:
        out["capped_frames"] = float(sum(v is not None and v >= PSNR_CAP for v in per_frame["psnr_all"][1:]))
    return out


def _mean(vals: list, key: str = "") -> float | None:
    """Mean of the non-None values (PSNR fields: of those below the cap)."""
    vals = [v for v in vals if v is not None and not ("psnr" in key and v >= PSNR_CAP)]
    return round(float(np.mean(vals)), 6) if vals else None


def bounds(key: str) -> tuple[float, float]:
    """The range a field's values can take (its 95 % interval is clipped to it): fractions and
    SSIM are bounded, a PSNR mean is below the cap, counts and LPIPS are not negative."""
    if key.endswith("_fraction") or key.endswith("_changed"):
        return 0.0, 1.0
    if key.startswith("ssim"):
        return -1.0, 1.0
    if "psnr" in key:
        return -math.inf, PSNR_CAP
    if key.startswith("lpips") or key.endswith("_frames"):
        return 0.0, math.inf
    return -math.inf, math.inf


def aggregate(per_clip: list[dict[str, float | None]]) -> dict[str, dict]:
    """Over clips: ``{field: {mean, ci95: [lo, hi] or None (fewer than 2 clips), sd, n}}``; the
    interval is clipped to the field's :func:`bounds` (a fraction's never leaves [0, 1]). A PSNR at
    :data:`PSNR_CAP` (a clip's loop PSNR of identical frames; a clip's PSNR means never are) is left
    out, as in :func:`clip_means`."""
    keys = []
    for c in per_clip:
        keys += [k for k in c if k not in keys]
    out = {}
    for k in keys:
        vals = [v for c in per_clip if (v := c.get(k)) is not None and not ("psnr" in k and v >= PSNR_CAP)]
        if not vals:
            continue
        out[k] = interval(vals, bounds(k))
    return out


def interval(vals: list[float], limits: tuple[float, float] = (-math.inf, math.inf)) -> dict:
    """Mean, sample standard deviation and the Student-t 95 % interval of the mean, clipped to
    ``limits`` (the t interval is symmetric and can pass a bound the values cannot)."""
    n = len(vals)
    mean = float(np.mean(vals))
    if n < 2:
        return {"mean": round(mean, 6), "sd": None, "ci95": None, "n": n}
    sd = float(np.std(vals, ddof=1))
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * sd / math.sqrt(n)
    lo, hi = max(mean - half, limits[0]), min(mean + half, limits[1])
    return {"mean": round(mean, 6), "sd": round(sd, 6), "ci95": [round(lo, 6), round(hi, 6)], "n": n}
