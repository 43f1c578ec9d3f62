"""`mirage eval recon MANIFEST`: clips as batch jobs (same numbers as separate SOURCES, skip on rerun,
scoring after a done run, bad rows, Ray actors)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mirage_cli.cli import main
from mirage_cli.eval.sources import read_sources

SIZE = ["--width", "64", "--height", "48"]


def _write_clips(d) -> None:
    """Three tiny clips written as a user would have them: a geometry.npz, a clip folder (frames/,
    a RealEstate10K .txt, frame 0's depth.npy) and an MP4 with its .txt."""
    from PIL import Image

    from mirage_cli.io import write_video

    a, b, c = read_sources(["synthetic:room:orbit_left", "synthetic:room:dolly_in", "synthetic:room:pan_left"],
                           frames=5, size=(64, 48))
    (d / "a").mkdir()
    np.savez(d / "a" / "geometry.npz", poses_c2w=a.cameras.c2w.numpy(), intrinsics=a.cameras.K().numpy(),
             depths=a.depths.numpy(), frames=a.frames)
    (d / "b" / "frames").mkdir(parents=True)
    for i, f in enumerate(b.frames):
        Image.fromarray(f).save(d / "b" / "frames" / f"{i:03d}.png")
    _re10k(d / "b" / "cams.txt", b)
    np.save(d / "b" / "depth.npy", b.depth0.numpy())
    write_video(d / "c.mp4", c.frames, 16)
    _re10k(d / "c.txt", c)


def _re10k(path, clip) -> None:
    w2c = np.linalg.inv(clip.cameras.c2w.numpy())
    lines = ["https://example.invalid/clip"]
    for i in range(len(w2c)):
        lines.append(" ".join(repr(float(v)) for v in [i * 33333, *clip.cameras.intrinsics[i].tolist(), 0, 0,
                                                         *w2c[i, :3, :4].ravel()]))
    path.write_text("\n".join(lines) + "\n")


def _rows():
    return [{"clip": "a/geometry.npz"}, {"clip": "b"}, {"clip": "c.mp4", "traj": "c.txt", "id": "c"}]


def _eval(args, capsys) -> dict:
    assert main(["eval", "recon", *args, *SIZE, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _per_clip(doc) -> dict:
    return {c["name"]: (c["per_frame"], c["means"]) for c in doc["clips"]}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalclips")
    _write_clips(d)
    (d / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return d


@pytest.fixture(scope="module")
def separate(clips):
    """The three clips run as separate SOURCES (two commands: --traj goes with a single SOURCE)."""
    from mirage_cli.eval.recon import eval_recon
    from mirage_cli.pipeline.config import GenerateConfig

    base = GenerateConfig(cache_dump="chunks", steps=30, guidance=5.0, shift=3.0, references=2, width=64, height=48)
    one = eval_recon([str(clips / "a" / "geometry.npz"), str(clips / "b")], base, clips / "sep")
    two = eval_recon([str(clips / "c.mp4")], base, clips / "sep2", traj=str(clips / "c.txt"))
    return {**_per_clip(one), **_per_clip(two)}


def test_manifest_scores_like_separate_sources_and_a_rerun_skips_done_clips(clips, separate, tmp_path, capsys):
    out = tmp_path / "m"
    doc = _eval([str(clips / "clips.jsonl"), "--workers", "1", "--out", str(out)], capsys)
    assert doc["jobs"] == {"workers": "in-process", "done": 3} and doc["failed"] == []
    assert _per_clip(doc) == separate  # every frame's every number
    assert sorted(separate) == ["a", "b", "c"] and doc["aggregate"]["psnr_all"]["n"] == 3
    runs = {n: out / n / "run" / "run.json" for n in "abc"}
    stamps = {n: p.stat().st_mtime_ns for n, p in runs.items()}

    again = _eval([str(clips / "clips.jsonl"), "--out", str(out)], capsys)
    assert again["jobs"] == {"workers": "none needed", "skipped": 3}  # nothing generated, nothing scored
    assert _per_clip(again) == separate
    assert {n: p.stat().st_mtime_ns for n, p in runs.items()} == stamps

    (out / "b" / "score.json").unlink()  # a clip generated but not scored (e.g. killed in between)
    third = _eval([str(clips / "clips.jsonl"), "--out", str(out)], capsys)
    assert third["jobs"] == {"workers": "in-process", "done": 1, "skipped": 2}
    assert {n: p.stat().st_mtime_ns for n, p in runs.items()} == stamps  # scored from the run: not generated again
    assert _per_clip(third) == separate
    batch = json.loads((out / "batch.json").read_text())
    assert batch["jobs"]["b"]["status"] == "done" and batch["jobs"]["a"]["status"] == "skipped"


def test_bad_manifest_rows_exit_2_one_line_each_before_anything_is_written(clips, tmp_path, capsys):
    n, H, W = 4, 48, 64
    K = np.tile(np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]), (n, 1, 1))
    np.savez(tmp_path / "bad.npz", frames=np.zeros((n + 1, H, W, 3), np.uint8), poses_c2w=np.tile(np.eye(4), (n, 1, 1)),
             intrinsics=K, depths=np.ones((n, H, W), np.float32))
    rows = [{"clip": str(clips / "a" / "geometry.npz")}, {"clip": "missing.npz"}, {"clip": "bad.npz"},
            {"clip": str(clips / "b"), "width": 32}, {"clip": str(clips / "b"), "colour": "red"},
            {"clip": str(clips / "c.mp4")}]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(["eval", "recon", str(tmp_path / "bad.jsonl"), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 5 and "Traceback" not in "".join(lines)
    for row, words in ((2, "field 'clip': file or folder not found"), (3, "5 frames but 4 cameras"),
                       (4, "field 'width'"), (5, "field 'colour': unknown option"), (6, "needs its cameras")):
        assert any(f"row {row}, " in ln and words in ln for ln in lines), (row, lines)
    assert not out.exists()


def test_ray_actors_score_like_one(clips, separate, tmp_path):
    """The clips on two local Ray actors (job and step cross a process boundary): the same numbers."""
    if os.environ.get("CI"):  # CI installs the ray extra: a broken import must fail there, not skip (as test_batch)
        import ray
    else:
        ray = pytest.importorskip("ray")
    from mirage_cli.batch.runner import BatchOptions
    from mirage_cli.eval.recon import eval_recon
    from mirage_cli.pipeline.config import GenerateConfig

    base = GenerateConfig(cache_dump="chunks", steps=30, guidance=5.0, shift=3.0, references=2, width=64, height=48)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        doc = eval_recon([str(clips / "clips.jsonl")], base, tmp_path / "ray",
                         BatchOptions(out="-", ray="local", workers=2))
    finally:
        ray.shutdown()
    assert doc["jobs"] == {"workers": "ray local x2", "done": 3}
    assert _per_clip(doc) == separate
