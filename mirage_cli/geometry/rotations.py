"""Rotation maths: quaternions, slerp, rotation angles, snapping to the nearest rotation, checks.

Conventions: rotations are ``(..., 3, 3)`` float64 matrices acting on column vectors; quaternions
are **Hamilton** ``[w, x, y, z]`` (COLMAP's order), unit length. Angles are in degrees unless the
name says otherwise.
"""

from __future__ import annotations

import math

import torch


def quaternion_to_rotation(q: torch.Tensor) -> torch.Tensor:
    """Hamilton quaternions ``(..., 4)`` as ``[w, x, y, z]`` (normalized here) to ``(..., 3, 3)``."""
    q = torch.as_tensor(q, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def _rotation_to_quaternion_one(m: list[list[float]]) -> list[float]:
    """Shepperd's method for one rotation; returns ``[w, x, y, z]`` with ``w >= 0``."""
    d = [1 + m[0][0] + m[1][1] + m[2][2], 1 + m[0][0] - m[1][1] - m[2][2],
         1 - m[0][0] + m[1][1] - m[2][2], 1 - m[0][0] - m[1][1] + m[2][2]]
    k = max(range(4), key=lambda i: d[i])  # the largest diagonal term keeps the division well conditioned
    s = 2 * math.sqrt(max(d[k], 1e-300))
    if k == 0:
        q = [s / 4, (m[2][1] - m[1][2]) / s, (m[0][2] - m[2][0]) / s, (m[1][0] - m[0][1]) / s]
    elif k == 1:
        q = [(m[2][1] - m[1][2]) / s, s / 4, (m[0][1] + m[1][0]) / s, (m[0][2] + m[2][0]) / s]
    elif k == 2:
        q = [(m[0][2] - m[2][0]) / s, (m[0][1] + m[1][0]) / s, s / 4, (m[1][2] + m[2][1]) / s]
    else:
        q = [(m[1][0] - m[0][1]) / s, (m[0][2] + m[2][0]) / s, (m[1][2] + m[2][1]) / s, s / 4]
    return [-v for v in q] if q[0] < 0 else q


def rotation_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotations ``(N, 3, 3)`` (or ``(3, 3)``) to Hamilton quaternions ``[w, x, y, z]``, ``w >= 0``."""
    R = torch.as_tensor(R, dtype=torch.float64)
    flat = R.reshape(-1, 3, 3).tolist()
    q = torch.tensor([_rotation_to_quaternion_one(m) for m in flat], dtype=torch.float64)
    return q.reshape(*R.shape[:-2], 4)


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of unit quaternions ``(N, 4)`` at fractions ``t (N,)`` (shortest arc)."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    t = t[:, None]
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    near = sin < 1e-9  # (almost) the same rotation: fall back to a linear blend
    safe = torch.where(near, torch.ones_like(sin), sin)
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / safe)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def rotation_angle_deg(R: torch.Tensor) -> torch.Tensor:
    """Angle in degrees of rotations ``(..., 3, 3)`` (numerically stable for small angles)."""
    cos = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    v = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    return torch.rad2deg(torch.atan2(v.norm(dim=-1) / 2, cos))


def orthonormalize(R: torch.Tensor) -> torch.Tensor:
    """Nearest proper rotation to ``R (3, 3)`` (polar decomposition through the SVD)."""
    U, _, Vh = torch.linalg.svd(R)
    D = torch.eye(3, dtype=R.dtype)
    D[2, 2] = torch.sign(torch.linalg.det(U @ Vh))
    return U @ D @ Vh


def rotation_x(phi: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` rotations by ``phi (N,)`` radians about the x axis (in OpenCV camera axes, > 0 turns the view up)."""
    c, s, z, o = torch.cos(phi), torch.sin(phi), torch.zeros_like(phi), torch.ones_like(phi)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(-1, 3, 3)


def rotation_y(theta: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` rotations by ``theta (N,)`` radians about the y axis (in OpenCV camera axes, > 0 turns the view right)."""
    c, s, z, o = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta), torch.ones_like(theta)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(-1, 3, 3)


def check_rotation(R: torch.Tensor, tol: float = 1e-3) -> str | None:
    """Return a problem description if ``R (3,3)`` is not a proper rotation, else None.

    Tolerance: ``max |R^T R - I| <= tol`` and ``|det R - 1| <= tol`` (default 1e-3, loose enough for
    poses stored with 6 decimals, tight enough to catch scale/shear).
    """
    R = R.to(torch.float64)
    if not torch.isfinite(R).all():
        return "contains NaN or inf"
    err = (R.T @ R - torch.eye(3, dtype=torch.float64)).abs().max().item()
    if err > tol:
        return f"rotation is not orthonormal (max |R^T R - I| = {err:.2e} > {tol:g})"
    det = torch.linalg.det(R).item()
    if abs(det - 1.0) > tol:
        return f"rotation has det {det:+.4f}, expected +1 (a reflection?)"
    return None
