"""Camera container and the projection conventions every other module relies on.

Conventions (every module and file reader follows them):

- Axes are **OpenCV**: x right, y down, z forward. Poses are stored **camera-to-world** ``c2w``.
  Readers convert on the way in: an OpenGL/Blender ``c2w`` is right-multiplied by
  ``diag(1, -1, -1, 1)`` (:data:`OPENGL_TO_OPENCV`), a world-to-camera pose is inverted.
- Intrinsics are stored **normalized**: ``[fx/W, fy/H, cx/W, cy/H]``. They are turned into
  pixel or latent-grid intrinsics only at use, by multiplying with the grid's width/height.
- Continuous image coordinates: pixel (row ``i``, column ``j``) covers ``[j, j+1) x [i, i+1)``,
  so its centre is at ``(j + 0.5, i + 0.5)`` and ``cx = W/2`` is the centre of the image. Scaling
  to a coarser grid (latent cells) is a plain multiplication, with no half-pixel shift.
- Depth is z-depth (distance along the optical axis), never ray length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import torch

from ..errors import MirageError
from .rotations import check_rotation

FloatOrTensor = TypeVar("FloatOrTensor", float, torch.Tensor)

OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
"""Right-multiply an OpenGL/Blender c2w by this to get an OpenCV c2w (and vice versa): flips camera y and z."""


@dataclass
class Cameras:
    """A batch of N pinhole cameras sharing one image size.

    Attributes:
        c2w: ``(N, 4, 4)`` float64 camera-to-world poses, OpenCV axes.
        intrinsics: ``(N, 4)`` float64 normalized intrinsics ``[fx/W, fy/H, cx/W, cy/H]``.
        width: image width in pixels the normalized intrinsics refer to (aspect ratio source).
        height: image height in pixels.
    """

    c2w: torch.Tensor
    intrinsics: torch.Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        self.c2w = torch.as_tensor(self.c2w, dtype=torch.float64)
        self.intrinsics = torch.as_tensor(self.intrinsics, dtype=torch.float64)
        if self.c2w.ndim == 2:
            self.c2w = self.c2w[None]
        if self.intrinsics.ndim == 1:
            self.intrinsics = self.intrinsics[None].expand(self.c2w.shape[0], 4).clone()
        if self.c2w.shape[1:] != (4, 4) or self.intrinsics.shape != (self.c2w.shape[0], 4):
            raise ValueError(
                f"Cameras: c2w {tuple(self.c2w.shape)} / intrinsics {tuple(self.intrinsics.shape)} "
                "must be (N,4,4) / (N,4)"
            )
        self.width, self.height = int(self.width), int(self.height)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_fov(
        cls, c2w: torch.Tensor, fov_y_deg: float | torch.Tensor, width: int, height: int
    ) -> Cameras:
        """Cameras with a vertical field of view (degrees), square pixels and a centred principal point.

        Args:
            c2w: ``(N, 4, 4)`` or ``(4, 4)`` poses.
            fov_y_deg: scalar or ``(N,)`` vertical field of view in degrees.
        """
        c2w = torch.as_tensor(c2w, dtype=torch.float64)
        if c2w.ndim == 2:
            c2w = c2w[None]
        fov = torch.as_tensor(fov_y_deg, dtype=torch.float64).expand(c2w.shape[0])
        fy = focal_from_fov(fov)  # fy / H
        fx = fy * height / width  # square pixels: fx_px == fy_px
        half = torch.full_like(fx, 0.5)
        return cls(c2w, torch.stack([fx, fy, half, half], dim=-1), width, height)

    # ----------------------------------------------------------------------------- container
    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx) -> Cameras:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        return Cameras(self.c2w[idx], self.intrinsics[idx], self.width, self.height)

    @staticmethod
    def cat(cams: list[Cameras]) -> Cameras:
        """Concatenate camera batches of the same image size."""
        return Cameras(
            torch.cat([c.c2w for c in cams]),
            torch.cat([c.intrinsics for c in cams]),
            cams[0].width,
            cams[0].height,
        )

    def with_size(self, width: int, height: int) -> Cameras:
        """Same cameras rendering at another resolution (normalized intrinsics are unchanged)."""
        return Cameras(self.c2w, self.intrinsics, width, height)

    # ----------------------------------------------------------------------------- derived
    @property
    def w2c(self) -> torch.Tensor:
        """``(N, 4, 4)`` world-to-camera matrices."""
        return rigid_inverse(self.c2w)

    @property
    def centers(self) -> torch.Tensor:
        """``(N, 3)`` camera centres in world coordinates."""
        return self.c2w[:, :3, 3]

    @property
    def fov_y_deg(self) -> torch.Tensor:
        """``(N,)`` vertical field of view in degrees."""
        return fov_from_focal(self.intrinsics[:, 1])

    def K(self, width: int | None = None, height: int | None = None) -> torch.Tensor:
        """``(N, 3, 3)`` intrinsics for a grid of ``width x height`` cells (default: the image).

        For a latent grid of ``w x h`` cells this is ``fx_lat = fx_norm * w`` etc.
        """
        w = self.width if width is None else width
        h = self.height if height is None else height
        fx, fy, cx, cy = self.intrinsics.unbind(-1)
        K = torch.zeros(len(self), 3, 3, dtype=torch.float64)
        K[:, 0, 0], K[:, 1, 1] = fx * w, fy * h
        K[:, 0, 2], K[:, 1, 2] = cx * w, cy * h
        K[:, 2, 2] = 1.0
        return K

    def relative_to_first(self) -> Cameras:
        """Re-express all poses relative to frame 0, so that frame 0 becomes the identity."""
        return Cameras(rigid_inverse(self.c2w[:1]) @ self.c2w, self.intrinsics, self.width, self.height)

    def scaled(self, factor: float) -> Cameras:
        """Scale the translations (world units) by ``factor``."""
        c2w = self.c2w.clone()
        c2w[:, :3, 3] *= factor
        return Cameras(c2w, self.intrinsics, self.width, self.height)


# --------------------------------------------------------------------------------- helpers
def rigid_inverse(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms ``(..., 4, 4)`` (rotation + translation)."""
    R, t = T[..., :3, :3], T[..., :3, 3:]
    out = torch.zeros_like(T)
    out[..., :3, :3] = R.transpose(-1, -2)
    out[..., :3, 3:] = -R.transpose(-1, -2) @ t
    out[..., 3, 3] = 1.0
    return out


