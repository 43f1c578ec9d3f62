"""`mirage eval worldscore`: the WorldScore benchmark generated in the layout its evaluator reads.

The fixture (tests/data/worldscore/WorldScore-Dataset) mirrors WorldScore's dataset as its
download.py unpacks it: static/static.json (3 instances: 2 scenes, 1, 1) and dynamic/dynamic.json
(2 instances, "fixed" camera), with small images (and dynamic masks) at the paths they name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mirage_cli.cli import main
from mirage_cli.eval.worldscore import cameras as wc
from mirage_cli.eval.worldscore.dataset import read_dataset
from mirage_cli.eval.worldscore.layouts import anchor_frames, total_frames
from mirage_cli.pipeline.plan import Chunk
from mirage_cli.pipeline.prompts import chunk_prompt

DATA = Path(__file__).parent / "data" / "worldscore"
W, H, FRAMES, FPS = 64, 48, 5, 8
ARGS = ["--width", str(W), "--height", str(H), "--frames", str(FRAMES), "--fps", str(FPS)]


def _run(data, out, *extra) -> int:
    return main(["--threads", "1", "eval", "worldscore", str(data), "--out", str(out), *ARGS, "--quiet", *extra])


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The fixture generated once, in-process, with the preview backend."""
    out = tmp_path_factory.mktemp("ws") / "out"
    assert _run(DATA, out) == 0
    return out


def _frames(folder: Path) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


# ------------------------------------------------------------------------------------ cameras
def _opencv(path: list[str], frames: int = FRAMES, speed: float = 1.0):
    """The cameras of a camera path as mirage uses them (OpenCV c2w, relative to frame 0)."""
    data = wc.camera_data(path, frames, 500.0, speed)
    traj = wc.to_trajectory(data, (W, H), FPS, "test")
    c2w = traj.cameras.c2w
    return torch.linalg.inv(c2w[0]) @ c2w


def test_camera_counts_and_first_camera():
    data = wc.camera_data(["pan_left", "move_left", "push_in"], 9, 500.0)
    assert len(data["cameras"]) == 4
    assert len(data["cameras_interp"]) == total_frames(["pan_left", "move_left", "push_in"], 9) == 25
    # CameraGen's first camera: inv(diag(-1, 1, -1, 1) @ I), in Blender c2w (camera_generator.py:14-25, 346)
    assert torch.allclose(torch.tensor(data["cameras_interp"][0]), torch.diag(torch.tensor([-1.0, 1, -1, 1])), atol=1e-6)
    # keyframes sit at the anchor frames
    for k, a in enumerate(anchor_frames(["pan_left", "move_left", "push_in"], 9)):
        assert data["cameras_interp"][a] == data["cameras"][k]
    assert data["focal_length"] == 500.0 and data["scale"] == 1.0


def test_camera_layouts_move_the_way_their_names_say():
    # OpenCV: x right, y down, z forward, in frame 0's camera
    left = _opencv(["move_left"])[-1]
    assert torch.allclose(left[:3, 3], torch.tensor([-0.5, 0, 0], dtype=left.dtype), atol=1e-6)  # half a speed step
    push = _opencv(["push_in"], speed=2.0)[-1]
    assert torch.allclose(push[:3, 3], torch.tensor([0, 0, 2.0], dtype=push.dtype), atol=1e-6)
    pan = _opencv(["pan_left"])[-1]
    forward = pan[:3, 2]
    assert forward[0] < 0
    assert torch.allclose(torch.rad2deg(torch.atan2(-forward[0], forward[2])), torch.tensor(30.0, dtype=forward.dtype))
    assert torch.allclose(pan[:3, 3], torch.zeros(3, dtype=pan.dtype), atol=1e-6)  # a pan turns in place
    # an orbit's keyframe looks at the point one speed step ahead of frame 0 from the same distance
    # (in between, WorldScore interpolates the w2c translation linearly: the point drifts off the axis)
    for name in ("orbit_left", "orbit_right"):
        for cam in _opencv([name], frames=7, speed=1.5)[::6]:
            p = torch.linalg.inv(cam) @ torch.tensor([0, 0, 1.5, 1.0], dtype=cam.dtype)
            assert torch.allclose(p[:3], torch.tensor([0, 0, 1.5], dtype=cam.dtype), atol=1e-5), name
    orbit = _opencv(["orbit_left"])[-1]  # orbiting left: the camera goes left around the point, turning right to it
    assert orbit[0, 3] == pytest.approx(-0.5, abs=1e-6) and orbit[0, 2] > 0


