"""End-to-end `mirage generate` with the preview backend on a synthetic scene with exact depth."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import psnr
from safetensors.torch import load_file

from mirage_cli.cli import main
from mirage_cli.geometry.cameras import Cameras, backproject, look_at, project
from mirage_cli.io import read_video
from mirage_cli.pipeline.generate import GenerateConfig, generate


def safe_metadata(path) -> dict:
    """The string metadata of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


def run_frames(out) -> torch.Tensor:
    """All frames of a preview run, exact (from the stored chunk latents, not the lossy MP4)."""
    run = json.loads((out / "run.json").read_text())
    frames = []
    for c in run["chunks"]:
        lat = load_file(str(out / "chunks" / f"chunk_{c['index']:03d}.latents.safetensors"))["latents"].float()
        n = c["frames"][1] - c["frames"][0] + 1
        frames.append(lat[:n] if c["index"] == 0 else lat[1:n])
    return torch.cat(frames)


@contextmanager
def interrupted_at_chunk(monkeypatch, index: int):
    """Within the block, the loop is killed (Ctrl-C) when it reaches chunk ``index``."""
    import mirage_cli.pipeline.loop as g

    real = g.run_chunk

    def dies(chunk, *args, **kw):
        if chunk.index == index:
            raise KeyboardInterrupt
        return real(chunk, *args, **kw)

    monkeypatch.setattr(g, "run_chunk", dies)
    try:
        yield
    finally:
        monkeypatch.setattr(g, "run_chunk", real)


def write_native(path, c2w: torch.Tensor, fov: float, fps: float = 8.0) -> None:
    path.write_text(json.dumps({
        "convention": "opencv", "pose": "c2w", "scale": "absolute", "fps": fps,
        "camera_path": [{"camera_to_world": T.flatten().tolist(), "fov": fov} for T in c2w],
    }))


def seen_by_first_view(scene, cams: Cameras, depth0: torch.Tensor, t: int) -> torch.Tensor:
    """Ground-truth mask of pixels of camera ``t`` whose surface point view 0 saw (not occluded)."""
    _, d = scene.render(cams[t])
    pts = backproject(d[0].double(), cams.c2w[t], cams.K()[t])
    uv, z = project(pts.reshape(-1, 3), cams.w2c[0], cams.K()[0])
    H, W = d.shape[-2:]
    u, v = uv[:, 0].floor().long(), uv[:, 1].floor().long()
    inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    d0 = depth0[v.clamp(0, H - 1), u.clamp(0, W - 1)].double()
    return (inside & ((z - d0).abs() < 0.01 * z)).reshape(H, W)


def nearest_backward_warp(scene, cams: Cameras, image0: torch.Tensor, t: int) -> torch.Tensor:
    """View 0's image sampled at the exact ground-truth correspondence of every pixel of camera t."""
    _, d = scene.render(cams[t])
    H, W = d.shape[-2:]
    pts = backproject(d[0].double(), cams.c2w[t], cams.K()[t])
    uv, _ = project(pts.reshape(-1, 3), cams.w2c[0], cams.K()[0])
    u = uv[:, 0].floor().long().clamp(0, W - 1)
    v = uv[:, 1].floor().long().clamp(0, H - 1)
    return image0[:, v, u].reshape(3, H, W)


