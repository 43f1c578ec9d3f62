"""Incremental memory checkpoints (issue 21, item 4): a directory of entries that replays to the very
memory that was appended, for every write policy and splat mode; costs bytes in proportion to what
changed, not to the memory; half-written entries are ignored, corrupt ones are one-line errors."""

import json
import math

import pytest
import torch

from mirage_cli.cli import main
from mirage_cli.errors import MirageError
from mirage_cli.geometry.cameras import Cameras
from mirage_cli.memory import LatentMemory
from mirage_cli.memory.checkpoint import (
    INDEX,
    MemoryCheckpoint,
    is_checkpoint,
    read_extras,
)
from mirage_cli.memory.storage import read_safetensors, write_safetensors
from mirage_cli.models.codecs import PixelCodec

SF = 4
W, H = 208, 120
TENSORS = ("points", "features", "footprint", "axes", "chunk", "key")


@pytest.fixture(scope="module")
def room(small_scene):
    scene, cam0 = small_scene["scene"], small_scene["camera"]
    rgb0, d0 = scene.render(cam0)
    codec = PixelCodec(SF)
    return {"scene": scene, "cam0": cam0, "lat0": codec.encode(rgb0)[0], "d0": d0[0], "codec": codec}


def _pose(cam0: Cameras, yaw_deg: float, tx: float) -> torch.Tensor:
    a = math.radians(yaw_deg)
    T = torch.eye(4, dtype=torch.float64)
    T[0, 0], T[0, 2], T[2, 0], T[2, 2] = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
    T[0, 3] = tx
    return cam0.c2w[0] @ T


def _chunk(room, k: int, frames: int = 3):
    """Chunk ``k`` of a short pan: latents, exact depth (valid in a vertical band that moves with ``k``,
    so that policies replace and average change part of the memory, not all of it) and cameras."""
    cam0 = room["cam0"]
    cams = Cameras(torch.stack([_pose(cam0, 6.0 * k + 2.0 * t, 0.05 * k) for t in range(frames)]),
                   cam0.intrinsics[0], W, H)
    rgb, depth = room["scene"].render(cams)
    band = torch.zeros(W, dtype=torch.bool)
    band[(37 * k) % (W - 64) : (37 * k) % (W - 64) + 64] = True
    return room["codec"].encode(rgb), torch.where(band, depth, torch.zeros_like(depth)), cams


def _memory(room, policy: str, splat: str = "patch") -> LatentMemory:
    mem = LatentMemory(3, SF, codec="pixel", write_policy=policy, splat=splat, image_hash="sha256:abc")
    mem.lift(room["lat0"], room["d0"], room["cam0"])
    return mem


def _same(a: LatentMemory, b: LatentMemory) -> None:
    """Bit-identical: every tensor, every observation, every setting and extra a cache keeps."""
    for name in TENSORS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    assert len(a.observations) == len(b.observations)
    for o, p in zip(a.observations, b.observations):
        assert torch.equal(o.c2w, p.c2w) and torch.equal(o.K, p.K) and torch.equal(o.depth, p.depth)
    for attr in ("channels", "spatial_factor", "codec", "feature_dtype", "write_policy", "splat", "image_hash", "extras"):
        assert getattr(a, attr) == getattr(b, attr), attr


@pytest.mark.parametrize("splat", ["patch", "point"])
@pytest.mark.parametrize("policy", ["new", "replace", "average", "append"])
def test_replayed_checkpoint_is_the_live_memory_bit_for_bit(room, tmp_path, policy, splat):
    mem = _memory(room, policy, splat)
    mem.extras = {"reference_depth": 2.5}
    ck = MemoryCheckpoint(tmp_path / "ck")
    ck.append(mem, {"chunks_done": 0, "width": W, "height": H})
    kinds = []
    for k in range(1, 6):
        mem.write(*_chunk(room, k), None, chunk=k)
        ck.append(mem, {"chunks_done": k, "width": W, "height": H})
        kinds.append(ck.entries[-1].kind)
        back = LatentMemory.load(tmp_path / "ck")
        assert back.extras == {"reference_depth": 2.5, "chunks_done": k, "width": W, "height": H}
        mem_saved = tmp_path / "full.safetensors"
        mem.save(mem_saved, extras={"chunks_done": k, "width": W, "height": H})
        _same(back, LatentMemory.load(mem_saved))  # the checkpoint == a full save/load
        mem.extras, live = {"reference_depth": 2.5}, mem
        assert all(torch.equal(getattr(back, n), getattr(live, n)) for n in TENSORS)  # == the live memory
    assert kinds.count("delta") >= 3, kinds  # the chunks were written incrementally
    if policy in ("new", "append"):  # rows only added: the chain never restarts
        assert [e.kind for e in MemoryCheckpoint(tmp_path / "ck").entries] == ["full"] + ["delta"] * 5
    assert read_extras(tmp_path / "ck")["chunks_done"] == 5 and is_checkpoint(tmp_path / "ck")


