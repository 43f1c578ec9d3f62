import math

import torch

from mirage_cli.geometry.cameras import Cameras, backproject, look_at, pixel_centers, project, rigid_inverse


def _random_pose(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(4, generator=g, dtype=torch.float64)
    q = q / q.norm()
    w, x, y, z = q
    R = torch.tensor([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = R
    T[:3, 3] = torch.randn(3, generator=g, dtype=torch.float64)
    return T


def test_project_backproject_roundtrip():
    cams = Cameras.from_fov(_random_pose(0), 50.0, 64, 48)
    depth = 1 + torch.rand(48, 64, dtype=torch.float64)
    K = cams.K()[0]
    pts = backproject(depth, cams.c2w[0], K)
    uv, z = project(pts.reshape(-1, 3), cams.w2c[0], K)
    assert torch.allclose(z, depth.reshape(-1), atol=1e-9)
    assert torch.allclose(uv, pixel_centers(48, 64).reshape(-1, 2), atol=1e-9)


def test_latent_grid_intrinsics_scale_without_half_pixel_shift():
    cams = Cameras.from_fov(torch.eye(4), 60.0, 832, 480)
    K_px, K_lat = cams.K()[0], cams.K(104, 60)[0]
    assert math.isclose(K_lat[0, 0].item(), K_px[0, 0].item() / 8)
    assert math.isclose(K_lat[0, 2].item(), 52.0) and math.isclose(K_px[0, 2].item(), 416.0)
    # The same 3D point lands in latent cell = pixel // 8.
    p = torch.tensor([[0.31, -0.2, 2.0]], dtype=torch.float64)
    uv_px, _ = project(p, cams.w2c[0], K_px)
    uv_lat, _ = project(p, cams.w2c[0], K_lat)
    assert torch.allclose(uv_px / 8, uv_lat)


def test_fov_and_square_pixels():
    cams = Cameras.from_fov(torch.eye(4), 45.0, 832, 480)
    assert math.isclose(cams.fov_y_deg[0].item(), 45.0)
    K = cams.K()[0]
    assert math.isclose(K[0, 0].item(), K[1, 1].item())


def test_relative_to_first_and_inverse():
    c2w = torch.stack([_random_pose(i) for i in range(3)])
    cams = Cameras(c2w, torch.tensor([0.8, 1.2, 0.5, 0.5]), 64, 48).relative_to_first()
    assert torch.allclose(cams.c2w[0], torch.eye(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(rigid_inverse(c2w) @ c2w, torch.eye(4, dtype=torch.float64).expand(3, 4, 4), atol=1e-12)


def test_look_at_points_forward_and_keeps_target_centred():
    T = look_at([1.0, -0.5, -2.0], [0.0, 0.0, 3.0])
    cams = Cameras.from_fov(T, 50.0, 64, 64)
    uv, z = project(torch.tensor([[0.0, 0.0, 3.0]], dtype=torch.float64), cams.w2c[0], cams.K()[0])
    assert z.item() > 0
    assert torch.allclose(uv, torch.tensor([[32.0, 32.0]], dtype=torch.float64), atol=1e-9)
    assert math.isclose(torch.linalg.det(T[:3, :3]).item(), 1.0, rel_tol=1e-9)
