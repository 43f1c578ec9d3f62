"""Trajectory formats: reading by content, conventions, writers, round trips, resampling."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from mirage_cli.errors import MirageError
from mirage_cli.geometry.cameras import OPENGL_TO_OPENCV, Cameras
from mirage_cli.geometry.rotations import quaternion_to_rotation, rotation_angle_deg, rotation_to_quaternion
from mirage_cli.trajectories import (
    FORMATS,
    Trajectory,
    detect_format,
    load_trajectory,
    resample,
    save_trajectory,
    summarize,
)

DATA = Path(__file__).parent / "data" / "traj"


def _T(R, t):
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3] = torch.as_tensor(R, dtype=torch.float64)
    M[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return M


def _rx(deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return [[1, 0, 0], [0, c, -s], [0, s, c]]


def _rz(deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return [[c, -s, 0], [s, c, 0], [0, 0, 1]]


# The physical trajectory every hand-made file in tests/data/traj describes (OpenCV c2w):
# identity; a small translation; a 90-degree turn about y; a generic rotation Rz(30) Rx(-20).
GT = torch.stack([
    _T(torch.eye(3), [0, 0, 0]),
    _T(torch.eye(3), [0.5, -0.25, 0.1]),
    _T([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], [1, 0, 1]),
    _T(torch.tensor(_rz(30)) @ torch.tensor(_rx(-20)), [0.3, 0.2, -0.4]),
])
# 640x480 pixels, fx = fy = 500 px, principal point at the centre.
GT_K = torch.tensor([500 / 640, 500 / 480, 0.5, 0.5], dtype=torch.float64)

FIXTURES = [  # (file, detected format, fov_only)
    ("native_opencv.json", "native", False),
    ("native_opengl_w2c.json", "native", True),
    ("camera_path.json", "nerfstudio", True),
    ("re10k.txt", "realestate10k", False),
    ("transforms.json", "nerf", False),
    ("transforms_angle.json", "nerf", False),
    ("colmap/images.txt", "colmap", False),
    ("camera_data.json", "worldscore", False),
]


@pytest.mark.parametrize("name,fmt,fov_only", FIXTURES)
def test_every_format_gives_the_same_opencv_c2w(name, fmt, fov_only):
    traj = load_trajectory(DATA / name)
    assert traj.format == fmt and detect_format(DATA / name) == fmt
    assert traj.fov_only == fov_only and traj.scale == "absolute"
    assert torch.allclose(traj.cameras.c2w, GT, atol=1e-6), (traj.cameras.c2w - GT).abs().max()
    K = traj.cameras_for(640, 480).intrinsics
    assert torch.allclose(K, GT_K.expand(4, 4), atol=1e-6)


def test_format_is_detected_by_content_not_name(tmp_path):
    for src, fake in [("re10k.txt", "trajectory.json"), ("camera_path.json", "images.txt"),
                      ("transforms.json", "camera_path.json"), ("camera_data.json", "cameras.txt")]:
        dst = tmp_path / fake
        shutil.copy(DATA / src, dst)
        assert torch.allclose(load_trajectory(dst).cameras.c2w, GT, atol=1e-6)
        assert detect_format(dst) == detect_format(DATA / src)
        dst.unlink()


def test_frame_rates():
    assert load_trajectory(DATA / "native_opencv.json").fps == 16
    assert load_trajectory(DATA / "camera_path.json").fps == 16  # 4 frames / 0.25 seconds
    assert load_trajectory(DATA / "re10k.txt").fps == 16  # timestamps 62500 us apart
    assert load_trajectory(DATA / "colmap/images.txt").fps == 16  # default


def test_opengl_means_flipped_y_and_z(tmp_path):
    """A nerfstudio camera with identity c2w looks down -z in OpenCV world coordinates."""
    doc = {"camera_path": [{"camera_to_world": torch.eye(4).reshape(-1).tolist(), "fov": 50}],
           "render_width": 64, "render_height": 48, "fps": 8}
    path = tmp_path / "gl.json"
    path.write_text(json.dumps(doc))
    c2w = load_trajectory(path).cameras.c2w[0]
    assert torch.allclose(c2w[:3, 2], torch.tensor([0, 0, -1.0], dtype=torch.float64))  # forward
    assert torch.allclose(c2w[:3, 1], torch.tensor([0, -1.0, 0], dtype=torch.float64))  # image down


def test_colmap_sorted_by_name_and_directory_input():
    traj = load_trajectory(DATA / "colmap")  # a model folder holding images.txt works too
    assert traj.format == "colmap"
    assert torch.allclose(traj.cameras.c2w, GT, atol=1e-6)  # img_1, img_2, img_10, img_11 (natural order)


def test_cameras_for_is_relative_to_frame0_and_adapts_fov_only(tmp_path):
    native = load_trajectory(DATA / "native_opencv.json")
    shifted = Trajectory(Cameras(GT[2] @ GT, native.cameras.intrinsics, 640, 480), 16, "native")
    cams = shifted.cameras_for(640, 480)
    assert torch.allclose(cams.c2w, GT, atol=1e-9)  # frame 0 becomes the identity
    wide = load_trajectory(DATA / "native_opengl_w2c.json").cameras_for(832, 480)
    K = wide.K()[0]
    assert math.isclose(K[0, 0], K[1, 1]) and math.isclose(wide.fov_y_deg[0], 2 * math.degrees(math.atan(240 / 500)))
    assert torch.allclose(native.cameras_for(832, 480, "stretch").intrinsics, native.cameras.intrinsics)
    K = native.cameras_for(832, 480).K()[0]  # crop (default): 640x480 resized to cover 832x480 (x1.3), square pixels
    assert math.isclose(K[0, 0], 650) and math.isclose(K[1, 1], 650) and math.isclose(K[0, 2], 416)


def test_worldscore_and_nerf_without_image_size_assume_square(tmp_path):
    doc = json.loads((DATA / "camera_data.json").read_text())
    del doc["width"], doc["height"]
    (tmp_path / "ws.json").write_text(json.dumps(doc))
    ws = load_trajectory(tmp_path / "ws.json")
    assert ws.fov_only and math.isclose(ws.cameras.fov_y_deg[0], math.degrees(2 * math.atan(256 / 500)))
    nerf = {"camera_angle_x": 0.8, "frames": [{"transform_matrix": torch.eye(4).tolist()}]}
    (tmp_path / "t.json").write_text(json.dumps(nerf))
    t = load_trajectory(tmp_path / "t.json")
    assert t.fov_only and math.isclose(t.cameras.fov_y_deg[0], math.degrees(0.8))


def _general_traj(fov_only=False, off_centre=False):
    """Native fixture, optionally with an off-centre principal point and a zoom."""
    t = load_trajectory(DATA / "native_opencv.json")
    k = t.cameras.intrinsics.clone()
    k[:, :2] *= torch.tensor([1.0, 1.1, 1.2, 1.3], dtype=torch.float64)[:, None]  # zoom
    if off_centre:
        k[:, 2:] = torch.tensor([0.45, 0.55], dtype=torch.float64)
    cams = Cameras.from_fov(t.cameras.c2w, Cameras(t.cameras.c2w, k, 640, 480).fov_y_deg, 640, 480) if fov_only \
        else Cameras(t.cameras.c2w, k, 640, 480)
    return Trajectory(cams, 12.5, "native", "absolute", "general", fov_only)


ROUND_TRIPS = [  # (format, fov_only, off-centre principal point, keeps fps)
    ("native", False, True, True), ("native", True, False, True),
    ("nerfstudio", True, False, True), ("realestate10k", False, True, True),
    ("nerf", False, True, True), ("colmap", False, True, False),
]


@pytest.mark.parametrize("fmt,fov_only,off_centre,keeps_fps", ROUND_TRIPS)
def test_native_to_foreign_to_native_round_trip(tmp_path, fmt, fov_only, off_centre, keeps_fps):
    traj = _general_traj(fov_only, off_centre)
    save_trajectory(traj, tmp_path / "a.json")
    native = load_trajectory(tmp_path / "a.json")
    out = tmp_path / ("colmap" if fmt == "colmap" else "b.out")
    save_trajectory(native, out, fmt)
    back = load_trajectory(out)
    assert back.format == fmt
    save_trajectory(back, tmp_path / "c.json")
    again = load_trajectory(tmp_path / "c.json")
    for t in (native, back, again):
        assert torch.allclose(t.cameras.c2w, traj.cameras.c2w, atol=1e-6)
        assert torch.allclose(t.cameras_for(640, 480).intrinsics, traj.cameras.intrinsics, atol=1e-6)
    if keeps_fps:
        assert math.isclose(again.fps, 12.5, rel_tol=1e-6)


def test_worldscore_round_trip_and_its_limits(tmp_path):
    traj = load_trajectory(DATA / "native_opencv.json")
    save_trajectory(traj, tmp_path / "cd.json", "worldscore")
    back = load_trajectory(tmp_path / "cd.json")
    assert back.format == "worldscore" and back.fps == 16
    assert torch.allclose(back.cameras.c2w, GT, atol=1e-6)
    assert torch.allclose(back.cameras.intrinsics, traj.cameras.intrinsics, atol=1e-6)
    with pytest.raises(MirageError, match="zooms"):
        save_trajectory(_general_traj(), tmp_path / "z.json", "worldscore")
    with pytest.raises(MirageError, match="centred principal point"):
        save_trajectory(_general_traj(off_centre=True), tmp_path / "n.json", "nerfstudio")


@pytest.mark.parametrize("convention", ["opencv", "opengl"])
@pytest.mark.parametrize("pose", ["c2w", "w2c"])
def test_native_writer_conventions(tmp_path, convention, pose):
    traj = _general_traj()
    save_trajectory(traj, tmp_path / "t.json", convention=convention, pose=pose)
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["convention"] == convention and doc["pose"] == pose
    M = torch.tensor(doc["camera_path"][3]["camera_to_world"], dtype=torch.float64).reshape(4, 4)
    c2w = traj.cameras.c2w[3] @ (OPENGL_TO_OPENCV if convention == "opengl" else torch.eye(4, dtype=torch.float64))
    assert torch.allclose(M, torch.linalg.inv(c2w) if pose == "w2c" else c2w, atol=1e-9)
    back = load_trajectory(tmp_path / "t.json")
    assert torch.allclose(back.cameras.c2w, traj.cameras.c2w, atol=1e-9)


def test_native_file_is_readable_as_nerfstudio(tmp_path):
    save_trajectory(_general_traj(), tmp_path / "t.json", convention="opengl")
    doc = json.loads((tmp_path / "t.json").read_text())
    for key in ("render_width", "render_height", "seconds", "camera_path"):
        assert key in doc
    assert doc["seconds"] * doc["fps"] == pytest.approx(4)
    for cam in doc["camera_path"]:
        assert len(cam["camera_to_world"]) == 16 and 0 < cam["fov"] < 180
    # a nerfstudio-style reader (OpenGL c2w + vertical fov, ignoring our extra keys) sees the same cameras
    nerfstudio_view = {k: doc[k] for k in ("render_width", "render_height", "seconds", "camera_path")}
    (tmp_path / "ns.json").write_text(json.dumps(nerfstudio_view))
    ns = load_trajectory(tmp_path / "ns.json")
    assert ns.format == "nerfstudio" and torch.allclose(ns.cameras.c2w, GT, atol=1e-6)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    path.write_text("old")
    import mirage_cli.io as io

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(MirageError, match="No space left"):
        save_trajectory(_general_traj(), path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_quaternions_round_trip_and_match_hamilton():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(64, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    R = quaternion_to_rotation(q)
    q2 = rotation_to_quaternion(R)
    assert torch.allclose(q2, q * torch.sign(q[:, :1]), atol=1e-12)
    # 90 degrees about +z: (cos 45, 0, 0, sin 45) maps x to y
    Rz = quaternion_to_rotation(torch.tensor([math.sqrt(0.5), 0, 0, math.sqrt(0.5)]))
    assert torch.allclose(Rz @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0, 1.0, 0], dtype=torch.float64))


def test_resample_slerps_rotations_and_lerps_the_rest():
    traj = _general_traj()
    same = resample(traj, 4)
    assert torch.allclose(same.cameras.c2w, traj.cameras.c2w, atol=1e-12) and same.fps == traj.fps
    fine = resample(traj, 7)  # every other frame is a midpoint
    assert len(fine) == 7 and torch.allclose(fine.cameras.c2w[::2], traj.cameras.c2w, atol=1e-12)
    mid = fine.cameras.c2w[3]  # between frame 1 (identity rotation) and frame 2 (90 deg about y)
    assert math.isclose(rotation_angle_deg(mid[:3, :3]), 45.0, abs_tol=1e-9)
    assert torch.allclose(mid[:3, 3], (traj.cameras.c2w[1, :3, 3] + traj.cameras.c2w[2, :3, 3]) / 2)
    k = traj.cameras.intrinsics
    assert torch.allclose(fine.cameras.intrinsics[3], (k[1] + k[2]) / 2)
    assert len(resample(traj, 1)) == 1 and resample(traj, 10, fps=30).fps == 30
    single = Trajectory(traj.cameras[0], 16, "native")
    assert torch.allclose(resample(single, 5).cameras.c2w, traj.cameras.c2w[:1].expand(5, 4, 4))
    with pytest.raises(MirageError):
        resample(traj, 0)


def test_summary_numbers():
    s = summarize(load_trajectory(DATA / "native_opencv.json"))
    assert s["frames"] == 4 and s["format"] == "native"
    assert math.isclose(s["largest_rotation_deg"], 90.0) and s["largest_rotation_frame"] == 2
    steps = GT[1:, :3, 3] - GT[:-1, :3, 3]
    assert math.isclose(s["path_length"], float(steps.norm(dim=-1).sum()), rel_tol=1e-9)


def test_presets_by_name_and_unknown_names(tmp_path):
    t = load_trajectory("orbit_left", frames=9)
    assert t.format == "preset" and len(t) == 9 and t.scale == "relative"
    assert len(load_trajectory("preset:static")) == 49
    with pytest.raises(MirageError, match="did you mean preset 'orbit_left'"):
        load_trajectory("orbit_lft")
    with pytest.raises(MirageError, match="only apply to preset names"):
        load_trajectory(DATA / "re10k.txt", frames=3)


def test_all_formats_listed():
    assert set(FORMATS) == {"native", "nerfstudio", "realestate10k", "nerf", "colmap", "worldscore", "spatia", "lyra2",
                            "lingbot", "worldplay"}
