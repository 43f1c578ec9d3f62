"""`mirage batch`: manifests, local workers and Ray, retries, skip / resume, determinism."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from mirage_cli.batch.manifest import load_manifest
from mirage_cli.batch.records import batch_json
from mirage_cli.batch.runner import BatchOptions, run_batch
from mirage_cli.batch.workers import InProcessPool
from mirage_cli.cli import main
from mirage_cli.errors import MirageError
from mirage_cli.pipeline.generate import GenerateConfig, generate

TINY = {"height": 64, "width": 96, "frames": 5}  # one 5-frame chunk: the suite stays fast
ROWS = [  # 4 preview jobs at a tiny size; two rows share a trajectory with different seeds
    {"id": "orbit", "image": "room.png", "traj": "orbit_left", **TINY},
    {"id": "pan", "image": "room.png", "traj": "pan_left", "seed": 3, **TINY},
    {"image": "room.png", "traj": "dolly_in", **TINY},  # id derived: room-dolly_in
    {"id": "spiral", "image": "room.png", "traj": "spiral", **TINY, "frames": 9, "chunk-frames": 5},  # 2 chunks
]


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def batch_dir(small_scene, tmp_path_factory):
    """A directory with the scene image (and its depth sidecar) and the 4-row manifest."""
    d = tmp_path_factory.mktemp("batch")
    shutil.copy(small_scene["image"], d / "room.png")
    shutil.copy(small_scene["depth"], d / "room.depth.npy")
    write_jsonl(d / "jobs.jsonl", ROWS)
    return d


@pytest.fixture(scope="module")
def singles(batch_dir):
    """Each row run alone with `generate` (the reference videos): id -> video bytes."""
    videos = {}
    for job in load_manifest(batch_dir / "jobs.jsonl"):
        out = batch_dir / "single" / job.id
        generate(GenerateConfig(**{**job.config.__dict__, "out": str(out)}), warn=lambda m: None, quiet=True)
        videos[job.id] = (out / "video.mp4").read_bytes()
    return videos


def videos(out) -> dict[str, bytes]:
    rec = json.loads(batch_json(out).read_text())
    return {k: (out / k / "video.mp4").read_bytes() for k, j in rec["jobs"].items() if j["status"] in ("done", "skipped")}


# ------------------------------------------------------------------------------------ manifest
def test_csv_and_jsonl_manifests_give_the_same_jobs(batch_dir, tmp_path):
    cols = ["id", "image", "traj", "seed", "height", "width", "frames", "chunk-frames"]
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in ROWS]
    (batch_dir / "jobs.csv").write_text("\n".join(lines) + "\n")
    a = load_manifest(batch_dir / "jobs.jsonl", tmp_path)
    b = load_manifest(batch_dir / "jobs.csv", tmp_path)
    assert [j.config for j in a] == [j.config for j in b]
    assert [j.id for j in a] == ["orbit", "pan", "room-dolly_in", "spiral"]
    assert a[0].config.image == str(batch_dir / "room.png")  # relative to the manifest
    assert a[3].config.chunk_frames == 5 and a[1].config.seed == 3
    assert a[2].config.out == str(tmp_path.resolve() / "room-dolly_in")


def test_bad_rows_exit_2_one_line_each_before_anything_runs(batch_dir, tmp_path, capsys):
    bad = [
        ROWS[0],
        {"id": "x", "image": "missing.png", "traj": "orbit_left"},
        {"id": "y", "image": "room.png", "traj": "orbit_left", "colour": "red"},
        {"id": "orbit", "image": "room.png", "traj": "pan_left"},
        {"id": "z", "image": "room.png", "traj": "orbit_left", "frames": "many"},
        {"id": "w", "image": "room.png", "traj": "no_such_preset"},
    ]
    write_jsonl(batch_dir / "bad.jsonl", bad)
    out = tmp_path / "out"
    assert main(["batch", str(batch_dir / "bad.jsonl"), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "row" in line]
    assert len(lines) == 5, err
    assert "row 2, field 'image': file not found" in lines[0]
    assert "row 3, field 'colour': unknown option" in lines[1]
    assert "row 4, field 'id': duplicate id 'orbit' (also row 1)" in lines[2]
    assert "row 5, field 'frames': must be an integer" in lines[3]
    assert "row 6, field 'traj'" in lines[4]
    assert "Traceback" not in err
    assert not out.exists()  # nothing started


def test_rows_set_per_chunk_prompts_as_a_list_or_a_prompt_file(batch_dir, tmp_path):
    """``prompts`` (a JSON list; in CSV a JSON list as text) and ``prompt_file`` (the CLI's --prompt-file,
    relative to the manifest) give the same job; a wrong type or both at once are one bad field each."""
    (batch_dir / "chunks.txt").write_text("a kitchen\n\na kitchen at night\n")
    rows = [{"id": "a", "image": "room.png", "traj": "orbit_left", "prompts": ["a kitchen", "a kitchen at night"]},
            {"id": "b", "image": "room.png", "traj": "orbit_left", "prompt_file": "chunks.txt"},
            {"id": "c", "image": "room.png", "traj": "orbit_left", "prompts": '["a kitchen", "a kitchen at night"]'}]
    write_jsonl(batch_dir / "prompts.jsonl", rows)
    a, b, c = load_manifest(batch_dir / "prompts.jsonl", tmp_path)
    assert a.config.prompts == b.config.prompts == c.config.prompts == ["a kitchen", "a kitchen at night"]
    write_jsonl(batch_dir / "prompts_bad.jsonl", [
        {"id": "d", "image": "room.png", "traj": "orbit_left", "prompts": [1, 2]},
        {"id": "e", "image": "room.png", "traj": "orbit_left", "prompts": ["x"], "prompt_file": "chunks.txt"},
        {"id": "f", "image": "room.png", "traj": "orbit_left", "prompt_file": "missing.txt"}])
    with pytest.raises(MirageError) as e:
        load_manifest(batch_dir / "prompts_bad.jsonl", tmp_path)
    lines = str(e.value).splitlines()
    assert "row 1, field 'prompts': must be a list of texts (got [1, 2])" in lines[0]
    assert "row 2, field 'prompt_file': give prompt_file or prompts, not both" in lines[1]
    assert "row 3, field 'prompt_file': file not found" in lines[2]


def test_a_non_json_row_does_not_hide_the_other_bad_rows(batch_dir, tmp_path, capsys):
    good = json.dumps(ROWS[0])
    bad = json.dumps({"id": "x", "image": "missing.png", "traj": "orbit_left"})
    (batch_dir / "mixed.jsonl").write_text("\n".join([good, "this is not json", bad, "[1, 2]"]) + "\n")
    assert main(["batch", str(batch_dir / "mixed.jsonl"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "row" in line]
    assert len(lines) == 3
    assert "row 2: not a JSON object" in lines[0] and "row 3, field 'image'" in lines[1]
    assert "row 4: not a JSON object" in lines[2]


def test_console_summary_is_a_readable_line_after_the_table(batch_dir, tmp_path, capsys):
    write_jsonl(batch_dir / "one_cli.jsonl", ROWS[:1])
    assert main(["batch", str(batch_dir / "one_cli.jsonl"), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert err.endswith("\n")  # the table's last line is finished before the summary
    assert out.startswith("batch done: 1 done; record ") and "{" not in out


def test_a_jobs_warnings_reach_the_summary_and_batch_json(batch_dir, tmp_path, capsys, monkeypatch):
    """A JPEG with no depth: `generate` warns that it uses the geometric prior; the batch says so
    too, once per job, prefixed by the job id (issue 22, item 4), and batch.json keeps it."""
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))  # no depth model cached
    Image.open(batch_dir / "room.png").convert("RGB").save(tmp_path / "photo.jpg", quality=90)  # no sidecar
    rows = [{"id": "jpeg", "image": "photo.jpg", "traj": "orbit_left", **TINY, "frames": 9, "chunk-frames": 5},
            {"id": "with-depth", "image": str(batch_dir / "room.png"), "traj": "orbit_left", **TINY}]
    write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "jobs.jsonl"), "--out", str(out)]) == 0
    stdout, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if "geometric prior" in line]
    assert len(lines) == 1, err  # once for its job (2 chunks), none for the job with a depth sidecar
    assert lines[0].startswith("warning: jpeg: no depth given") and "mirage models download" in lines[0]
    assert stdout.startswith("batch done: 2 done")
    jobs = json.loads(batch_json(out).read_text())["jobs"]
    assert sum("geometric prior" in w for w in jobs["jpeg"]["warnings"]) == 1
    assert not any("geometric prior" in w for w in jobs["with-depth"]["warnings"])
    assert all(f"warning: {k}: {w}" in err.splitlines() for k, j in jobs.items() for w in j["warnings"])  # each printed
    # --quiet hides the table and the summary, not the warnings (as with generate)
    assert main(["batch", str(tmp_path / "jobs.jsonl"), "--out", str(tmp_path / "q"), "--quiet"]) == 0
    stdout, err = capsys.readouterr()
    assert stdout == "" and sum("warning: jpeg: no depth given" in line for line in err.splitlines()) == 1


def test_a_worker_keeps_each_warning_once_and_not_generates_resume_hint():
    from mirage_cli.batch.workers import Worker

    w = Worker("t", in_process=True)
    for msg in ["a", "b", "a", "run failed after 1 of 2 chunks; finished chunks are kept. "
                                 "Continue with: mirage generate --resume out/x"]:
        w.warn(msg)
    assert w.warnings == ["a", "b"]


# ------------------------------------------------------------------------------------ local
def test_in_process_batch_retries_reports_failures_and_skips_done_jobs(batch_dir, singles, tmp_path, monkeypatch):
    (tmp_path / "broken.png").write_bytes(b"not a png")  # passes validation (it exists), fails when read
    rows = ROWS + [{"id": "broken", "image": str(tmp_path / "broken.png"), "traj": "orbit_left", **TINY}]
    write_jsonl(batch_dir / "with_broken.jsonl", rows)
    marker = tmp_path / "failed-once"
    monkeypatch.setenv("MIRAGE_TEST_FAIL_ONCE", f"pan:{marker}")
    out, pool = tmp_path / "out", InProcessPool()
    rec = run_batch(batch_dir / "with_broken.jsonl", BatchOptions(out=str(out), retries=1), pool=pool)
    jobs = rec.jobs
    assert marker.exists() and jobs["pan"].status == "done" and jobs["pan"].attempts == 2
    assert jobs["broken"].status == "failed" and jobs["broken"].attempts == 2 and "broken.png" in jobs["broken"].error
    assert rec.counts()["done"] == 4 and rec.status == "failed"
    assert pool.worker.models.loads == 1  # one preview backend for all jobs: never reloaded per job
    assert videos(out) == singles  # identical bytes to single `generate` runs
    on_disk = json.loads(batch_json(out).read_text())
    assert on_disk["counts"]["failed"] == 1 and on_disk["jobs"]["pan"]["attempts"] == 2

    again = run_batch(batch_dir / "with_broken.jsonl", BatchOptions(out=str(out), retries=0))
    assert again.counts()["skipped"] == 4 and again.counts()["failed"] == 1  # the done jobs are not rerun
    assert again.jobs["broken"].attempts == 1


def test_interrupted_job_is_resumed_on_rerun(batch_dir, singles, tmp_path, monkeypatch):
    import mirage_cli.pipeline.loop as loop

    real = loop.run_chunk

    def dies(chunk, *args, **kw):  # Ctrl-C in the spiral job's second chunk
        if chunk.index == 1:
            raise KeyboardInterrupt
        return real(chunk, *args, **kw)

    write_jsonl(batch_dir / "spiral.jsonl", [ROWS[3]])
    out = tmp_path / "out"
    monkeypatch.setattr(loop, "run_chunk", dies)
    with pytest.raises(KeyboardInterrupt):
        run_batch(batch_dir / "spiral.jsonl", BatchOptions(out=str(out)))
    rec = json.loads(batch_json(out).read_text())
    assert rec["status"] == "interrupted" and rec["jobs"]["spiral"]["status"] == "interrupted"
    assert json.loads((out / "spiral" / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(loop, "run_chunk", real)
    again = run_batch(batch_dir / "spiral.jsonl", BatchOptions(out=str(out)))
    assert again.jobs["spiral"].status == "done"
    assert len(json.loads((out / "spiral" / "run.json").read_text())["resumed_at"]) == 1  # resumed, not restarted
    assert videos(out)["spiral"] == singles["spiral"]


def test_two_worker_processes_keep_models_and_survive_a_dying_worker(batch_dir, singles, tmp_path, monkeypatch):
    marker = tmp_path / "died-once"
    monkeypatch.setenv("MIRAGE_TEST_DIE_ONCE", f"orbit:{marker}")
    out = tmp_path / "out"
    assert main(["batch", str(batch_dir / "jobs.jsonl"), "--out", str(out), "--workers", "2", "--quiet"]) == 0
    rec = json.loads(batch_json(out).read_text())
    assert marker.exists() and rec["jobs"]["orbit"]["attempts"] == 2 and rec["jobs"]["orbit"]["status"] == "done"
    assert rec["counts"]["done"] == 4 and rec["workers"] == "2 processes"
    assert all(j["model_loads"] == 1 for j in rec["jobs"].values())  # each worker loaded the backend once
    assert len({j["worker"] for j in rec["jobs"].values()}) >= 2  # the dead worker was replaced
    assert videos(out) == singles
    from mirage_cli.threads import worker_threads

    share = worker_threads(2)  # each worker process: an equal share of the cores, not every core
    assert all(json.loads((out / k / "run.json").read_text())["threads"] == share for k in rec["jobs"])


def test_worker_threads_share_the_cores_unless_threads_is_given(batch_dir, tmp_path):
    from mirage_cli.batch.workers import ProcessPool
    from mirage_cli.threads import worker_threads

    assert worker_threads(2, cpus=2) == 1 and worker_threads(3, cpus=8) == 2 and worker_threads(4, cpus=2) == 1
    assert worker_threads(2, given=3, cpus=2) == 3  # --threads / MIRAGE_THREADS wins
    write_jsonl(batch_dir / "one.jsonl", ROWS[:1])
    out = tmp_path / "out"
    rec = run_batch(batch_dir / "one.jsonl", BatchOptions(out=str(out)), pool=ProcessPool(1, threads=3))
    assert rec.counts()["done"] == 1
    assert json.loads((out / "orbit" / "run.json").read_text())["threads"] == 3  # applied in the worker process


# ------------------------------------------------------------------------------------ Ray
def test_ray_batch_matches_single_runs_and_requeues_a_dead_actor(batch_dir, singles, tmp_path, monkeypatch):
    if os.environ.get("CI"):  # CI installs the ray extra: a broken import must fail there, not skip
        import ray
    else:
        ray = pytest.importorskip("ray")
    marker = tmp_path / "actor-died-once"
    monkeypatch.setenv("MIRAGE_TEST_DIE_ONCE", f"pan:{marker}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "out"
        rec = run_batch(batch_dir / "jobs.jsonl", BatchOptions(out=str(out), ray="local", workers=2))
    finally:
        ray.shutdown()
    assert rec.counts()["done"] == 4 and rec.workers == "ray local x2"
    assert marker.exists() and rec.jobs["pan"].attempts == 2 and "died" not in (rec.jobs["pan"].error or "")
    assert all(j.worker.startswith("ray-") and j.model_loads == 1 for j in rec.jobs.values())
    assert videos(out) == singles
    # 2 CPUs, 2 actors: one thread (and one Ray CPU) each
    assert all(json.loads((out / k / "run.json").read_text())["threads"] == 1 for k in rec.jobs)


def test_ray_missing_says_how_to_install(monkeypatch):
    import sys

    from mirage_cli.batch.ray_backend import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MirageError, match=r'pip install "mirage-cli\[ray\]"'):
        import_ray()


def test_bare_ray_flag_means_a_local_instance():
    from mirage_cli.cli.batch import ray_flag_args

    assert ray_flag_args(["batch", "m.jsonl", "--ray"]) == ["batch", "m.jsonl", "--ray", "local"]
    assert ray_flag_args(["batch", "m.jsonl", "--ray", "-q"]) == ["batch", "m.jsonl", "--ray", "local", "-q"]
    assert ray_flag_args(["batch", "m.jsonl", "--ray", "auto"]) == ["batch", "m.jsonl", "--ray", "auto"]


def test_a_local_ray_instance_says_where_its_files_are(monkeypatch):
    """`batch --ray` left /tmp/ray/session_* outside --out unannounced: batch.json's "workers" (and the
    live table's title) name the session directory of the local instance the batch started."""
    import types

    from mirage_cli.batch import ray_backend
    from mirage_cli.batch.runner import describe_pool

    class Actor:
        def __init__(self, *a):
            pass

    fake = types.SimpleNamespace(
        is_initialized=lambda: False, cluster_resources=lambda: {"CPU": 2},
        init=lambda **kw: types.SimpleNamespace(address_info={"session_dir": "/tmp/ray/session_x"}),
        remote=lambda **kw: (lambda cls: types.SimpleNamespace(remote=lambda *a: Actor())))
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    pool = ray_backend.RayPool(1, None, 0.0)
    assert describe_pool(BatchOptions(out="x", ray="local"), pool) == "ray local x1, Ray's files in /tmp/ray/session_x"
    pool = ray_backend.RayPool(1, "auto", 0.0)  # a cluster's session is the cluster's
    assert describe_pool(BatchOptions(out="x", ray="auto"), pool) == "ray auto x1"
