"""The deterministic, footprint-aware z-buffer splat, against a brute-force reference."""

import math

import pytest
import torch

from mirage_cli.geometry.cameras import Cameras, look_at
from mirage_cli.memory.splat import float_bits, hash_rows, lift_patches, splat, splat_patches


def _one(u, v, z, r, h=5, w=6, **kw):
    uv = torch.tensor([[[u, v]]], dtype=torch.float32)
    return splat(uv, torch.tensor([[z]]), torch.tensor([[r]]), h, w, **kw)


def reference_splat(uv, z, radius, h, w, key, max_radius=4.0):
    """Loop-based reference: each cell takes the covering point with the smallest (z, key, index)."""
    T, P = z.shape
    index = torch.full((T, h, w), -1, dtype=torch.int64)
    depth = torch.zeros(T, h, w)
    for t in range(T):
        best = {}
        for p in range(P):
            zz = float(z[t, p])
            if not (math.isfinite(zz) and zz > 0):
                continue
            u, v = float(uv[t, p, 0]), float(uv[t, p, 1])
            r = min(max(float(radius[t, p]), 0.5), max_radius)
            for i in range(h):
                for j in range(w):
                    if u - r <= j + 0.5 < u + r and v - r <= i + 0.5 < v + r:
                        cand = (torch.tensor(zz, dtype=torch.float32).item(), int(key[p]), p)
                        if (i, j) not in best or cand < best[(i, j)]:
                            best[(i, j)] = cand
        for (i, j), (zz, _, p) in best.items():
            index[t, i, j] = p
            depth[t, i, j] = zz
    return index, depth


def test_single_point_covers_exactly_its_cell():
    idx, dep = _one(2.3, 1.7, 3.0, 0.5)
    assert idx[0, 1, 2] == 0 and dep[0, 1, 2] == 3.0
    assert (idx >= 0).sum() == 1 and (dep > 0).sum() == 1
    # radius below half a cell still covers the cell the point falls in
    idx, _ = _one(2.3, 1.7, 3.0, 0.1)
    assert idx[0, 1, 2] == 0 and (idx >= 0).sum() == 1
    # a cell centre exactly on the point with r = 0.5 covers that cell only
    idx, _ = _one(2.5, 1.5, 3.0, 0.5)
    assert idx[0, 1, 2] == 0 and (idx >= 0).sum() == 1


def test_footprint_covers_the_cells_it_spans_and_is_clamped():
    idx, _ = _one(3.0, 2.5, 1.0, 1.5, h=6, w=8)  # centres within [1.5, 4.5) x [1, 4)
    covered = (idx[0] >= 0).nonzero().tolist()
    assert sorted(covered) == [[i, j] for i in (1, 2, 3) for j in (1, 2, 3)]
    idx, _ = _one(10.0, 10.0, 1.0, 100.0, h=20, w=20, max_radius=2.0)
    assert (idx >= 0).sum() == 16  # clamped to a 4x4 square


def test_nearest_wins_whatever_the_order():
    uv = torch.tensor([[[2.2, 2.2], [2.7, 2.6], [2.5, 2.4]]])
    z = torch.tensor([[5.0, 2.0, 3.0]])
    r = torch.full((1, 3), 0.5)
    idx, dep = splat(uv, z, r, 5, 5)
    assert idx[0, 2, 2] == 1 and dep[0, 2, 2] == 2.0
    perm = torch.tensor([2, 0, 1])
    idx2, dep2 = splat(uv[:, perm], z[:, perm], r[:, perm], 5, 5)
    assert perm[idx2[0, 2, 2]] == 1 and torch.equal(dep, dep2)


