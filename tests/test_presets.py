"""Presets: identity start, geometry of each motion, parameters, and the shipped files."""

import json
import math
from pathlib import Path

import pytest
import torch

from mirage_cli.errors import MirageError
from mirage_cli.geometry.cameras import project, validate_cameras
from mirage_cli.geometry.rotations import rotation_angle_deg
from mirage_cli.trajectories import PRESETS, load_trajectory, make_preset
from mirage_cli.trajectories.formats.native import native_dict
from mirage_cli.trajectories.presets.__main__ import main as presets_main

SHIPPED = Path(__file__).resolve().parent.parent / "presets"
EYE = torch.eye(4, dtype=torch.float64)
REQUIRED = {"static", "orbit_left", "orbit_right", "orbit_360", "pan_left", "pan_right", "tilt_up", "tilt_down",
            "truck_left", "truck_right", "pedestal_up", "pedestal_down", "dolly_in", "dolly_out", "zoom_in",
            "zoom_out", "dolly_zoom", "spiral"}


def _forward(traj):
    return traj.cameras.c2w[:, :3, 2]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_starts_at_identity_and_is_valid(name):
    traj = make_preset(name)
    assert torch.allclose(traj.cameras.c2w[0], EYE, atol=1e-12)
    assert len(traj) == PRESETS[name].frames and traj.fps == 16
    assert traj.format == "preset" and traj.scale == "relative" and traj.fov_only
    assert math.isclose(traj.cameras.fov_y_deg[0], 55.0)
    validate_cameras(traj.cameras, name)


def test_all_required_presets_exist():
    assert REQUIRED <= set(PRESETS)


@pytest.mark.parametrize("name", ["orbit_left", "orbit_right", "orbit_360", "spiral"])
@pytest.mark.parametrize("size", [(832, 480), (480, 640)])
def test_look_at_point_stays_at_image_centre(name, size):
    for depth in (1.0, 2.5):
        cams = make_preset(name, look_at_depth=depth).cameras_for(*size)
        P = torch.tensor([[0.0, 0.0, depth]], dtype=torch.float64)
        uv, z = project(P, cams.w2c, cams.K())
        centre = torch.tensor([size[0] / 2, size[1] / 2], dtype=torch.float64).expand(len(cams), 2)
        assert torch.allclose(uv[:, 0], centre, atol=1e-9)
        assert (z > 0).all()