def test_preview_matches_ground_truth_where_input_saw(small_scene, tmp_path):
    scene, cam0 = small_scene["scene"], small_scene["camera"]
    ref = scene.reference_depth
    target = torch.tensor(scene.center)
    c2w = []
    for a in torch.linspace(0, 12, 9):  # orbit 12 degrees around the look-at point, exact units
        ang = torch.deg2rad(a)
        eye = target + torch.tensor([torch.sin(ang) * -3.0, 0.0, -torch.cos(ang) * 3.0], dtype=torch.float64)
        c2w.append(look_at(eye, target))
    c2w = torch.stack(c2w)
    c2w = torch.linalg.inv(c2w[0]) @ c2w
    traj = tmp_path / "orbit.json"
    write_native(traj, c2w, float(cam0.fov_y_deg[0]))
    out = tmp_path / "run"
    generate(GenerateConfig(image=str(small_scene["image"]), traj=str(traj), out=str(out), keep_latents=True),
             warn=lambda m: None)
    frames = run_frames(out)
    cams = Cameras.from_fov(c2w, float(cam0.fov_y_deg[0]), 208, 120)
    gt, _ = scene.render(cams)
    _, depth0 = scene.render(cam0)
    assert frames.shape == gt.shape
    for t in (4, 8):
        mask = seen_by_first_view(scene, cams, depth0[0], t)
        assert mask.float().mean() > 0.6  # most of the frame was seen by the input view
        # The best any forward warp of view 0 at this resolution can do: sample view 0 at the exact
        # ground-truth correspondence (nearest pixel). Textures alias at 208x120, so this is ~24 dB.
        oracle = psnr(nearest_backward_warp(scene, cams, gt[0], t), gt[t], mask)
        got = psnr(frames[t], gt[t], mask)
        assert got > 22.0 and got > oracle - 1.0, (t, got, oracle)
    assert ref > 0


