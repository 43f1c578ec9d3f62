"""Issue 15, first-run experience: threads, exact frame 0, preview grid, presets that stay in the
scene, conversions that keep the motion, --resume refusals, visible depth, --dry-run, polish."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import psnr

from mirage_cli.backends.specs import backend_spec
from mirage_cli.cli import hoist_threads, main
from mirage_cli.io import read_video, write_video

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "room.png")


def run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


# ------------------------------------------------------------------------------ 1 threads
def test_threads_option_is_applied_recorded_and_validated(tmp_path, capsys, monkeypatch):
    import torch

    out = tmp_path / "run"
    # typed after the subcommand: hoisted to the root callback
    assert main(["generate", EXAMPLE, "--traj", "static", "--frames", "2", "--width", "104", "--out", str(out),
                 "--quiet", "--threads", "2"]) == 0
    assert run_json(out)["threads"] == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("MIRAGE_THREADS", "0")
    assert main(["traj", "list"]) == 2
    err = capsys.readouterr().err
    assert "MIRAGE_THREADS" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.delenv("MIRAGE_THREADS")
    # the preview defaults to one thread (memory-bound; measured), unless the user chose
    assert main(["generate", EXAMPLE, "--traj", "static", "--frames", "2", "--width", "104", "--out", str(out),
                 "--quiet", "--overwrite"]) == 0
    assert run_json(out)["threads"] == 1
    torch.set_num_threads(1)


def test_hoist_threads_keeps_everything_else_in_order():
    assert hoist_threads(["generate", "a.png", "--threads", "3", "-q"]) == ["--threads", "3", "generate", "a.png", "-q"]
    assert hoist_threads(["x", "--threads=2"]) == ["--threads=2", "x"]
    assert hoist_threads(["x", "--", "--threads", "2"]) == ["x", "--", "--threads", "2"]


# ------------------------------------------------------------------------------ 2 frame 0
def test_preview_frame0_is_the_input_image(small_scene, tmp_path):
    """Even on a 1/4 grid, frame 0 of the video is the input itself (up to the video codec)."""
    from mirage_cli.models.codecs import PixelCodec
    from mirage_cli.pipeline.inputs import prepare_image

    out = tmp_path / "run"
    assert main(["generate", str(small_scene["image"]), "--traj", "orbit_left", "--frames", "5", "--downscale", "4",
                 "--out", str(out), "--quiet"]) == 0
    frame0 = torch.from_numpy(read_video(out / "video.mp4")[0]).permute(2, 0, 1).float() / 255
    image = prepare_image(small_scene["image"], None, None, 4)
    assert frame0.shape == image.shape
    # "exactly, up to the video codec": against the input itself put through the same video codec
    write_video(tmp_path / "input.mp4", image[None], 8.0)
    coded = torch.from_numpy(read_video(tmp_path / "input.mp4")[0]).permute(2, 0, 1).float() / 255
    assert psnr(frame0, coded) >= 40.0
    assert psnr(frame0, image) >= psnr(coded, image) - 0.5  # (yuv420p chroma caps both near 35-39 dB)
    assert run_json(out)["frame0_psnr_db"] >= 50.0  # before the video codec: the uint8 rounding only
    # the decode of the 1/4 grid alone is far from it: the substitution is what makes frame 0 exact
    codec = PixelCodec(4)
    assert psnr(codec.decode(codec.encode(image[None]))[0], image) < 35.0


# ------------------------------------------------------------------------------ 3 preview grid
def test_width_alone_picks_the_downscale_from_the_resized_size(tmp_path):
    from mirage_cli.pipeline.config import GenerateConfig, preview_downscale
    from mirage_cli.pipeline.generate import _with_downscale

    out = tmp_path / "run"
    assert main(["generate", EXAMPLE, "--traj", "static", "--frames", "2", "--width", "416", "--out", str(out), "--quiet"]) == 0
    rec = run_json(out)
    assert rec["config"]["downscale"] == 1 and rec["latent_grid"] == [240, 416]
    # a tall 832x960 image with --width 416 is 416x480 (1/1), not 416x960 (which would give 1/2)
    cfg = _with_downscale(GenerateConfig(image="x", traj="static", width=416), backend_spec("preview"),
                          torch.zeros(3, 960, 832))
    assert cfg.downscale == 1 and preview_downscale(416, 960) == 2
    assert preview_downscale(832, 480) == 2 and preview_downscale(1024, 768) == 2


# ------------------------------------------------------------------------------ 4 presets in the scene
def _centres(out: Path) -> torch.Tensor:
    from mirage_cli.pipeline.plan import scale_cameras
    from mirage_cli.trajectories import load_trajectory

    rec = run_json(out)
    traj = load_trajectory(out / "trajectory.json")
    return scale_cameras(traj.cameras, traj.scale, rec["depth"]["reference_depth"]).centers


def test_orbit_360_on_the_example_keeps_every_camera_inside_the_room(tmp_path):
    from mirage_cli.data.scenes import make_scene

    room = make_scene("room")
    lo, hi = torch.tensor(room.room_lo, dtype=torch.float64), torch.tensor(room.room_hi, dtype=torch.float64)
    warnings = []
    from mirage_cli.pipeline.config import GenerateConfig
    from mirage_cli.pipeline.generate import generate

    out = tmp_path / "placed"
    generate(GenerateConfig(image=EXAMPLE, traj="orbit_360", out=str(out)), warn=warnings.append, dry_run=True)
    c = _centres(out)
    assert len(c) == 81
    assert bool(((c > lo + 0.3) & (c < hi - 0.3)).all()), "a camera leaves the room"
    assert not any("behind" in w for w in warnings)
    # the preset as written (look-at one reference depth away) would go through the far wall: warned
    out2 = tmp_path / "as-written"
    generate(GenerateConfig(image=EXAMPLE, traj="orbit_360", out=str(out2), look_at_depth=1.0), warn=warnings.append,
             dry_run=True)
    c2 = _centres(out2)
    assert not bool(((c2 > lo) & (c2 < hi)).all())
    assert any("behind the surface" in w for w in warnings)


def test_look_at_depth_on_a_file_is_refused(tmp_path, capsys):
    assert main(["generate", EXAMPLE, "--traj", str(ROOT / "presets" / "orbit_left.json"), "--look-at-depth", "0.5",
                 "--out", str(tmp_path / "r"), "--dry-run"]) == 2
    assert "--look-at-depth" in capsys.readouterr().err


# ------------------------------------------------------------------------------ 5 traj convert
FORMATS = ("native", "nerfstudio", "realestate10k", "nerf", "colmap", "worldscore")


def _path(tmp_path: Path, fmt: str, tag: str) -> Path:
    if fmt == "colmap":
        return tmp_path / f"{tag}-{fmt}"
    return tmp_path / f"{tag}-{fmt}.{'txt' if fmt == 'realestate10k' else 'json'}"


@pytest.mark.parametrize("src", FORMATS)
def test_convert_round_trips_keep_the_relative_motion(tmp_path, capsys, src):
    """Every format pair: a relative path either stays relative with the same poses, or is refused
    with one line (nothing written) and, resolved with --depth-scale, drives the same path in units."""
    from mirage_cli.errors import MirageError
    from mirage_cli.trajectories import REGISTRY, load_trajectory, make_preset, save_trajectory

    ref = make_preset("orbit_left", frames=5)
    D = 2.5
    first = _path(tmp_path, src, "a")
    if REGISTRY[src].keeps_scale:
        save_trajectory(ref, first, src)
        start, want_scale, want_c2w = str(first), "relative", ref.cameras.c2w
    else:
        with pytest.raises(MirageError, match="--depth-scale"):
            save_trajectory(ref, first, src)
        assert not first.exists()
        assert main(["traj", "convert", "orbit_left", "--frames", "5", "--to", src, "-o", str(first),
                     "--depth-scale", str(D)]) == 0
        start, want_scale, want_c2w = str(first), "absolute", ref.cameras.scaled(D).c2w
    for dst in FORMATS:
        target = _path(tmp_path, dst, f"b-{src}")
        code = main(["traj", "convert", start, "--to", dst, "-o", str(target)])
        if want_scale == "relative" and not REGISTRY[dst].keeps_scale:
            assert code == 2 and "--depth-scale" in capsys.readouterr().err
            continue
        assert code == 0
        back = load_trajectory(target)
        assert back.scale == want_scale, (src, dst)
        assert torch.allclose(back.cameras.c2w, want_c2w, atol=1e-4), (src, dst)


def test_depth_scale_needs_a_relative_trajectory(tmp_path, capsys):
    src = tmp_path / "abs.json"
    assert main(["traj", "convert", "orbit_left", "-o", str(src), "--absolute"]) == 0
    assert main(["traj", "convert", str(src), "-o", str(tmp_path / "x.json"), "--depth-scale", "2"]) == 2
    assert "absolute" in capsys.readouterr().err


# ------------------------------------------------------------------------------ 6 --resume
@pytest.mark.parametrize("extra", [["--frames", "10"], ["--fps", "8"], ["--width", "416"], ["--downscale", "2"],
                                   ["--overwrite"], ["--keep-latents"]])
def test_resume_refuses_options_it_would_ignore(tmp_path, capsys, extra):
    assert main(["generate", "--resume", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert extra[0] in err and len(err.strip().splitlines()) == 1


def interrupted_preview_run(out: Path, monkeypatch) -> None:
    """A preview run in ``out`` stopped by Ctrl-C at its second chunk (resumable)."""
    from test_generate import interrupted_at_chunk

    from mirage_cli.pipeline.config import GenerateConfig
    from mirage_cli.pipeline.generate import generate

    with interrupted_at_chunk(monkeypatch, 1), pytest.raises(KeyboardInterrupt):
        generate(GenerateConfig(image=EXAMPLE, traj="static", frames=9, chunk_frames=5, width=104, out=str(out)),
                 warn=lambda m: None)


def test_resume_refuses_another_device(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    interrupted_preview_run(out, monkeypatch)
    assert main(["generate", "--resume", str(out), "--device", "cuda", "--quiet"]) == 2
    assert "--device" in capsys.readouterr().err
    assert main(["generate", "--resume", str(out), "--device", "cpu", "--quiet", "--threads", "1"]) == 0
    assert run_json(out)["status"] == "done"


def test_resume_of_a_preview_run_uses_the_preview_thread_default(tmp_path, monkeypatch):
    """No --threads / MIRAGE_THREADS with --resume: the run's backend default (1 for the preview), not the general cap."""
    import mirage_cli.threads as threads

    out = tmp_path / "run"
    interrupted_preview_run(out, monkeypatch)
    monkeypatch.delenv("MIRAGE_THREADS", raising=False)
    monkeypatch.setattr(threads, "default_threads", lambda: 2)  # the general cap on a 2-core machine
    try:
        assert main(["generate", "--resume", str(out), "--quiet"]) == 0
        assert run_json(out)["status"] == "done" and run_json(out)["threads"] == 1
    finally:
        torch.set_num_threads(1)

