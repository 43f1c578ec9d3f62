"""`mirage traj ...`: commands, outputs, and one-line errors with exit code 2 for bad input."""

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from mirage_cli.cli import main
from mirage_cli.trajectories import PRESETS, load_trajectory

DATA = Path(__file__).parent / "data" / "traj"
EYE16 = torch.eye(4).reshape(-1).tolist()


def _run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_one_line_per_preset(capsys):
    code, out, _ = _run(capsys, "traj", "list")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == len(PRESETS)
    assert all(line.split()[0] in PRESETS for line in lines)
    assert any(line.startswith("orbit_left") and "angle=30" in line and "look_at_depth=1" in line for line in lines)


def test_preset_writes_a_native_file_with_overrides(tmp_path, capsys):
    out = tmp_path / "orbit.json"
    code, _, err = _run(capsys, "traj", "preset", "orbit_right", "--frames", "9", "--angle", "15", "--fov", "60", "-o", str(out))
    assert code == 0 and "wrote" in err
    traj = load_trajectory(out)
    assert traj.format == "native" and len(traj) == 9 and math.isclose(traj.cameras.fov_y_deg[0], 60)
    assert json.loads(out.read_text())["preset"]["params"]["angle"] == 15


def test_preset_other_formats_stdout_and_all(tmp_path, capsys):
    code, _, _ = _run(capsys, "traj", "preset", "pan_left", "--to", "nerfstudio", "-o", str(tmp_path / "ns.json"))
    assert code == 0 and load_trajectory(tmp_path / "ns.json").format == "nerfstudio"
    code, out, _ = _run(capsys, "traj", "preset", "static", "--frames", "2", "-o", "-")
    assert code == 0 and len(json.loads(out)["camera_path"]) == 2
    code, _, _ = _run(capsys, "traj", "preset", "--all", str(tmp_path / "all"))
    assert code == 0 and len(list((tmp_path / "all").glob("*.json"))) == len(PRESETS)


@pytest.mark.parametrize("name", ["native_opengl_w2c.json", "camera_path.json", "re10k.txt", "transforms.json",
                                  "colmap/images.txt", "camera_data.json"])
def test_convert_any_format_to_native(tmp_path, capsys, name):
    out = tmp_path / "out.json"
    code, _, _ = _run(capsys, "traj", "convert", str(DATA / name), "-o", str(out))
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["convention"] == "opencv" and doc["pose"] == "c2w"
    assert torch.allclose(load_trajectory(out).cameras.c2w, load_trajectory(DATA / name).cameras.c2w, atol=1e-9)


def test_convert_options(tmp_path, capsys):
    out = tmp_path / "out.json"
    code, _, _ = _run(capsys, "traj", "convert", str(DATA / "re10k.txt"), "-o", str(out), "--frames", "7",
                      "--fps", "8", "--scale", "relative", "--relative", "--convention", "opengl")
    assert code == 0
    t = load_trajectory(out)
    assert len(t) == 7 and t.fps == 8 and t.scale == "relative"
    assert torch.allclose(t.cameras.c2w[0], torch.eye(4, dtype=torch.float64), atol=1e-12)
    code, _, _ = _run(capsys, "traj", "convert", str(DATA / "transforms.json"), "--to", "colmap", "-o", str(tmp_path / "model"))
    assert code == 0 and (tmp_path / "model" / "cameras.txt").is_file()
    assert load_trajectory(tmp_path / "model").format == "colmap"


def test_show_table_json_and_plot(tmp_path, capsys):
    png = tmp_path / "plot.png"
    code, out, _ = _run(capsys, "traj", "show", str(DATA / "native_opencv.json"), "--plot", str(png))
    assert code == 0
    for field in ("format", "native", "frames", "fps", "fov (vertical)", "51.28 deg", "path length", "largest rotation",
                  "90.00 deg"):
        assert field in out, field
    assert all(line == line.rstrip() for line in out.splitlines())  # no padding to the table's width
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (1200, 640)
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20)) > 10  # something was drawn
    code, out, _ = _run(capsys, "traj", "show", "zoom_in", "--json")
    s = json.loads(out)
    assert code == 0 and s["format"] == "preset" and s["fov_y_deg"][0] < s["fov_y_deg"][1]


# ----------------------------------------------------------------------------------------- bad input
def _native(cams, **top):
    return json.dumps({"convention": "opencv", "fps": 16, "render_width": 64, "render_height": 48, **top,
                       "camera_path": cams})


def _cam(m=None, **kw):
    return {"camera_to_world": EYE16 if m is None else m, "fov": 50, **kw}


