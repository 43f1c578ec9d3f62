"""The scale check (issue 29): a path 100x or 1/1000x out of scale with the shipped example's scene
gets one warning before any model loads; the presets and the shipped preset files get none;
``traj show --image`` states the path in median depths and draws it over the lifted points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirage_cli.cli import main
from mirage_cli.trajectories.catalog import CATALOG
from mirage_cli.trajectories.scale import preflight

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "examples" / "room.png"  # with its exact depth sidecar room.depth.npy
PRESET_FILES = sorted((ROOT / "presets").glob("*.json"))


def _warnings(traj: str, scale: float | None = None, image: Path = IMAGE, depth: str | None = None) -> list[str]:
    got: list[str] = []
    preflight(traj, image, depth, None, scale, 0, None, got.append)
    return got


@pytest.mark.parametrize("traj", [str(ROOT / "presets" / "orbit_left.json"), str(ROOT / "presets" / "dolly_in.json"),
                                  "w-8, left-2, d-4"])
def test_warns_on_100x_and_1_1000x(traj):
    (large,) = _warnings(traj, 100.0)
    assert "out of scale" in large and "leaves the scene" in large and "--traj-scale 0.01" in large
    assert "--depth-scale" in large  # the depth is a file (the sidecar): its units may be what is wrong
    (small,) = _warnings(traj, 1e-3)
    assert "barely moves" in small and "--traj-scale 1000" in small


def test_no_warning_on_presets_and_shipped_files():
    from mirage_cli.trajectories import load_trajectory
    from mirage_cli.trajectories.scale import check_scale, input_scene, scale_message, scene_cameras

    assert len(PRESET_FILES) == len(CATALOG) and _warnings("orbit_left") == _warnings(str(PRESET_FILES[0])) == []
    scene = input_scene(IMAGE, load_trajectory("static"))  # every preset has the same frame-0 camera (55 deg)
    for traj in list(CATALOG) + [str(p) for p in PRESET_FILES]:
        t = load_trajectory(traj)
        check = check_scale(scene_cameras(t.cameras, t.scale, scene), scene)
        assert check.verdict in ("ok", "rotation only") and scale_message(check, traj, True) is None, (traj, check)


def test_prior_scene_without_depth(tmp_path):
    # no depth file: the prior (median depth 1) stands in, as a relative depth model would
    from PIL import Image

    Image.open(IMAGE).save(tmp_path / "photo.png")
    assert _warnings(str(ROOT / "presets" / "orbit_left.json"), None, tmp_path / "photo.png") == []
    (msg,) = _warnings(str(ROOT / "presets" / "orbit_left.json"), 100.0, tmp_path / "photo.png")
    assert "--depth-scale" not in msg


def test_generate_warns_before_any_model_loads(tmp_path, capsys):
    # the model cannot load (no such folder): the scale warning is printed before that error
    code = main(["--threads", "1", "generate", str(IMAGE), "-t", str(ROOT / "presets" / "orbit_left.json"),
                 "--traj-scale", "100", "--backend", "wan-vace", "--model", str(tmp_path / "no-model"),
                 "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    flat = " ".join(err.split())  # rich wraps long lines
    assert code == 2 and "out of scale with the scene" in flat
    assert flat.index("out of scale") < flat.index("error:") and "model directory" in flat


def test_traj_scale_option_checks(tmp_path, capsys):
    for args, message in ((["--traj-scale", "0"], "--traj-scale: must be a number > 0"),
                          (["-t", "orbit_left", "--traj-scale", "2"], "preset orbit_left is placed from the input depth")):
        argv = ["--threads", "1", "generate", str(IMAGE), "-o", str(tmp_path / "r"), "--dry-run"]
        argv += args if "-t" in args else ["-t", "truck_left"] + args
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_traj_scale_scales_the_run(tmp_path):
    out = tmp_path / "run"
    assert main(["--threads", "1", "generate", str(IMAGE), "-t", "truck_left", "--traj-scale", "0.5", "--dry-run",
                 "--width", "208", "--height", "120", "--frames", "5", "-o", str(out), "-q"]) == 0
    from mirage_cli.trajectories import load_trajectory

    saved = load_trajectory(out / "trajectory.json")  # relative: 0.3 reference depths x 0.5
    assert abs(float(saved.cameras.relative_to_first().centers[-1].norm()) - 0.15) < 1e-9


def test_traj_show_image_states_scale_and_plots(tmp_path, capsys):
    plot = tmp_path / "scale.png"
    assert main(["traj", "show", str(ROOT / "presets" / "orbit_left.json"), "--image", str(IMAGE), "--json",
                 "--traj-scale", "100", "--plot", str(plot)]) == 0
    s = json.loads(capsys.readouterr().out)
    ck = s["scale_check"]
    assert ck["verdict"] == "too large" and s["scene"]["source"].startswith("sidecar:")
    assert abs(ck["path_length"] - 100 * s["path_length"]) < 1e-6 * ck["path_length"]  # relative: in median depths
    from PIL import Image

    assert Image.open(plot).size == (1200, 640)
    assert main(["traj", "show", "orbit_left", "--depth", "x.npy"]) == 2
    assert "need --image" in capsys.readouterr().err