def test_fixed_camera_and_bad_layouts():
    data = wc.camera_data(["fixed"], 6, 500.0)
    assert len(data["cameras_interp"]) == 6 and all(c == data["cameras_interp"][0] for c in data["cameras_interp"])
    from mirage_cli.errors import MirageError

    with pytest.raises(MirageError, match="unknown layout 'zoom'"):
        wc.camera_data(["zoom"], 5, 500.0)
    with pytest.raises(MirageError, match="pull_left"):  # in layout_info, but CameraGen cannot make it
        wc.camera_data(["pull_left"], 5, 500.0)


def test_chunk_prompt_follows_the_scene_of_the_middle_frame():
    from dataclasses import replace

    from mirage_cli.pipeline.config import GenerateConfig

    cfg = replace(GenerateConfig(), prompt="one", prompts=["a", "b", "c"], prompt_starts=[0, 48, 96])
    assert [chunk_prompt(cfg, Chunk(0, s, e, e - s)) for s, e in ((0, 33), (32, 65), (64, 97), (96, 129), (120, 145))] == \
        ["a", "b", "b", "c", "c"]
    assert chunk_prompt(GenerateConfig(prompt="one"), Chunk(3, 96, 129, 33)) == "one"


# ------------------------------------------------------------------------------------ the output tree
def _evaluator_walk(root: Path, movement: str) -> list[Path]:
    """Instance folders as WorldScore's Evaluator._evaluate walks them (evaluator.py:768-860)."""
    level = [root / movement]
    for _ in range(4 if movement == "static" else 3):
        level = sorted(p for d in level for p in d.iterdir() if p.is_dir())
    return level


def test_tree_and_files_are_what_worldscores_readers_read(bench):
    """The readers matched: Evaluator.data_exists (evaluator.py:697-734), process_batch's reads of
    camera_data.json / image_data.json / frames / input_image.png (evaluator.py:75-107 static,
    173-195 dynamic), calculate_metrics' frame and camera counts (evaluator.py:676-683)."""
    from PIL import Image

    _, instances, problems = read_dataset(DATA)
    assert problems == [] and len(instances) == 5
    root = bench / "worldscore_output"
    static = _evaluator_walk(root, "static")
    dynamic = _evaluator_walk(root, "dynamic")
    assert [p.relative_to(root).as_posix() for p in static] == [
        "static/photorealistic/indoor/dining_spaces/000", "static/photorealistic/outdoor/beach/001",
        "static/stylized/indoor/living_room/002"]
    assert [p.relative_to(root).as_posix() for p in dynamic] == [
        "dynamic/photorealistic/articulated/000", "dynamic/stylized/fluid/001"]
    dataset = {json.dumps(i.record, sort_keys=True) for i in instances}
    for folder in static + dynamic:
        movement = folder.relative_to(root).parts[0]
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(["frames", "image_data.json", "input_image.png", "time.txt", "videos"]
                               + (["camera_data.json"] if movement == "static" else []))
        image_data = json.loads((folder / "image_data.json").read_text())
        path = image_data["camera_path"]
        total = image_data["total_frames"]
        assert total == total_frames(path, FRAMES) and image_data["num_scenes"] == len(path)
        record = {k: v for k, v in image_data.items() if k not in ("num_scenes", "total_frames", "anchor_frame_idx")}
        assert json.dumps(record, sort_keys=True) in dataset  # helper.py:29-37: the dataset object + three fields
        image_list = sorted(str(p.absolute()) for p in (folder / "frames").iterdir() if p.suffix in [".jpg", ".png"])
        assert len(image_list) == total and [Path(p).name for p in image_list] == [f"{i:03d}.png" for i in range(total)]
        assert all(Image.open(p).size == (W, H) for p in image_list)
        assert Image.open(folder / "input_image.png").size == (W, H)
        assert (folder / "time.txt").read_text().startswith("generate_time: ")
        if movement == "static":
            camera_data = json.loads((folder / "camera_data.json").read_text())
            cams = torch.tensor(camera_data["cameras_interp"])
            assert cams.shape == (total, 4, 4) and camera_data.get("scale", 1.0) == 1.0
            for key in ("prompt_list", "content_list"):
                assert len(image_data[key]) == image_data["num_scenes"] + 1
            assert image_data["anchor_frame_idx"] == anchor_frames(path, FRAMES)
        else:
            assert "anchor_frame_idx" not in image_data
            assert all((DATA / "WorldScore-Dataset" / m).is_file() for m in image_data["masks"])
            assert isinstance(image_data["objects"], list) and isinstance(image_data["prompt"], str)
        from mirage_cli.io import read_video

        video = read_video(folder / "videos" / "output.mp4")
        assert video.shape == (total, H, W, 3)


