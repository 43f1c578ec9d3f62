"""Real-world inputs through `mirage generate` (issue 10): --intrinsics, the aspect warning, frames
the memory cannot see, the default cache-dump policy."""

from __future__ import annotations

import json
import math

import torch

from mirage_cli.cli import main
from mirage_cli.pipeline.generate import GenerateConfig, generate, start


def _colmap(tmp_path, W=640, H=480, f=400.0):
    (tmp_path / "cameras.txt").write_text(f"1 PINHOLE {W} {H} {f} {f} {W / 2} {H / 2}\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n2 1 0 0 0 0.01 0 0 1 b.png\n\n")
    return str(tmp_path / "images.txt")


def test_intrinsics_option_reaches_the_cameras(small_scene, tmp_path):
    """A 4:3 file (f = 400 px at 640x480) on the 208x120 image: crop scales by 208/640 on both axes."""
    traj = _colmap(tmp_path)
    warnings: list[str] = []
    run = start(GenerateConfig(image=str(small_scene["image"]), traj=traj, out=str(tmp_path / "crop")), warn=warnings.append)
    K = run.plan.cams.K()[0]
    assert math.isclose(K[0, 0], 130.0) and math.isclose(K[1, 1], 130.0)  # 400 * 208 / 640, square pixels
    assert any("640x480" in w and "208x120" in w and "--intrinsics crop" in w for w in warnings), warnings
    assert json.loads((tmp_path / "crop" / "trajectory.json").read_text())["render_width"] == 640  # kept for --resume
    run = start(GenerateConfig(image=str(small_scene["image"]), traj=traj, out=str(tmp_path / "stretch"),
                               intrinsics="stretch"), warn=lambda m: None)
    K = run.plan.cams.K()[0]
    assert math.isclose(K[0, 0], 130.0) and math.isclose(K[1, 1], 100.0)  # per axis: 400 * 120 / 480


def test_trajectory_notes_are_warnings(small_scene, tmp_path):
    eye = torch.eye(4).tolist()
    doc = {"camera_angle_x": 1.0, "w": 208, "h": 120,
           "frames": [{"file_path": f"img_{i}.png", "transform_matrix": eye} for i in (2, 10, 1)]}
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    warnings: list[str] = []
    start(GenerateConfig(image=str(small_scene["image"]), traj=str(tmp_path / "transforms.json"), out=str(tmp_path / "r")),
          warn=warnings.append)
    assert any("frames reordered by file_path" in w for w in warnings), warnings
    assert not any("--intrinsics" in w for w in warnings)  # same aspect as the image: no aspect warning