def test_exact_ties_are_broken_by_key_not_by_order():
    uv = torch.tensor([[[2.2, 2.2], [2.7, 2.6], [2.5, 2.4], [2.6, 2.3]]])
    z = torch.full((1, 4), 2.0)
    r = torch.full((1, 4), 0.5)
    key = torch.tensor([40, 7, 99, 13])
    idx, _ = splat(uv, z, r, 5, 5, key=key)
    assert idx[0, 2, 2] == 1
    for seed in range(5):
        perm = torch.randperm(4, generator=torch.Generator().manual_seed(seed))
        idx2, _ = splat(uv[:, perm], z[:, perm], r[:, perm], 5, 5, key=key[perm])
        assert perm[idx2[0, 2, 2]] == 1
    # Without keys the default key is a hash of (u, v, z): still independent of the order.
    winner = uv[0, splat(uv, z, r, 5, 5)[0][0, 2, 2]]
    for seed in range(5):
        perm = torch.randperm(4, generator=torch.Generator().manual_seed(seed))
        idx2, _ = splat(uv[:, perm], z[:, perm], r[:, perm], 5, 5)
        assert torch.equal(uv[0, perm][idx2[0, 2, 2]], winner)


def test_points_behind_invalid_or_outside_are_dropped():
    uv = torch.tensor([[[1.5, 1.5], [1.5, 1.5], [float("nan"), 1.0], [50.0, 1.5], [-0.2, 1.5], [1.5, 1.5]]])
    z = torch.tensor([[-1.0, 0.0, 1.0, 1.0, 1.0, float("inf")]])
    r = torch.full((1, 6), 0.5)
    r[0, 4] = 1.0  # centre just outside the grid; its footprint reaches column 0, rows 0 and 1
    idx, dep = splat(uv, z, r, 4, 4)
    assert (idx >= 0).sum() == 2 and idx[0, 0, 0] == 4 and idx[0, 1, 0] == 4
    assert dep[0, 0, 0] == 1.0 and (dep > 0).sum() == 2


def test_batched_equals_frame_by_frame():
    g = torch.Generator().manual_seed(0)
    T, P, h, w = 3, 200, 12, 16
    uv = torch.rand(T, P, 2, generator=g) * torch.tensor([w + 4.0, h + 4.0]) - 2
    z = torch.rand(T, P, generator=g) * 5 + 0.5
    r = torch.rand(T, P, generator=g) * 2
    idx, dep = splat(uv, z, r, h, w)
    for t in range(T):
        i1, d1 = splat(uv[t : t + 1], z[t : t + 1], r[t : t + 1], h, w)
        assert torch.equal(i1[0], idx[t]) and torch.equal(d1[0], dep[t])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_reference(seed):
    g = torch.Generator().manual_seed(seed)
    T, P, h, w = 2, 60, 7, 9
    uv = torch.rand(T, P, 2, generator=g) * torch.tensor([w + 2.0, h + 2.0]) - 1
    z = (torch.rand(T, P, generator=g) * 4).round() + 1.0  # many exact depth ties
    r = torch.rand(T, P, generator=g) * 2.5
    key = hash_rows(torch.stack([float_bits(uv[0, :, 0]), float_bits(uv[0, :, 1])], 1))
    idx, dep = splat(uv, z, r, h, w, key=key, max_radius=2.0)
    ridx, rdep = reference_splat(uv, z, r, h, w, key, max_radius=2.0)
    assert torch.equal(idx, ridx)
    assert torch.equal(dep, rdep)


def test_parallelogram_footprint_covers_its_cells_only():
    # A thin parallelogram along the diagonal: half-axes (2, 2) and (0.3, -0.3) cells.
    uv = torch.tensor([[[5.0, 5.0]]])
    axes = torch.tensor([[[[2.0, 0.3], [2.0, -0.3]]]])
    idx, _ = splat(uv, torch.tensor([[1.0]]), None, 10, 10, axes=axes)
    covered = {tuple(c) for c in (idx[0] >= 0).nonzero().tolist()}
    assert {(4, 4), (5, 5), (3, 3), (6, 6)} <= covered  # along the diagonal
    assert (2, 7) not in covered and (7, 2) not in covered and (5, 2) not in covered
    assert len(covered) < 16  # far less than its 5x5 bounding box