def test_cli_run_outputs_and_records(small_scene, tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "generate", str(small_scene["image"]), "--traj", "orbit_left", "--frames", "13", "--out", str(out), "--quiet",
        "--cache-dump", "chunks",
    ])
    assert code == 0
    video = read_video(out / "video.mp4")
    assert video.shape == (13, 120, 208, 3)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["backend"]["name"] == "preview"
    for key in ("mirage_version", "command", "backend", "model", "seed", "device", "dtype", "image", "trajectory", "chunks",
                "totals"):
        assert key in run, key
    assert run["image"]["sha256"] and run["trajectory"]["format"] == "preset"
    assert run["depth"]["source"].startswith("sidecar:")
    plan = run["chunk_plan"]
    assert plan[0]["frames"][0] == 0 and plan[-1]["frames"][1] == 12
    for c in run["chunks"]:
        for k in ("read", "denoise", "decode", "write", "dump"):
            assert c["seconds"][k] >= 0
        assert c["memory_points"] > 0 and c["memory_bytes"] > 0 and 0 <= c["known_fraction"] <= 1
        assert (out / "chunks" / f"chunk_{c['index']:03d}.mp4").exists()
    dumps = sorted((out / "cache").glob("*.safetensors"))
    assert [p.name for p in dumps] == [f"chunk_{i:03d}.safetensors" for i in range(len(run["chunks"]))] + ["final.safetensors"]
    for p in dumps:
        capsys.readouterr()
        assert main(["cache", "inspect", str(p), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["points"] > 0
    # The last dump and the final one hold the same memory: same tensors, same metadata.
    last, final = dumps[-2], dumps[-1]
    ta, tb = load_file(str(last)), load_file(str(final))
    assert sorted(ta) == sorted(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)
    ma, mb = safe_metadata(last), safe_metadata(final)
    ea, eb = json.loads(ma.pop("extras")), json.loads(mb.pop("extras"))
    assert ma == mb
    # Extras match too, but for the last chunk's dump time, which was not known while it was dumped.
    assert ea["run_chunks"][-1]["seconds"]["dump"] == 0.0
    ea["run_chunks"][-1]["seconds"]["dump"] = eb["run_chunks"][-1]["seconds"]["dump"]
    assert ea == eb and eb["run_chunks"] == run["chunks"]
    assert run["totals"]["memory_points"] == run["chunks"][-1]["memory_points"] == int(mb["points"])


def test_same_seed_same_frames_and_resume_is_identical(small_scene, tmp_path, monkeypatch):
    base = dict(image=str(small_scene["image"]), traj="orbit_right", frames=21, chunk_frames=5, seed=7, keep_latents=True)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(GenerateConfig(out=str(a), **base), warn=lambda m: None)
    generate(GenerateConfig(out=str(b), **base), warn=lambda m: None)
    assert torch.equal(run_frames(a), run_frames(b))

    with interrupted_at_chunk(monkeypatch, 2), pytest.raises(KeyboardInterrupt):
        generate(GenerateConfig(out=str(c), **base), warn=lambda m: None)
    assert json.loads((c / "run.json").read_text())["status"] == "interrupted"
    ckpt = c / "cache" / "checkpoint"  # default: the incremental checkpoint, one entry per finished chunk
    assert (ckpt / "index.json").exists() and len(list(ckpt.glob("entry_*.safetensors"))) == 2
    assert not (c / "video.mp4").exists()
    assert main(["generate", "--resume", str(c), "--quiet"]) == 0
    assert torch.equal(run_frames(a), run_frames(c))
    assert np.array_equal(read_video(a / "video.mp4"), read_video(c / "video.mp4"))


def test_out_and_back_returns_to_the_first_frame(small_scene, tmp_path):
    target = torch.tensor(small_scene["scene"].center)
    angles = list(range(0, 21, 4)) + list(range(16, -1, -4))
    c2w = []
    for a in angles:
        ang = torch.deg2rad(torch.tensor(float(a), dtype=torch.float64))
        eye = target + torch.stack([torch.sin(ang) * 3.0, torch.tensor(0.0, dtype=torch.float64), -torch.cos(ang) * 3.0])
        c2w.append(look_at(eye, target))
    c2w = torch.stack(c2w)
    c2w = torch.linalg.inv(c2w[0]) @ c2w
    traj = tmp_path / "out_back.json"
    write_native(traj, c2w, float(small_scene["camera"].fov_y_deg[0]))
    out = tmp_path / "run"
    generate(GenerateConfig(image=str(small_scene["image"]), traj=str(traj), out=str(out), chunk_frames=4, keep_latents=True),
             warn=lambda m: None)
    frames = run_frames(out)
    assert len(frames) == len(angles)
    assert psnr(frames[-1], frames[0]) > 40.0


def test_memory_continuation(small_scene, tmp_path):
    a = tmp_path / "a"
    generate(GenerateConfig(image=str(small_scene["image"]), traj="orbit_left", frames=9, out=str(a)), warn=lambda m: None)
    b = tmp_path / "b"
    rec = generate(GenerateConfig(image=str(small_scene["image"]), traj="orbit_left", frames=9, out=str(b),
                                  memory=str(a / "cache" / "final.safetensors")), warn=lambda m: None)
    # The same path again through a memory that already holds it adds (almost) nothing.
    assert sum(c["points_added"] for c in rec["chunks"]) <= 0.01 * rec["totals"]["memory_points"]


# ----------------------------------------------------------------------------------- bad inputs
def _err(capsys) -> str:
    return capsys.readouterr().err


def test_bad_inputs_exit_2_with_one_line(small_scene, tmp_path, capsys):
    img = str(small_scene["image"])
    cases = [
        (["generate", str(tmp_path / "missing.png"), "--traj", "orbit_left"], "image not found"),
        (["generate", str(small_scene["depth"]), "--traj", "orbit_left", "--out", str(tmp_path / "x1")], "not a readable image"),
        (["generate", img, "--traj", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x2")], "nope.json"),
        (["generate", img, "--traj", "orbit_left", "--depth", str(tmp_path / "wrong.npy"), "--out", str(tmp_path / "x3")],
         "depth is 10x8"),
        (["generate", img, "--traj", "orbit_left", "--backend", "magic", "--out", str(tmp_path / "x4")], "unknown backend"),
        (["generate", img, "--traj", "orbit_left", "--cache-dump", "sometimes", "--out", str(tmp_path / "x5")], "--cache-dump"),
    ]
    np.save(tmp_path / "wrong.npy", np.ones((8, 10), np.float32))
    for argv, msg in cases:
        _err(capsys)
        code = main(argv)
        err = _err(capsys)
        assert code == 2, (argv, err)
        assert msg in err, (msg, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir(small_scene, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code = main(["generate", str(small_scene["image"]), "--traj", "orbit_left", "--out", str(ro / "run")])
    assert code == 2 and "cannot write" in capsys.readouterr().err


def test_output_under_a_file_is_refused(small_scene, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["generate", str(small_scene["image"]), "--traj", "orbit_left", "--out", str(blocker / "run")])
    assert code == 2 and "cannot write" in capsys.readouterr().err


def test_existing_run_is_never_clobbered(small_scene, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["generate", str(small_scene["image"]), "--traj", "static", "--frames", "3", "--out", str(out), "--quiet"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["generate", str(small_scene["image"]), "--traj", "orbit_left", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # A foreign non-empty directory is not deleted even with --overwrite.
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "keep.jpg").write_bytes(b"precious")
    assert main(["generate", str(small_scene["image"]), "--traj", "static", "--out", str(foreign), "--overwrite"]) == 2
    assert (foreign / "keep.jpg").read_bytes() == b"precious"
    shutil.rmtree(foreign)


# ----------------------------------------------------------------------------------- wan-vace
def test_wan_vace_tiny_end_to_end_is_deterministic(small_scene, tiny_kit, tmp_path):
    """The real Wan2.1-VACE classes (tiny random weights, Hub layout) through the same loop."""
    base = dict(image=str(small_scene["image"]), traj="orbit_left", frames=9, chunk_frames=5, height=64, width=96,
                keep_latents=True, backend="wan-vace", model=str(tiny_kit["vace"]), steps=2, seed=3, device="cpu")
    a, b = tmp_path / "a", tmp_path / "b"
    rec = generate(GenerateConfig(out=str(a), **base), warn=lambda m: None, quiet=True)
    generate(GenerateConfig(out=str(b), **base), warn=lambda m: None, quiet=True)
    assert rec["backend"]["name"] == "wan-vace" and rec["codec"]["channels"] == 16
    assert read_video(a / "video.mp4").shape == (9, 64, 96, 3)
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert "run.json" in names and "cache/final.safetensors" in names and "chunks/chunk_001.mp4" in names
    for i in range(len(rec["chunks"])):
        la = load_file(str(a / "chunks" / f"chunk_{i:03d}.latents.safetensors"))["latents"]
        lb = load_file(str(b / "chunks" / f"chunk_{i:03d}.latents.safetensors"))["latents"]
        assert torch.equal(la, lb)
    assert np.array_equal(read_video(a / "video.mp4"), read_video(b / "video.mp4"))


def test_bad_options_never_touch_an_earlier_run(small_scene, tmp_path, capsys):
    out = tmp_path / "run"
    img = str(small_scene["image"])
    assert main(["generate", img, "--traj", "static", "--frames", "3", "--out", str(out), "--quiet"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = [
        (["--write-policy", "foo"], "--write-policy"), (["--fps", "-5"], "--fps"), (["--fps", "nan"], "--fps"),
        (["--shift", "0"], "--shift"), (["--height", "7"], "--height"), (["--steps", "0"], "--steps"),
        (["--dtype", "fp8"], "--dtype"), (["--references", "-1"], "--references"),
        (["--memory", str(tmp_path / "none.safetensors")], "none.safetensors"),
    ]
    for extra, msg in bad:
        capsys.readouterr()
        code = main(["generate", img, "--traj", "orbit_left", "--out", str(out), "--overwrite", *extra])
        err = capsys.readouterr().err
        assert code == 2 and msg in err and "Traceback" not in err, (extra, err)
        assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}, extra


def test_resume_uses_the_saved_trajectory_and_absolute_paths(small_scene, tmp_path, monkeypatch):
    from mirage_cli.trajectories import load_trajectory, save_trajectory

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(small_scene["image"], work / "room.png")
    shutil.copy(small_scene["depth"], work / "room.depth.npy")
    save_trajectory(load_trajectory("orbit_left", frames=13), work / "mine.json")
    monkeypatch.chdir(work)
    with interrupted_at_chunk(monkeypatch, 1), pytest.raises(KeyboardInterrupt):
        generate(GenerateConfig(image="room.png", traj="mine.json", out="run", chunk_frames=5), warn=lambda m: None)
    # The user edits the trajectory file meanwhile and resumes from elsewhere: the run keeps its own.
    save_trajectory(load_trajectory("orbit_right", frames=21), work / "mine.json")
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--resume", str(work / "run"), "--quiet"]) == 0
    assert read_video(work / "run" / "video.mp4").shape[0] == 13
    run = json.loads((work / "run" / "run.json").read_text())
    assert run["status"] == "done" and run["config"]["image"] == str(work / "room.png")
    assert run["trajectory"]["frames"] == 13 and len(run["resumed_at"]) == 1


def test_resume_refuses_extra_inputs(small_scene, tmp_path, capsys):
    assert main(["generate", "--resume", str(tmp_path), "--traj", "orbit_left"]) == 2
    assert "run.json" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- run records
@pytest.fixture
def interrupted_run(small_scene, tmp_path, monkeypatch):
    """A run directory interrupted after its first chunk (resumable)."""
    out = tmp_path / "run"
    with interrupted_at_chunk(monkeypatch, 1), pytest.raises(KeyboardInterrupt):
        generate(GenerateConfig(image=str(small_scene["image"]), traj="orbit_left", frames=9, chunk_frames=5, out=str(out)),
                 warn=lambda m: None)
    return out


def _edit_run(out, edit) -> None:
    data = json.loads((out / "run.json").read_text())
    edit(data)
    (out / "run.json").write_text(json.dumps(data))


@pytest.mark.parametrize("damage, field, problem", [
    (lambda out: (out / "run.json").write_text((out / "run.json").read_text()[:300]), None, "not valid JSON"),
    (lambda out: _edit_run(out, lambda d: d["depth"].pop("reference_depth")), "depth.reference_depth", "is missing"),
    (lambda out: _edit_run(out, lambda d: d.pop("config")), "config", "is missing"),
    (lambda out: _edit_run(out, lambda d: d["config"].update(seed="7")), "config.seed", "must be an integer"),
    (lambda out: _edit_run(out, lambda d: d["depth"].update(reference_depth=None)), "depth.reference_depth", "must be a number"),
    (lambda out: _edit_run(out, lambda d: d["chunks"][0].update(frames="0-4")), "chunks[0].frames", "must be a list"),
    (lambda out: _edit_run(out, lambda d: d.update(format="something.else")), "format", "not a mirage run record"),
])
def test_damaged_run_record_gives_one_line_on_resume(interrupted_run, capsys, damage, field, problem):
    damage(interrupted_run)
    before = {p: p.read_bytes() for p in interrupted_run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["generate", "--resume", str(interrupted_run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(interrupted_run / "run.json") in err and problem in err, err
    if field is not None:
        assert f"'{field}'" in err, err
    assert "Traceback" not in err and len(err.splitlines()) <= 2, err
    assert before == {p: p.read_bytes() for p in interrupted_run.rglob("*") if p.is_file()}  # nothing touched


def test_run_record_round_trips(interrupted_run):
    from mirage_cli.pipeline.records import RunRecord

    data = json.loads((interrupted_run / "run.json").read_text())
    rec = RunRecord.from_json(data, interrupted_run / "run.json")
    assert rec.status == "interrupted" and rec.config.chunk_frames == 5 and rec.chunks[0].index == 0
    assert isinstance(rec.config, GenerateConfig) and isinstance(rec.depth.reference_depth, float)
    assert rec.to_json() == data


def test_damaged_dump_records_give_one_line_on_resume(interrupted_run, capsys):
    from mirage_cli.memory.checkpoint import MemoryCheckpoint
    from mirage_cli.memory.latent import LatentMemory

    dump = interrupted_run / "cache" / "checkpoint"  # the default keeps the incremental checkpoint
    mem = LatentMemory.load(dump)
    MemoryCheckpoint(dump).append(mem, {"chunks_done": 1, "run_chunks": [{"index": 0}]})
    capsys.readouterr()
    assert main(["generate", "--resume", str(interrupted_run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(dump) in err and "'run_chunks[0].frames' is missing" in err and "Traceback" not in err, err


def test_a_run_from_before_the_checkpoint_directory_still_resumes(small_scene, tmp_path, monkeypatch):
    """A run directory of the older layout (the rolling cache/last.safetensors) resumes as before,
    bit-identical to an uninterrupted run."""
    import shutil

    from mirage_cli.memory.latent import LatentMemory

    base = dict(image=str(small_scene["image"]), traj="orbit_left", frames=13, chunk_frames=5, keep_latents=True)
    a, c = tmp_path / "a", tmp_path / "c"
    generate(GenerateConfig(out=str(a), **base), warn=lambda m: None)
    with interrupted_at_chunk(monkeypatch, 2), pytest.raises(KeyboardInterrupt):
        generate(GenerateConfig(out=str(c), **base), warn=lambda m: None)
    ckpt = c / "cache" / "checkpoint"
    mem = LatentMemory.load(ckpt)
    mem.save(c / "cache" / "last.safetensors")  # the older layout: one full dump with the same extras
    shutil.rmtree(ckpt)
    assert main(["generate", "--resume", str(c), "--quiet"]) == 0
    assert np.array_equal(read_video(a / "video.mp4"), read_video(c / "video.mp4"))
    assert not (c / "cache" / "last.safetensors").exists() and not ckpt.exists()


def test_fill_depth_runs_once_per_chunk_and_splat_point_append(small_scene, tmp_path, monkeypatch):
    """The preview fill and the write share one fill_depth per chunk; --splat point and
    --write-policy append reach the memory (and its cache file)."""
    import mirage_cli.geometry.depth as gd
    import mirage_cli.pipeline.engine as loop

    calls = []
    real = gd.fill_depth

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(gd, "fill_depth", counted)
    monkeypatch.setattr(loop, "fill_depth", counted)
    out = tmp_path / "run"
    rec = generate(GenerateConfig(image=str(small_scene["image"]), traj="orbit_left", frames=9, chunk_frames=5,
                                  out=str(out), splat="point", write_policy="append"), warn=lambda m: None)
    assert len(calls) == len(rec["chunks"]) == 2
    meta = safe_metadata(out / "cache" / "final.safetensors")
    assert meta["splat"] == "point" and meta["write_policy"] == "append"


def _check_second_lap_adds_no_point(image, frames: int, tmp_path) -> None:
    """Run ``orbit_360`` with ``frames`` per lap, then the same cameras twice (lap 2 shares lap 1's
    last frame); lap 2 must read every cell lap 1 wrote, so the memory ends lap 2 with exactly
    lap 1's points and every chunk after lap 1 adds none."""
    one = tmp_path / "lap1"
    generate(GenerateConfig(image=str(image), traj="orbit_360", frames=frames, out=str(one)),
             warn=lambda m: None)
    traj = json.loads((one / "trajectory.json").read_text())
    traj.pop("preset", None)
    traj.pop("seconds", None)
    traj["camera_path"] = traj["camera_path"] + traj["camera_path"][1:]  # lap 2 shares lap 1's last frame
    path = tmp_path / "two_laps.json"
    path.write_text(json.dumps(traj))
    rec = generate(GenerateConfig(image=str(image), traj=str(path), out=str(tmp_path / "laps")),
                   warn=lambda m: None)
    chunks = rec["chunks"]
    lap1 = next(c for c in chunks if c["frames"][1] >= frames - 1)
    assert lap1["frames"][1] == frames - 1 and chunks[-1]["frames"][1] == 2 * frames - 2
    assert lap1["memory_points"] > 0 and chunks[-1]["memory_points"] == lap1["memory_points"]
    assert all(c["points_added"] == 0 for c in chunks[chunks.index(lap1) + 1:])


def test_second_lap_of_orbit_360_adds_no_point(small_scene, tmp_path):
    """Bounded growth (issue 12, item 4): lap 2 of orbit_360 at 49 frames per lap adds no point."""
    _check_second_lap_adds_no_point(small_scene["image"], 49, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("frames", [97, 193, 385])
def test_second_lap_of_finer_orbit_360_adds_no_point(small_scene, tmp_path, frames):
    """The same at 97, 193 and 385 frames per lap (finer laps: more writes, each a smaller step)."""
    _check_second_lap_adds_no_point(small_scene["image"], frames, tmp_path)


KILL_AT_BOUNDARY = """
import os, sys
import mirage_cli.pipeline.persist as persist
from mirage_cli.pipeline.generate import GenerateConfig, generate
real = persist.RunWriter.on_chunk
def on_chunk(self, result, engine):
    real(self, result, engine)
    if result.chunk.index == int(sys.argv[3]):
        os._exit(9)  # as SIGKILL: no handler, no cleanup; the lock file and a 'running' run.json stay
persist.RunWriter.on_chunk = on_chunk
generate(GenerateConfig(image=sys.argv[1], out=sys.argv[2], traj="orbit_left", frames=13, chunk_frames=5,
                        keep_latents=True), warn=lambda m: None)
"""


def test_resume_after_a_kill_at_every_chunk_boundary_is_bit_identical(small_scene, tmp_path):
    """The process dies right after chunk k was recorded (k = every boundary of a 3-chunk run);
    --resume finishes it with the video and memory of the uninterrupted run."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    a = tmp_path / "a"
    generate(GenerateConfig(image=str(small_scene["image"]), out=str(a), traj="orbit_left", frames=13, chunk_frames=5,
                            keep_latents=True), warn=lambda m: None)
    chunks = len(json.loads((a / "run.json").read_text())["chunks"])
    assert chunks == 3
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for k in range(chunks - 1):
        c = tmp_path / f"killed_after_{k}"
        proc = subprocess.run([sys.executable, "-c", KILL_AT_BOUNDARY, str(small_scene["image"]), str(c), str(k)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 9, proc.stderr
        assert json.loads((c / "run.json").read_text())["status"] == "running" and not (c / "video.mp4").exists()
        assert main(["generate", "--resume", str(c), "--quiet"]) == 0
        assert np.array_equal(read_video(a / "video.mp4"), read_video(c / "video.mp4")), k
        fa, fc = load_file(str(a / "cache" / "final.safetensors")), load_file(str(c / "cache" / "final.safetensors"))
        assert sorted(fa) == sorted(fc) and all(torch.equal(fa[n], fc[n]) for n in fa), k


def test_resume_with_another_thread_count_warns(small_scene, tmp_path, monkeypatch):
    """CPU results depend on the thread count in their last bits: a resume with another count says so."""
    import mirage_cli.pipeline.generate as g

    c = tmp_path / "c"
    base = dict(image=str(small_scene["image"]), traj="orbit_left", frames=9, chunk_frames=5)
    with interrupted_at_chunk(monkeypatch, 1), pytest.raises(KeyboardInterrupt):
        generate(GenerateConfig(out=str(c), **base), warn=lambda m: None)
    recorded = json.loads((c / "run.json").read_text())["threads"]
    monkeypatch.setattr(g, "current_threads", lambda: recorded + 1)
    said: list[str] = []
    generate(None, warn=said.append, resume_dir=c)
    assert any(f"used {recorded} CPU threads" in m and f"--threads {recorded}" in m for m in said), said
