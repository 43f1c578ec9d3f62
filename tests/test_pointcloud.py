"""The explicit RGB point-cloud baseline: lift, render (same splat as the latent memory), condition, write."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import psnr
from safetensors import safe_open

from mirage_cli.data.scenes import default_camera, make_scene
from mirage_cli.errors import MirageError
from mirage_cli.geometry.cameras import Cameras, backproject, look_at, project
from mirage_cli.memory.latent import LatentMemory
from mirage_cli.memory.pointcloud import PointCloudMemory
from mirage_cli.models.codecs import PixelCodec

W, H = 128, 72


@pytest.fixture(scope="module")
def room():
    scene = make_scene("room")
    cam0 = default_camera(W, H)
    rgb, depth = scene.render(cam0)
    return scene, cam0, rgb[0], depth[0]


def orbit(scene, degrees, n=1):
    """Cameras on the room's object-free ring, looking at its centre (frame 0 = identity)."""
    c = torch.tensor(scene.center, dtype=torch.float64)
    poses = []
    for a in torch.linspace(0, degrees, n) if n > 1 else torch.tensor([float(degrees)]):
        a = math.radians(float(a))
        eye = c + torch.tensor([-3 * math.sin(a), 0.0, -3 * math.cos(a)], dtype=torch.float64)
        poses.append(look_at(eye, c))
    return Cameras.from_fov(torch.stack(poses), 55.0, W, H)


def seen_by(cam_src: Cameras, depth_src, cam: Cameras, depth) -> torch.Tensor:
    """Pixels of ``cam`` whose surface point ``cam_src`` saw (ground truth, 1 % depth tolerance)."""
    pts = backproject(depth.double(), cam.c2w[0], cam.K()[0])
    uv, z = project(pts.reshape(-1, 3), cam_src.w2c[0], cam_src.K()[0])
    u, v = uv[:, 0].floor().long(), uv[:, 1].floor().long()
    inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    d0 = depth_src[v.clamp(0, H - 1), u.clamp(0, W - 1)].double()
    return (inside & ((z - d0).abs() < 0.01 * z)).reshape(H, W)


def lifted(room, policy="new") -> PointCloudMemory:
    _, cam0, rgb, depth = room
    m = PointCloudMemory(write_policy=policy)
    m.lift(rgb, depth, cam0)
    return m


def test_lift_and_render_input_view_is_the_image(room):
    _, cam0, rgb, depth = room
    m = lifted(room)
    assert len(m) == H * W
    # xyz f32 + rgb u8 + the latent memory's bookkeeping: footprint f32 + axes 2x3 f16 + chunk i32
    assert m.nbytes() == len(m) * (12 + 3 + 4 + 12 + 4)
    assert m.nbytes_xyz_rgb() == len(m) * 15 and m.held_bytes() > m.nbytes()
    assert m.points.dtype == torch.float32 and m.colors.dtype == torch.uint8
    out, known, d = m.render(cam0)
    assert known.all()
    assert (out[0] - rgb).abs().max() <= 0.5 / 255 + 1e-6  # uint8 storage
    torch.testing.assert_close(d[0], depth, rtol=1e-4, atol=1e-4)


def test_render_matches_ground_truth_where_the_input_saw(room):
    scene, cam0, _, depth0 = room
    m = lifted(room)
    cam = orbit(scene, 15.0)
    gt, gd = scene.render(cam)
    out, known, _ = m.render(cam)
    mask = seen_by(cam0, depth0, cam, gd[0])
    assert mask.float().mean() > 0.5
    assert (known[0] | ~mask).float().mean() > 0.99  # what the input saw is rendered (no cracks)
    assert psnr(out[0], gt[0], mask & known[0]) > 20.0  # resampling a textured scene at 128x72


def test_render_is_independent_of_point_order(room):
    scene = room[0]
    m = lifted(room)
    perm = torch.randperm(len(m), generator=torch.Generator().manual_seed(3))
    p = m.select(perm)
    cams = orbit(scene, 25.0, 3)
    a, b = m.render(cams), p.render(cams)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_same_splat_as_the_latent_memory(room):
    """With pixel latents at 1x, the latent memory and the point cloud are the same points: same reads."""
    scene, cam0, rgb, depth = room
    pc = lifted(room)
    lm = LatentMemory(3, 1, codec="pixel", feature_dtype=torch.float32)
    lm.lift(rgb, depth, cam0)
    cams = orbit(scene, 20.0, 2)
    out, known, d = pc.render(cams)
    lat, lknown, ld = lm.read(cams)
    assert torch.equal(known, lknown)
    assert torch.equal(d, ld)  # the same winning depth everywhere
    agree = ((out - lat).abs().amax(1) <= 0.5 / 255 + 1e-6) | ~known
    # Frame 0 is the lifting view (one point per pixel). In the turned view, vertically adjacent points
    # of a vertical wall have exactly equal depth where their (grown, overlapping) patches meet; the
    # tie-break hash (of each memory's own content) may then pick the other, equally near, point.
    assert agree[0].all() and agree[1].float().mean() > 0.85
    # ... and only then: wherever the two memories pick different points, those are at exactly the
    # same depth in that camera (the splat's fp32 z), and they are the same points in the same order
    assert torch.equal(pc.points, lm.points)
    ipc, ilm = pc.winners(cams), lm.winners(cams)
    r = cams.w2c.float()
    for t in range(len(cams)):
        differ = ipc[t] != ilm[t]
        assert t > 0 or not differ.any()
        P, Q = pc.points[ipc[t][differ]], lm.points[ilm[t][differ]]
        zp = r[t, 2, 0] * P[:, 0] + r[t, 2, 1] * P[:, 1] + r[t, 2, 2] * P[:, 2] + r[t, 2, 3]
        zq = r[t, 2, 0] * Q[:, 0] + r[t, 2, 1] * Q[:, 1] + r[t, 2, 2] * Q[:, 2] + r[t, 2, 3]
        assert torch.equal(zp, zq)
    assert (ipc[1] != ilm[1]).any()  # there were ties to check