def test_replace_and_average_deltas_carry_dropped_and_changed_rows(room, tmp_path):
    for policy, name in (("replace", "dropped"), ("average", "changed")):
        mem = _memory(room, policy)
        ck = MemoryCheckpoint(tmp_path / policy)
        ck.append(mem)
        mem.write(*_chunk(room, 1), None, chunk=1)
        ck.append(mem)
        entry = ck.entries[-1]
        assert entry.kind == "delta"
        tensors, meta = read_safetensors(tmp_path / policy / entry.file)
        assert tensors[name].numel() > 0 and meta["format"] == "mirage.latent-memory-delta"
        _same(LatentMemory.load(tmp_path / policy), mem)


def _lift_cells(room, mem: LatentMemory, chunk: int, cells: int) -> None:
    """Add exactly ``cells`` generated points (the first valid cells of the input view)."""
    h, w = H // SF, W // SF
    mask = torch.zeros(h * w, dtype=torch.bool)
    mask[:cells] = True
    assert mem.lift(room["lat0"], room["d0"], room["cam0"], chunk=chunk, mask=mask.view(h, w)) == cells


def test_append_bytes_grow_with_points_added_not_with_the_memory(room, tmp_path):
    mem = _memory(room, "new")
    ck = MemoryCheckpoint(tmp_path / "ck")
    full_small = ck.append(mem)
    _lift_cells(room, mem, 1, 100)
    small = ck.append(mem)
    for k in range(2, 22):  # grow the memory ~20x
        _lift_cells(room, mem, k, 1560)
    ck.append(mem)
    _lift_cells(room, mem, 22, 100)
    large = ck.append(mem)
    full_large = mem.nbytes()
    assert full_large > 15 * full_small
    assert abs(large - small) <= 64, (small, large)  # same rows added: same bytes (header digits aside)
    assert large < 100 * 38 + 2048  # 100 rows of 38 bytes and a header, not the 1.2 MB memory
    _same(LatentMemory.load(tmp_path / "ck"), mem)


def test_a_half_written_entry_is_ignored_and_then_overwritten(room, tmp_path):
    mem = _memory(room, "new")
    d = tmp_path / "ck"
    ck = MemoryCheckpoint(d)
    ck.append(mem, {"chunks_done": 0})
    mem.write(*_chunk(room, 1), None, chunk=1)
    ck.append(mem, {"chunks_done": 1})
    committed = LatentMemory.load(d)
    index = (d / INDEX).read_bytes()
    # a process killed mid-append: the next entry's file (here a torn one) and a temporary, index untouched
    nxt = d / f"entry_{ck._index.next:06d}.safetensors"
    nxt.write_bytes(b"\x00" * 100)
    (d / f".{nxt.name}.mirage-tmp-x.safetensors").write_bytes(b"junk")
    assert (d / INDEX).read_bytes() == index
    _same(LatentMemory.load(d), committed)
    assert read_extras(d) == {"chunks_done": 1}
    # resume: the loaded memory is marked, so the next append is a delta again and replaces the torn file
    resumed = LatentMemory.load(d)
    resumed.write(*_chunk(room, 2), None, chunk=2)
    reopened = MemoryCheckpoint(d)
    reopened.append(resumed, {"chunks_done": 2})
    assert reopened.entries[-1].kind == "delta" and reopened.entries[-1].file == nxt.name
    mem.write(*_chunk(room, 2), None, chunk=2)
    resumed.extras = {"chunks_done": 2}
    _same(LatentMemory.load(d), resumed)
    assert torch.equal(LatentMemory.load(d).points, mem.points)  # as if never interrupted


