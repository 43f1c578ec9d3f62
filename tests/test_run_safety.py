"""Never lose a run (issue 11): run identity, atomic --overwrite, the run lock, stale temporaries,
I/O faults as one-line errors, resource bounds and options that do nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from test_generate import interrupted_at_chunk

from mirage_cli.cli import main
from mirage_cli.io import TMP_MARK, atomic_path, file_sha256
from mirage_cli.pipeline.generate import GenerateConfig, generate


def snapshot(d) -> dict:
    """Every file under ``d`` (relative path -> bytes)."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def run_args(img, out, *extra) -> list[str]:
    return ["generate", str(img), "--traj", "orbit_left", "--frames", "9", "--chunk-frames", "5", "--out", str(out),
            "--quiet", *extra]


@pytest.fixture
def done_run(small_scene, tmp_path):
    """A finished run and a snapshot of its files."""
    out = tmp_path / "run"
    assert main(run_args(small_scene["image"], out)) == 0
    return out, snapshot(out)


def no_leftovers(out) -> None:
    """No trash, lock or temporary beside or inside the run directory."""
    names = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert names == [], names
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]


# ----------------------------------------------------------------------------------- 1. run identity
def test_foreign_run_json_is_never_touched(small_scene, tmp_path, capsys):
    """Another tool's project with a file named run.json (and cache/, chunks/) is not a mirage run."""
    proj = tmp_path / "project"
    (proj / "cache").mkdir(parents=True)
    (proj / "chunks").mkdir()
    (proj / "run.json").write_text('{"name": "my other tool", "status": "done"}')
    (proj / "cache" / "weights.bin").write_bytes(b"\x01" * 100)
    (proj / "chunks" / "part.mp4").write_bytes(b"\x02" * 100)
    (proj / "video.mp4").write_bytes(b"\x03" * 100)
    before = snapshot(proj)
    capsys.readouterr()
    assert main(run_args(small_scene["image"], proj, "--overwrite")) == 2
    err = one_line_error(capsys)
    assert "not a mirage run" in err and str(proj) in err
    assert snapshot(proj) == before
    no_leftovers(proj)


def test_earlier_run_message_names_its_status(done_run, small_scene, capsys):
    out, _ = done_run
    capsys.readouterr()
    assert main(run_args(small_scene["image"], out)) == 2
    assert "complete earlier run" in one_line_error(capsys)
    data = json.loads((out / "run.json").read_text())
    # a run stopped after a chunk still has its newest dump (a finished run renamed it to final)
    shutil.copy(out / "cache" / "final.safetensors", out / "cache" / "last.safetensors")
    for status, words in (("interrupted", "interrupted"), ("failed", "failed"), ("running", "killed")):
        data["status"] = status
        (out / "run.json").write_text(json.dumps(data))
        assert main(run_args(small_scene["image"], out)) == 2
        err = one_line_error(capsys)
        assert words in err and "--resume" in err, err


# ----------------------------------------------------------------------------------- 2. atomic overwrite
def test_overwrite_replaces_a_run_and_leaves_nothing_behind(done_run, small_scene, tmp_path):
    out, before = done_run
    assert main(run_args(small_scene["image"], out, "--overwrite", "--seed", "5")) == 0
    after = snapshot(out)
    assert json.loads(after["run.json"])["config"]["seed"] == 5 and after["run.json"] != before["run.json"]
    no_leftovers(out)


def test_failed_move_aside_loses_nothing(done_run, small_scene, monkeypatch, capsys):
    """The old run cannot be moved (a permission error): one line, nothing deleted."""
    out, before = done_run
    real = os.rename

    def refuse(src, dst):
        if str(src) == str(out):
            raise PermissionError(1, "Operation not permitted")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", refuse)
    capsys.readouterr()
    assert main(run_args(small_scene["image"], out, "--overwrite")) == 2
    err = one_line_error(capsys)
    assert "Operation not permitted" in err and "nothing was deleted" in err
    assert snapshot(out) == before
    no_leftovers(out)


@pytest.mark.parametrize("fault", [KeyboardInterrupt, lambda: OSError(28, "No space left on device")])
def test_new_run_failing_before_its_first_dump_puts_the_old_run_back(done_run, small_scene, monkeypatch, capsys, fault):
    """A kill (Ctrl-C) or an error in the new run's first chunk: the earlier run comes back intact."""
    import mirage_cli.pipeline.loop as loop

    out, before = done_run

    def dies(*a, **k):
        raise fault()

    monkeypatch.setattr(loop, "run_chunk", dies)
    capsys.readouterr()
    code = main(run_args(small_scene["image"], out, "--overwrite", "--seed", "5"))
    assert code in (2, 130)
    assert snapshot(out) == before
    no_leftovers(out)