def test_shuffled_points_give_the_same_depth_and_winner_content():
    g = torch.Generator().manual_seed(3)
    T, P, h, w = 2, 500, 20, 30
    uv = torch.rand(T, P, 2, generator=g) * torch.tensor([w * 1.0, h * 1.0])
    z = (torch.rand(T, P, generator=g) * 3).round() + 1.0
    r = torch.rand(T, P, generator=g) * 1.5
    idx, dep = splat(uv, z, r, h, w)
    perm = torch.randperm(P, generator=g)
    idx2, dep2 = splat(uv[:, perm], z[:, perm], r[:, perm], h, w)
    assert torch.equal(dep, dep2)
    known = idx >= 0
    assert torch.equal(known, idx2 >= 0)
    a = uv[torch.arange(T)[:, None, None], idx.clamp(min=0)]
    b = uv[:, perm][torch.arange(T)[:, None, None], idx2.clamp(min=0)]
    assert torch.equal(a[known], b[known])


def test_patches_read_back_exactly_in_the_lifting_view():
    """Lifted patches tile the lifting view exactly (one cell each), even on a rough, steep surface;
    a view from closer is covered without cracks."""
    g = torch.Generator().manual_seed(0)
    h, w = 12, 16
    depth = 2 + torch.rand(h, w, generator=g) * 3
    depth[:, 8:] = torch.linspace(2.0, 6.0, h)[:, None]  # a steep slanted plane
    cam = Cameras.from_fov(look_at([0.3, -0.2, 0.0], [0.0, 0.0, 4.0]), 60.0, w, h)
    pts, foot, axes, ii, jj = lift_patches(depth, cam.K()[0], cam.c2w[0], depth > 0)
    assert pts.shape == (h * w, 3) and axes.shape == (h * w, 2, 3)
    key = hash_rows(float_bits(pts))
    A = (axes * foot[:, None, None]).reshape(-1, 6)
    idx, dep = splat_patches(pts, A, key, cam.w2c, cam.K(), h, w)
    assert torch.equal(idx[0].flatten(), torch.arange(h * w))
    assert torch.allclose(dep[0], depth, rtol=1e-5)
    closer = Cameras(cam.c2w @ torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.8], [0, 0, 0, 1.0]], dtype=torch.float64),
                     cam.intrinsics, w, h)
    idx, _ = splat_patches(pts, A, key, closer.w2c, closer.K(), h, w)
    assert (idx[0, 2:-2, 10:-2] >= 0).all()  # the magnified slanted plane has no crack


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_bit_for_bit():
    g = torch.Generator().manual_seed(4)
    T, P, h, w = 3, 5000, 30, 52
    uv = torch.rand(T, P, 2, generator=g) * torch.tensor([w * 1.0, h * 1.0])
    z = (torch.rand(T, P, generator=g) * 3).round() + 1.0
    r = torch.rand(T, P, generator=g) * 3
    idx, dep = splat(uv, z, r, h, w)
    idx_c, dep_c = splat(uv.cuda(), z.cuda(), r.cuda(), h, w)
    assert torch.equal(idx, idx_c.cpu()) and torch.equal(dep, dep_c.cpu())


def _room_patches(n_views=6, h=12, w=20):
    """Patches lifted from views around a box of random depth, stored view after view (as a memory grows)."""
    g = torch.Generator().manual_seed(5)
    pts, axs = [], []
    for k in range(n_views):
        a = 2 * math.pi * k / n_views
        cam = Cameras.from_fov(look_at([0.0, 0.0, 0.0], [math.sin(a), 0.1, math.cos(a)]), 60.0, w, h)
        depth = 2 + torch.rand(h, w, generator=g)
        p, foot, axes, _, _ = lift_patches(depth, cam.K()[0], cam.c2w[0], depth > 0)
        pts.append(p)
        axs.append((axes * foot[:, None, None]).reshape(-1, 6))
    pts = torch.cat(pts)
    return pts, torch.cat(axs), hash_rows(float_bits(pts))


