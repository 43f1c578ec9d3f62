"""`mirage eval check`: the quality gate on small hand-made eval.json files (the real format, no generation)."""

from __future__ import annotations

import json

import pytest

from mirage_cli.cli import main
from mirage_cli.eval.gate import judge, read_baseline, rule_for
from mirage_cli.eval.metrics import aggregate

MEANS = {
    "room-orbit_left": {"psnr_all": 22.73417, "psnr_revisit": None, "ssim_all": 0.585378, "ssim_revisit": None,
                        "psnr_memory": 23.611559, "ssim_memory": 0.671613, "memory_fraction": 0.775908,
                        "known_fraction": 1.0, "read_psnr_known": 22.735332, "follow_psnr": 26.223504,
                        "follow_psnr_truth": 24.748964, "revisit_frames": 0.0, "capped_frames": 0.0},
    "room-out_and_back": {"psnr_all": 23.63621, "psnr_revisit": 26.515439, "ssim_all": 0.600762,
                          "ssim_revisit": 0.683972, "psnr_memory": 24.508795, "ssim_memory": 0.683871,
                          "memory_fraction": 0.784415, "known_fraction": 1.0, "read_psnr_known": 23.630563,
                          "follow_psnr": 27.234, "follow_psnr_truth": 24.686, "revisit_frames": 6.0,
                          "capped_frames": 0.0},
}


def eval_doc(means: dict[str, dict] = MEANS, failed: list | None = None) -> dict:
    """An eval.json as `mirage eval recon` writes it (report.write_outputs), per-frame fields left short."""
    clips = [{"name": n, "source": f"synthetic:{n.replace('-', ':')}", "synthetic": True, "frames": 25,
              "size": [208, 120], "run_dir": f"/nonexistent/{n}/run", "depth_source": "file", "seconds": 1.0,
              "generate_seconds": 0.5, "score_seconds": 0.5, "per_frame": {"frame": [0]}, "means": dict(m)}
             for n, m in means.items()]
    return {"format": "mirage.eval", "version": 1, "config": {"backend": "preview", "write_policy": "new"},
            "protocol": {}, "notes": [], "jobs": {"workers": "in-process", "done": len(clips)}, "clips": clips,
            "failed": failed or [], "aggregate": aggregate([c["means"] for c in clips])}


def write(path, doc) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def changed(field: str, delta: float, clip: str = "room-orbit_left") -> dict:
    """MEANS with one clip's ``field`` moved by ``delta``."""
    means = {n: dict(m) for n, m in MEANS.items()}
    means[clip][field] = round(means[clip][field] + delta, 6)
    return means


@pytest.fixture
def base(tmp_path, capsys):
    """A baseline made by the command itself from the reference eval.json."""
    path = tmp_path / "quality" / "baseline.json"
    ev = write(tmp_path / "ref.json", eval_doc())
    assert main(["eval", "check", ev, "--baseline", str(path), "--update", "--why", "the reference run"]) == 0
    capsys.readouterr()
    return str(path)


