"""Real-world trajectory files (issue 10): intrinsics meeting an image of another aspect, frame
order of transforms.json, intrinsics in the wrong unit, nerfstudio fps x seconds."""

import json
import math
import random
from pathlib import Path

import pytest
import torch

from mirage_cli.cli import main
from mirage_cli.errors import MirageError
from mirage_cli.geometry.cameras import Cameras
from mirage_cli.geometry.intrinsics import fit_intrinsics
from mirage_cli.geometry.rotations import rotation_angle_deg
from mirage_cli.trajectories import Trajectory, load_trajectory, make_preset, summarize

EYE = torch.eye(4, dtype=torch.float64)


def _run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _px(cams: Cameras) -> list[float]:
    """Frame 0's ``[fx, fy, cx, cy]`` in pixels."""
    K = cams.K()[0]
    return [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])]


def _colmap(tmp_path: Path, W: int, H: int, f: float, cx: float, cy: float) -> Path:
    (tmp_path / "cameras.txt").write_text(f"1 PINHOLE {W} {H} {f} {f} {cx} {cy}\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n2 1 0 0 0 0.1 0 0 1 b.png\n\n")
    return tmp_path / "images.txt"


# ===================================================================================== 1. square pixels
def test_crop_keeps_square_pixels_and_moves_the_principal_point(tmp_path):
    """A 4:3 COLMAP model (640x480, f = 400 px, principal point off centre) on an 832x480 image."""
    traj = load_trajectory(_colmap(tmp_path, 640, 480, 400.0, 300.0, 250.0))
    # crop: resized x1.3 to 832x624, 72 rows cut at the top: fx = fy = 520, cx = 390, cy = 325 - 72
    assert _px(traj.cameras_for(832, 480)) == pytest.approx([520, 520, 390, 253])
    assert _px(traj.cameras_for(832, 480, "stretch")) == pytest.approx([520, 400, 390, 250])  # the old behaviour
    assert _px(traj.cameras_for(832, 480, "fov")) == pytest.approx([400, 400, 416, 240])  # vertical fov kept
    assert _px(traj.cameras_for(320, 240)) == pytest.approx([200, 200, 150, 125])  # same aspect: plain scaling


def test_sixteen_nine_file_on_a_portrait_photo():
    """The issue's case: a 640x360 file (square pixels, f = 303.9 px) on 480x832 and on 832x480."""
    k = torch.tensor([[303.9 / 640, 303.9 / 360, 0.5, 0.5]], dtype=torch.float64)
    portrait = fit_intrinsics(k, (640, 360), (480, 832)) * torch.tensor([480, 832, 480, 832])
    assert portrait[0].tolist() == pytest.approx([303.9 * 832 / 360] * 2 + [240, 416])  # 702.3 px, both axes
    stretched = fit_intrinsics(k, (640, 360), (480, 832), "stretch") * torch.tensor([480, 832, 480, 832])
    assert stretched[0, :2].tolist() == pytest.approx([227.9, 702.3], abs=0.1)  # what mirage did: 3x anisotropic
    default = fit_intrinsics(k, (640, 360), (832, 480)) * torch.tensor([832, 480, 832, 480])
    assert default[0, :2].tolist() == pytest.approx([405.2, 405.2], abs=0.1)  # was 395 vs 405 px


def test_aspect_warning_only_when_aspects_differ(tmp_path):
    traj = load_trajectory(_colmap(tmp_path, 640, 480, 400.0, 320.0, 240.0))
    msg = traj.aspect_warning(832, 480)
    assert msg and "640x480" in msg and "832x480" in msg and "--intrinsics crop" in msg
    assert traj.aspect_warning(320, 240) is None and traj.aspect_warning(644, 480) is None  # within 1 %
    assert make_preset("orbit_left").aspect_warning(480, 832) is None  # a vertical fov fits any aspect


def test_fov_only_trajectories_keep_their_vertical_fov_in_every_mode():
    preset = make_preset("orbit_left", fov=50)
    for mode in ("crop", "stretch", "fov"):
        cams = preset.cameras_for(480, 832, mode)
        assert math.isclose(float(cams.fov_y_deg[0]), 50) and math.isclose(*_px(cams)[:2])


def test_traj_show_prints_effective_pixel_focal_lengths(tmp_path, capsys):
    path = _colmap(tmp_path, 640, 480, 400.0, 320.0, 240.0)
    code, out, err = _run(capsys, "traj", "show", str(path), "--width", "832", "--height", "480", "--json")
    e = json.loads(out)["effective"]
    assert code == 0 and (e["fx_px"], e["fy_px"], e["mode"]) == (520, 520, "crop") and "832x480" in e["warning"]
    code, out, err = _run(capsys, "traj", "show", str(path), "--width", "832", "--height", "480", "--intrinsics", "stretch")
    assert code == 0 and "fx 520.0  fy 400.0" in out and "warning" in err
    code, _, err = _run(capsys, "traj", "show", str(path), "--width", "832", "--height", "480", "--intrinsics", "wide")
    assert code == 2 and "--intrinsics must be crop, stretch, fov" in err