def _scaled(s):
    m = list(EYE16)
    m[0] = s
    return m


def _reflection():
    m = list(EYE16)
    m[10] = -1.0
    return m


RE10K_OK = "0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0"
BAD_INPUTS = [  # (file name, content, expected message after '<file>: ')
    ("bin.json", b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "unreadable: not a UTF-8 text file"),
    ("broken.json", '{"camera_path": [', "unreadable: invalid JSON (line 1"),
    ("empty.json", "", "file is empty"),
    ("other.json", '{"hello": 1}', "unknown trajectory format"),
    ("notes.txt", "hello world\nthis is not a trajectory\n", "unknown trajectory format"),
    ("short.txt", "0 1 2 3\n4 5 6 7\n", "unknown trajectory format (text lines of 4 numbers"),
    ("nopath.json", _native([]), "camera_path: empty camera path"),
    ("url_only.txt", "https://youtube.com/x\n" + "", "unknown trajectory format"),
    ("nan.json", _native([_cam(), _cam([float("nan")] + EYE16[1:])]), "frame 1: camera_to_world: contains NaN or inf"),
    ("inf_fov.json", _native([_cam(fov=float("inf"))]), "frame 0: fov: is NaN or inf"),
    ("scaled.json", _native([_cam(), _cam(_scaled(1.2))]), "frame 1: camera_to_world: rotation is not orthonormal"),
    ("mirror.json", _native([_cam(_reflection())]), "frame 0: camera_to_world: rotation has det -1.0000, expected +1"),
    ("lastrow.json", _native([_cam(EYE16[:12] + [0, 0, 1, 1])]), "frame 0: camera_to_world: last row must be"),
    ("negfocal.json", _native([_cam(), _cam(intrinsics=[-0.5, 0.9, 0.5, 0.5])]),
     "frame 1: intrinsics: focal length must be positive"),
    ("disagree.json", _native([_cam(fov=50, intrinsics=[0.5, 0.9, 0.5, 0.5])]), "frame 0: fov: fov 50 disagrees with intrinsics"),
    ("zerofov.json", _native([_cam(fov=0)]), "frame 0: fov: must be between 0 and 180"),
    ("nerf_focal.json", json.dumps({"fl_x": 0, "w": 64, "h": 48, "frames": [{"transform_matrix": EYE16}]}),
     "frame 0: fl_x/fl_y: focal length must be positive"),
    ("ws_focal.json", json.dumps({"focal_length": -500, "cameras_interp": [EYE16]}),
     "frame 0: focal_length: focal length must be positive"),
    ("count16.json", _native([_cam(EYE16[:15])]), "frame 0: camera_to_world: expected 16 or 12 numbers, got 15"),
    ("count_intr.json", _native([_cam(intrinsics=[0.5, 0.9, 0.5])]), "frame 0: intrinsics: expected 4 numbers, got 3"),
    ("count_ws.json", json.dumps({"focal_length": [500, 500], "cameras_interp": [EYE16]}),
     "focal_length: inconsistent counts: 2 focal lengths for 1 cameras_interp"),
    ("count_fps.json", _native([_cam()] * 3, seconds=10.0),
     "inconsistent counts: fps x seconds = 160 frames but camera_path has 3"),
    ("count.txt", "https://x\n" + RE10K_OK + "\n" + RE10K_OK + " 7\n",
     "frame 1 (line 3): inconsistent counts: expected 19 numbers"),
    ("re10k_focal.txt", RE10K_OK.replace("0 0.5 0.9", "0 0 0.9", 1) + "\n",
     "frame 0 (line 1): fx fy: focal length must be positive"),
    ("convention.json", _native([_cam()], convention="blender"), "convention: expected 'opencv' or 'opengl', got \"blender\""),
    ("fisheye.json", json.dumps({"camera_type": "fisheye", "camera_path": [_cam()]}), "camera_type: only 'perspective'"),
]