def test_bad_intrinsics_option_is_one_line(small_scene, tmp_path, capsys):
    code = main(["generate", str(small_scene["image"]), "--traj", "orbit_left", "--intrinsics", "square",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "--intrinsics: must be crop, stretch, fov (got 'square')" in err and "Traceback" not in err


def _native(path, c2ws, fov=60.0):
    path.write_text(json.dumps({"convention": "opencv", "scale": "absolute", "fps": 8,
                                "camera_path": [{"camera_to_world": T.flatten().tolist(), "fov": fov} for T in c2ws]}))
    return str(path)


def test_frames_that_see_nothing_warn_once_and_are_recorded(small_scene, tmp_path):
    """Translations in the wrong scale: 50 units forward flies through the room (the memory is behind)."""
    c2ws = torch.eye(4, dtype=torch.float64).repeat(9, 1, 1)
    c2ws[1:, 2, 3] = torch.linspace(50, 80, 8, dtype=torch.float64)
    warnings: list[str] = []
    rec = generate(GenerateConfig(image=str(small_scene["image"]), traj=_native(tmp_path / "far.json", c2ws),
                                  out=str(tmp_path / "run"), chunk_frames=5), warn=warnings.append)
    blind = [w for w in warnings if "the memory covers under 2%" in w]
    assert len(blind) == 1 and blind[0].startswith("frames 1-4:") and "scale" in blind[0], warnings  # once per run
    frames = [f for c in rec["chunks"] for f in c["known_frames"]]
    known = [k for c in rec["chunks"] for k in c["known_per_frame"]]
    assert frames == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8]  # chunks share their first frame
    assert known[0] > 0.99 and max(known[1:5]) < 0.02
    on_disk = json.loads((tmp_path / "run" / "run.json").read_text())["chunks"][0]
    assert on_disk["known_per_frame"] == rec["chunks"][0]["known_per_frame"]


def test_turning_away_is_not_reported(small_scene, tmp_path):
    """A 180-degree pan legitimately ends looking at nothing the input saw: no warning."""
    c2ws = []
    for a in torch.linspace(0, 180, 9, dtype=torch.float64):
        c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
        T = torch.eye(4, dtype=torch.float64)
        T[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
        c2ws.append(T)
    warnings: list[str] = []
    rec = generate(GenerateConfig(image=str(small_scene["image"]), traj=_native(tmp_path / "pan.json", c2ws),
                                  out=str(tmp_path / "run"), chunk_frames=5), warn=warnings.append)
    assert rec["chunks"][-1]["known_per_frame"][-1] < 0.02  # the last frame does see nothing ...
    assert not [w for w in warnings if "the memory covers" in w], warnings  # ... but faces away from the input


def test_default_cache_keeps_only_the_final_dump(small_scene, tmp_path):
    rec = generate(GenerateConfig(image=str(small_scene["image"]), traj="orbit_left", frames=9, chunk_frames=5,
                                  out=str(tmp_path / "run")), warn=lambda m: None)
    assert sorted(p.name for p in (tmp_path / "run" / "cache").iterdir()) == ["final.safetensors"]
    assert rec["outputs"]["cache"] == [str(tmp_path / "run" / "cache" / "final.safetensors")]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_downscale_that_does_not_divide_the_frame_is_refused(tmp_path, capsys):
    """Review 4: --downscale 3 on 832x480 silently gave an 831x480 video."""
    from pathlib import Path

    example = str(Path(__file__).resolve().parents[1] / "examples" / "room.png")
    assert main(["generate", example, "--traj", "orbit_left", "--downscale", "3", "-n", "5", "--out",
                 str(tmp_path / "r"), "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert "--downscale 3" in err and "831x480" in err and not (tmp_path / "r").exists()


def test_tiny_image_is_refused_like_a_tiny_width(tmp_path, capsys):
    """Review 6: a 4x4 image made a 4x4 video although --width 5 is refused."""
    from mirage_cli.io import save_image

    img = tmp_path / "tiny.png"
    save_image(img, torch.rand(3, 4, 4))
    assert main(["generate", str(img), "--traj", "static", "-n", "5", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "between 16 and 8192" in _one_line_error(capsys) and not (tmp_path / "r").exists()


def test_oversize_note_names_the_final_size(tmp_path, capsys):
    """Review 24: the note said 1182x886 for a run made at 1180x884 (grid rounding)."""
    from mirage_cli.io import save_image

    img = tmp_path / "huge.png"
    save_image(img, torch.rand(3, 150, 200))
    out = tmp_path / "r"
    assert main(["generate", str(img), "--traj", "static", "-n", "2", "--max-pixels", "10000", "--downscale", "4",
                 "--out", str(out)]) == 0
    rec = json.loads((out / "run.json").read_text())
    assert f"resized to {rec['image']['width']}x{rec['image']['height']}" in capsys.readouterr().err.replace("\n", " ")


def test_aspect_change_is_warned_even_with_quiet(tmp_path, capsys):
    """Review 7 and 38: --width 208 --height 400 stretched silently; -q hid every warning."""
    from pathlib import Path

    example = str(Path(__file__).resolve().parents[1] / "examples" / "room.png")
    assert main(["generate", example, "--traj", "static", "-n", "2", "--width", "208", "--height", "400",
                 "--out", str(tmp_path / "r"), "--quiet"]) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    assert "warning:" in err and "stretched to 208x400" in err and "narrower" in err
    assert main(["generate", example, "--traj", "static", "-n", "2", "--width", "208",
                 "--out", str(tmp_path / "r2"), "--quiet"]) == 0
    assert "stretched" not in capsys.readouterr().err  # the aspect kept: nothing to say


def test_preview_run_json_records_null_for_diffusion_options(tmp_path):
    """Review 36: a preview run.json recorded wan-vace's steps 30, guidance 5, shift 3, references 2."""
    from pathlib import Path

    example = str(Path(__file__).resolve().parents[1] / "examples" / "room.png")
    out = tmp_path / "r"
    assert main(["generate", example, "--traj", "static", "-n", "2", "--width", "104", "--out", str(out), "--quiet"]) == 0
    cfg = json.loads((out / "run.json").read_text())["config"]
    assert [cfg[k] for k in ("steps", "guidance", "shift", "references")] == [None] * 4 and cfg["splat"] == "patch"


def test_start_frame_may_leave_one_frame_as_frames_1_does(tmp_path, capsys):
    """Review 40: -n 1 made a 1-frame video but --start-frame insisted on two remaining frames."""
    from pathlib import Path

    from mirage_cli.trajectories import load_trajectory, save_trajectory

    example = str(Path(__file__).resolve().parents[1] / "examples" / "room.png")
    traj = tmp_path / "t.json"
    save_trajectory(load_trajectory("orbit_left"), traj)
    n = len(load_trajectory(str(traj)))
    out = tmp_path / "r"
    assert main(["generate", example, "--traj", str(traj), "--start-frame", str(n - 1), "--width", "104",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "run.json").read_text())["trajectory"]["frames"] == 1
    assert main(["generate", example, "--traj", str(traj), "--start-frame", str(n), "--out", str(tmp_path / "x")]) == 2
    assert f"the trajectory has {n} frames" in capsys.readouterr().err


def test_dry_run_leaves_no_lock_file(tmp_path):
    """Review 14: `generate --dry-run -o dr` left .dr.mirage.lock beside the run; normal runs remove theirs."""
    from pathlib import Path

    example = str(Path(__file__).resolve().parents[1] / "examples" / "room.png")
    out = tmp_path / "dr"
    for extra in ([], ["--overwrite"]):
        assert main(["generate", example, "--traj", "orbit_left", "-n", "5", "--width", "104", "--dry-run",
                     "--out", str(out), "--quiet"] + extra) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dr"]  # no lock, no moved-aside run


# ------------------------------------------------------------------------------------ issue 22
def _example() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1] / "examples" / "room.png")


def test_a_preset_name_says_where_it_was_placed_and_a_preset_file_does_not(tmp_path, capsys):
    """`--traj orbit_left` (placed from the input depth: look_at_depth 0.5875) and `--traj
    presets/orbit_left.json` (the file's 1.0) give different videos: the name's run says so."""
    from pathlib import Path

    preset_file = str(Path(__file__).resolve().parents[1] / "presets" / "orbit_left.json")
    base = ["generate", _example(), "-n", "2", "--dry-run"]
    assert main(base + ["--traj", "orbit_left", "--out", str(tmp_path / "name")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "note: --traj orbit_left: look-at point placed at 0.5875 reference depths from the input depth" in err, err
    assert "presets/orbit_left.json, keeps its own 1;" in err and "--look-at-depth" in err
    assert json.loads((tmp_path / "name" / "run.json").read_text())["trajectory"]["look_at_depth"] == 0.5875
    assert main(base + ["--traj", preset_file, "--out", str(tmp_path / "file")]) == 0
    assert "placed" not in capsys.readouterr().err
    assert main(base + ["--traj", "orbit_left", "--look-at-depth", "1", "--out", str(tmp_path / "given")]) == 0
    assert "placed" not in capsys.readouterr().err  # the user chose it
    assert main(base + ["--traj", "orbit_left", "-q", "--out", str(tmp_path / "quiet")]) == 0
    assert capsys.readouterr().err == ""  # a note, not a warning: -q hides it


def test_a_stretch_from_grid_rounding_says_so(tmp_path, capsys):
    """--width 128 alone: 128x74 rounded to Wan's 16-px grid is 128x64; the warning said "give one
    of --width/--height" although one was given."""
    assert main(["generate", _example(), "--traj", "static", "-n", "2", "--width", "128", "--backend", "wan-vace",
                 "--dry-run", "-q", "--out", str(tmp_path / "r")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "stretched to 128x64" in err and "128x74 rounded down to multiples of 16 px" in err, err
    assert "give one of" not in err and "e.g. --width 112 --height 64" in err


def test_memory_continuation_without_depth_does_not_warn_about_the_prior(small_scene, tmp_path):
    """--memory supplies the scene the new image shows: no "no depth given ... prior" warning where
    the memory sees the whole input view (the prior lifts only what it does not see)."""
    import shutil

    first = tmp_path / "first"
    generate(GenerateConfig(image=str(small_scene["image"]), traj="static", frames=2, out=str(first)), warn=lambda m: None)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(small_scene["image"], bare / "room.png")  # no depth sidecar next to it
    no_model = str(tmp_path / "no-such-depth-model")
    warnings: list[str] = []
    generate(GenerateConfig(image=str(bare / "room.png"), traj="pan_left", frames=2, out=str(tmp_path / "more"),
                            memory=str(first / "cache" / "final.safetensors"), depth_model=no_model), warn=warnings.append)
    assert not [w for w in warnings if "no depth given" in w or "prior" in w], warnings
    warnings.clear()  # without --memory the warning stays
    generate(GenerateConfig(image=str(bare / "room.png"), traj="static", frames=2, out=str(tmp_path / "alone"),
                            depth_model=no_model), warn=warnings.append)
    assert any("no depth given" in w and "geometric prior" in w for w in warnings), warnings
