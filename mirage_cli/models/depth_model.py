"""Monocular depth for real photos, through transformers (Depth Anything V2 style ``depth-estimation``).

:func:`load_depth_model` resolves ``NAME | REPO_ID | DIR`` like every model (registry default:
``depth-anything-v2-small``) and returns ``None`` when the weights are not available locally and
the caller did not require them, so ``generate`` can fall back to a depth prior without any network.

:meth:`DepthModel.predict` returns z-depth ``(H, W)`` float32 at the input resolution and its kind:

- ``"metric"`` -- models whose config says ``depth_estimation_type = "metric"`` (the
  ``*-Metric-Indoor/Outdoor-*`` checkpoints) predict depth in metres; it is used as it is.
- ``"relative"`` -- the default Depth Anything checkpoints predict *relative inverse depth*
  (disparity, known up to scale and shift). It is converted with one fixed rule: with ``d`` the
  predicted disparity and ``m`` the median of its positive values,
  ``depth = m / d``, clamped to ``[1/100, 100]`` (``d <= 0``, e.g. sky, -> 100). The shift is taken
  as 0, so the result is depth in units of the scene's median depth (median = 1), which is exactly
  the unit trajectory presets use. New content of later chunks is aligned to the rendered depth
  by a robust scale + shift fit anyway (``depth.fit_scale_shift``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..errors import MirageError
from .registry import dtype_kwargs, hf_progress, resolve_device, resolve_model, weights_kind
from .wan_vae import first_line

DEFAULT_DEPTH_MODEL = "depth-anything-v2-small"
RELATIVE_DEPTH_RANGE = 100.0  # relative depth is clamped to [1/R, R] x median


class DepthModel:
    """A transformers depth-estimation model with its image processor.

    Attributes:
        kind: ``"metric"`` or ``"relative"`` (see the module docstring).
        name: what was loaded (the reference given).
        weights: ``"real"`` or ``"random"`` (tiny kit).
    """

    def __init__(self, model, processor, device: torch.device, kind: str, name: str = "", weights: str = "real"):
        self.model = model.eval().requires_grad_(False).to(device)
        self.processor = processor
        self.device = torch.device(device)
        if kind not in ("metric", "relative"):
            raise ValueError(f"kind must be metric or relative, got {kind}")
        self.kind = kind
        self.name = name
        self.weights = weights

    def predict(self, image: torch.Tensor) -> tuple[torch.Tensor, str]:
        """``(3, H, W)`` float in [0, 1] -> (z-depth ``(H, W)`` float32 on the image's device, kind)."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise MirageError(f"depth model: expected an image (3, H, W), got {tuple(image.shape)}")
        H, W = image.shape[-2:]
        arr = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
        inputs = self.processor(images=arr, do_rescale=False, return_tensors="pt")
        pix = inputs["pixel_values"].to(self.device, next(self.model.parameters()).dtype)
        with torch.no_grad():
            pred = self.model(pixel_values=pix).predicted_depth  # (1, h', w')
        pred = F.interpolate(pred[:, None].float(), size=(H, W), mode="bilinear", align_corners=False)[0, 0]
        if self.kind == "metric":
            depth = pred.clamp_min(1e-3)
        else:
            depth = disparity_to_depth(pred)
        return depth.to(image.device, torch.float32), self.kind

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "class": type(self.model).__name__, "weights": self.weights,
                "device": str(self.device)}


def disparity_to_depth(disp: torch.Tensor, depth_range: float = RELATIVE_DEPTH_RANGE) -> torch.Tensor:
    """Relative inverse depth -> depth in units of the median depth: ``median(d > 0) / d`` clamped to ``[1/R, R]``."""
    d = disp.float()
    pos = d[d > 0]
    if pos.numel() == 0:
        return torch.full_like(d, depth_range)
    m = pos.median()
    depth = torch.where(d > 0, m / d.clamp_min(torch.finfo(torch.float32).tiny), torch.full_like(d, depth_range))
    return depth.clamp(1.0 / depth_range, depth_range)


def load_depth_model(ref: str | os.PathLike = DEFAULT_DEPTH_MODEL, device: str | torch.device = "cpu",
                     required: bool = False, *, download: bool = False, progress: bool = True) -> DepthModel | None:
    """Load a depth-estimation model (``NAME | REPO_ID | DIR``) through transformers' Auto classes.

    Returns None when the model is not available locally and ``required`` is False; raises
    :class:`MirageError` when it is required and missing (the message says how to fetch it).
    Runs in fp32 (the small model is ~25 M parameters; one image is cheap on any device).
    transformers' own "Loading weights" bar stays off whatever ``progress`` says: the load takes
    about a second and its bar only broke into mirage's own lines (``progress`` is kept for the
    loaders' common signature).
    """
    try:
        root = resolve_model(ref, None, download=download)
    except MirageError:
        if required:
            raise
        return None
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    try:
        with hf_progress(False):
            processor = AutoImageProcessor.from_pretrained(root)
            model = AutoModelForDepthEstimation.from_pretrained(root, use_safetensors=True,
                                                                **dtype_kwargs("transformers", torch.float32))
    except Exception as e:
        raise MirageError(f"could not load the depth model from {root}: {first_line(e)}") from e
    kind = getattr(model.config, "depth_estimation_type", None) or "relative"
    return DepthModel(model, processor, dev, kind, name=os.fspath(ref), weights=weights_kind(root))