def test_block_cull_changes_no_result(monkeypatch):
    from mirage_cli.memory import splat as S
    pts, A, key = _room_patches()
    h, w = 12, 20
    cams = Cameras.from_fov(torch.stack([look_at([0.1, 0.0, 0.2], [math.sin(a), -0.1, math.cos(a)])
                                         for a in (0.3, 1.9, 4.0)]), 70.0, w, h)
    culled = []
    real = S._visible_blocks

    def spy(*args):
        vis = real(*args)
        culled.append(int((~vis).sum()))
        return vis

    for mode in ("patch", "point"):
        monkeypatch.setattr(S, "_visible_blocks", spy)
        fast = splat_patches(pts, A, key, cams.w2c, cams.K(), h, w, mode=mode, compiled=False)
        monkeypatch.setattr(S, "_visible_blocks",
                            lambda lo, hi, w2c, *a: torch.ones(w2c.shape[0], lo.shape[0], dtype=torch.bool))
        full = splat_patches(pts, A, key, cams.w2c, cams.K(), h, w, mode=mode, compiled=False)
        assert torch.equal(fast[0], full[0]) and torch.equal(fast[1], full[1])
        # the compiled path takes the same block lists: culled or not, the same bits
        monkeypatch.setattr(S, "_visible_blocks", spy)
        n_culled = sum(culled)
        comp = splat_patches(pts, A, key, cams.w2c, cams.K(), h, w, mode=mode)
        assert torch.equal(comp[0], full[0]) and torch.equal(comp[1], full[1])
        from mirage_cli.memory import compiled
        assert compiled.extension() is None or sum(culled) > n_culled  # it skipped blocks too
    assert sum(culled) > 0  # the cull did skip blocks


def test_point_mode_fills_only_the_cell_each_point_projects_to():
    pts, A, key = _room_patches(n_views=3)
    h, w = 12, 20
    cam = Cameras.from_fov(look_at([0.05, 0.0, -0.3], [0.2, 0.0, 1.0]), 60.0, w, h)
    idx, dep = splat_patches(pts, A, key, cam.w2c, cam.K(), h, w, mode="point")
    # Brute force: project in the same fp32 order, nearest (z, key, index) per cell [ceil(v-1), ceil(u-1)].
    r, K = cam.w2c[0].float(), cam.K()[0].float()
    X, Y, Z = pts.unbind(1)
    xc = r[0, 0] * X + r[0, 1] * Y + r[0, 2] * Z + r[0, 3]
    yc = r[1, 0] * X + r[1, 1] * Y + r[1, 2] * Z + r[1, 3]
    zc = r[2, 0] * X + r[2, 1] * Y + r[2, 2] * Z + r[2, 3]
    u = xc / zc * K[0, 0] + K[0, 2]
    v = yc / zc * K[1, 1] + K[1, 2]
    best = {}
    for p in range(len(pts)):
        if zc[p] <= 0:
            continue
        i, j = math.ceil(float(v[p]) - 1.0), math.ceil(float(u[p]) - 1.0)
        if 0 <= i < h and 0 <= j < w:
            cand = (float(zc[p]), int(key[p]), p)
            best[(i, j)] = min(best.get((i, j), cand), cand)
    ref = torch.full((h, w), -1, dtype=torch.int64)
    for (i, j), (_, _, p) in best.items():
        ref[i, j] = p
    assert best and torch.equal(idx[0], ref)
    assert torch.equal(dep[0] > 0, ref >= 0)
    patch, _ = splat_patches(pts, A, key, cam.w2c, cam.K(), h, w)
    assert int((patch[0] >= 0).sum()) >= int((idx[0] >= 0).sum())  # patches cover at least as much


def test_unknown_splat_mode_is_a_one_line_error():
    from mirage_cli.errors import MirageError
    pts, A, key = _room_patches(n_views=1)
    cam = Cameras.from_fov(look_at([0.0, 0.0, 0.0], [0.0, 0.0, 1.0]), 60.0, 20, 12)
    with pytest.raises(MirageError, match="unknown splat mode 'disc'"):
        splat_patches(pts, A, key, cam.w2c, cam.K(), 12, 20, mode="disc")