def check(tmp_path, capsys, doc, baseline, *extra):
    code = main(["eval", "check", write(tmp_path / "now.json", doc), "--baseline", baseline, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_identical_run_passes(tmp_path, capsys, base):
    code, out, err = check(tmp_path, capsys, eval_doc(), base)
    assert code == 0 and err == ""
    assert "passed: no regression" in out and "REGRESSION" not in out


def test_a_metric_dropped_beyond_its_tolerance_fails_with_one_line_each(tmp_path, capsys, base):
    code, out, err = check(tmp_path, capsys, eval_doc(changed("psnr_all", -0.3)), base)
    assert code == 1 and "REGRESSION" in out and "FAILED" in out
    lines = err.strip().splitlines()
    # the clip's own row and the aggregate (its mean moved by -0.15) both regressed
    assert lines == ["regression: aggregate psnr_all: 23.185 -> 23.035 (-0.1500; allowed -0.05 dB, higher is better)",
                     "regression: clip room-orbit_left psnr_all: 22.734 -> 22.434 (-0.3000; allowed -0.05 dB, "
                     "higher is better)"]
    code, _, err = check(tmp_path, capsys, eval_doc(changed("ssim_memory", -0.01)), base)
    assert code == 1 and "clip room-orbit_left ssim_memory" in err


def test_within_tolerance_passes_and_improvements_pass_with_a_hint(tmp_path, capsys, base):
    for field, delta in (("psnr_all", -0.05), ("psnr_memory", -0.04), ("ssim_all", -0.002), ("known_fraction", -0.001)):
        code, out, err = check(tmp_path, capsys, eval_doc(changed(field, delta)), base)
        assert code == 0 and err == "", (field, delta)
    code, out, err = check(tmp_path, capsys, eval_doc(changed("psnr_all", 0.5)), base)
    assert code == 0 and err == "" and "improved" in out and "--update" in out


def test_lower_is_better_metrics_fail_when_they_rise(tmp_path, capsys):
    means = {n: {**m, "lpips_all": 0.30} for n, m in MEANS.items()}
    baseline = str(tmp_path / "b.json")
    assert main(["eval", "check", write(tmp_path / "ref.json", eval_doc(means)), "--baseline", baseline,
                 "--update", "--why", "with lpips"]) == 0
    capsys.readouterr()
    worse = {n: {**m, "lpips_all": 0.31} for n, m in MEANS.items()}
    code, _, err = check(tmp_path, capsys, eval_doc(worse), baseline)
    assert code == 1 and "lpips_all: 0.3000 -> 0.3100 (+0.0100; allowed +0.002, lower is better)" in err
    better = {n: {**m, "lpips_all": 0.25} for n, m in MEANS.items()}
    code, out, err = check(tmp_path, capsys, eval_doc(better), baseline)
    assert code == 0 and err == "" and "improved" in out
    assert rule_for("lpips_memory").better == "lower" and judge("lpips_revisit", 0.3, 0.3019)[0] == "ok"


def test_counts_and_the_memory_region_must_not_move_either_way(tmp_path, capsys, base):
    assert judge("revisit_frames", 6.0, 7.0)[0] == "REGRESSION" and judge("capped_frames", 0.0, 0.0)[0] == "ok"
    code, _, err = check(tmp_path, capsys, eval_doc(changed("memory_fraction", +0.01)), base)
    assert code == 1 and "memory_fraction" in err and "must not change" in err


def test_a_metric_or_clip_missing_from_the_run_fails_and_new_ones_do_not(tmp_path, capsys, base):
    means = {n: dict(m) for n, m in MEANS.items()}
    means["room-out_and_back"]["psnr_revisit"] = None
    del means["room-orbit_left"]["ssim_memory"]
    code, _, err = check(tmp_path, capsys, eval_doc(means), base)
    assert code == 1
    assert "regression: clip room-out_and_back psnr_revisit: 26.515 in the baseline, missing now" in err
    assert "regression: clip room-orbit_left ssim_memory: 0.6716 in the baseline, missing now" in err
    assert "regression: aggregate ssim_memory" not in err  # one clip still has it: its mean is compared (and moved)
    code, _, err = check(tmp_path, capsys, eval_doc({"room-orbit_left": MEANS["room-orbit_left"]}), base)
    assert code == 1 and "clip room-out_and_back is in the baseline but not in the run" in err
    # a new metric and a new clip (a suite being added): reported, not failing; the aggregate is over the shared clips
    more = {n: {**m, "lpips_all": 0.3} for n, m in MEANS.items()}
    more["room-loop"] = {"psnr_all": 10.0, "ssim_all": 0.1}
    code, out, err = check(tmp_path, capsys, eval_doc(more), base)
    assert code == 0 and err == "" and "new" in out and "recomputed over the 2 clips" in out


def test_bad_input_is_one_line_exit_2(tmp_path, capsys, base):
    good = write(tmp_path / "good.json", eval_doc())
    (tmp_path / "garbage.json").write_text("{not json")
    wrong_baseline = write(tmp_path / "wb.json", {"format": "something-else"})
    bad_clip = eval_doc()
    bad_clip["clips"][0]["means"]["psnr_all"] = "high"
    cases = [
        ([str(tmp_path / "missing.json"), "--baseline", base], "not a readable eval.json"),
        ([str(tmp_path / "garbage.json"), "--baseline", base], "not a readable eval.json"),
        ([write(tmp_path / "fmt.json", {"format": "mirage.run"}), "--baseline", base], "not a mirage eval.json"),
        ([write(tmp_path / "bad.json", bad_clip), "--baseline", base], "psnr_all is not a number"),
        ([good, "--baseline", str(tmp_path / "nothing.json")], "no baseline file here"),
        ([good, "--baseline", str(tmp_path / "garbage.json")], "not a readable baseline"),
        ([good, "--baseline", wrong_baseline], "not a mirage quality baseline"),
        ([good, "--baseline", base, "--why", "x"], "--why goes with --update"),
    ]
    for args, words in cases:
        assert main(["eval", "check", *args]) == 2, args
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)


def test_update_needs_why_and_writes_a_baseline_that_then_passes(tmp_path, capsys):
    ev = write(tmp_path / "eval.json", eval_doc())
    baseline = tmp_path / "quality" / "baseline.json"
    for why in ([], ["--why", "  "]):
        assert main(["eval", "check", ev, "--baseline", str(baseline), "--update", *why]) == 2
        err = capsys.readouterr().err
        assert "--update needs --why" in err and len(err.strip().splitlines()) == 1
    assert not baseline.exists()
    failed = write(tmp_path / "failed.json", eval_doc(failed=[{"name": "x", "status": "failed", "error": "boom"}]))
    assert main(["eval", "check", failed, "--baseline", str(baseline), "--update", "--why", "w"]) == 2
    assert "clips failed (x)" in capsys.readouterr().err and not baseline.exists()

    assert main(["eval", "check", ev, "--baseline", str(baseline), "--update", "--why", "first numbers",
                 "--command", "scripts/quality_gate.sh synthetic"]) == 0
    assert "baseline written" in capsys.readouterr().out
    doc = read_baseline(baseline)
    assert doc["why"] == "first numbers" and doc["command"] == "scripts/quality_gate.sh synthetic" and doc["date"]
    assert set(doc["machine"]) >= {"torch", "threads", "device"} and doc["machine"]["torch"]
    assert doc["clips"]["room-out_and_back"]["means"]["psnr_revisit"] == 26.515439
    assert [p.name for p in baseline.parent.iterdir()] == ["baseline.json"]  # atomic: no temporary left
    assert main(["eval", "check", ev, "--baseline", str(baseline)]) == 0
    assert "passed: no regression" in capsys.readouterr().out
    # re-baselining shows what changes against the old baseline, then replaces it
    lower = write(tmp_path / "lower.json", eval_doc(changed("psnr_all", -1.0)))
    assert main(["eval", "check", lower, "--baseline", str(baseline), "--update", "--why", "accepted: new splat"]) == 0
    assert "against the old baseline: FAILED" in capsys.readouterr().out
    assert read_baseline(baseline)["why"] == "accepted: new splat"
    assert main(["eval", "check", lower, "--baseline", str(baseline)]) == 0


def test_the_committed_baseline_is_readable_and_says_why():
    from pathlib import Path

    doc = read_baseline(Path(__file__).resolve().parents[1] / "quality" / "baseline.json")
    assert doc["why"] and doc["command"].startswith("scripts/quality_gate.sh") and doc["machine"]["threads"] == 1


def test_an_aggregate_psnr_that_drops_because_a_clip_reached_the_cap_is_not_a_regression():
    """Issue 20: a clip whose loop score became identical (100 dB) leaves the mean over clips, which
    can then drop; every clip improved, so the gate reports it and passes."""
    from mirage_cli.eval.gate import check

    base = {"clips": {"a": {"means": {"loop_psnr": 50.0}}, "b": {"means": {"loop_psnr": 40.0}}},
            "aggregate": {"loop_psnr": 45.0}}
    doc = {"clips": [{"name": "a", "means": {"loop_psnr": 100.0}}, {"name": "b", "means": {"loop_psnr": 40.5}}],
           "aggregate": {"loop_psnr": {"mean": 40.5}}}
    r = check(doc, base)
    assert r["regressions"] == []
    assert any("reached the 100 dB cap" in n for n in r["notes"])
    assert [x["status"] for x in r["rows"] if x["clip"] != "a" and x["clip"] != "b"] == ["recomposed"]
    doc["clips"][1]["means"]["loop_psnr"] = 39.0  # a real drop of the other clip still fails
    assert check(doc, base)["regressions"]


def test_update_does_not_overwrite_a_file_that_is_not_a_baseline(tmp_path):
    """A typo in --baseline must not destroy another file (issue 20 review)."""
    import json as _json

    from mirage_cli.errors import MirageError
    from mirage_cli.eval.gate import update_baseline

    other = tmp_path / "README.md"
    other.write_text("# not a baseline\n")
    doc = {"clips": [{"name": "a", "means": {"psnr_all": 20.0}}], "aggregate": {"psnr_all": {"mean": 20.0}},
           "failed": []}
    (tmp_path / "eval.json").write_text(_json.dumps(doc))
    with pytest.raises(MirageError, match="not a quality baseline"):
        update_baseline(doc, tmp_path / "eval.json", other, "why")
    assert other.read_text() == "# not a baseline\n"