def pixel_centers(height: int, width: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """``(H, W, 2)`` continuous ``(u, v)`` coordinates of pixel centres (``j + 0.5, i + 0.5``)."""
    v = torch.arange(height, dtype=dtype, device=device) + 0.5
    u = torch.arange(width, dtype=dtype, device=device) + 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def project(points: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into one or more cameras.

    Args:
        points: ``(P, 3)`` world points.
        w2c: ``(4, 4)`` or ``(N, 4, 4)`` world-to-camera.
        K: ``(3, 3)`` or ``(N, 3, 3)`` intrinsics of the target grid.
    Returns:
        uv: ``(P, 2)`` or ``(N, P, 2)`` continuous grid coordinates (pixel centres at +0.5).
        z: ``(P,)`` or ``(N, P)`` z-depth in the camera (<= 0 means behind).
    """
    single = w2c.ndim == 2
    w2c = w2c[None] if single else w2c
    K = K[None] if K.ndim == 2 else K
    pts = points.to(w2c.dtype)
    cam = pts[None] @ w2c[:, :3, :3].transpose(-1, -2) + w2c[:, None, :3, 3]  # (N, P, 3)
    z = cam[..., 2]
    zs = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    u = K[:, None, 0, 0] * cam[..., 0] / zs + K[:, None, 0, 2]
    v = K[:, None, 1, 1] * cam[..., 1] / zs + K[:, None, 1, 2]
    uv = torch.stack([u, v], dim=-1)
    return (uv[0], z[0]) if single else (uv, z)


def backproject(depth: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, uv: torch.Tensor | None = None) -> torch.Tensor:
    """Lift z-depth to world points.

    Args:
        depth: ``(H, W)`` z-depth on a grid (or ``(P,)`` with ``uv`` given).
        c2w: ``(4, 4)`` camera-to-world.
        K: ``(3, 3)`` intrinsics of that grid.
        uv: optional ``(..., 2)`` continuous coordinates matching ``depth``'s shape; default the
            cell centres of the grid.
    Returns:
        ``(..., 3)`` world points, same leading shape as ``depth``.
    """
    dtype = torch.float64 if depth.dtype == torch.float64 else torch.float32
    if uv is None:
        uv = pixel_centers(depth.shape[0], depth.shape[1], dtype=dtype, device=depth.device)
    uv = uv.to(dtype)
    K = K.to(device=depth.device, dtype=dtype)
    c2w = c2w.to(device=depth.device, dtype=dtype)
    z = depth.to(dtype)
    x = (uv[..., 0] - K[0, 2]) / K[0, 0] * z
    y = (uv[..., 1] - K[1, 2]) / K[1, 1] * z
    cam = torch.stack([x, y, z], dim=-1)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def look_at(eye: torch.Tensor, target: torch.Tensor, up=(0.0, -1.0, 0.0)) -> torch.Tensor:
    """``(4, 4)`` OpenCV c2w at ``eye`` looking at ``target`` (``up`` is world-up; OpenCV y is down)."""
    eye = torch.as_tensor(eye, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64)
    up = torch.as_tensor(up, dtype=torch.float64)
    z = target - eye
    z = z / z.norm()
    x = torch.linalg.cross(-up, z)  # OpenCV x = right = down x forward
    if x.norm() < 1e-9:
        x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def focal_from_fov(fov_deg: FloatOrTensor) -> FloatOrTensor:
    """Normalized focal length ``focal / extent`` of a field of view ``fov_deg`` (degrees) along that extent.

    The one fov -> focal conversion of the package: ``0.5 / tan(fov / 2)``. A float gives a float,
    a tensor (any shape) a tensor of the same shape.
    """
    if isinstance(fov_deg, torch.Tensor):
        return 0.5 / torch.tan(torch.deg2rad(fov_deg) / 2)
    return 0.5 / math.tan(math.radians(fov_deg) / 2)


def fov_from_focal(focal_norm: FloatOrTensor) -> FloatOrTensor:
    """Field of view in degrees along an extent of normalized focal length ``focal / extent``.

    The inverse of :func:`focal_from_fov`.
    """
    if isinstance(focal_norm, torch.Tensor):
        return torch.rad2deg(2 * torch.atan(0.5 / focal_norm))
    return math.degrees(2 * math.atan(0.5 / focal_norm))


def validate_cameras(cams: Cameras, source: str = "cameras") -> None:
    """Raise MirageError naming the frame and field of the first invalid camera."""
    for i in range(len(cams)):
        T = cams.c2w[i]
        if not torch.isfinite(T).all():
            raise MirageError(f"{source}: frame {i}: pose contains NaN or inf")
        problem = check_rotation(T[:3, :3])
        if problem:
            raise MirageError(f"{source}: frame {i}: pose {problem}")
        if (T[3] - torch.tensor([0, 0, 0, 1.0], dtype=T.dtype)).abs().max() > 1e-6:
            raise MirageError(f"{source}: frame {i}: pose last row must be [0, 0, 0, 1]")
        k = cams.intrinsics[i]
        if not torch.isfinite(k).all():
            raise MirageError(f"{source}: frame {i}: intrinsics contain NaN or inf")
        if k[0] <= 0 or k[1] <= 0:
            raise MirageError(f"{source}: frame {i}: focal length must be positive (got fx={k[0]:.4g}, fy={k[1]:.4g} normalized)")