def test_orbit_geometry():
    left, right = make_preset("orbit_left"), make_preset("orbit_right", angle=45)
    P = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    for traj in (left, right):
        assert torch.allclose((traj.cameras.centers - P).norm(dim=-1), torch.ones(len(traj), dtype=torch.float64))
        assert torch.allclose(traj.cameras.centers[:, 1], torch.zeros(len(traj), dtype=torch.float64), atol=1e-12)
    assert left.cameras.centers[-1, 0] < 0 < right.cameras.centers[-1, 0]  # left = towards -x
    assert math.isclose(rotation_angle_deg(left.cameras.c2w[-1, :3, :3]), 30.0)
    assert math.isclose(rotation_angle_deg(right.cameras.c2w[-1, :3, :3]), 45.0)
    full = make_preset("orbit_360")
    assert torch.allclose(full.cameras.c2w[-1], full.cameras.c2w[0], atol=1e-9)
    half = len(full) // 2
    assert torch.allclose(full.cameras.centers[half], torch.tensor([0, 0, 2.0], dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("name,axis,sign", [("pan_left", 0, -1), ("pan_right", 0, 1), ("tilt_up", 1, -1), ("tilt_down", 1, 1)])
def test_pan_and_tilt_turn_in_place(name, axis, sign):
    traj = make_preset(name)
    assert torch.allclose(traj.cameras.centers, torch.zeros(len(traj), 3, dtype=torch.float64), atol=1e-12)
    assert sign * _forward(traj)[-1, axis] > 0
    angle = PRESETS[name].params["angle"]
    assert math.isclose(rotation_angle_deg(traj.cameras.c2w[-1, :3, :3]), angle, abs_tol=1e-9)


@pytest.mark.parametrize("name,direction", [
    ("truck_left", (-1, 0, 0)), ("truck_right", (1, 0, 0)), ("pedestal_up", (0, -1, 0)),
    ("pedestal_down", (0, 1, 0)), ("dolly_in", (0, 0, 1)), ("dolly_out", (0, 0, -1))])
def test_translations_keep_orientation(name, direction):
    traj = make_preset(name, distance=0.7)
    R = traj.cameras.c2w[:, :3, :3]
    assert torch.allclose(R, torch.eye(3, dtype=torch.float64).expand_as(R))
    assert torch.allclose(traj.cameras.centers[-1], 0.7 * torch.tensor(direction, dtype=torch.float64))
    steps = (traj.cameras.centers[1:] - traj.cameras.centers[:-1]).norm(dim=-1)
    assert torch.allclose(steps, steps[0].expand_as(steps))  # constant speed


@pytest.mark.parametrize("name,ratio", [("zoom_in", 2.0), ("zoom_out", 0.5)])
def test_zoom_changes_only_the_focal_length(name, ratio):
    traj = make_preset(name, zoom=2.0)
    assert torch.allclose(traj.cameras.c2w, EYE.expand(len(traj), 4, 4))
    fy = traj.cameras.intrinsics[:, 1]
    assert math.isclose(fy[-1] / fy[0], ratio)


@pytest.mark.parametrize("distance", [0.5, -0.4, 1.5])
def test_dolly_zoom_keeps_the_look_at_plane_size(distance):
    depth = 2.0
    traj = make_preset("dolly_zoom", distance=distance, look_at_depth=depth)
    cams = traj.cameras_for(832, 480)
    plane = torch.tensor([[0.3, 0.2, depth], [-0.5, -0.1, depth]], dtype=torch.float64)
    uv, _ = project(plane, cams.w2c, cams.K())
    assert torch.allclose(uv, uv[:1].expand_as(uv), atol=1e-9)  # same pixels in every frame
    assert math.isclose(traj.cameras.centers[-1, 2], -distance)  # moved back (positive) or forward
    behind, _ = project(torch.tensor([[0.3, 0.2, 2 * depth]], dtype=torch.float64), cams.w2c, cams.K())
    assert not torch.allclose(behind, behind[:1].expand_as(behind))  # while the background changes


def test_parameter_overrides_and_errors():
    t = make_preset("orbit_left", frames=17, fps=24, fov=40, angle=10, look_at_depth=3)
    assert len(t) == 17 and t.fps == 24 and math.isclose(t.cameras.fov_y_deg[0], 40)
    assert math.isclose(rotation_angle_deg(t.cameras.c2w[-1, :3, :3]), 10)
    assert t.meta["preset"] == {"name": "orbit_left", "params": {"frames": 17, "fps": 24.0, "fov": 40.0,
                                                                  "angle": 10.0, "look_at_depth": 3.0}}
    assert len(make_preset("pan_left", frames=1)) == 1
    for kwargs, msg in [
        (dict(name="truck_left", angle=3), "no parameter angle"),
        (dict(name="orbit_left", angle=-5), "angle: must be >= 0"),
        (dict(name="zoom_in", zoom=0.5), "zoom: must be >= 1"),
        (dict(name="static", frames=0), "frames: must be a whole number"),
        (dict(name="static", fov=180), "fov: must be between 0 and 180"),
        (dict(name="dolly_zoom", distance=-1.0), "distance: must be > -look_at_depth"),
        (dict(name="orbit_left", look_at_depth=0), "look_at_depth: must be positive"),
        (dict(name="nope"), "unknown preset 'nope'"),
    ]:
        with pytest.raises(MirageError, match=msg):
            make_preset(**kwargs)


def _close(a, b, path="$"):
    """Structural equality with a 1e-9 tolerance on numbers."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, abs_tol=1e-9), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_shipped_preset_files_equal_what_the_code_generates():
    shipped = sorted(p.stem for p in SHIPPED.glob("*.json"))
    assert shipped == sorted(PRESETS), "regenerate with `python -m mirage_cli.trajectories.presets`"
    for name in PRESETS:
        _close(json.loads((SHIPPED / f"{name}.json").read_text()), native_dict(make_preset(name)), name)


def test_shipped_file_loads_like_the_preset():
    from_file = load_trajectory(SHIPPED / "spiral.json")
    made = make_preset("spiral")
    assert from_file.format == "native" and from_file.scale == "relative" and from_file.fov_only
    assert torch.allclose(from_file.cameras.c2w, made.cameras.c2w, atol=1e-9)
    assert torch.allclose(from_file.cameras.intrinsics, made.cameras.intrinsics, atol=1e-9)


def test_regenerate_command_writes_every_preset(tmp_path, capsys):
    assert presets_main([str(tmp_path)]) == 0
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted(PRESETS)
    _close(json.loads((tmp_path / "orbit_left.json").read_text()), json.loads((SHIPPED / "orbit_left.json").read_text()))