# ------------------------------------------------------------------------------ 7 depth, dry run
def test_depth_is_saved_and_the_prior_warning_says_how_to_get_real_depth(tmp_path, monkeypatch):
    from mirage_cli.pipeline.config import GenerateConfig
    from mirage_cli.pipeline.generate import generate

    out = tmp_path / "run"
    warnings = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    generate(GenerateConfig(image=EXAMPLE, traj="static", frames=2, width=104, depth="prior", out=str(out)),
             warn=warnings.append)
    depth = np.load(out / "depth.npy")
    assert depth.shape == (60, 104) and depth.dtype == np.float32 and (depth > 0).all()
    assert (out / "depth.png").stat().st_size > 0 and run_json(out)["depth"]["source"] == "prior"
    # automatic depth with no model cached falls back to the prior and says how to do better
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))  # no depth model cached
    img = tmp_path / "plain.png"
    img.write_bytes(Path(EXAMPLE).read_bytes())  # no sidecar next to it
    generate(GenerateConfig(image=str(img), traj="static", frames=2, width=104, out=str(tmp_path / "auto")),
             warn=warnings.append)
    assert any("mirage models download" in w and "--depth FILE" in w for w in warnings)


def test_dry_run_writes_plan_depth_and_coverage_without_a_backend(tmp_path, capsys):
    out = tmp_path / "dry"
    assert main(["generate", EXAMPLE, "--traj", "truck_left", "--frames", "9", "--width", "208", "--out", str(out),
                 "--dry-run"]) == 0
    assert "DRY RUN" in capsys.readouterr().out
    rec = run_json(out)
    assert rec["status"] == "dry-run" and rec["backend"]["name"] == "dry-run" and len(rec["coverage"]) == 9
    assert rec["coverage"][0] == 1.0 and min(rec["coverage"]) < 1.0  # truck left reveals content at the edge
    video = read_video(out / "coverage.mp4")
    assert video.shape == (9, 120, 208, 3)
    last = video[-1].astype(int)
    magenta = (last[..., 0] > 200) & (last[..., 1] < 60) & (last[..., 2] > 200)
    assert 0 < magenta.mean() < 0.5 and (out / "depth.npy").exists()
    assert not (out / "cache").exists() and not (out / "chunks").exists()


