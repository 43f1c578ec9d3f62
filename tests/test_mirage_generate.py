"""`mirage generate --backend mirage` on the tiny kit, geometry.npz input, voxel-IoU references, bench --denoiser mirage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mirage_cli.cli import main
from mirage_cli.geometry.cameras import Cameras
from mirage_cli.io import read_video
from mirage_cli.pipeline.covisibility import depth_is_metric, voxel_iou_references, voxel_size
from mirage_cli.pipeline.generate import GenerateConfig, generate, start
from mirage_cli.pipeline.loop import run_loop

ROOM = str(Path(__file__).resolve().parents[1] / "examples" / "room.png")


def _cfg(model_dir, out, **kw) -> GenerateConfig:
    base = dict(image=ROOM, traj="orbit_left", backend="mirage", model=str(model_dir), steps=2, height=64, width=96,
                out=str(out), device="cpu", keep_latents=True)  # the tests read the stored chunk latents
    base.update(kw)
    return GenerateConfig(**base)


@pytest.fixture(scope="module")
def full_run(model_dir, tmp_path_factory):
    """One uninterrupted run, kept with its codec (to count encodes)."""
    out = tmp_path_factory.mktemp("runs") / "a"
    run = start(_cfg(model_dir, out), warn=lambda m: None, quiet=True)
    record = run_loop(run, warn=lambda m: None).to_json()
    return out, record, run.codec


def test_tiny_kit_run_frames_defaults_and_encodes(full_run):
    out, rec, codec = full_run
    frames = read_video(out / "video.mp4")
    assert len(frames) == rec["trajectory"]["frames"] == 49 and frames.shape[1:3] == (64, 96)
    cfg = rec["config"]
    # the backend's defaults fill what was not given; the given --steps wins
    assert (cfg["steps"], cfg["guidance"], cfg["shift"], cfg["references"], cfg["chunk_frames"]) == (2, 1.0, 5.0, 4, 33)
    assert cfg["splat"] == "point"  # the reference's nearest-cell read, which the model was trained on
    assert rec["codec"] == {"name": "wan2.2-vae", "channels": 48, "spatial_factor": 16, "temporal_factor": 4}
    assert rec["reference_selection"]["method"] == "voxel-iou" and rec["reference_selection"]["threshold"] == 0.04
    assert [c["padded_length"] for c in rec["chunk_plan"]] == [33, 17]  # frames 0-32, 32-48
    # chunk 0: 9 target latent frames; chunk 1: 5 target + 2 preceding -> two white-latent shapes
    assert codec.encode_calls == 1 + 2
    assert rec["backend"]["last_chunk"]["preceding_frames"] == 2
    # the reads the preceding frames were made from are stored beside the chunk latents
    stored = load_file(str(out / "chunks" / "chunk_000.latents.safetensors"))
    assert stored["read"].shape == stored["latents"].shape == (9, 48, 4, 6) and stored["known"].dtype == torch.bool
    assert bool(stored["known"][0].all())  # latent frame 0 is the input view itself


def test_same_seed_same_video_and_resume_is_bit_identical(full_run, model_dir, tmp_path, monkeypatch):
    a = full_run[0]
    b = tmp_path / "b"
    generate(_cfg(model_dir, b), warn=lambda m: None, quiet=True)
    assert np.array_equal(read_video(a / "video.mp4"), read_video(b / "video.mp4"))

    import mirage_cli.pipeline.loop as loop

    real = loop.run_chunk

    def dies(chunk, *args, **kw):
        if chunk.index == 1:
            raise KeyboardInterrupt
        return real(chunk, *args, **kw)

    c = tmp_path / "c"
    monkeypatch.setattr(loop, "run_chunk", dies)
    with pytest.raises(KeyboardInterrupt):
        generate(_cfg(model_dir, c), warn=lambda m: None, quiet=True)
    monkeypatch.setattr(loop, "run_chunk", real)
    assert json.loads((c / "run.json").read_text())["status"] == "interrupted"
    assert main(["generate", "--resume", str(c), "--quiet"]) == 0
    for i in range(2):
        name = f"chunks/chunk_{i:03d}.latents.safetensors"
        assert torch.equal(load_file(str(a / name))["latents"], load_file(str(c / name))["latents"])
    assert np.array_equal(read_video(a / "video.mp4"), read_video(c / "video.mp4"))


def test_cache_inspect_shows_48_channels_at_16(full_run, capsys):
    out = full_run[0]
    assert main(["cache", "inspect", str(out / "cache" / "final.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "48 channels" in text and "1/16" in text


def test_preceding_frames_zero_and_bad_options(model_dir, tmp_path, capsys):
    rec = generate(_cfg(model_dir, tmp_path / "p0", preceding_frames=0, references=0, frames=13, chunk_frames=9),
                   warn=lambda m: None, quiet=True)
    assert rec["backend"]["last_chunk"] == {"steps": 2, "guidance": 1.0, "reference_frames": 0, "preceding_frames": 0}
    assert "read" not in load_file(str(tmp_path / "p0" / "chunks" / "chunk_000.latents.safetensors"))
    assert main(["generate", ROOM, "--traj", "orbit_left", "--backend", "mirage", "--out", str(tmp_path / "x")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["generate", ROOM, "--traj", "orbit_left", "--backend", "mirage", "--model", str(model_dir),
                 "--preceding-frames", "-1", "--out", str(tmp_path / "y")]) == 2
    assert "--preceding-frames" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_frame_size_is_a_multiple_of_32(model_dir, tmp_path):
    rec = generate(_cfg(model_dir, tmp_path / "s", height=80, width=120, frames=5, chunk_frames=5),
                   warn=lambda m: None, quiet=True)
    assert (rec["image"]["width"], rec["image"]["height"]) == (96, 64)


# ------------------------------------------------------------------------------------ voxel IoU
def test_voxel_iou_picks_the_overlapping_frames_highest_first():
    # memory: a wall of points at z = 5 in front of the origin, x in [-2, 2]
    xs = torch.linspace(-2, 2, 41)
    ys = torch.linspace(-1, 1, 21)
    pts = torch.stack([xs[:, None].expand(41, 21), ys[None].expand(41, 21), torch.full((41, 21), 5.0)], -1).reshape(-1, 3)
    labels = torch.zeros(len(pts), dtype=torch.int32)
    eye = torch.eye(4, dtype=torch.float64)

    def cam(x):
        c = eye.clone()
        c[0, 3] = x
        return c

    intr = torch.tensor([[1.0, 1.0, 0.5, 0.5]], dtype=torch.float64)
    target = Cameras(cam(0.0)[None], intr, 64, 64)
    hist = Cameras(torch.stack([cam(0.0), cam(1.0), cam(2.5), cam(30.0)]), intr.expand(4, 4), 64, 64)
    got = voxel_iou_references(pts, labels, target, hist, [0, 0, 0, 0], [0, 1, 2, 3], 4, (8, 8), 0.1)
    assert got == [0, 1, 2]  # identical view, then half overlap, then a sliver; the far camera sees nothing
    assert voxel_iou_references(pts, labels, target, hist, [0, 0, 0, 0], [1, 2, 3], 1, (8, 8), 0.1) == [1]
    # a history frame only sees the points that existed after its chunk was written
    assert voxel_iou_references(pts, labels + 2, target, hist, [1, 0, 0, 0], [0], 1, (8, 8), 0.1) == []


def test_voxel_size_metric_and_relative():
    assert depth_is_metric("geometry:/x.npz") and depth_is_metric("sidecar:/a.npy") and depth_is_metric("model:m:metric")
    assert not depth_is_metric("prior") and not depth_is_metric("model:depth-anything-v2-small:relative")
    assert voxel_size("file:/d.npy", 3.0)[0] == 0.1
    v, how = voxel_size("prior", 3.0)
    assert v == pytest.approx(0.3) and "relative" in how


# ------------------------------------------------------------------------------------ geometry.npz
def _npz(path: Path, n=9, H=64, W=96, **override) -> Path:
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 0, 3] = np.linspace(0, -0.4, n)
    K = np.tile(np.array([[80.0, 0, W / 2], [0, 80.0, H / 2], [0, 0, 1]]), (n, 1, 1))
    rng = np.random.default_rng(0)
    data = dict(depths=np.full((n, H, W), 3.0, np.float32), poses_c2w=c2w, intrinsics=K,
                frames=rng.integers(0, 255, (n, H, W, 3), dtype=np.uint8), masks=np.ones((n, H, W), bool), fps=np.array(12.0))
    data.update(override)
    data = {k: v for k, v in data.items() if v is not None}
    np.savez(path, **data)
    return path


def test_geometry_npz_is_a_trajectory_format(tmp_path):
    from mirage_cli.trajectories import detect_format, load_trajectory

    p = _npz(tmp_path / "geometry.npz")
    assert detect_format(p) == "geometry-npz"
    t = load_trajectory(str(p))
    assert len(t) == 9 and t.fps == 12.0 and (t.cameras.width, t.cameras.height) == (96, 64)
    assert torch.allclose(t.cameras.intrinsics[0], torch.tensor([80 / 96, 80 / 64, 0.5, 0.5], dtype=torch.float64))
    assert main(["traj", "convert", str(p), "--to", "realestate10k", "-o", str(tmp_path / "t.txt")]) == 0
    back = load_trajectory(str(tmp_path / "t.txt"))
    assert torch.allclose(back.cameras.c2w.float(), t.cameras.c2w.float(), atol=1e-5)


@pytest.mark.parametrize("override, problem", [
    (dict(depths=None), "depths: missing"),
    (dict(poses_c2w=np.tile(np.eye(4), (8, 1, 1))), "poses_c2w: expected shape"),
    (dict(masks=np.array([object()] * 2, dtype=object)), "pickled"),
])
def test_malformed_npz_is_one_line_exit_2(tmp_path, capsys, override, problem):
    p = tmp_path / "geometry.npz"
    _npz(p, **override)
    assert main(["traj", "show", str(p)]) == 2
    assert main(["generate", "--traj", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_generate_from_geometry_npz_uses_frame_and_depth(tmp_path):
    p = _npz(tmp_path / "geometry.npz", masks=np.concatenate([np.zeros((9, 32, 96), bool), np.ones((9, 32, 96), bool)], 1))
    rec = generate(GenerateConfig(traj=str(p), out=str(tmp_path / "r"), device="cpu"), warn=lambda m: None, quiet=True)
    assert rec["depth"]["source"].startswith("geometry:") and rec["depth"]["reference_depth"] == pytest.approx(3.0)
    assert rec["trajectory"]["frames"] == 9 and rec["image"]["path"] == str(p.resolve())
    first = read_video(tmp_path / "r" / "video.mp4")[0]
    assert first.shape == (64, 96, 3)
    # only the bottom half (masks[0] True) was lifted: the preview's 1:1 grid has one point per valid pixel
    from mirage_cli.memory.latent import LatentMemory

    mem = LatentMemory.load(tmp_path / "r" / "cache" / "final.safetensors")
    assert rec["config"]["downscale"] == 1 and int((mem.chunk == 0).sum()) == 32 * 96


def test_start_frame(tmp_path):
    p = _npz(tmp_path / "geometry.npz")
    rec = generate(GenerateConfig(traj=str(p), start_frame=4, out=str(tmp_path / "r"), device="cpu"),
                   warn=lambda m: None, quiet=True)
    assert rec["trajectory"]["frames"] == 5 and rec["config"]["start_frame"] == 4


# ------------------------------------------------------------------------------------ bench
def test_bench_mirage_tiny_denoiser_on_a_tiny_wan22_codec():
    from mirage_cli.backends import ChunkRequest
    from mirage_cli.bench.factories import make_denoiser
    from mirage_cli.models.wan_vae import WanVAECodec

    codec = WanVAECodec.random("wan2.2", device="cpu", tiny=True, tiling=False)
    backend, weights = make_denoiser("mirage-tiny", codec, torch.device("cpu"))
    assert weights == "random" and backend.name == "mirage"
    T, h, w = 3, 4, 6
    known = torch.ones(T, h, w, dtype=torch.bool)
    req = ChunkRequest(read_latents=torch.zeros(T, 48, h, w), known=known, read_depth=known.float(),
                       first_latent=torch.ones(48, h, w), num_frames=9, steps=1, guidance=1.0)
    out = backend.denoise(req)
    assert out.shape == (T, 48, h, w) and torch.equal(out[0], torch.ones(48, h, w))
    with pytest.raises(Exception, match="48 channels, 16x"):
        make_denoiser("mirage-tiny", WanVAECodec.random("wan2.1", device="cpu", tiny=True, tiling=False), torch.device("cpu"))
