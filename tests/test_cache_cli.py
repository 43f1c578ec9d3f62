"""`mirage cache inspect / export / render`."""

import json

import numpy as np
import pytest
import torch

from mirage_cli.cli import main
from mirage_cli.data.scenes import default_camera, make_scene
from mirage_cli.memory import LatentMemory
from mirage_cli.models.codecs import PixelCodec

W, H, SF = 208, 120, 2


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory):
    scene = make_scene("room")
    cam = default_camera(W, H)
    rgb, depth = scene.render(cam)
    mem = LatentMemory(3, SF, codec="pixel", image_hash="sha256:1234")
    mem.lift(PixelCodec(SF).encode(rgb)[0], depth[0], cam)
    path = tmp_path_factory.mktemp("cache") / "final.safetensors"
    mem.save(path, extras={"reference_depth": scene.reference_depth, "width": W, "height": H})
    return path, mem


def test_inspect_table(cache_file, capsys):
    path, mem = cache_file
    assert main(["cache", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "mirage.latent-memory v1" in out and f"{len(mem):,}" in out
    assert "pixel: 3 channels, 1/2 spatial" in out and "float16" in out and "input:" in out


def test_inspect_json(cache_file, capsys):
    path, mem = cache_file
    assert main(["cache", "inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["points"] == len(mem) == (W // SF) * (H // SF)
    assert info["bytes"] == mem.nbytes() and info["channels"] == 3 and info["dtype"] == "float16"
    assert info["codec"] == "pixel" and info["spatial_factor"] == SF
    assert info["chunks"] == {"0": len(mem)}
    assert info["extras"]["width"] == W and info["image_hash"] == "sha256:1234"


def _read_ply(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    n = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    rec = np.frombuffer(data[end:], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    return header, n, rec


@pytest.mark.parametrize("convention", ["opencv", "opengl"])
def test_export_ply(cache_file, tmp_path, convention):
    path, mem = cache_file
    out = tmp_path / "points.ply"
    assert main(["cache", "export", str(path), "--ply", str(out), "--convention", convention]) == 0
    header, n, rec = _read_ply(out)
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert "property float x" in header and "property uchar red" in header
    assert n == len(mem) == len(rec)
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], 1)
    expect = mem.points.numpy() * (np.array([1, -1, -1], dtype=np.float32) if convention == "opengl" else 1)
    assert np.array_equal(xyz, expect)
    rgb = np.stack([rec["r"], rec["g"], rec["b"]], 1)
    assert np.array_equal(rgb, (mem.features.float().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
    assert not list(tmp_path.glob(".*"))


def test_render_flythrough(cache_file, tmp_path, capsys):
    from mirage_cli.io import read_video

    path, mem = cache_file
    out = tmp_path / "fly.mp4"
    # frame 0 of every preset is the input camera; truck_right is 'relative' (uses the reference depth)
    assert main(["cache", "render", str(path), "--traj", "truck_right", "-o", str(out), "--holes", "black"]) == 0
    err = capsys.readouterr().err
    assert "translation scale" in err and "cache metadata" in err
    video = read_video(out)
    assert video.shape == (49, H, W, 3)
    first = torch.from_numpy(video[0]).permute(2, 0, 1).float() / 255
    expect = mem.features.float().T.reshape(3, H // SF, W // SF).repeat_interleave(SF, 1).repeat_interleave(SF, 2)
    assert (first - expect).abs().mean() < 0.03  # the memory seen from the input camera (lossy H.264)
    last = video[-1].astype(np.float32)
    assert (last.sum(-1) < 20).mean() > 0.01  # holes are shown as holes (black) after the move
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("text, rgb", [
    ("#ff00ff", (1.0, 0.0, 1.0)), ("00ff00", (0.0, 1.0, 0.0)), ("#00f", (0.0, 0.0, 1.0)),
    ("grey", (128 / 255,) * 3), ("Black", (0.0, 0.0, 0.0)), ("rebeccapurple", (102 / 255, 51 / 255, 153 / 255)),
    ("rgb(255, 0, 0)", (1.0, 0.0, 0.0)),
])
def test_parse_color_accepts_hex_and_css_names(text, rgb):
    from mirage_cli.cli.cache import parse_color

    assert parse_color(text) == pytest.approx(rgb, abs=1e-12)


def test_bad_holes_colour_exits_2_with_one_line(cache_file, tmp_path, capsys):
    path, _ = cache_file
    out = tmp_path / "fly.mp4"
    assert main(["cache", "render", str(path), "--traj", "static", "-o", str(out), "--holes", "not-a-colour"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--holes: 'not-a-colour' is not a colour" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_bad_cache_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a cache")
    for cmd in (["cache", "inspect", str(bad)], ["cache", "export", str(bad), "--ply", str(tmp_path / "x.ply")]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert "not a readable safetensors file" in err and "Traceback" not in err
        assert len(err.splitlines()) == 1
    assert main(["cache", "inspect", str(tmp_path / "missing.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "x.ply").exists()


@pytest.mark.parametrize("args, message", [
    (["--width", "3"], "at least 16 px"),
    (["--scale", "-1"], "--scale: must be a positive number"),
    (["--fps", "0"], "--fps: must be > 0"),
])
def test_render_option_ranges_exit_2(cache_file, tmp_path, capsys, args, message):
    path, _ = cache_file
    assert main(["cache", "render", str(path), "--traj", "static", "-o", str(tmp_path / "f.mp4"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "f.mp4").exists()


def test_render_refuses_other_video_formats(cache_file, tmp_path, capsys):
    path, _ = cache_file
    assert main(["cache", "render", str(path), "--traj", "static", "-o", str(tmp_path / "f.gif")]) == 2
    assert "MP4" in capsys.readouterr().err and not (tmp_path / "f.gif").exists()


def test_render_width_alone_keeps_the_aspect_ratio(cache_file):
    from mirage_cli.memory.export import flythrough_size
    from mirage_cli.memory.latent import LatentMemory

    mem = LatentMemory.load(cache_file[0])  # its extras say the generated size, W x H
    assert flythrough_size(mem, 2 * W, None) == (2 * W, 2 * H)
    assert flythrough_size(mem, None, H // 2) == (W // 2, H // 2)


def test_inspect_table_keeps_a_long_image_hash_whole(tmp_path, capsys):
    digest = "sha256:" + "0123456789abcdef" * 4
    mem = LatentMemory(3, SF, codec="pixel", image_hash=digest)
    mem.lift(torch.rand(3, 4, 4), torch.ones(8, 8), default_camera(8, 8))
    mem.save(tmp_path / "m.safetensors")
    assert main(["cache", "inspect", str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    folded = "".join(line.strip("│ ").split("│")[-1].strip() for line in out.splitlines() if "│" in line)
    assert digest in folded  # folded over lines at 80 columns, never cut off
