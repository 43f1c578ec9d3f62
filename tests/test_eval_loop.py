"""Loop closure (`mirage eval loop`, the loop fields of `eval recon`) and the closed synthetic paths."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from mirage_cli.cli import main
from mirage_cli.errors import MirageError
from mirage_cli.eval.metrics import PSNR_CAP
from mirage_cli.eval.sources import LOOP_SUITE, SYNTHETIC_SUITE, clip_specs, read_sources

SMALL = ["--width", "64", "--height", "48", "--threads", "1"]


# ------------------------------------------------------------------------------------ closed paths
def test_loops_is_a_second_suite_and_synthetic_keeps_its_three_clips():
    assert [c["name"] for c in clip_specs(["synthetic"])] == [f"room-{t}" for t in SYNTHETIC_SUITE]
    loops = [f"room-{t}" for t in LOOP_SUITE]
    assert [c["name"] for c in clip_specs(["synthetic:loops"])] == loops
    assert [c["name"] for c in clip_specs(["synthetic:room:loops"])] == loops
    assert [c["source"] for c in clip_specs(["synthetic:room:figure_eight"])] == ["synthetic:room:figure_eight"]
    with pytest.raises(MirageError, match="pan_and_back"):
        clip_specs(["synthetic:room:nope"])


@pytest.mark.parametrize("frames", [7, 8])
def test_every_closed_path_ends_on_frame_0s_camera_inside_the_room(frames):
    for clip in read_sources(["synthetic:loops"], frames=frames, size=(32, 24)):
        c2w = clip.cameras.c2w
        assert len(clip.frames) == frames
        assert torch.allclose(c2w[-1], c2w[0], atol=1e-9), clip.name
        assert float((c2w[1:-1] - c2w[0]).abs().amax()) > 0.05, clip.name  # it does move in between
        assert clip.depths.min() > 0  # every ray hits the room from inside
    eight = read_sources(["synthetic:room:figure_eight"], frames=9, size=(32, 24))[0]
    R = eight.cameras.c2w[:, :3, :3]
    assert torch.allclose(R, R[:1].expand_as(R))  # a translation only
    mid = eight.cameras.centers[4] - eight.cameras.centers[0]
    assert float(mid.norm()) < 1e-9  # the crossing point of the eight is the start


def test_out_and_back_is_unchanged():
    """The historical suite's path: orbit_left out, the same poses back (odd frames close it)."""
    clip = read_sources(["synthetic:room:out_and_back"], frames=9, size=(32, 24))[0]
    out = read_sources(["synthetic:room:orbit_left"], frames=5, size=(32, 24))[0]
    idx = [0, 1, 2, 3, 4, 3, 2, 1, 0]
    assert torch.allclose(clip.cameras.c2w, out.cameras.c2w[idx])


# ------------------------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`eval recon` of a closed path (pan_and_back) and an open one (dolly_in): 9 frames at 64x48."""
    out = tmp_path_factory.mktemp("loop") / "ev"
    assert main(["eval", "recon", "synthetic:room:pan_and_back", "synthetic:room:dolly_in", "--frames", "9",
                 "--out", str(out), "-q"] + SMALL) == 0
    return out


def test_eval_loop_on_a_closed_run_is_finite_and_closed(runs, capsys):
    assert main(["eval", "loop", str(runs / "room-pan_and_back" / "run"), str(runs / "room-dolly_in" / "run"),
                 "--json"]) == 0
    closed, open_ = json.loads(capsys.readouterr().out)
    assert closed["loop_closed"] is True and closed["rotation_deg"] < 0.1 and closed["translation"] < 1e-3
    for k in ("loop_psnr", "loop_memory_psnr", "loop_memory_changed", "input_covered"):
        assert math.isfinite(closed[k]), k
    assert 20 < closed["loop_psnr"] <= PSNR_CAP and 0 <= closed["loop_memory_changed"] <= 1
    assert closed["frames_from"] == "latents" and closed["colours"] == "exact"
    assert open_["loop_closed"] is False and open_["loop_psnr"] is None
    assert open_["translation"] == pytest.approx(0.4)  # dolly_in's 0.4 reference depths
    assert math.isfinite(open_["loop_memory_psnr"])  # the memory score needs no closed path


def test_recon_adds_the_loop_fields(runs):
    doc = json.loads((runs / "eval.json").read_text())
    by = {c["name"]: c for c in doc["clips"]}
    closed, open_ = by["room-pan_and_back"], by["room-dolly_in"]
    assert closed["means"]["loop_psnr"] == closed["loop"]["loop_psnr"] and closed["loop"]["loop_closed"]
    assert open_["means"]["loop_psnr"] is None and open_["means"]["loop_memory_psnr"] is not None
    assert "psnr_all" in closed["means"] and "loop_memory_changed" in doc["aggregate"]
    rows = (runs / "eval.csv").read_text().splitlines()
    head = rows[0].split(",")
    assert head[-4:] == ["loop_closed", "loop_psnr", "loop_memory_psnr", "loop_memory_changed"]
    last = [r for r in rows if r.startswith("room-pan_and_back,8,")][0].split(",")
    assert last[head.index("loop_closed")] == "1" and float(last[head.index("loop_psnr")]) > 20
    first = [r for r in rows if r.startswith("room-pan_and_back,0,")][0].split(",")
    assert first[head.index("loop_psnr")] == ""