# ===================================================================================== 2. frame order
def _yaw_gl(deg: float) -> list[list[float]]:
    """OpenGL c2w turned ``deg`` about the world y axis."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return [[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]]


def _yaws(traj: Trajectory) -> list[float]:
    R = traj.cameras.relative_to_first().c2w[:, :3, :3]
    return [round(float(a), 6) for a in rotation_angle_deg(R)]


def test_transforms_json_frames_sorted_by_file_path_naturally(tmp_path, capsys):
    """An 11-frame 10 deg/frame orbit listed shuffled; img_10 must come after img_9, not after img_1."""
    frames = [{"file_path": f"images/img_{i}.png", "transform_matrix": _yaw_gl(10 * i)} for i in range(11)]
    random.Random(3).shuffle(frames)
    doc = {"camera_angle_x": 0.9, "w": 64, "h": 48, "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    traj = load_trajectory(tmp_path / "transforms.json")
    assert _yaws(traj) == pytest.approx([10.0 * i for i in range(11)])
    assert summarize(traj)["largest_step_rotation_deg"] == pytest.approx(10.0)
    assert len(traj.notes) == 1 and "reordered by file_path" in traj.notes[0]
    code, out, _ = _run(capsys, "traj", "show", str(tmp_path / "transforms.json"))
    assert code == 0 and "reordered" in out
    code, _, err = _run(capsys, "traj", "convert", str(tmp_path / "transforms.json"), "-o", str(tmp_path / "n.json"))
    assert code == 0 and "note:" in err and "reordered" in err
    assert _yaws(load_trajectory(tmp_path / "n.json")) == pytest.approx([10.0 * i for i in range(11)])


def test_listed_order_kept_without_file_paths_and_for_camera_paths(tmp_path):
    yaws = [0, 20, 10, 30]
    doc = {"camera_angle_x": 0.9, "frames": [{"transform_matrix": _yaw_gl(y)} for y in yaws]}
    (tmp_path / "t.json").write_text(json.dumps(doc))
    t = load_trajectory(tmp_path / "t.json")
    assert _yaws(t) == pytest.approx(yaws) and t.notes == ()
    path = {"camera_path": [{"camera_to_world": sum(_yaw_gl(y), []), "fov": 50} for y in yaws], "fps": 4}
    (tmp_path / "c.json").write_text(json.dumps(path))
    assert _yaws(load_trajectory(tmp_path / "c.json")) == pytest.approx(yaws)  # the list is the path


# ===================================================================================== 3. wrong unit
W2C = "1 0 0 0 0 1 0 0 0 0 1 0"


def test_realestate10k_pixel_intrinsics_refused_with_one_line(tmp_path, capsys):
    path = tmp_path / "cam.txt"
    path.write_text(f"https://youtu.be/x\n0 0.5 0.889 0.5 0.5 0 0 {W2C}\n33366 500 500 320 180 0 0 {W2C}\n")
    with pytest.raises(MirageError, match=r"frame 1 \(line 3\): fx fy cx cy: 500 500 320 180 cannot be normalized .*"
                                          r"look like pixels; divide fx, cx by the image width"):
        load_trajectory(path)
    code, _, err = _run(capsys, "traj", "show", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "look like pixels" in err


def test_every_format_checks_plausibility_after_conversion(tmp_path):
    cam = {"camera_to_world": EYE.reshape(-1).tolist(), "intrinsics": [0.8, 1.1, 320.0, 240.0]}
    (tmp_path / "n.json").write_text(json.dumps({"convention": "opencv", "camera_path": [cam]}))
    with pytest.raises(MirageError,
                       match=r"n.json: frame 0: normalized fx fy cx cy: 0.8 1.1 320 240 .*principal point far outside"):
        load_trajectory(tmp_path / "n.json")
    tele = {**cam, "intrinsics": [12.0, 16.0, 0.5, 0.5]}  # a 3.6 deg telephoto is still plausible
    (tmp_path / "t.json").write_text(json.dumps({"convention": "opencv", "camera_path": [tele]}))
    assert load_trajectory(tmp_path / "t.json").cameras.intrinsics[0, 1] == 16.0
    huge = {**cam, "intrinsics": [30.0, 40.0, 0.5, 0.5]}
    (tmp_path / "h.json").write_text(json.dumps({"convention": "opencv", "camera_path": [huge]}))
    with pytest.raises(MirageError, match="focal length over 20 image widths"):
        load_trajectory(tmp_path / "h.json")


# ===================================================================================== 7. nerfstudio fps
def _camera_path(n: int, **top) -> dict:
    return {"camera_path": [{"camera_to_world": EYE.reshape(-1).tolist(), "fov": 50}] * n, **top}


def test_nerfstudio_fps_is_cameras_over_seconds(tmp_path, capsys):
    (tmp_path / "cp.json").write_text(json.dumps(_camera_path(30, fps=24, seconds=2)))
    traj = load_trajectory(tmp_path / "cp.json")
    assert traj.format == "nerfstudio" and traj.fps == 15
    assert len(traj.notes) == 1 and "using fps = cameras / seconds = 15" in traj.notes[0]
    code, out, _ = _run(capsys, "traj", "show", str(tmp_path / "cp.json"), "--json")
    assert code == 0 and json.loads(out)["fps"] == 15


def test_native_files_keep_the_strict_fps_check(tmp_path):
    (tmp_path / "n.json").write_text(json.dumps(_camera_path(30, fps=24, seconds=2, convention="opengl")))
    with pytest.raises(MirageError, match="inconsistent counts: fps x seconds = 48 frames but camera_path has 30"):
        load_trajectory(tmp_path / "n.json")