def test_camera_data_round_trip(bench):
    """camera_data.json's cameras are the cameras the run used (its trajectory.json, OpenCV) back in
    Blender c2w; and the dataset's camera path regenerated gives them again."""
    from mirage_cli.trajectories import load_trajectory

    for run in sorted((bench / "runs").glob("static-*")):
        folder = bench / "worldscore_output" / json.loads((bench / "protocol.json").read_text())["instances"][0]["dir"]
        entry = next(e for e in json.loads((bench / "protocol.json").read_text())["instances"] if e["id"] == run.name)
        folder = bench / "worldscore_output" / entry["dir"]
        data = json.loads((folder / "camera_data.json").read_text())
        used = load_trajectory(str(run / "run" / "trajectory.json")).cameras
        assert len(used) == entry["total_frames"]
        assert wc.max_difference(wc.from_trajectory(used), data["cameras_interp"]) < 1e-6
        assert wc.max_difference(wc.camera_data(entry["camera_path"], FRAMES, 500.0)["cameras_interp"],
                                 data["cameras_interp"]) == 0.0
        K = used.intrinsics[0].tolist()
        assert K == pytest.approx([500 / W, 500 / H, 0.5, 0.5])


def test_protocol_and_config(bench):
    doc = json.loads((bench / "protocol.json").read_text())
    assert doc["format"] == "mirage.worldscore" and doc["status"] == "done"
    assert doc["subset"]["instances"] == 5 and doc["subset"]["per_split"] == {"static": 3, "dynamic": 2}
    s = doc["settings"]
    assert s["resolution"] == [W, H] and s["frames_per_scene"] == FRAMES and s["fps"] == FPS
    assert s["focal_length_px"] == 500.0 and s["prompts"] == "scene" and s["generate"]["backend"] == "preview"
    assert doc["worldscore"]["matched_commit"].startswith("344983c")
    assert set(doc["worldscore"]["dataset_sha256"]) == {"static", "dynamic"}
    assert doc["weights"]["backend"]["weights"] == "none" and doc["mirage_version"] and doc["device"].startswith("cpu")
    t = doc["time_per_instance_s"]
    assert t["instances"] == 5 and t["mean"] > 0
    assert all(e["status"] == "done" and e["generate_seconds"] > 0 for e in doc["instances"])
    yaml = (bench / "worldscore_config" / "mirage_preview.yaml").read_text()
    for line in ("model: mirage_preview", f"runs_root: {bench.resolve()}", f"resolution: [{W}, {H}]",
                 "generate_type: i2v", f"frames: {FRAMES}", f"fps: {FPS}"):
        assert line in yaml.splitlines()
    assert doc["modeltype_line"].strip() == '"mirage_preview",'
    assert any("run_evaluate.py --model_name mirage_preview" in c for c in doc["evaluate"])
    # per-scene prompts reached the runs: the two-scene instance switches at its anchor frame
    from mirage_cli.pipeline.records import RunRecord

    rec = RunRecord.read(bench / "runs" / "static-photorealistic-indoor-dining_spaces-000" / "run" / "run.json")
    assert rec.config.prompt_starts == [0, FRAMES - 1] and len(rec.config.prompts) == 2
    assert rec.config.prompts[0].startswith("Camera pan left. A sideboard with plates. Photorealistic")
    assert rec.config.prompts[0].endswith("Everything in the scene remains completely motionless.")