def test_input_only_memory_against_itself_is_the_cap(runs):
    """Chunk 0 of the final memory (policy new) renders exactly as the input re-lifted from depth.npy."""
    from mirage_cli.eval.loop import memory_change
    from mirage_cli.pipeline.generate import input_memory, reopen

    run = reopen(runs / "room-dolly_in" / "run")
    final = run.memory
    chunk0 = final.select(final.chunk == 0)
    relift = input_memory(run)
    assert len(chunk0) == len(relift) < len(final)
    for a, b in ((chunk0, relift), (relift, relift)):
        value, changed, covered = memory_change(a, b, run.plan.cams[:1])
        assert value == PSNR_CAP and changed == 0.0 and covered > 0.9


def test_a_run_without_kept_latents_reads_its_video(runs, tmp_path):
    """Without chunk latents: frames from video.mp4, input-only memory = chunk 0 of the final memory."""
    from mirage_cli.eval.loop import score_loop

    run = tmp_path / "run"
    shutil.copytree(runs / "room-pan_and_back" / "run", run)
    exact = score_loop(run)
    for p in (run / "chunks").glob("*.latents.safetensors"):
        p.unlink()
    s = score_loop(run)
    assert s.frames_from == "video.mp4" and s.input_memory.startswith("chunk 0")
    assert s.loop_closed and math.isfinite(s.loop_psnr) and s.loop_psnr > 20
    assert (s.loop_memory_psnr, s.loop_memory_changed) == (exact.loop_memory_psnr, exact.loop_memory_changed)


def test_bad_run_directories_are_one_line_exit_2(runs, tmp_path, capsys):
    good = runs / "room-dolly_in" / "run"
    unfinished = tmp_path / "unfinished"
    shutil.copytree(good, unfinished)
    rec = json.loads((unfinished / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps({**rec, "status": "interrupted"}))
    nocache = tmp_path / "nocache"
    shutil.copytree(good, nocache)
    shutil.rmtree(nocache / "cache")
    (tmp_path / "empty").mkdir()
    cases = ((tmp_path / "missing", "not a directory"), (tmp_path / "empty", "run.json: missing"),
             (unfinished, "not finished (status interrupted)"), (nocache, "final.safetensors: missing"))
    for path, words in cases:
        assert main(["eval", "loop", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err and "Traceback" not in err, err


def test_camera_gap_tolerances():
    from mirage_cli.eval.loop import camera_gap
    from mirage_cli.geometry.cameras import Cameras
    from mirage_cli.geometry.rotations import rotation_y

    c2w = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    c2w[1, 0, 3] = 1.0
    def cams(last):
        return Cameras(torch.cat([c2w[:2], last[None]]), torch.tensor([[1.0, 1.0, 0.5, 0.5]] * 3, dtype=torch.float64), 8, 8)
    assert camera_gap(cams(c2w[0]), 2.0) == (0.0, 0.0, True)
    turned = c2w[0].clone()
    turned[:3, :3] = rotation_y(torch.tensor([math.radians(0.2)], dtype=torch.float64))[0]
    rot, _, closed = camera_gap(cams(turned), 2.0)
    assert rot == pytest.approx(0.2) and not closed
    moved = c2w[0].clone()
    moved[2, 3] = 0.004  # 0.002 reference depths of 2
    _, trans, closed = camera_gap(cams(moved), 2.0)
    assert trans == pytest.approx(0.002) and not closed
    assert np.isclose(camera_gap(cams(moved), 8.0)[1], 0.0005) and camera_gap(cams(moved), 8.0)[2]


def test_an_identical_loop_is_left_out_of_the_mean_over_clips_and_named():
    from mirage_cli.eval.metrics import aggregate
    from mirage_cli.eval.recon import capped_note

    means = [{"psnr_all": 22.0, "loop_psnr": PSNR_CAP, "loop_memory_changed": 0.0},
             {"psnr_all": 24.0, "loop_psnr": 40.0, "loop_memory_changed": 0.5}]
    agg = aggregate(means)
    assert agg["loop_psnr"] == {"mean": 40.0, "sd": None, "ci95": None, "n": 1}
    assert agg["psnr_all"]["n"] == 2 and agg["loop_memory_changed"]["ci95"][0] >= 0.0  # a fraction's interval
    notes = capped_note([{"name": "a", "means": means[0]}, {"name": "b", "means": means[1]}])
    assert notes == ["loop_psnr: a identical (100 dB cap), left out of its mean over clips"]