@pytest.mark.parametrize("name,content,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_one_line_exit_2(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out, err = _run(capsys, "traj", "show", str(path))
    assert code == 2
    assert f"{path}: {message}" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out


def test_message_names_file_frame_and_field(tmp_path, capsys):
    path = tmp_path / "orbit.json"
    path.write_text(_native([_cam()] * 12 + [_cam(_scaled(0.5))]))
    code, _, err = _run(capsys, "traj", "convert", str(path), "-o", str(tmp_path / "x.json"))
    assert code == 2
    assert f"{path}: frame 12: camera_to_world: rotation is not orthonormal (max |R^T R - I| = 7.50e-01 > 0.001)" in err
    assert not (tmp_path / "x.json").exists()


def test_missing_file_and_colmap_without_cameras_txt(tmp_path, capsys):
    code, _, err = _run(capsys, "traj", "show", str(tmp_path / "nope.json"))
    assert code == 2 and "nope.json: no such file, and not a preset name" in err
    (tmp_path / "images.txt").write_text((DATA / "colmap" / "images.txt").read_text())
    code, _, err = _run(capsys, "traj", "show", str(tmp_path / "images.txt"))
    assert code == 2 and "images.txt: COLMAP cameras.txt not found next to it" in err
    code, _, err = _run(capsys, "traj", "show", str(DATA / "colmap" / "cameras.txt"))
    assert code == 2 and "this is a COLMAP cameras.txt; pass the images.txt next to it" in err


def test_colmap_bad_quaternion_and_camera(tmp_path, capsys):
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 64 48 0 50 32 24\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    code, _, err = _run(capsys, "traj", "show", str(tmp_path / "images.txt"))
    assert code == 2 and "cameras.txt: line 1: focal length must be positive" in err
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 64 48 50 50 32 24\n")
    (tmp_path / "images.txt").write_text("1 2 0 0 0 0 0 0 1 a.png\n\n2 1 0 0 0 0 0 0 7 b.png\n\n")
    code, _, err = _run(capsys, "traj", "show", str(tmp_path / "images.txt"))
    assert code == 2 and "frame 0 (image 'a.png', line 1): QW QX QY QZ: quaternion is not unit length" in err
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n2 1 0 0 0 0 0 0 7 b.png\n\n")
    code, _, err = _run(capsys, "traj", "show", str(tmp_path / "images.txt"))
    assert code == 2 and "frame 1 (image 'b.png', line 3): CAMERA_ID: 7 is not in cameras.txt" in err


def test_bad_options_exit_2(tmp_path, capsys):
    for args, message in [
        (["traj", "preset", "truck_left", "--angle", "5", "-o", str(tmp_path / "a.json")], "no parameter angle"),
        (["traj", "preset", "orbit_left", "--zoom", "2", "-o", str(tmp_path / "a.json")], "no parameter zoom"),
        (["traj", "convert", str(DATA / "re10k.txt"), "--to", "fbx", "-o", str(tmp_path / "a")], "unknown output format 'fbx'"),
        (["traj", "convert", str(DATA / "re10k.txt"), "--to", "nerf", "--convention", "opengl", "-o", str(tmp_path / "a")],
         "only apply to the native format"),
        (["traj", "convert", str(DATA / "re10k.txt"), "--scale", "metric", "-o", str(tmp_path / "a")], "--scale must be"),
    ]:
        code, _, err = _run(capsys, *args)
        assert code == 2 and message in err, (args, err)


def test_debug_shows_the_traceback(tmp_path, capsys):
    """--debug prints the traceback, and a bad input still exits 2 (issue 22: it exited 1)."""
    path = tmp_path / "bad.json"
    path.write_text(_native([]))
    capsys.readouterr()
    assert main(["traj", "show", str(path), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "MirageError" in err and "empty camera path" in err


@pytest.mark.parametrize("args", [("traj", "convert", "orbit_left", "-o"), ("traj", "preset", "pan_left", "-o"),
                                  ("traj", "show", "orbit_left", "--plot")])
def test_output_into_a_missing_folder_is_refused(tmp_path, capsys, args):
    target = tmp_path / "missing" / "x.json"
    code, _, err = _run(capsys, *args, str(target))
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("drop", ["intrinsics", "poses_c2w"])
def test_geometry_npz_missing_a_key_names_it(tmp_path, capsys, drop):
    import numpy as np

    arrays = {"depths": np.ones((2, 4, 4), np.float32), "poses_c2w": np.tile(np.eye(4), (2, 1, 1)),
              "intrinsics": np.tile(np.eye(3), (2, 1, 1))}
    del arrays[drop]
    np.savez(tmp_path / "geom.npz", **arrays)
    code, _, err = _run(capsys, "traj", "show", str(tmp_path / "geom.npz"))
    assert code == 2 and f"{drop}: missing" in err and len(err.strip().splitlines()) == 1


def test_unknown_preset_suggests_the_close_name(tmp_path, capsys):
    code, _, err = _run(capsys, "traj", "preset", "orbit_lft", "-o", str(tmp_path / "x.json"))
    assert code == 2 and "did you mean 'orbit_left'?" in err and len(err.strip().splitlines()) == 1
