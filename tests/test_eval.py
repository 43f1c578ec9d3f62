"""`mirage eval`: metric values checked by hand, clip readers checked against numpy, bad clips, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mirage_cli.cli import main
from mirage_cli.errors import MirageError
from mirage_cli.eval.metrics import PSNR_CAP, aggregate, clip_means, follow_masks, interval, psnr, revisits, score_frames, ssim
from mirage_cli.eval.sources import read_frames_clip, read_npz_clip, read_sources


@pytest.fixture(scope="module")
def clip():
    """A 9-frame out-and-back synthetic clip at 64x48 (exact render and depth)."""
    return read_sources(["synthetic:room:out_and_back"], frames=9, size=(64, 48))[0]


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        c2w[i, :3, :3] = _rotation(rng)
        c2w[i, :3, 3] = rng.normal(size=3)
    return c2w


# ------------------------------------------------------------------------------------ metrics
def test_perfect_generator_scores_cap_and_one_everywhere(clip):
    truth = clip.frames
    reproj, fmask = follow_masks(clip.cameras, clip.depths, torch.from_numpy(truth[0]).permute(2, 0, 1).double() / 255)
    mem = fmask.clone()
    mem[0] = True
    per = score_frames(truth.copy(), truth, mem, revisit=revisits(clip.cameras, 1.0))
    means = clip_means(per)
    assert per["revisit_of"].count(-1) < len(truth)  # the out-and-back path does revisit
    for region in ("all", "memory", "revisit"):
        assert means[f"psnr_{region}"] is None  # every frame capped: nothing finite to average
        assert means[f"ssim_{region}"] == pytest.approx(1.0, abs=1e-6)
    assert all(v == PSNR_CAP for v in per["psnr_all"])
    assert means["capped_frames"] == len(truth) - 1


def test_capped_frames_stay_out_of_the_psnr_means():
    per = {"frame": [0, 1, 2, 3], "revisit_of": [-1, -1, -1, 0], "psnr_all": [PSNR_CAP, 20.0, 24.0, PSNR_CAP],
           "ssim_all": [1.0, 0.5, 0.7, 1.0]}
    means = clip_means(per)
    assert means["psnr_all"] == 22.0 and means["capped_frames"] == 1
    assert means["psnr_revisit"] is None  # the one revisit is identical to the truth
    assert means["ssim_all"] == pytest.approx(0.7333333, abs=1e-6)  # SSIM is finite: kept


def test_fraction_intervals_stay_inside_zero_one():
    agg = aggregate([{"memory_fraction": 1.0}, {"memory_fraction": 0.96}, {"memory_fraction": 1.0}])
    lo, hi = agg["memory_fraction"]["ci95"]
    assert hi == 1.0 and 0 < lo < 0.96
    assert interval([1.0, 0.96, 1.0])["ci95"][1] > 1.0  # unclipped, the t interval passes the bound


def test_true_frames_written_as_a_run_score_the_cap(tmp_path, monkeypatch, clip):
    """The whole recon path with a perfect generator: the run is made, then its frames read back are the truth."""
    import mirage_cli.eval.recon as recon
    from mirage_cli.eval.recon import eval_recon
    from mirage_cli.pipeline.config import GenerateConfig

    real_reopen = recon.reopen  # the name eval's scoring calls

    def perfect(out, *a, **kw):
        run = real_reopen(out, *a, **kw)
        run.video.kept = list(clip.frames)
        return run

    monkeypatch.setattr(recon, "reopen", perfect)
    doc = eval_recon(["synthetic:room:out_and_back"], GenerateConfig(), tmp_path / "ev", frames=9, size=(64, 48))
    agg = doc["aggregate"]
    for region in ("all", "memory", "revisit"):
        assert f"psnr_{region}" not in agg  # every frame identical: no finite PSNR to average
        assert agg[f"ssim_{region}"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert agg["capped_frames"]["mean"] == 8 and any("8 frames identical" in n for n in doc["notes"])
    assert 0 < agg["memory_fraction"]["mean"] <= 1


def test_fixed_noise_gives_the_hand_computed_psnr(clip):
    truth = clip.frames[1].astype(np.int16)
    noise = np.random.default_rng(3).integers(-6, 7, size=truth.shape)
    gen = np.clip(truth + noise, 0, 255)
    mse = np.mean(((gen - truth) / 255.0) ** 2)
    expect = 10 * np.log10(1.0 / mse)
    # torchmetrics computes PSNR in float32: it agrees with the float64 hand value to 1e-4 dB
    t = lambda a: torch.from_numpy(a.astype(np.float64) / 255).permute(2, 0, 1)  # noqa: E731
    assert psnr(t(gen), t(truth)) == pytest.approx(expect, abs=1e-4)
    mask = torch.zeros(truth.shape[:2], dtype=torch.bool)
    mask[10:30, 5:40] = True
    m = mask.numpy()
    mse_m = np.mean(((gen[m] - truth[m]) / 255.0) ** 2)
    assert psnr(t(gen), t(truth), mask) == pytest.approx(10 * np.log10(1.0 / mse_m), abs=1e-4)
    assert psnr(t(gen), t(truth), torch.zeros_like(mask)) is None
    assert ssim(t(gen), t(truth)) < 1.0


def test_one_pixel_shift_gives_the_hand_computed_psnr(clip):
    truth = clip.frames[2]
    gen = np.roll(truth, 1, axis=1)  # everything one pixel to the right (wrapping)
    mse = np.mean(((gen.astype(np.float64) - truth) / 255.0) ** 2)
    per = score_frames(np.stack([truth, gen]), np.stack([truth, truth]), torch.ones(2, *truth.shape[:2], dtype=torch.bool))
    assert per["psnr_all"][1] == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-4)
    assert per["psnr_memory"][1] == per["psnr_all"][1]
    assert per["psnr_all"][0] == PSNR_CAP


def test_revisits_need_the_camera_to_leave_and_return(clip):
    rev = revisits(clip.cameras, 1.0)
    n_out = 9 // 2 + 1
    assert rev[:n_out] == [-1] * n_out
    assert rev[-1] == 0  # the last frame is frame 0's camera again


# ------------------------------------------------------------------------------------ clip readers
def test_geometry_npz_clip_has_the_files_cameras(tmp_path):
    n, H, W = 5, 24, 32
    c2w = _poses(n)
    K = np.tile(np.array([[30.0, 0, 15.5], [0, 28.0, 12.5], [0, 0, 1]]), (n, 1, 1))
    frames = np.random.default_rng(1).integers(0, 256, size=(n, H, W, 3), dtype=np.uint8)
    depths = np.full((n, H, W), 2.0, dtype=np.float32)
    np.savez(tmp_path / "geometry.npz", poses_c2w=c2w, intrinsics=K, depths=depths, frames=frames)
    clip = read_npz_clip(tmp_path / "geometry.npz")
    np.testing.assert_allclose(clip.cameras.c2w.numpy(), c2w, atol=1e-12)
    np.testing.assert_allclose(clip.cameras.K().numpy(), K, atol=1e-12)
    assert np.array_equal(clip.frames, frames) and clip.size == (W, H)
    assert float(clip.depth0.mean()) == 2.0


def test_re10k_txt_and_frames_folder_clip_has_the_right_cameras(tmp_path):
    from PIL import Image

    n, H, W = 4, 36, 64
    c2w = _poses(n, seed=5)
    w2c = np.linalg.inv(c2w)
    intr = np.array([0.9, 1.6, 0.5, 0.5])  # fx/W, fy/H, cx/W, cy/H
    lines = ["https://example.invalid/clip"]
    for i in range(n):
        lines.append(" ".join(str(v) for v in [i * 33333, *intr, 0, 0, *w2c[i, :3, :4].ravel()]))
    (tmp_path / "cams.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "frames").mkdir()
    rng = np.random.default_rng(2)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)).save(tmp_path / "frames" / f"{i:04d}.png")
    clip = read_frames_clip(tmp_path / "frames", tmp_path / "cams.txt")
    np.testing.assert_allclose(clip.cameras.c2w.numpy(), c2w, atol=1e-9)
    np.testing.assert_allclose(clip.cameras.intrinsics.numpy(), np.tile(intr, (n, 1)), atol=1e-12)
    assert clip.size == (W, H) and clip.depth0 is None


def test_malformed_clips_are_one_line_exit_2(tmp_path, capsys):
    n, H, W = 4, 8, 8
    frames = np.zeros((n + 1, H, W, 3), dtype=np.uint8)  # one frame too many
    K = np.tile(np.array([[8.0, 0, 4], [0, 8.0, 4], [0, 0, 1]]), (n, 1, 1))
    args = dict(poses_c2w=np.tile(np.eye(4), (n, 1, 1)), intrinsics=K, depths=np.ones((n, H, W), np.float32))
    np.savez(tmp_path / "bad.npz", frames=frames, **args)
    (tmp_path / "nof").mkdir()
    np.savez(tmp_path / "nof" / "geometry.npz", **args)  # no frames, no clip.mp4
    np.savez(tmp_path / "obj.npz", poses_c2w=np.array([{"a": 1}], dtype=object))
    for src, words in (("bad.npz", "5 frames but 4 cameras"), ("nof/geometry.npz", "no true frames"),
                       ("obj.npz", "not a readable .npz")):
        code = main(["eval", "recon", str(tmp_path / src), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and words in err and "\n" not in err and "Traceback" not in err
    (tmp_path / "x.mp4").write_bytes(b"")
    with pytest.raises(MirageError, match="needs its cameras"):
        read_sources([str(tmp_path / "x.mp4")])  # a video without a trajectory
    with pytest.raises(MirageError, match="exactly one frames-folder"):
        read_sources([str(tmp_path / "x.mp4"), "synthetic"], traj="cams.txt")


# ------------------------------------------------------------------------------------ the command
def test_eval_recon_synthetic_is_deterministic_and_compares(tmp_path, capsys):
    args = ["eval", "recon", "synthetic:room:out_and_back", "--frames", "9", "--width", "64", "--height", "48", "--json"]
    docs = []
    for name in ("a", "b"):
        assert main(args + ["--out", str(tmp_path / name), "--plot"]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    a, b = docs
    assert a["clips"][0]["per_frame"] == b["clips"][0]["per_frame"]
    agg = a["aggregate"]
    assert 5 < agg["psnr_all"]["mean"] < PSNR_CAP and 0 < agg["ssim_all"]["mean"] < 1
    assert "psnr_revisit" in agg and agg["known_fraction"]["mean"] > 0.5
    assert "lpips_all" in agg or any("LPIPS" in n for n in a["notes"])
    d = tmp_path / "a"
    assert (d / "eval.csv").read_text().count("\n") == 1 + 9 and (d / "eval.png").stat().st_size > 0
    assert (d / "room-out_and_back" / "run" / "run.json").exists()
    assert sorted(p.name for p in (d / "room-out_and_back" / "strips").iterdir())
    assert main(["eval", "compare", str(d), str(tmp_path / "b" / "eval.json"), "--json"]) == 0
    cmp = json.loads(capsys.readouterr().out)
    row = cmp["rows"][cmp["fields"].index("psnr_all")]
    assert row["diffs"][1] == 0.0 and row["exceeds"][1] is None  # one clip: no spread


def _doc(clips: dict[str, float]) -> dict:
    """A minimal eval.json with one psnr_all mean per clip."""
    return {"format": "mirage.eval", "clips": [{"name": n, "means": {"psnr_all": v}} for n, v in clips.items()],
            "aggregate": aggregate([{"psnr_all": v} for v in clips.values()])}


def test_compare_pairs_over_the_shared_clips_and_says_so(tmp_path, capsys):
    from mirage_cli.eval.report import compare

    three, one = _doc({"a": 30.0, "b": 22.8, "c": 25.5}), _doc({"b": 22.8})
    res = compare([three, one], ["ev1", "ev2"])
    row = res["rows"][0]
    assert row["diffs"][1] == 0.0 and row["paired"][1] == 1 and row["exceeds"][1] is None  # the shared clip is equal
    assert any("1 shared clip" in n for n in res["notes"]) and any("no difference is marked" in n for n in res["notes"])
    res = compare([three, _doc({"a": 31.0, "b": 23.8, "c": 26.4})], ["x", "y"])
    assert res["rows"][0]["diffs"][1] == pytest.approx(0.966667) and res["rows"][0]["exceeds"][1] is True
    assert res["notes"] == []
    for name, doc in (("ev1", three), ("ev2", one)):
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    assert main(["eval", "compare", str(tmp_path / "ev1.json"), str(tmp_path / "ev2.json")]) == 0
    assert "1 shared clip" in capsys.readouterr().out


def test_eval_warns_once_only_for_options_given(tmp_path, capsys):
    """The command's own defaults are not 'given' options: no warning unless one was passed, and then once."""
    args = ["eval", "recon", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "ev")]
    assert main(args) == 2
    assert "does nothing" not in capsys.readouterr().err
    assert main(args + ["--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("--steps does nothing with --backend preview") == 1 and "--guidance" not in err


def test_an_earlier_eval_with_other_options_is_refused_before_any_clip_is_rendered(tmp_path, capsys, monkeypatch):
    import mirage_cli.eval.recon as recon

    args = ["eval", "recon", "synthetic:room:dolly_in", "--width", "64", "--height", "48", "--out", str(tmp_path / "ev"), "-q"]
    assert main(args + ["--frames", "5"]) == 0

    def no_render(spec):
        raise AssertionError("a clip was read before the earlier run was checked")

    monkeypatch.setattr(recon, "read_clip", no_render)
    for extra, words in ((["--frames", "9"], "frames: 5 there, 9 now"),
                         (["--frames", "5", "--write-policy", "replace"], "write_policy: 'new' there, 'replace' now")):
        assert main(args + extra) == 2
        err = capsys.readouterr().err
        assert words in err and "--overwrite" in err and "Traceback" not in err


def test_recon_table_keeps_clip_names_apart_at_80_columns():
    from rich.console import Console

    from mirage_cli.eval.report import recon_table

    names = ("room-orbit_left", "room-dolly_in", "room-out_and_back")
    means = [{"psnr_all": 23.0 + i, "memory_fraction": 0.9, "capped_frames": float(i)} for i in range(3)]
    doc = {"clips": [{"name": n, "seconds": 1.0, "means": m} for n, m in zip(names, means)], "aggregate": aggregate(means)}
    con = Console(width=80, record=True)
    con.print(recon_table(doc))
    text = con.export_text()
    assert "…" not in text and all(p in text for p in ("orbit_l", "dolly_in", "out_and"))
    assert max(len(line) for line in text.splitlines()) <= 80
    counts = [c.strip() for c in text.split("capped_frames")[1].split("\n")[0].split("│")[1:4]]
    assert counts == ["0", "1", "2"]  # counts are shown as counts, not 0.0000


def test_plot_leaves_out_a_flat_panel_and_names_it():
    from mirage_cli.eval.plot import make_figure

    pf = {"frame": [0, 1, 2], "revisit_of": [-1, -1, -1], "psnr_all": [PSNR_CAP, 21.0, 22.0],
          "psnr_memory": [PSNR_CAP, 22.0, 23.0], "ssim_all": [1.0, 0.5, 0.6], "known_fraction": [1.0, 1.0, 1.0]}
    fig = make_figure({"config": {"backend": "preview"}, "clips": [{"name": "a", "per_frame": pf}]})
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_visible()]
    assert labels == ["psnr_all", "psnr_memory", "ssim_all"]
    assert "known_fraction = 1 on every frame (not drawn)" in fig._suptitle.get_text()