@pytest.mark.parametrize("kind", ["native", "portable"])
@pytest.mark.parametrize("mode", ["patch", "point"])
def test_compiled_splat_matches_pure_torch_bit_for_bit(mode, kind, monkeypatch):
    from mirage_cli.memory import compiled
    # the build for this CPU (vectorised) and the portable one both give the pure-torch bits
    monkeypatch.setenv("MIRAGE_COMPILED_SPLAT", "1" if kind == "native" else "portable")
    if compiled.extension() is None:
        pytest.skip("no C++ compiler: the compiled splat cannot be built here")
    pts, A, key = _room_patches(n_views=8)
    h, w = 12, 20
    poses = [look_at([0.3 * math.cos(a), 0.05, 0.3 * math.sin(a)], [math.sin(a), -0.1, math.cos(a)]) for a in range(5)]
    for fov, mr in ((70.0, 4.0), (25.0, 4.0), (90.0, 1.5)):  # zoomed in: patches span several cells
        cams = Cameras.from_fov(torch.stack(poses), fov, w, h)
        args = (pts, A, key, cams.w2c, cams.K(), h, w, mr, 7)
        fast = splat_patches(*args, mode=mode, compiled=True)
        ref = splat_patches(*args, mode=mode, compiled=False)
        assert torch.equal(fast[0], ref[0]) and torch.equal(fast[1], ref[1])
        assert (ref[0] >= 7).any()
    threads = torch.get_num_threads()
    try:  # frames run in parallel in the compiled path: the thread count changes no bit
        torch.set_num_threads(1)
        one = splat_patches(*args, mode=mode)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], fast[0]) and torch.equal(one[1], fast[1])


def test_compiled_build_names_hold_the_cpu_for_native_builds_only(monkeypatch):
    # torch caches builds by name: a native build must never be shared with another CPU
    from mirage_cli.memory import compiled
    names = {}
    for cpu in ("cpu-a", "cpu-b"):
        monkeypatch.setattr(compiled, "cpu_signature", lambda cpu=cpu: cpu)
        names[cpu] = {k: compiled.build_name(k, "src") for k in (compiled.NATIVE, compiled.PORTABLE)}
    assert names["cpu-a"]["native"][0] != names["cpu-b"]["native"][0]
    assert names["cpu-a"]["portable"] == names["cpu-b"]["portable"]
    assert "-march=native" in names["cpu-a"]["native"][1] and "-march=native" not in names["cpu-a"]["portable"][1]
    assert "-ffp-contract=off" in names["cpu-a"]["portable"][1]  # no FMA: the same roundings as torch
    assert compiled.build_name("native", "src") != compiled.build_name("native", "src2")
    assert compiled.cpu_signature()  # something identifies this machine
    monkeypatch.setenv("MIRAGE_COMPILED_SPLAT", "0")
    assert compiled.describe() == "pure torch" and compiled.describe("cuda") == "pure torch"
    monkeypatch.setenv("MIRAGE_COMPILED_SPLAT", "1")
    assert compiled.describe() in ("pure torch", "compiled C++ (native build)", "compiled C++ (portable build)")


@pytest.mark.parametrize("grow", [0.0, 0.25])
def test_parallelogram_footprint_grows_by_a_fixed_number_of_cells(grow):
    # a patch stretched 3 cells along u and 0.5 along v: grown by `grow` cells on every side (not by a
    # fraction of its axes, which would let a grazing patch bleed far over its neighbours)
    from mirage_cli.memory.splat import rasterize
    h = w = 20
    u, v = torch.tensor([10.3]), torch.tensor([10.6])
    J = tuple(torch.tensor([x]) for x in (3.0, 0.0, 0.0, 0.5))
    idx, _ = rasterize(0, torch.tensor([0]), u, v, torch.tensor([2.0]), torch.tensor([1]), 1, h, w, J=J, margin=0.0,
                       grow=grow)
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dx, dy = (jj + 0.5) - 10.3, (ii + 0.5) - 10.6
    expect = (dx.abs() <= 3 + grow) & (dy.abs() <= 0.5 + grow)
    assert torch.equal(idx[0] == 0, expect)
    assert int(expect.sum()) == (6 if grow == 0 else 7)  # a quarter cell more reaches one more centre along u


def test_describe_names_the_build_that_loaded(monkeypatch):
    from mirage_cli.memory import compiled
    if compiled.extension(compiled.PORTABLE) is None:
        pytest.skip("no C++ compiler: the compiled splat cannot be built here")
    real = compiled._build

    def build(kind):
        if kind == compiled.NATIVE:
            raise RuntimeError("this compiler refuses -march=native")
        return real(kind)

    monkeypatch.setattr(compiled, "_state", {})
    monkeypatch.setattr(compiled, "_build", build)
    assert compiled.extension() is not None  # the portable fallback
    assert compiled.describe() == "compiled C++ (portable build)"