# ------------------------------------------------------------------------------ 8 polish
def test_cache_dump_none_leaves_no_cache_dir_and_latents_go_unless_kept(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["generate", EXAMPLE, "--traj", "static", "--frames", "9", "--chunk-frames", "5", "--width", "104", "--quiet"]
    assert main(args + ["--out", str(a), "--cache-dump", "none"]) == 0
    assert not (a / "cache").exists()
    assert not list((a / "chunks").glob("*.latents.safetensors")) and len(list((a / "chunks").glob("*.mp4"))) == 2
    assert main(args + ["--out", str(b), "--keep-latents"]) == 0
    assert len(list((b / "chunks").glob("*.latents.safetensors"))) == 2 and (b / "cache" / "final.safetensors").exists()


def test_switches_show_no_bool_metavar_and_one_chunk_is_singular(tmp_path, capsys):
    assert main(["generate", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "<bool>" not in help_text and "--keep-latents" in help_text
    assert main(["generate", EXAMPLE, "--traj", "static", "--frames", "3", "--width", "104", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "in 1 chunk," in out and "MiB" not in out and "--downscale" in out
    assert "1 thread" in out and "1 threads" not in out and "random weights" not in out  # review 34


def test_ctrl_c_during_generate_prints_no_ffmpeg_noise(tmp_path):
    """SIGINT to a running `mirage generate` (as Ctrl-C sends it): exit 130, the interrupt line and
    the resume hint, and no ffmpeg lines ("[rawvideo @ 0x...] Invalid buffer size ...")."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "mirage_cli", "generate", EXAMPLE, "--traj", "orbit_left",
                             "--frames", "161", "--width", "416", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out / "cache" / "checkpoint" / "index.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # interrupt inside the chunk loop (after the first dump), while the video streams to ffmpeg
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    assert "Invalid buffer size" not in err and "@ 0x" not in err and "ffmpeg" not in err.lower(), err


@pytest.mark.parametrize("args", [["generate"], ["export"], []])
def test_a_command_alone_prints_its_help_once(args, capsys):
    """Typer prints the help while raising NoArgsIsHelpError: printing it again showed it twice."""
    assert main(args) == 2
    assert capsys.readouterr().out.count("Usage:") == 1
