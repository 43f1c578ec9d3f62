"""`mirage bench --compare pointcloud`: both arms on the same loop, the report, the table and the plot.

Fast runs use small frames with the pixel codec (exact, so read fidelity is meaningful) or the tiny
Wan VAE (the Wan2.1 latent layout: 16 channels at 8x). The real-size Wan VAEs are marked slow.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from mirage_cli.bench.core import BenchConfig, TensorPeak, measure_peak, run_bench
from mirage_cli.cli import main

KEYS = ("cache_bytes", "read_s", "write_s", "memory_overhead_s", "end_to_end_s", "peak_bytes")


def bench(**kw) -> dict:
    base = dict(codec="pixel", height=48, width=80, frames=9, chunk_frames=5, device="cpu")
    return run_bench(BenchConfig(**(base | kw)), warn=lambda m: None)


@pytest.fixture(scope="module")
def pixel_report():
    return bench(fidelity="on")


def test_report_schema_and_ratios(pixel_report):
    r = pixel_report
    assert r["format"] == "mirage.bench"
    assert r["weights"] == "none" and r["device"] == "cpu"
    assert r["config"]["chunks"] == 2 and r["config"]["num_frames"] == 9
    for arm in ("latent", "pointcloud"):
        for k in KEYS + ("lift_s", "codec_s", "denoise_s", "decode_s", "memory_overhead_incl_decode_s", "read_psnr"):
            assert r[arm][k] is not None, (arm, k)
        pc = r[arm]["per_chunk"]
        for k in ("frames", "read_s", "write_s", "cache_bytes", "peak_bytes", "cumulative_end_to_end_s"):
            assert len(pc[k]) == 2, k
        assert pc["frames"] == [5, 9]
        assert pc["cache_bytes"] == sorted(pc["cache_bytes"])  # policy "new" never shrinks
    for k in KEYS:
        assert r["ratios"][k] == pytest.approx(r["pointcloud"][k] / r["latent"][k])
    lat, pc = r["latent"], r["pointcloud"]
    assert lat["codec_s"] == 0.0 and pc["codec_s"] > 0  # the latent read never touches the codec
    assert pc["read_s"] == pytest.approx(pc["render_s"] + pc["encode_s"])
    assert pc["memory_overhead_incl_decode_s"] == pytest.approx(pc["memory_overhead_s"] + pc["write_decode_s"])
    assert lat["denoise_s"] == pc["denoise_s"] and lat["decode_s"] == pc["decode_s"]  # shared
    assert lat["end_to_end_s"] == pytest.approx(r["shared"]["input_encode_s"] + lat["memory_overhead_s"]
                                                + lat["denoise_s"] + lat["decode_s"])
    # the same bookkeeping per point: footprint f32 + axes 2x3 f16 + chunk i32 (20 B), plus
    # latent: xyz f32 + 3 fp16 features here; point cloud: xyz f32 + rgb u8
    assert lat["cache_bytes"] == lat["points"] * (12 + 2 * 3 + 20)
    assert pc["cache_bytes"] == pc["points"] * (12 + 3 + 20)
    assert pc["cache_bytes_xyz_rgb_only"] == pc["points"] * 15
    assert pc["peak_bytes"] > pc["cache_bytes"] and lat["peak_bytes"] > lat["cache_bytes"]
    json.dumps(r)  # serialisable


def test_pixel_codec_reads_are_faithful(pixel_report):
    """At 1x with the exact pixel codec both arms hold the same surface: both reads match the true render."""
    lat, pc = pixel_report["latent"], pixel_report["pointcloud"]
    assert pixel_report["config"]["content"] == "ground-truth"
    assert lat["read_psnr"] > 19 and pc["read_psnr"] > 19  # resampling a textured room at 80x48
    assert abs(lat["read_psnr"] - pc["read_psnr"]) < 0.5  # same points; fp16 vs uint8 colours
    assert lat["known_fraction"] > 0.5


def test_tiny_codec_cache_ratio_and_no_fidelity_with_random_weights():
    r = bench(codec="tiny", height=96, width=160)
    assert r["weights"] == "random" and r["config"]["fidelity"] is False
    assert r["latent"]["read_psnr"] is None
    assert r["config"]["latent_grid"] == [12, 20]
    # Wan2.1 layout: a latent point (52 B) stands for 8 x 8 pixels (23 B each): ~28x before growth differences
    assert 15 < r["ratios"]["cache_bytes"] < 40
    assert r["ratios"]["memory_overhead_s"] > 1


def test_two_laps_latent_stays_flat_append_grows():
    base = dict(codec="tiny", height=64, width=112, frames=17, laps=2, chunk_frames=5)
    new = bench(**base)
    laps = new["laps"]
    assert [lap["lap"] for lap in laps] == [1, 2] and laps[0]["end_frame"] == 9 and laps[1]["end_frame"] == 17
    assert laps[1]["latent_growth"] < 0.02
    assert laps[1]["pointcloud_growth"] < 0.05
    app = bench(write_policy="append", **base)
    assert app["config"]["latent_write_policy"] == "new"
    assert app["laps"][1]["latent_growth"] < 0.02
    assert app["laps"][1]["pointcloud_growth"] > 0.5  # appending every frame grows with the video, not the scene
    assert app["pointcloud"]["cache_bytes"] > 2 * new["pointcloud"]["cache_bytes"]


def test_tiny_denoiser_is_shared():
    r = bench(codec="tiny", denoiser="tiny", steps=1, height=64, width=96, frames=5, chunk_frames=5)
    assert r["weights_detail"] == {"codec": "random", "denoiser": "random"}
    assert r["shared"]["denoise_s"] > 0
    assert r["latent"]["denoise_s"] == r["pointcloud"]["denoise_s"]
    assert r["latent"]["setup_s"] > 0  # the grey-video latent of the VACE context, counted end to end
    assert r["config"]["denoiser"]["name"] == "wan-vace"


def test_image_scene(small_scene):
    r = bench(scene=str(small_scene["image"]), height=48, width=80, traj="orbit_left")
    assert r["config"]["content"] == "preview-fill" and r["config"]["new_content_depth"] == "filled"
    assert r["latent"]["read_psnr"] is None
    assert r["pointcloud"]["points"] > r["latent"]["points"] * 0.5


def test_tensor_peak_counts_live_tensors():
    x = torch.zeros(1000)

    def work():
        a = x + 1  # 4 kB
        b = a * 2  # 8 kB live
        del a
        c = b.sum()
        return c

    assert measure_peak(work) == 8000
    with TensorPeak() as p:
        v = x[:10]  # a view of an outside tensor is not new memory
        del v
    assert p.peak == 0


def test_cli_json_plot_and_table(tmp_path, capsys):
    out, png = tmp_path / "out.json", tmp_path / "plot.png"
    code = main(["bench", "--compare", "pointcloud", "--codec", "tiny", "--height", "64", "--width", "112",
                 "--frames", "9", "--chunk-frames", "5", "--json", str(out), "--plot", str(png), "--quiet"])
    assert code == 0
    r = json.loads(out.read_text())
    assert set(r["ratios"]) >= {"cache_bytes", "read_s", "memory_overhead_s", "end_to_end_s"}
    assert r["weights"] == "random"
    text = capsys.readouterr().out
    assert "pointcloud / latent" in text and "memory overhead" in text
    im = Image.open(png).convert("RGB")
    assert im.size == (1200, 520)
    cols = {im.getpixel((x, y)) for x in range(0, 1200, 2) for y in range(0, 520, 2)}
    assert (31, 119, 180) in cols and (214, 39, 40) in cols  # both arms drawn


@pytest.mark.parametrize("args, message", [
    (["--codec", "jpeg"], "--codec"),
    (["--compare", "gaussians"], "--compare"),
    (["--frames", "10", "--laps", "2"], "--laps"),
    (["--write-policy", "often"], "--write-policy"),
    (["--codec", "tiny", "--height", "60"], "multiples of 8"),
    (["--scene", "missing.png"], "missing.png"),
])
def test_cli_errors_are_one_line(args, message, capsys):
    argv = ["bench", "--compare", "pointcloud", "--height", "48", "--width", "80", "--codec", "pixel"]
    for i in range(0, len(args), 2):
        if args[i] in argv:
            argv[argv.index(args[i]) + 1] = args[i + 1]
        else:
            argv += args[i:i + 2]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_trajectory_leaving_the_room_is_an_error(tmp_path, capsys):
    traj = tmp_path / "far.json"
    poses = [torch.eye(4), torch.eye(4)]
    poses[1][2, 3] = -20.0
    traj.write_text(json.dumps({"convention": "opencv", "pose": "c2w", "scale": "absolute", "fps": 8,
                                "camera_path": [{"camera_to_world": p.flatten().tolist(), "fov": 55} for p in poses]}))
    assert main(["bench", "--compare", "pointcloud", "--codec", "pixel", "--height", "48", "--width", "80",
                 "--traj", str(traj), "--frames", "5"]) == 2
    assert "leaves the synthetic room" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("codec, cache_ratio", [("wan2.1-vae", 20), ("wan2.2-vae", 35)])
def test_real_architecture_wan_vaes(codec, cache_ratio):
    """The issue's acceptance numbers: 240x416, 3 chunks, on CPU (minutes per codec)."""
    r = bench(codec=codec, height=240, width=416, frames=25, chunk_frames=9)
    assert r["ratios"]["cache_bytes"] >= cache_ratio
    if codec == "wan2.1-vae":
        assert r["ratios"]["memory_overhead_s"] >= 50


def test_bench_needs_a_mode(capsys):
    from mirage_cli.cli import main

    assert main(["bench", "--device", "cpu"]) == 2
    assert "--compare pointcloud" in capsys.readouterr().err


def test_memory_only_mode_reports_speed(tmp_path, capsys):
    from mirage_cli.cli import main

    out = tmp_path / "mem.json"
    assert main(["bench", "--memory-only", "--points", "20000", "--device", "cpu", "--json", str(out)]) == 0
    import json

    rep = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "read" in text and "ms/frame" in text
    assert rep["points"] == 20000 and rep["grid"] in ([60, 104], "60x104") or rep["points"] == 20000
    assert rep["read_ms_per_frame"] > 0 and rep["write_ms_per_frame"] > 0 and 0 < rep["read_known_fraction"] <= 1