def test_condition_videos_and_encode(room):
    scene = room[0]
    m = lifted(room)
    cams = orbit(scene, 30.0, 3)
    out = m.read(cams, PixelCodec(1))
    known = out["known"]
    assert not known.all() and known.any()
    lat, mask = out["latents"], out["mask_latents"]
    assert lat.shape == (3, 3, H, W) and mask.shape == (3, 3, H, W)
    assert torch.equal(mask[:, 0], (~known).float())
    assert torch.all(lat[:, :, ~known[0]][0] == 0.5)  # holes are grey
    torch.testing.assert_close(lat[:, :, known[0]][0], out["rgb"][0][:, known[0]])


def test_write_new_adds_only_revealed_pixels_and_nothing_on_revisit(room):
    scene = room[0]
    m = lifted(room)
    cams = orbit(scene, 40.0, 3)
    gt, gd = scene.render(cams)
    _, known, _ = m.render(cams)
    added = m.write(gt, gd, cams, known, chunk=1)
    assert 0 < added <= int((~known).sum())
    assert set(m.chunk.unique().tolist()) == {0, 1}
    n = len(m)
    assert m.write(gt, gd, cams, None, chunk=2) < 0.01 * n  # revisiting the same views: (almost) nothing new
    # the written content is read back where it was revealed
    out, k2, _ = m.render(cams[2])
    assert k2.float().mean() > 0.99
    assert psnr(out[0], gt[2], k2[0]) > 20.0


def test_write_append_adds_every_pixel(room):
    scene = room[0]
    m = lifted(room, "append")
    cams = orbit(scene, 10.0, 2)
    gt, gd = scene.render(cams)
    n = len(m)
    assert m.write(gt, gd, cams, None, chunk=1) == 2 * H * W
    assert len(m) == n + 2 * H * W


def test_write_replace_and_average(room):
    scene, cam0, rgb, depth = room
    rep = lifted(room, "replace")
    n = len(rep)
    added = rep.write(rgb[None], depth[None], cam0, None, chunk=1)
    assert added == H * W and len(rep) <= n  # the winners were replaced, not duplicated
    assert (rep.chunk == 1).sum() == H * W
    avg = lifted(room, "average")
    white = torch.ones(1, 3, H, W)
    assert avg.write(white, depth[None], cam0, None, chunk=1) == 0
    out, _, _ = avg.render(cam0)
    torch.testing.assert_close(out[0], (rgb + 1) / 2, atol=1.5 / 255, rtol=0)


@pytest.mark.parametrize("policy", ["new", "average", "replace"])
def test_write_policies_are_the_latent_memorys(room, policy):
    """Pixel latents at 1x: both memories run the same policy code, so they add the same cells."""
    scene, cam0, rgb, depth = room
    pc = lifted(room, policy)
    lm = LatentMemory(3, 1, codec="pixel", feature_dtype=torch.float32, write_policy=policy)
    lm.lift(rgb, depth, cam0)
    cams = orbit(scene, 30.0, 2)
    gt, gd = scene.render(cams)
    assert pc.write(gt, gd, cams, None, chunk=1) == lm.write(gt, gd, cams, None, chunk=1) > 0
    if policy != "replace":  # replace removes z-buffer winners, whose depth ties each memory breaks by its own hash
        assert torch.equal(pc.points, lm.points) and torch.equal(pc.chunk, lm.chunk)


def test_errors_and_save(room, tmp_path):
    scene, cam0, rgb, depth = room
    with pytest.raises(MirageError):
        PointCloudMemory(write_policy="sometimes")
    m = PointCloudMemory()
    with pytest.raises(MirageError, match="shape"):
        m.lift(rgb[:, :10], depth, cam0)
    with pytest.raises(MirageError, match="one camera"):
        m.lift(rgb, depth, orbit(scene, 10.0, 2))
    m.lift(rgb, depth, cam0)
    m.save(tmp_path / "pc.safetensors")
    with safe_open(str(tmp_path / "pc.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "mirage.pointcloud-memory"
        assert f.get_tensor("colors").dtype == torch.uint8
        assert f.get_tensor("points").shape == (H * W, 3)
    c = m.clone()
    c.lift(rgb, depth, cam0, chunk=5)
    assert len(c) == 2 * len(m)