def test_undeletable_old_run_only_warns(done_run, small_scene, monkeypatch, capsys):
    """The replaced run cannot be deleted after the new run's first dump: the new run goes on."""
    import mirage_cli.pipeline.rundir as rundir

    out, _ = done_run

    def undeletable(path, *a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(rundir.shutil, "rmtree", undeletable)
    capsys.readouterr()
    assert main(["generate", str(small_scene["image"]), "--traj", "orbit_left", "--frames", "9", "--chunk-frames", "5",
                 "--out", str(out), "--overwrite", "--seed", "5"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    trash = out.parent / f".{out.name}.mirage-trash"
    assert "could not delete the replaced run" in err and trash.is_dir()
    assert json.loads((out / "run.json").read_text())["status"] == "done"


def test_overwrite_killed_midway_is_recovered_by_the_next_command(done_run, small_scene, capsys):
    """A process killed after moving the old run aside, before the new run's first dump."""
    out, before = done_run
    trash = out.parent / f".{out.name}.mirage-trash"
    os.rename(out, trash)
    (out / "cache").mkdir(parents=True)  # what the killed run had made so far
    (out / "run.json").write_text("{}")
    capsys.readouterr()
    # no --overwrite: the restored run is refused
    assert main([a for a in run_args(small_scene["image"], out) if a != "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "restored the earlier run" in err and "complete earlier run" in err
    assert snapshot(out) == before
    no_leftovers(out)


# ----------------------------------------------------------------------------------- 3. run lock
HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mirage_cli.pipeline.runlock import RunLock
    RunLock(Path(sys.argv[1])).acquire(print)
    print("locked", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def held(tmp_path):
    """Start a process holding the lock of a directory; yields (start, pid) and kills it after."""
    procs = []

    def start(out):
        env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        assert p.stdout.readline().strip() == "locked"
        return p.pid

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_second_process_on_a_live_run_is_refused(done_run, small_scene, held, capsys):
    out, before = done_run
    pid = held(out)
    capsys.readouterr()
    for extra in (["--overwrite"], []):
        assert main(run_args(small_scene["image"], out, *extra)) == 2
        err = one_line_error(capsys)
        assert f"PID {pid}" in err and "another mirage process" in err
    data = json.loads((out / "run.json").read_text())
    data["status"] = "interrupted"
    (out / "run.json").write_text(json.dumps(data))
    before = snapshot(out)
    assert main(["generate", "--resume", str(out), "--quiet"]) == 2
    assert f"PID {pid}" in one_line_error(capsys)
    assert snapshot(out) == before


def test_stale_lock_of_a_dead_process_is_taken_over(done_run, small_scene, held, capsys):
    out, _ = done_run
    pid = held(out)
    lock = out.parent / f".{out.name}.mirage.lock"
    os.kill(pid, 9)  # SIGKILL: the kernel drops the lock, the file stays
    time.sleep(0.2)
    assert lock.exists()
    capsys.readouterr()
    # not --quiet: warnings shown
    assert main([a for a in run_args(small_scene["image"], out, "--overwrite") if a != "--quiet"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "stale run lock" in err and f"PID {pid}" in err
    assert not lock.exists()


def test_run_json_says_running_only_under_the_lock(small_scene, tmp_path, monkeypatch):
    """While the loop runs the lock is held; when it stops the record says why and the lock is gone."""
    import mirage_cli.pipeline.loop as loop
    from mirage_cli.pipeline.runlock import lock_path

    out = tmp_path / "run"
    seen = []
    real = loop.run_chunk

    def spy(chunk, run, *a, **k):
        seen.append((json.loads((out / "run.json").read_text())["status"], lock_path(out).exists()))
        return real(chunk, run, *a, **k)

    monkeypatch.setattr(loop, "run_chunk", spy)
    with interrupted_at_chunk(monkeypatch, 1), pytest.raises(KeyboardInterrupt):
        generate(GenerateConfig(image=str(small_scene["image"]), traj="orbit_left", frames=9, chunk_frames=5, out=str(out)),
                 warn=lambda m: None)
    assert seen == [("running", True)]
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted" and not lock_path(out).exists()


# ----------------------------------------------------------------------------------- 4. temporaries
def test_temporaries_are_recognisable_and_removed_on_resume(small_scene, tmp_path, monkeypatch, capsys):
    with atomic_path(tmp_path / "x.safetensors") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.safetensors" + TMP_MARK) and tmp.suffix == ".safetensors"
        tmp.write_bytes(b"x")
    out = tmp_path / "run"
    with interrupted_at_chunk(monkeypatch, 1), pytest.raises(KeyboardInterrupt):
        generate(GenerateConfig(image=str(small_scene["image"]), traj="orbit_left", frames=9, chunk_frames=5, out=str(out)),
                 warn=lambda m: None)
    # What a SIGKILL during a dump leaves: a half-written temporary beside its target.
    stale = out / "cache" / f".chunk_001.safetensors{TMP_MARK}k1ll3d.safetensors"
    stale.write_bytes(b"\0" * 4321)
    capsys.readouterr()
    assert main(["generate", "--resume", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps warnings
    assert "removed 1 stale temporary" in err and "4,321 bytes" in err
    no_leftovers(out)


# ----------------------------------------------------------------------------------- 7. I/O faults
def test_disk_full_during_a_dump_is_one_line_and_resumable(small_scene, tmp_path, monkeypatch, capsys):
    """A fault-injecting safetensors writer: ENOSPC on chunk 1's dump after writing part of it."""
    from safetensors import SafetensorError

    import mirage_cli.memory.storage as st  # the writer every memory dump goes through

    base = tmp_path / "base"
    assert main(run_args(small_scene["image"], base, "--cache-dump", "chunks")) == 0
    out = tmp_path / "run"
    real = st.save_file

    def full(tensors, filename, metadata=None):
        if "chunk_001.safetensors" in filename:
            with open(filename, "wb") as f:
                f.write(b"\0" * 1000)
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })')
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(st, "save_file", full)
    capsys.readouterr()
    assert main(run_args(small_scene["image"], out, "--cache-dump", "chunks")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "".join(err)
    assert err[-1].startswith("error:") and "No space left on device" in err[-1] and "chunk_001.safetensors" in err[-1]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and len(run["chunks"]) == 1
    assert (out / "cache" / "chunk_000.safetensors").exists() and not (out / "cache" / "chunk_001.safetensors").exists()
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]
    monkeypatch.setattr(st, "save_file", real)  # space freed
    assert main(["generate", "--resume", str(out), "--quiet"]) == 0
    assert file_sha256(out / "video.mp4") == file_sha256(base / "video.mp4")


def test_small_tmpfs_fills_up(small_scene, tmp_path, capsys):
    """A real full disk (3 MB tmpfs); skipped where mounting is not permitted."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = mnt / "run"
        capsys.readouterr()
        code = main(["generate", str(small_scene["image"]), "--traj", "orbit_left", "--frames", "25", "--chunk-frames", "5",
                     "--out", str(out), "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and "No space left on device" in err[-1] and "Traceback" not in "\n".join(err), err
        assert not [p for p in out.rglob("*") if TMP_MARK in p.name]
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        assert main(["generate", "--resume", str(out), "--quiet"]) == 0
        assert json.loads((out / "run.json").read_text())["status"] == "done"
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_typer_parse_errors_are_one_line(capsys):
    for argv, words in ((["generate", "x.png", "--traj", "static", "--frames", "abc"], "--frames"),
                        (["generate", "x.png", "--bogus"], "--bogus"), (["nope"], "nope")):
        capsys.readouterr()
        assert main(argv) == 2
        err = one_line_error(capsys)
        assert err.startswith("error:") and words in err, err


def test_allocation_failure_is_one_line(small_scene, tmp_path, monkeypatch, capsys):
    import mirage_cli.pipeline.loop as loop

    def oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 68719476736 bytes")

    monkeypatch.setattr(loop, "run_chunk", oom)
    capsys.readouterr()
    assert main(run_args(small_scene["image"], tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "out of memory" in err[-1] and "--width/--height" in err[-1] and "Traceback" not in "\n".join(err)


# ----------------------------------------------------------------------------------- 5. resource bounds
def test_max_pixels_resizes_large_inputs_and_refuses_large_explicit_sizes(small_scene, tmp_path, capsys):
    from mirage_cli.pipeline.resources import fit_max_pixels

    W, H = fit_max_pixels(8000, 6000, None, None, 1_048_576)
    assert W * H <= 1_048_576 and abs(W / H - 8000 / 6000) < 0.01 and W * H > 0.99 * 1_048_576
    assert fit_max_pixels(832, 480, None, None, 1_048_576) is None
    warnings = []
    rec = generate(GenerateConfig(image=str(small_scene["image"]), traj="static", frames=2, out=str(tmp_path / "a"),
                                  max_pixels=208 * 120 // 4), warn=warnings.append)
    assert (rec["image"]["width"], rec["image"]["height"]) == (104, 60)
    assert any("above --max-pixels" in w and "resized to 104x60" in w for w in warnings), warnings
    capsys.readouterr()
    out = tmp_path / "b"
    assert main(["generate", str(small_scene["image"]), "--traj", "static", "--height", "8192", "--width", "8192",
                 "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "--max-pixels" in err and "8192x8192" in err and not out.exists()



def test_decompression_bomb_is_one_line_naming_the_file_and_max_pixels(small_scene, tmp_path, monkeypatch, capsys):
    """Pillow refuses images above 2 x MAX_IMAGE_PIXELS (~179 MP): one line, exit 2, no traceback.
    (The limit is lowered here so the scene image trips it, instead of writing a 180 MP file.)"""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(run_args(small_scene["image"], out)) == 2
    err = one_line_error(capsys)
    assert str(small_scene["image"]) in err and "24,960 pixels" in err and "--max-pixels" in err and not out.exists()


def test_a_run_stopped_before_its_first_dump_is_not_offered_resume(small_scene, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    warnings = []
    with interrupted_at_chunk(monkeypatch, 0), pytest.raises(KeyboardInterrupt):
        generate(GenerateConfig(image=str(small_scene["image"]), traj="orbit_left", frames=9, chunk_frames=5, out=str(out)),
                 warn=warnings.append)
    assert "--resume" not in warnings[-1] and "Start it over" in warnings[-1] and "--overwrite" in warnings[-1]
    capsys.readouterr()
    assert main(run_args(small_scene["image"], out)) == 2  # the earlier-run message: start over, not --resume
    err = one_line_error(capsys)
    assert "--resume" not in err and "start it over" in err and "--overwrite" in err
    assert main(run_args(small_scene["image"], out, "--overwrite")) == 0

def test_runs_that_cannot_fit_in_ram_are_refused_before_writing(small_scene, tmp_path, monkeypatch, capsys):
    import mirage_cli.pipeline.generate as g

    monkeypatch.setattr(g, "available_ram", lambda: 1_000_000)  # 1 MB available
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(run_args(small_scene["image"], out)) == 2
    err = one_line_error(capsys)
    assert "GB of RAM" in err and "--max-pixels" in err and "--downscale" in err and not out.exists()


def test_streamed_video_equals_the_one_written_at_once(tmp_path):
    import numpy as np

    from mirage_cli.io import VideoWriter, write_video

    frames = np.random.default_rng(0).integers(0, 255, (7, 24, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "a.mp4", frames, 8, comment="x")
    w = VideoWriter(tmp_path / "b.mp4", 8, comment="x")
    for part in (frames[:3], frames[3:4], frames[4:]):
        w.append(part)
    assert not (tmp_path / "b.mp4").exists()  # only a temporary until committed
    w.commit()
    assert file_sha256(tmp_path / "a.mp4") == file_sha256(tmp_path / "b.mp4")
    w = VideoWriter(tmp_path / "c.mp4", 8)
    w.append(frames)
    w.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]


# ----------------------------------------------------------------------------------- 6. options that do nothing
def test_options_the_backend_ignores_warn(small_scene, tmp_path):
    warnings = []
    generate(GenerateConfig(image=str(small_scene["image"]), traj="static", frames=2, out=str(tmp_path / "a"),
                            steps=10, guidance=7.0, model="wan2.1-vace-14b", depth="prior", depth_scale=2.0),
             warn=warnings.append)
    text = "\n".join(warnings)
    for opt in ("--steps", "--guidance", "--model", "--depth-scale"):
        assert f"{opt} does nothing with --backend preview" in text, (opt, text)
    warnings.clear()
    generate(GenerateConfig(image=str(small_scene["image"]), traj="static", frames=2, out=str(tmp_path / "b")),
             warn=warnings.append)
    assert not [w for w in warnings if "does nothing" in w]


def test_ctrl_c_swallowed_during_startup_still_stops_and_puts_the_old_run_back(tmp_path, capsys, monkeypatch):
    """A SIGINT that a library swallows while the run starts (review 8: the run once finished with
    exit 0 and replaced the old run) still stops it: exit 130, the "interrupted" line, old run kept."""
    import signal
    from pathlib import Path

    import mirage_cli.pipeline.generate as g
    from mirage_cli.cli import main

    example = str(Path(__file__).resolve().parents[1] / "examples" / "room.png")
    out = tmp_path / "run"
    args = ["generate", example, "--traj", "static", "--frames", "2", "--width", "104", "--out", str(out), "--quiet"]
    assert main(args) == 0
    before = (out / "run.json").read_text()
    real = g.prepare_depth

    def swallows_ctrl_c(*a, **kw):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # as a bare `except:` in a loaded library would
        return real(*a, **kw)

    monkeypatch.setattr(g, "prepare_depth", swallows_ctrl_c)
    capsys.readouterr()
    assert main(args + ["--overwrite"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert (out / "run.json").read_text() == before


# ---------------------------------------------------------------- issue 22: --frames far beyond the RAM
def _address_space_limit(limit: int):
    """A preexec_fn: the child may map at most ``limit`` bytes (``ulimit -v``)."""
    import resource

    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS as Linux enforces it")
@pytest.mark.parametrize("command", [("generate", "IMAGE", "--traj", "orbit_left"), ("traj", "preset", "orbit_left"),
                                     ("traj", "convert", "orbit_left")])
def test_frames_far_beyond_the_ram_are_one_line_under_a_memory_limit(small_scene, tmp_path, command):
    """`--frames 100000000` was killed by the kernel at 23 GB (rc 137, no message): under a 4 GB
    address-space limit it is refused in one line naming --frames, exit 2, before any large
    allocation (generate: by the peak-RAM estimate, which sees the limit; traj: the resampling)."""
    out = tmp_path / ("run" if command[0] == "generate" else "t.json")
    args = [str(small_scene["image"]) if a == "IMAGE" else a for a in command]
    p = subprocess.run([sys.executable, "-m", "mirage_cli", "--threads", "1", *args, "--frames", "100000000",
                        "-o", str(out)], capture_output=True, text=True, timeout=300,
                       preexec_fn=_address_space_limit(4 * 1024 ** 3))
    err = p.stderr.strip()
    assert p.returncode == 2, (p.returncode, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("error:"), err
    assert "--frames 100,000,000" in err and "lower --frames" in err, err
    assert not out.exists()


def test_the_ram_estimate_sees_the_address_space_limit_and_names_frames(monkeypatch):
    import resource

    import psutil

    from mirage_cli.errors import MirageError
    from mirage_cli.pipeline import resources

    real = resources.available_ram()
    limit = int(psutil.Process().memory_info().vms) + 2 * 1024 ** 3  # 2 GB above what this process maps
    monkeypatch.setattr(resource, "getrlimit", lambda what: (limit, limit) if what == resource.RLIMIT_AS else (-1, -1))
    assert resources.available_ram() <= min(real, 2 * 1024 ** 3 + 64 * 1024 ** 2)
    est = resources.estimate_peak((832, 480), (832, 480), (240, 416), 3, 2, 9, 1, 10_000_000)
    with pytest.raises(MirageError, match=r"^--frames 10,000,000: .* lower --frames$"):
        resources.check_peak(est, 2 * 1024 ** 3, frames=10_000_000)
    small = resources.estimate_peak((8000, 6000), (832, 480), (240, 416), 3, 2, 9, 1, 49)
    with pytest.raises(MirageError, match="--max-pixels"):  # not the frames' fault: the general advice
        resources.check_peak(small, 1024 ** 2, frames=49)
    # Spatia's loop keeps every decoded frame and rebuilds an RGB cloud from every 6th: it counts
    plain = resources.estimate_peak((832, 480), (832, 480), (30, 52), 48, 2, 81, 4, 193)
    spatia = resources.estimate_peak((832, 480), (832, 480), (30, 52), 48, 2, 81, 4, 193, pixel_history=True)
    assert plain.pixels == 0 and spatia.pixels >= 193 * 832 * 480 * 3 + 33 * 832 * 480 * 32
    assert spatia.total - plain.total == spatia.pixels