def test_a_stale_build_lock_is_removed_and_the_build_says_so(monkeypatch, tmp_path, capsys):
    # torch would wait forever on the lock of a killed build: an old one is removed, the build runs and says so
    import os
    from pathlib import Path
    from types import SimpleNamespace

    from torch.utils.cpp_extension import _get_build_directory

    from mirage_cli.memory import compiled
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(compiled, "_state", {})
    built = []

    def fake_compile(name, source, flags, build_dir):  # no compiler run: what _build does around it is tested
        assert not (build_dir / "lock").exists()
        (build_dir / f"{name}.so").write_text("")
        built.append(name)
        return SimpleNamespace(__name__=name, __file__=str(build_dir / f"{name}.so"))

    monkeypatch.setattr(compiled, "_compile", fake_compile)
    name = compiled.build_name(compiled.NATIVE, compiled._SOURCE.read_text())[0]
    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    lock.write_text("")
    os.utime(lock, (1, 1))
    assert compiled.extension() is not None and built == [name]
    err = capsys.readouterr().err
    assert "building the compiled splat for this environment" in err and "stale lock was removed" in err
    assert "built the compiled splat in" in err and err.count("\n") == 2


def test_nan_point_does_not_hide_its_cull_block():
    # a NaN coordinate gives its block NaN bounds: the block must stay (its other points are fine)
    pts, A, key = _room_patches(n_views=2)
    h, w = 12, 20
    cams = Cameras.from_fov(torch.stack([look_at([0.1, 0.0, 0.2], [math.sin(a), -0.1, math.cos(a)])
                                         for a in (0.3, 1.9)]), 70.0, w, h)
    bad = pts.clone()
    bad[5] = float("nan")
    bad[300, 2] = float("inf")
    for compiled_path in (True, False):
        ref = splat_patches(pts, A, key, cams.w2c, cams.K(), h, w, compiled=compiled_path)
        out = splat_patches(bad, A, key, cams.w2c, cams.K(), h, w, compiled=compiled_path)
        lost = (ref[0] >= 0) & (out[0] < 0)
        # only the cells the two bad points themselves won may go
        assert int(lost.sum()) <= int(((ref[0] == 5) | (ref[0] == 300)).sum())
        assert not ((out[0] == 5) | (out[0] == 300)).any()


def test_compiled_lift_and_hash_match_pure_torch_bit_for_bit(monkeypatch):
    # the compiled twins of lift_patches_frames and hash_rows: the same float64 / integer operations
    from mirage_cli.memory import compiled
    from mirage_cli.memory.splat import lift_patches_frames
    if compiled.extension() is None:
        pytest.skip("no C++ compiler: the compiled lift cannot be built here")
    g = torch.Generator().manual_seed(4)
    T, h, w = 3, 9, 13
    depth = 2 + torch.rand(T, h, w, generator=g)
    depth[0, 2:4, 3:7] = 0  # holes: one-sided and missing slopes
    depth[1, :, 6:] += 1.5  # a depth edge: disagreeing slopes
    depth[2] = 4 * torch.rand(h, w, generator=g) ** 4  # rough, with grazing slopes (the stretch clamp)
    cams = Cameras.from_fov(torch.stack([look_at([0.1 * t, 0.0, 0.0], [0.3, -0.2 * t, 1.0]) for t in range(T)]),
                            60.0, w, h)
    cells = depth > 0.05
    for d in (depth, depth.double()):
        fast = lift_patches_frames(d, cams.K(), cams.c2w, cells)
        monkeypatch.setenv("MIRAGE_COMPILED_SPLAT", "0")
        slow = lift_patches_frames(d, cams.K(), cams.c2w, cells)
        monkeypatch.setenv("MIRAGE_COMPILED_SPLAT", "1")
        assert len(fast) == len(slow) == 6
        for a, b in zip(fast, slow):
            assert a.dtype == b.dtype and torch.equal(a, b)
    bits = torch.randint(0, 2**32, (5000, 19), generator=g, dtype=torch.int64)
    fast = hash_rows(bits)
    monkeypatch.setenv("MIRAGE_COMPILED_SPLAT", "0")
    assert torch.equal(fast, hash_rows(bits)) and int(fast.max()) < 2**31