def test_another_memory_or_full_true_starts_a_new_chain_and_removes_the_old_files(room, tmp_path):
    d = tmp_path / "ck"
    ck = MemoryCheckpoint(d)
    mem = _memory(room, "new")
    ck.append(mem)
    for k in (1, 2):
        mem.write(*_chunk(room, k), None, chunk=k)
        ck.append(mem)
    assert len(ck) == 3 and len(list(d.glob("entry_*"))) == 3
    ck.append(mem, full=True)  # compaction
    assert [e.kind for e in ck.entries] == ["full"] and len(list(d.glob("entry_*"))) == 1
    _same(LatentMemory.load(d), mem)
    other = mem.select(torch.arange(len(mem) // 2))  # not the memory appended last: no change record
    ck.append(other)
    assert [e.kind for e in ck.entries] == ["full"]
    _same(LatentMemory.load(d), other)


def test_replace_chains_compact_when_more_dead_than_alive(room, tmp_path):
    mem = _memory(room, "replace")
    ck = MemoryCheckpoint(tmp_path / "ck")
    ck.append(mem)
    fulls = 0
    for k in range(1, 7):
        mem.write(*_chunk(room, k), None, chunk=k)
        ck.append(mem)
        last = ck.entries[-1]
        fulls += last.kind == "full"
        assert last.dead_bytes <= mem.nbytes()
    assert fulls >= 1  # the chain restarted at least once
    _same(LatentMemory.load(tmp_path / "ck"), mem)


def _rewrite_entry(d, entry, tensors, meta):
    """Replace an entry's file and fix the index (size, sha256, chain) so only the content is wrong."""
    import hashlib

    from mirage_cli.io import file_sha256

    write_safetensors(d / entry.file, tensors, meta)
    index = json.loads((d / INDEX).read_text())
    chain = ""
    for e in index["entries"]:
        if e["file"] == entry.file:
            e["bytes"], e["sha256"] = (d / entry.file).stat().st_size, file_sha256(d / entry.file)
        chain = hashlib.sha256(f"{chain}:{e['sha256']}".encode()).hexdigest()
        e["chain"] = chain
    (d / INDEX).write_text(json.dumps(index))


@pytest.fixture
def two_entries(room, tmp_path):
    mem = _memory(room, "replace")
    d = tmp_path / "ck"
    ck = MemoryCheckpoint(d)
    ck.append(mem)
    mem.write(*_chunk(room, 1), None, chunk=1)
    ck.append(mem)
    assert ck.entries[-1].kind == "delta"
    return d, ck.entries[-1]


def test_corrupt_entries_and_indexes_are_one_line_errors(two_entries):
    d, entry = two_entries
    path = d / entry.file
    good_index, good = (d / INDEX).read_text(), path.read_bytes()
    tensors, meta = read_safetensors(path)

    def fails(match):
        with pytest.raises(MirageError, match=match) as e:
            LatentMemory.load(d)
        assert "\n" not in str(e.value)
        path.write_bytes(good)
        (d / INDEX).write_text(good_index)

    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # a flipped bit
    fails(f"{entry.file}: sha256 differs")
    path.write_bytes(good[: len(good) // 2])
    fails(f"{entry.file}: .* bytes, the index says")
    path.unlink()
    fails(f"{entry.file}: checkpoint entry file not found")
    (d / INDEX).write_text(good_index[:40])
    fails("index.json: not a readable JSON index")
    bad = dict(tensors, points=tensors["points"].clone())
    bad["points"][0, 0] = float("nan")
    _rewrite_entry(d, entry, bad, meta)
    fails(f"{entry.file}: tensor 'points' contains NaN or inf")
    _rewrite_entry(d, entry, dict(tensors, dropped=tensors["dropped"].flip(0)), meta)
    fails(f"{entry.file}: tensor 'dropped' must hold ascending distinct rows")
    _rewrite_entry(d, entry, tensors, dict(meta, base_points="7"))
    fails(f"{entry.file}: delta against 7 points")
    _rewrite_entry(d, entry, tensors, dict(meta, channels="4"))
    fails(f"{entry.file}: metadata field 'channels' = '4' differs")
    assert (d / INDEX).read_text() == good_index
    LatentMemory.load(d)  # restored: loads again


def test_cache_cli_reads_a_checkpoint_directory(two_entries, capsys):
    d, _ = two_entries
    mem = LatentMemory.load(d)
    assert main(["cache", "inspect", str(d), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["points"] == len(mem) and info["write_policy"] == "replace" and info["format"] == "mirage.latent-memory"
    assert info["file_bytes"] == sum(p.stat().st_size for p in d.iterdir())
    assert main(["cache", "inspect", str(d.parent / "missing")]) == 2


def test_change_record_follows_drop_blend_and_survives_a_snapshot(room):
    mem = _memory(room, "new")
    n = len(mem)
    mem.mark("t")
    snap = LatentMemory.__new__(LatentMemory)
    snap.__dict__.update(mem.__dict__)  # a shallow snapshot shares the (immutable) record
    keep = torch.ones(n, dtype=torch.bool)
    keep[[3, 10]] = False
    mem.drop(keep)
    mem.blend(torch.tensor([0, 9, n - 3]), torch.zeros(3, 3, dtype=torch.float64))  # rows 0, 11, n-1 of the mark
    c = mem.changes_since("t")
    assert c.dropped.tolist() == [3, 10] and c.changed.tolist() == [0, 11, n - 1] and c.first_new == n - 2
    assert mem.changes_since("other") is None
    s = snap.changes_since("t")
    assert s.dropped.numel() == 0 and s.changed.numel() == 0
