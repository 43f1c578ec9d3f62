"""Issue 24: `mirage data` — synthetic clips, samples with the inference memory read, tar shards, the reader."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mirage_cli.cli import main
from mirage_cli.data.clips import find_clips, read_clip
from mirage_cli.data.prepare import PrepareOptions, prepare
from mirage_cli.data.samples import SampleSpec, build_samples, choose_references, latent_cells, sample_indices
from mirage_cli.data.shards import ShardStream, TrainingShards, load_extras, stream_positions
from mirage_cli.data.synth import synth
from mirage_cli.errors import MirageError

SYNTH_SIZE = (128, 96)
SIZE = (128, 64)  # the training size: a centre crop of the synthetic clips (latent grid 4 x 8)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    synth(out, 3, size=SYNTH_SIZE)
    return out


@pytest.fixture(scope="module")
def shards(clips, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "s"
    result = prepare([str(clips)], out, PrepareOptions(model=str(model_dir), size=SIZE, device="cpu", shard_samples=2),
                     warn=lambda w: None)
    return out, result


def _models(model_dir):
    from mirage_cli.data.models import data_models

    return data_models(str(model_dir), "cpu", "auto", True)


def test_synth_writes_the_raw_layout(clips):
    refs = find_clips([clips])
    assert [r.name for r in refs] == ["synth-0000", "synth-0001", "synth-0002"] and {r.layout for r in refs} == {"vipe"}
    folder = Path(refs[0].folder)
    assert {p.name for p in folder.iterdir()} == {"clip.mp4", "depth.zip", "pose.npz", "intrinsics.npz", "mask.zip", "clip.txt"}
    clip = read_clip(refs[0], SIZE, 81, 16.0, 0)
    assert clip.frames.shape == (81, 64, 128, 3) and clip.depth.shape == (81, 64, 128)
    assert clip.depth.min() > 0 and 0 < clip.dynamic.mean() < 0.5  # exact depth; the first sphere is "dynamic"
    assert clip.K[0, 3] == pytest.approx(96 / 2 - 16)  # principal point moved by the centre crop
    assert "camera" in clip.caption


def test_memory_read_at_target_frame0_is_frame0s_latent_on_valid_static_cells(clips, model_dir):
    clip = read_clip(find_clips([clips])[0], SIZE, 81, 16.0, 0)
    s = build_samples(clip, _models(model_dir), SampleSpec(), 1, 0, clip.caption, "clip.txt")[0]
    t0 = s.meta["t0"]
    read, known, target = s.tensors["target_read"][0], s.tensors["target_known"][0], s.tensors["target"][0]
    cells = latent_cells(torch.from_numpy(clip.depth[t0] > 0), 16) & ~latent_cells(torch.from_numpy(clip.dynamic[t0]), 16)
    assert torch.equal(known, cells) and 0 < known.float().mean() < 1  # every valid, non-dynamic cell, nothing else
    assert torch.equal(read[:, known], target[:, known])  # bit for bit
    assert not read[:, ~known].any()  # zeros where unknown
    assert s.meta["memory"]["splat"] == "point"  # what --backend mirage reads with
    assert s.tensors["target_c2w"][0].allclose(torch.eye(4), atol=1e-6)  # poses relative to t0, as at inference


def test_reference_selection_ranks_a_frame_identical_to_a_target_frame_first(clips):
    clip = read_clip(find_clips([clips])[1], SIZE, 81, 16.0, 0)
    idx = sample_indices(81, SampleSpec(), np.random.default_rng(3))
    copy_to, copy_from = idx.candidates[-1], idx.target[10]
    depth, c2w, K, dyn = clip.depth.copy(), clip.c2w.copy(), clip.K.copy(), clip.dynamic.copy()
    depth[copy_to], c2w[copy_to], K[copy_to], dyn[copy_to] = depth[copy_from], c2w[copy_from], K[copy_from], dyn[copy_from]
    twin = dataclasses.replace(clip, depth=depth, c2w=c2w, K=K, dynamic=dyn)
    refs, ious = choose_references(twin, idx, SampleSpec())
    assert refs[0] == copy_to and ious[0] == 1.0 and ious == sorted(ious, reverse=True)
    assert all(r in idx.candidates for r in refs) and len(refs) <= 8


def test_prepare_writes_shards_with_the_reference_shapes(shards):
    out, result = shards
    assert result.ok == 3 and result.samples == 3 and result.shards == 2 and not result.skipped
    ds = TrainingShards(out)
    s = ds[0]
    t = s.tensors
    assert t["target"].shape == (9, 48, 4, 8) and t["target"].dtype == torch.float16
    assert t["preceding"].shape == (2, 48, 4, 8) and t["preceding_read"].shape == (2, 48, 4, 8)
    assert t["target_known"].dtype == torch.bool and t["target_known"].shape == (9, 4, 8)
    R = len(s.meta["references"])
    assert t["reference"].shape == (R, 48, 4, 8) and t["reference_c2w"].shape == (R, 4, 4)
    assert t["intrinsics"].shape == (33 + 8 + R, 4) and t["text"].dtype == torch.bfloat16
    assert s.meta["target"] == list(range(s.meta["t0"], s.meta["t0"] + 33)) and 8 <= s.meta["t0"] <= 48
    assert s.meta["target_read_frames"] == [s.meta["t0"] + 4 * j for j in range(9)]
    assert s.caption and s.caption == (Path(s.meta["folder"]) / "clip.txt").read_text().strip()
    extras = load_extras(out)
    assert extras.empty_text.shape[0] == 1 and set(extras.white) == {9, 10, 11}
    assert extras.white[9].shape == (9, 48, 4, 8)


def test_a_second_prepare_skips_every_finished_clip(shards, clips, model_dir):
    out, _ = shards
    before = {p.name: p.read_bytes() for p in out.glob("shard-*.tar")}
    again = prepare([str(clips)], out, PrepareOptions(model=str(model_dir), size=SIZE, device="cpu", shard_samples=2),
                    warn=lambda w: None)
    assert again.record["workers"] == "none needed" and again.record["this_run"]["clips_prepared"] == 0
    assert again.samples == 3 and {p.name: p.read_bytes() for p in out.glob("shard-*.tar")} == before
    with pytest.raises(MirageError, match="other options"):
        prepare([str(clips)], out, PrepareOptions(model=str(model_dir), size=SIZE, seed=1, device="cpu"))


def test_shards_hold_no_pickle(shards):
    from safetensors.torch import load

    out, _ = shards
    files = sorted(out.glob("shard-*.tar"))
    assert files
    members = 0
    for f in files:
        with tarfile.open(f) as tar:
            for info in tar:
                data = tar.extractfile(info).read()
                members += 1
                assert info.isfile() and info.mtime == 0
                key, _, ext = info.name.partition(".")
                assert ext in ("safetensors", "json", "txt") and "." not in key
                if ext == "safetensors":  # an 8-byte length, a JSON header, raw tensor bytes: nothing else
                    n = int.from_bytes(data[:8], "little")
                    header = json.loads(data[8:8 + n])
                    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
                    assert 8 + n + max(ends) == len(data) and load(data)
                elif ext == "json":
                    assert isinstance(json.loads(data), dict)
                else:
                    data.decode("utf-8")
    assert members == 3 * 3
    index = json.loads((out / "index.json").read_text())
    assert index["samples"] == 3 and [s["samples"] for s in index["shards"]] == [2, 1]
    for s in index["shards"]:
        assert hashlib.sha256((out / s["file"]).read_bytes()).hexdigest() == s["sha256"]


def test_reader_resumes_at_sample_k_like_a_fresh_read_from_k(shards):
    out, _ = shards
    fresh = [s.key for s in ShardStream(out)]
    assert fresh == TrainingShards(out).keys
    for k in range(4):
        assert [s.key for s in ShardStream(out, start=k)] == fresh[k:]
    shuffled = [s.key for s in ShardStream(out, shuffle_seed=5, epoch=2)]
    assert sorted(shuffled) == sorted(fresh)
    assert [s.key for s in ShardStream(out, shuffle_seed=5, epoch=2, start=2)] == shuffled[2:]
    one = TrainingShards(out)[1]
    assert torch.equal(one.tensors["target"], next(iter(ShardStream(out, start=1))).tensors["target"])


@pytest.mark.parametrize("n, world, workers, start", [(10, 2, 2, 0), (11, 2, 3, 4), (7, 3, 1, 3), (12, 1, 4, 5)])
def test_ranks_and_workers_split_evenly_and_resume(n, world, workers, start):
    def rank_sequence(rank, st):  # what a DataLoader yields: its workers' streams interleaved in turn
        streams = [stream_positions(n, rank, world, w, workers, st) for w in range(workers)]
        out = []
        for j in range(max(map(len, streams))):
            out += [s[j] for s in streams if j < len(s)]
        return out

    per_rank = [rank_sequence(r, 0) for r in range(world)]
    assert len({len(p) for p in per_rank}) == 1  # equal counts per rank
    flat = sorted(i for p in per_rank for i in p)
    assert flat == list(range(n - n % world))  # disjoint, and cover the epoch cut to a multiple of world
    for r in range(world):  # resuming after start global positions continues each rank's own sequence
        assert rank_sequence(r, start) == [i for i in per_rank[r] if i >= start]


def test_cli_synth_prepare_inspect_json(tmp_path, model_dir, capsys):
    clips = tmp_path / "clips"
    assert main(["--threads", "1", "data", "synth", str(clips), "--clips", "1", "--size", "128x96", "-q"]) == 0
    out = tmp_path / "shards"
    assert main(["data", "prepare", str(clips), "-o", str(out), "--model", str(model_dir), "--size", "128x64",
                 "--device", "cpu", "--no-text", "-q"]) == 0
    capsys.readouterr()
    assert main(["data", "inspect", str(out)]) == 0
    assert capsys.readouterr().out.startswith("1 sample from 1 clip in 1 shard, ")
    assert main(["data", "inspect", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["samples"] == 1 and doc["keys"]["target"] == {"dtype": "F16", "shapes": {"(9, 48, 4, 8)": 1}}
    assert "text" not in doc["keys"] and doc["skipped_clips"] == {}
    assert sum(doc["references"]["iou_histogram"].values()) == sum(int(k) * v for k, v in doc["references"]["per_sample"].items())
    png = tmp_path / "sample.png"  # --png alone draws the first sample
    assert main(["data", "inspect", str(out), "--png", str(png), "--device", "cpu"]) == 0
    assert png.stat().st_size > 0


# ------------------------------------------------------------------------------------ bad input
def _rezip(path: Path, edit) -> None:
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members = edit(members)
    with zipfile.ZipFile(path, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)


def _renpz(path: Path, edit) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays = edit(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _depth_edit(value):
    from mirage_cli.data.synth import exr_bytes

    def edit(m):
        d = np.full((96, 128), 2.0, np.float32)
        d[5, 7] = value
        m["00003.exr"] = exr_bytes(d)
        return m
    return edit


def _mask_wrong_size(m):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(buf, format="PNG")
    m["00000.png"] = buf.getvalue()
    return m


def _non_rigid(a):
    a["data"][4, :3, :3] *= 2
    return a


def _outside(a):
    a["data"][2, 2] = 10 * 128
    return a


BAD = {  # name: (file, edit, expected words of the one-line reason)
    "missing member": ("pose.npz", None, "pose.npz: missing"),
    "extra zip member": ("depth.zip", lambda m: {**m, "notes.txt": b"x"}, "notes.txt: unexpected member"),
    "extra npz key": ("intrinsics.npz", lambda a: {**a, "extra": np.zeros(3)}, "extra: unexpected key"),
    "frame counts disagree": ("pose.npz", lambda a: {"inds": a["inds"][:80], "data": a["data"][:80]},
                              "disagree on the frame count"),
    "NaN depth": ("depth.zip", _depth_edit(np.nan), "00003.exr: depth: 1 NaN"),
    "negative depth": ("depth.zip", _depth_edit(-1.0), "00003.exr: depth: 0 NaN and 1 negative"),
    "non-rigid pose": ("pose.npz", _non_rigid, "data[4]: not a rigid"),
    "intrinsics outside the image": ("intrinsics.npz", _outside, "data[2]: fx fy cx cy"),
    "mask of the wrong size": ("mask.zip", _mask_wrong_size, "00000.png: mask is 10x10"),
    "unreadable EXR": ("depth.zip", lambda m: {**m, "00002.exr": b"not an exr"}, "00002.exr: unreadable EXR"),
    "truncated mp4": ("clip.mp4", "truncate", "clip.mp4: unreadable video"),
}


def _break(folder: Path, file: str, edit) -> None:
    path = folder / file
    if edit is None:
        path.unlink()
    elif edit == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif file.endswith(".zip"):
        _rezip(path, edit)
    else:
        _renpz(path, edit)


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_input_is_one_line_naming_file_and_field(clips, tmp_path, case):
    file, edit, words = BAD[case]
    folder = tmp_path / "bad"
    shutil.copytree(clips / "synth-0000", folder)
    _break(folder, file, edit)
    ref = find_clips([folder])[0]
    with pytest.raises(MirageError) as e:
        read_clip(ref, SIZE, 81, 16.0, 0)
    msg = str(e.value)
    assert words in msg and "\n" not in msg and str(folder) in msg, msg


def test_a_clip_shorter_than_81_frames_at_16_fps(tmp_path):
    synth(tmp_path, 1, frames=60, size=SYNTH_SIZE)
    with pytest.raises(MirageError, match="60 frames at 16 fps give 60 at 16 fps; a clip needs 81"):
        read_clip(find_clips([tmp_path])[0], SIZE, 81, 16.0, 0)


def test_bad_clips_are_skipped_the_rest_go_on_exit_0_with_warning_or_2_when_none(clips, model_dir, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(clips / "synth-0001", src / "good")
    for name, case in (("nan", "NaN depth"), ("short", "frame counts disagree")):
        shutil.copytree(clips / "synth-0000", src / name)
        _break(src / name, *BAD[case][:2])
    out = tmp_path / "out"
    args = ["data", "prepare", str(src), "-o", str(out), "--model", str(model_dir), "--size", "128x64", "--device", "cpu",
            "--no-text", "-q"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "skipped nan:" in err and "skipped short:" in err
    doc = json.loads((out / "prepare.json").read_text())
    assert doc["clips"]["good"]["status"] == "ok" and doc["clips"]["nan"]["status"] == "bad"
    assert "NaN" in doc["clips"]["nan"]["reason"] and doc["summary"]["skipped"] == {"bad depth": 1, "frame count": 1}
    assert len(TrainingShards(out)) == 1
    shutil.rmtree(src / "good")
    assert main(args[:4] + [str(tmp_path / "none")] + args[5:]) == 2
    assert "no sample written" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("how", ["workers", "ray"])
def test_workers_and_ray_give_the_same_shards_as_in_process(shards, clips, model_dir, tmp_path, how):
    from mirage_cli.batch.runner import BatchOptions

    if how == "ray":
        pytest.importorskip("ray")
    out, _ = shards
    other = tmp_path / how
    batch = BatchOptions(out=str(other), workers=2, ray="local" if how == "ray" else None, threads=1)
    result = prepare([str(clips)], other, PrepareOptions(model=str(model_dir), size=SIZE, device="cpu", shard_samples=2),
                     batch, warn=lambda w: None)
    assert result.record["workers"].startswith("ray" if how == "ray" else "2 processes")
    for f in sorted(out.glob("shard-*.tar")) + [out / "dataset.safetensors"]:
        assert (other / f.name).read_bytes() == f.read_bytes()  # byte-identical shards: the same samples


def test_captions_from_a_mapping_file_and_from_a_tiny_qwen_vl_model(clips, model_dir, tmp_path):
    from mirage_cli.data.captions import save_tiny_captioner

    src = tmp_path / "src"
    for name in ("mapped", "uncaptioned"):
        shutil.copytree(clips / "synth-0002", src / name)
        (src / name / "clip.txt").unlink()
    mapping = tmp_path / "captions.jsonl"
    mapping.write_text(json.dumps({"clip": "mapped", "caption": "  A room,\nseen   from a moving camera. "}) + "\n")
    qwen = save_tiny_captioner(tmp_path / "qwen")
    out = tmp_path / "out"
    result = prepare([str(src)], out, PrepareOptions(model=str(model_dir), size=SIZE, device="cpu", text=False,
                                                     captions=str(mapping), caption_model=str(qwen)),
                     warn=lambda w: None)
    assert result.ok == 2
    by_clip = {s.meta["clip"]: s for s in TrainingShards(out)}
    assert by_clip["mapped"].caption == "A room, seen from a moving camera."
    assert by_clip["mapped"].meta["caption_source"] == "--captions"
    generated = by_clip["uncaptioned"]
    assert generated.caption and generated.meta["caption_source"].startswith("caption-model:qwen:style")
    bad = tmp_path / "bad.csv"
    bad.write_text("clip,caption\nmapped,\n")
    with pytest.raises(MirageError, match="row 1: caption: missing"):
        prepare([str(src)], tmp_path / "o2", PrepareOptions(model=str(model_dir), size=SIZE, captions=str(bad)))


def test_the_processed_layout_reads_like_the_raw_one(clips, tmp_path):
    raw = read_clip(find_clips([clips])[0], SIZE, 81, 16.0, 0)
    folder = tmp_path / "processed"
    folder.mkdir()
    shutil.copy(clips / "synth-0000" / "clip.mp4", folder / "clip.mp4")
    shutil.copy(clips / "synth-0000" / "clip.txt", folder / "clip.txt")
    with np.load(clips / "synth-0000" / "pose.npz") as p, np.load(clips / "synth-0000" / "intrinsics.npz") as k:
        poses, fxfycxcy = p["data"], k["data"]
    K = np.zeros((81, 3, 3), np.float32)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = *fxfycxcy.T, 1
    from mirage_cli.data.clips import _exr_members, _read_exr_frames

    depths = _read_exr_frames(clips / "synth-0000" / "depth.zip", _exr_members(clips / "synth-0000" / "depth.zip"),
                              range(81), (96, 128))
    np.savez(folder / "geometry.npz", depths=depths, poses_c2w=poses, intrinsics=K, fps=np.array(16.0))
    ref = find_clips([folder])[0]
    assert ref.layout == "processed"
    ref = dataclasses.replace(ref, name=raw.ref.name)  # the window's seed follows the clip name
    clip = read_clip(ref, SIZE, 81, 16.0, 0)
    assert clip.window == raw.window and np.array_equal(clip.frames, raw.frames)
    assert np.array_equal(clip.depth, raw.depth) and np.allclose(clip.K, raw.K) and clip.caption == raw.caption


def test_a_dataloader_with_two_workers_reads_the_stream_in_order(shards):
    from torch.utils.data import DataLoader

    out, _ = shards
    fresh = [s.key for s in ShardStream(out)]
    loader = DataLoader(ShardStream(out, start=1), batch_size=None, num_workers=2)
    assert [s.key for s in loader] == fresh[1:]