# ------------------------------------------------------------------------------------ check, resume, workers
def test_check_finds_a_deleted_frame_and_a_rerun_repairs_it(bench, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(bench, out)
    for p in (out / "worldscore_config").glob("*.yaml"):  # runs_root names the copy's folder now
        p.write_text(p.read_text().replace(str(bench.resolve()), str(out.resolve())))
    assert main(["eval", "worldscore", "--check", str(out)]) == 0
    capsys.readouterr()
    victim = out / "worldscore_output/static/photorealistic/outdoor/beach/001/frames/003.png"
    victim.unlink()
    assert main(["eval", "worldscore", "--check", str(out)]) == 1
    captured = capsys.readouterr()
    assert "static/photorealistic/outdoor/beach/001: frames/: 4 frames, total_frames is 5" in captured.err
    assert "static: 2 / 3 instances complete" in captured.out and "dynamic: 2 / 2 instances complete" in captured.out
    # a folder the protocol does not list is reported (the evaluator would score it)
    (out / "worldscore_output/static/stylized/indoor/living_room/999").mkdir()
    assert main(["eval", "worldscore", "--check", str(out)]) == 1
    assert "living_room/999" in capsys.readouterr().err
    (out / "worldscore_output/static/stylized/indoor/living_room/999").rmdir()
    # without --resume an existing output is refused; with it, finished instances are skipped and
    # the damaged one rewritten from its run (not generated again)
    assert _run(DATA, out) == 2
    assert _run(DATA, out, "--resume") == 0
    batch = json.loads((out / "batch.json").read_text())["jobs"]
    assert {k: v["status"] for k, v in batch.items()} == {
        "static-photorealistic-indoor-dining_spaces-000": "skipped", "static-photorealistic-outdoor-beach-001": "done",
        "static-stylized-indoor-living_room-002": "skipped", "dynamic-photorealistic-articulated-000": "skipped",
        "dynamic-stylized-fluid-001": "skipped"}
    assert victim.is_file() and main(["eval", "worldscore", "--check", str(out)]) == 0
    assert np.array_equal(_frames(victim.parent), _frames(bench / victim.parent.relative_to(out)))
    # other settings are refused on --resume
    assert _run(DATA, out, "--resume", "--seed", "3") == 2
    assert "other settings" in capsys.readouterr().err


def test_overwrite_with_a_smaller_selection_leaves_no_stale_instance(bench, tmp_path, capsys):
    """The evaluator scores every folder under worldscore_output: --overwrite removes the earlier run's
    instances this selection leaves out; --resume keeps them and says so."""
    out = tmp_path / "copy"
    shutil.copytree(bench, out)
    before = sorted(p.parent.relative_to(out) for p in (out / "worldscore_output").rglob("input_image.png"))
    assert len(before) == 5
    capsys.readouterr()
    assert _run(DATA, out, "--split", "static", "--limit", "1", "--resume") == 0
    assert "4 instance folder(s) of an earlier run are outside this selection" in capsys.readouterr().err
    assert _run(DATA, out, "--split", "static", "--limit", "1", "--overwrite") == 0
    assert "removed 4 instance folder(s)" in capsys.readouterr().err
    after = sorted(p.parent.relative_to(out) for p in (out / "worldscore_output").rglob("input_image.png"))
    assert [str(d) for d in after] == ["worldscore_output/static/photorealistic/indoor/dining_spaces/000"]
    assert sorted(d.name for d in (out / "runs").iterdir()) == ["static-photorealistic-indoor-dining_spaces-000"]
    assert main(["eval", "worldscore", "--check", str(out)]) == 0


def test_workers_2_give_the_same_frames(bench, tmp_path):
    out = tmp_path / "w2"
    assert _run(DATA, out, "--workers", "2") == 0
    assert json.loads((out / "batch.json").read_text())["workers"] == "2 processes"
    for folder in sorted((bench / "worldscore_output").rglob("frames")):
        twin = out / folder.relative_to(bench)
        assert np.array_equal(_frames(folder), _frames(twin)), folder


@pytest.mark.slow
def test_ray_actors_give_the_same_frames(bench, tmp_path):
    """The instances on two local Ray actors (job and step cross a process boundary): the same frames."""
    import os

    if os.environ.get("CI"):  # CI installs the ray extra: a broken import must fail there, not skip (as test_batch)
        import ray
    else:
        ray = pytest.importorskip("ray")
    out = tmp_path / "ray"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert _run(DATA, out, "--ray", "local", "--workers", "2", "--split", "static") == 0
    finally:
        ray.shutdown()
    assert json.loads((out / "batch.json").read_text())["workers"] == "ray local x2"
    for folder in sorted((bench / "worldscore_output" / "static").rglob("frames")):
        assert np.array_equal(_frames(folder), _frames(out / folder.relative_to(bench))), folder


# ------------------------------------------------------------------------------------ bad input, subsets
def _broken_dataset(tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(DATA, root)
    ds = root / "WorldScore-Dataset"
    static = json.loads((ds / "static" / "static.json").read_text())
    del static[0]["camera_path"]
    static[1]["camera_path"] = ["push_in", "zoom_out"]
    (ds / "static" / "static.json").write_text(json.dumps(static))
    (ds / "static/stylized/indoor/living_room/002.png").write_bytes(b"not a png")
    (ds / "dynamic" / "dynamic.json").unlink()
    return root


def test_bad_instances_are_listed_and_the_rest_run(tmp_path, capsys):
    root = _broken_dataset(tmp_path)
    assert _run(root, tmp_path / "out") == 2  # nothing readable: one error listing every instance
    err = capsys.readouterr().err
    assert "instance 0: field 'camera_path': missing" in err
    assert "instance 1: field 'camera_path': unknown layout 'zoom_out'" in err
    assert "002.png does not open as an image" in err
    assert "dynamic.json: missing" in err
    # one good instance: it runs, the bad ones are listed, exit 1 (incomplete)
    ds = root / "WorldScore-Dataset"
    image = "static/stylized/indoor/living_room/002.png"
    shutil.copy(DATA / "WorldScore-Dataset" / image, ds / image)
    assert _run(root, tmp_path / "out") == 1
    doc = json.loads((tmp_path / "out" / "protocol.json").read_text())
    assert [e["id"] for e in doc["instances"]] == ["static-stylized-indoor-living_room-002"]
    assert len(doc["subset"]["unreadable"]) == 3
    assert main(["eval", "worldscore", "--check", str(tmp_path / "out")]) == 0


def test_subset_options_and_a_failed_instance(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sub"
    marker = tmp_path / "failed-once"
    monkeypatch.setenv("MIRAGE_TEST_FAIL_ONCE", f"static-photorealistic-outdoor-beach-001:{marker}")
    assert _run(DATA, out, "--split", "static", "--only", "photorealistic", "--limit", "2", "--retries", "0",
                "--prompts", "first", "--name", "my_model") == 1
    assert "injected test failure" in capsys.readouterr().err
    doc = json.loads((out / "protocol.json").read_text())
    assert [e["id"] for e in doc["instances"]] == ["static-photorealistic-indoor-dining_spaces-000",
                                                   "static-photorealistic-outdoor-beach-001"]
    assert doc["failed"] == [{"id": "static-photorealistic-outdoor-beach-001", "status": "failed",
                              "error": "RuntimeError: injected test failure (MIRAGE_TEST_FAIL_ONCE)"}]
    assert (out / "worldscore_config" / "my_model.yaml").is_file()
    assert any("note:" in c and "dynamic" in c for c in doc["evaluate"])  # one split: the evaluator's second fails
    assert main(["eval", "worldscore", "--check", str(out)]) == 1
    # retried on the next run (the hook fires once), then complete
    assert _run(DATA, out, "--split", "static", "--only", "photorealistic", "--limit", "2", "--prompts", "first",
                "--name", "my_model", "--resume") == 0
    assert main(["eval", "worldscore", "--check", str(out)]) == 0
    from mirage_cli.pipeline.records import RunRecord

    rec = RunRecord.read(out / "runs" / "static-photorealistic-indoor-dining_spaces-000" / "run" / "run.json")
    assert rec.config.prompts == ["A dining room with a wooden table. Photorealistic, high detail."]


def test_option_errors(tmp_path):
    assert main(["eval", "worldscore", str(tmp_path), "--out", str(tmp_path / "o")]) == 2  # not the dataset
    assert _run(DATA, tmp_path / "o", "--only", "nowhere") == 2
    assert _run(DATA, tmp_path / "o", "--split", "both") == 2
    assert _run(DATA, tmp_path / "o", "--prompts", "all") == 2
    assert main(["eval", "worldscore", "--check", str(tmp_path)]) == 2  # no protocol.json


@pytest.mark.slow
def test_the_mirage_backend_through_a_converted_tiny_model(model_dir, tmp_path):
    """A neural backend end to end (the tiny converted mirage model, random weights): the layout is
    complete, each scene's prompt reached the backend, and the weights' folder hash is recorded."""
    from mirage_cli.eval.worldscore.protocol import folder_sha256
    from mirage_cli.pipeline.records import RunRecord

    out = tmp_path / "mirage"
    assert main(["--threads", "1", "eval", "worldscore", str(DATA), "--out", str(out), "--width", "64", "--height", "64",
                 "--frames", "5", "--split", "static", "--limit", "1", "--backend", "mirage", "--model", str(model_dir),
                 "--steps", "2", "--depth", "prior", "--chunk-frames", "5", "--quiet"]) == 0
    assert main(["eval", "worldscore", "--check", str(out)]) == 0
    doc = json.loads((out / "protocol.json").read_text())
    assert doc["weights"]["folder_sha256"] == folder_sha256(model_dir)[0] and doc["steps"] == 2
    run = out / "runs" / "static-photorealistic-indoor-dining_spaces-000" / "run"
    assert RunRecord.read(run / "run.json").backend["prompts_cached"] == 2  # two chunks, one per scene
