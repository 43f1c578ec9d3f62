"""LatentMemory against the ground truth of the procedural room: lift, read, write, save/load."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mirage_cli.data.scenes import default_camera, make_scene
from mirage_cli.errors import MirageError
from mirage_cli.geometry.cameras import Cameras, backproject, look_at, project
from mirage_cli.memory import LatentMemory, reduce_depth
from mirage_cli.memory.splat import splat
from mirage_cli.models.codecs import PixelCodec

SF = 4
W, H = 416, 240  # pixels; latent grid 60 x 104
h, w = H // SF, W // SF


@pytest.fixture(scope="module")
def room():
    scene = make_scene("room")
    cam0 = default_camera(W, H)
    rgb0, d0 = scene.render(cam0)
    codec = PixelCodec(SF)
    return {"scene": scene, "cam0": cam0, "rgb0": rgb0, "d0": d0[0], "lat0": codec.encode(rgb0)[0], "codec": codec}


def _memory(room, dtype=torch.float16, **kw) -> LatentMemory:
    mem = LatentMemory(3, SF, codec="pixel", feature_dtype=dtype, **kw)
    mem.lift(room["lat0"], room["d0"], room["cam0"])
    return mem


def _pose(yaw_deg=0.0, t=(0.0, 0.0, 0.0)) -> torch.Tensor:
    a = math.radians(yaw_deg)
    T = torch.eye(4, dtype=torch.float64)
    T[0, 0], T[0, 2], T[2, 0], T[2, 2] = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
    T[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return T


def _seen_by_view0(room, cam):
    """Ground truth: target cells whose true surface point (at the cell centre) is inside view 0's
    frustum and not occluded there (its depth matches view 0's true depth within 1 %)."""
    _, dt = room["scene"].render(cam.with_size(w, h))  # true depth at the latent cell centres
    X = backproject(dt[0].double(), cam.c2w[0], cam.K(w, h)[0]).reshape(-1, 3)
    cam0 = room["cam0"]
    uv, z = project(X, cam0.w2c[0], cam0.K()[0])
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H) & (z > 0)
    j, i = uv[:, 0].clamp(0, W - 1).long(), uv[:, 1].clamp(0, H - 1).long()
    seen = inside & ((z - room["d0"][i, j].double()).abs() < 0.01 * z)
    return seen.reshape(h, w), dt[0]


def _psnr(a, b):
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


# ------------------------------------------------------------------------------------ lift
def test_reduce_depth_takes_the_foreground_cluster():
    d = torch.full((4, 8), 5.0)
    d[:2, :2] = 2.0  # a cell straddling an edge: 4 pixels at 2, 12 at 5
    d[:, 4:] = torch.linspace(3.0, 3.3, 4)[None]  # a smooth slope: the whole block
    d[0, 4] = float("nan")
    out = reduce_depth(d, 4)
    assert out.shape == (1, 2)
    assert out[0, 0].item() == pytest.approx(2.0)  # nearer surface, never between 2 and 5
    vals = torch.linspace(3.0, 3.3, 4).repeat(4)[1:]
    assert out[0, 1].item() == pytest.approx(float(len(vals) / (1 / vals).sum()), rel=1e-6)  # harmonic mean
    assert reduce_depth(torch.zeros(4, 4), 4).item() == 0.0  # no valid pixel -> no point
    assert torch.equal(reduce_depth(d[:, :4], 1), d[:, :4])


def _reduce_depth_sorting_every_cell(depth, factor, edge_tol=0.05):
    """The foreground-cluster rule written plainly: sort every cell, search every cell for the jump."""
    *lead, H, W = depth.shape
    h, w = H // factor, W // factor
    d = depth[..., : h * factor, : w * factor].float()
    d = torch.where(torch.isfinite(d) & (d > 0), d, torch.tensor(float("inf")))
    s, _ = d.reshape(*lead, h, factor, w, factor).transpose(-3, -2).reshape(*lead, h, w, -1).sort(dim=-1)
    jump = s[..., 1:] > s[..., :-1] * (1 + edge_tol)
    incl = torch.cat([torch.ones_like(s[..., :1], dtype=torch.bool), jump.cumsum(dim=-1) == 0], dim=-1) & torch.isfinite(s)
    terms = torch.where(incl, 1.0 / s, torch.zeros_like(s))
    inv = _pairwise_in_order([terms[..., k] for k in range(terms.shape[-1])])  # in sorted order
    cnt = incl.sum(dim=-1).float()
    return torch.where(cnt > 0, cnt / inv.clamp(min=1e-30), torch.zeros_like(inv))


def _reduce_depth_inputs(room, factor):
    """Two frames of the room's pixel depth (one roughened by 20 % noise) with NaN rows, whole cells of 0
    and a patch of inf: smooth cells, depth edges and invalid pixels."""
    g = torch.Generator().manual_seed(factor)
    d = torch.stack([room["d0"], room["d0"] * (1 + 0.2 * torch.rand(room["d0"].shape, generator=g))])
    d[0, :5] = float("nan")
    d[1, :, :9] = 0.0  # whole cells without a valid pixel -> 0
    d[1, 20:30, 20:25] = float("inf")
    d[1, 40:44, 40:43] = -1.0
    return d


def _cells(d, factor):
    """``(cells, factor, factor)`` pixel blocks of ``d (T, H, W)``, cells in row-major order."""
    T, H, W = d.shape
    h, w = H // factor, W // factor
    return d[:, : h * factor, : w * factor].reshape(T, h, factor, w, factor).permute(0, 1, 3, 2, 4).reshape(-1, factor, factor)


def _pairwise_in_order(terms):
    """Sum a list of equal-shape tensors pairwise in list order (2i + 2i+1, an odd last carried up)."""
    while len(terms) > 1:
        nxt = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = nxt + terms[-1:] if len(terms) % 2 else nxt
    return terms[0]


@pytest.mark.parametrize("factor,edge_tol", [(8, 0.05), (4, 0.0), (3, 0.05), (2, 0.3)])
def test_reduce_depth_smooth_cells_are_the_harmonic_mean_in_natural_order(room, factor, edge_tol):
    d = _reduce_depth_inputs(room, factor)
    out = reduce_depth(d, factor, edge_tol).reshape(-1)
    b = _cells(d, factor).float()
    lo, hi = b.amin(dim=(1, 2)), b.amax(dim=(1, 2))
    smooth = (lo > 0) & (hi <= lo * (1 + edge_tol)) & torch.isfinite(hi)
    assert 0.05 < smooth.float().mean() < 0.99  # (edge_tol 0: only the constant cells are smooth)
    bs = b[smooth]
    # within a few fp32 roundings of the exact (float64) harmonic mean of every pixel
    exact = factor * factor / (1.0 / bs.double()).sum(dim=(1, 2))
    assert ((out[smooth].double() - exact).abs() / exact).max() < 4 * 2e-7
    # and exactly the fp32 formula: 1/d summed pairwise down each pixel column, then across the columns
    r = bs.reciprocal()
    cols = [_pairwise_in_order([r[:, i, j] for i in range(factor)]) for j in range(factor)]
    total = _pairwise_in_order(cols)
    assert torch.equal(out[smooth], torch.full_like(total, factor * factor) / total)  # (a / t, not t.reciprocal() * a)


@pytest.mark.parametrize("factor,edge_tol", [(8, 0.05), (4, 0.0), (3, 0.05), (2, 0.3)])
def test_reduce_depth_edge_and_invalid_cells_keep_the_sorted_cluster_rule(room, factor, edge_tol):
    d = _reduce_depth_inputs(room, factor)
    out = reduce_depth(d, factor, edge_tol)
    ref = _reduce_depth_sorting_every_cell(d, factor, edge_tol)
    b = _cells(d, factor).float()
    lo, hi = b.amin(dim=(1, 2)), b.amax(dim=(1, 2))
    hard = ~((lo > 0) & (hi <= lo * (1 + edge_tol)) & torch.isfinite(hi))
    assert hard.sum() > 100 and not hard.all()
    assert torch.equal(out.reshape(-1)[hard].view(torch.int32), ref.reshape(-1)[hard].view(torch.int32))
    bad = ~(torch.isfinite(b) & (b > 0))
    assert ((out.reshape(-1) == 0) == bad.all(dim=2).all(dim=1)).all()  # 0 exactly where no pixel is valid
    assert torch.isfinite(out).all() and (out >= 0).all()


def test_reduce_depth_is_deterministic_on_any_thread_count(room):
    d = _reduce_depth_inputs(room, 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = reduce_depth(d, 8)
        torch.set_num_threads(max(2, threads))
        many = reduce_depth(d, 8)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.view(torch.int32), many.view(torch.int32))
    assert torch.equal(one.view(torch.int32), reduce_depth(d.clone(), 8).view(torch.int32))


def test_lift_puts_every_point_on_a_real_surface(room):
    mem = _memory(room)
    assert len(mem) == h * w  # closed room: every cell has depth
    z = mem.points[:, 2].double()  # camera 0 is the identity
    blocks = room["d0"].reshape(h, SF, w, SF).permute(0, 2, 1, 3).reshape(h * w, SF * SF).double()
    order = torch.arange(h * w)  # points were lifted in row-major cell order
    rel = ((blocks[order] - z[:, None]).abs() / z[:, None]).min(1).values
    assert rel.max() < 0.05  # on (or within one pixel's slope of) a surface the cell really shows
    straddle = blocks.max(1).values > 1.3 * blocks.min(1).values
    assert straddle.sum() > 50  # the view has plenty of depth edges
    assert (z[straddle] <= blocks[straddle].min(1).values * 1.05).all()  # foreground, never in between
    st = mem.stats()
    assert st["points"] == h * w and st["points_per_chunk"] == {"0": h * w}
    assert torch.allclose(mem.footprint.double(), z / room["cam0"].K(w, h)[0, 0, 0], rtol=1e-5)


def test_lift_mask_and_latent_grid_depth(room):
    mem = LatentMemory(3, SF)
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[10:20, 30:50] = True
    assert mem.lift(room["lat0"], room["d0"], room["cam0"], mask=mask) == 200
    mem2 = LatentMemory(3, SF)
    dl = reduce_depth(room["d0"], SF)
    mem2.lift(room["lat0"], dl, room["cam0"])  # (h, w) depth is used as is
    mem3 = _memory(room)
    assert torch.equal(mem2.points, mem3.points)


def test_lift_rejects_wrong_shapes(room):
    mem = LatentMemory(3, SF)
    with pytest.raises(MirageError, match="latents have shape"):
        mem.lift(room["lat0"][:, :-1], room["d0"], room["cam0"])
    with pytest.raises(MirageError, match="matches neither"):
        mem.lift(room["lat0"], room["d0"][:100], room["cam0"])
    with pytest.raises(MirageError, match="one camera"):
        mem.lift(room["lat0"], room["d0"], Cameras.cat([room["cam0"], room["cam0"]]))


# ------------------------------------------------------------------------------------ read
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_identity_read_returns_the_lifted_latents(room, dtype):
    mem = _memory(room, dtype)
    lat, known, depth = mem.read(room["cam0"])
    assert lat.shape == (1, 3, h, w) and lat.dtype == torch.float32
    assert known.all()
    assert torch.equal(lat[0], room["lat0"].to(dtype).float())  # bit-exact on every cell
    assert torch.allclose(depth[0], reduce_depth(room["d0"], SF), rtol=1e-5)


def test_warp_matches_the_true_render_of_a_moved_camera(room):
    """Rotated 10 deg and moved 0.2 reference depths: the read matches the true render on the
    cells view 0 saw (PSNR >= 27 dB) and covers >= 95 % of them."""
    ref = room["scene"].reference_depth
    cam = Cameras(_pose(10.0, (0.2 * ref, 0.0, 0.0)), room["cam0"].intrinsics, W, H)
    mem = _memory(room)
    lat, known, depth = mem.read(cam)
    truth = room["codec"].encode(room["scene"].render(cam)[0])[0]
    seen, true_depth = _seen_by_view0(room, cam)
    assert seen.sum() > 0.5 * h * w
    coverage = (known[0] & seen).sum() / seen.sum()
    assert coverage >= 0.95
    m = seen & known[0]
    assert _psnr(lat[0][:, m], truth[:, m]) >= 27.0
    rel = (depth[0][m] - true_depth[m]).abs() / true_depth[m]
    assert rel.median() < 0.01


def test_dolly_in_leaves_no_crack_inside_a_surface(room):
    """30 % dolly-in: every cell inside a surface that view 0 saw is covered, by that surface.
    'Inside a surface': the cell and its 8 neighbours were seen by view 0 and the true depth has no
    edge or crease there (second difference < 2 % of the depth)."""
    ref = room["scene"].reference_depth
    cam = Cameras(_pose(0.0, (0.0, 0.0, 0.3 * ref)), room["cam0"].intrinsics, W, H)
    mem = _memory(room)
    _, known, depth = mem.read(cam)
    seen, d = _seen_by_view0(room, cam)
    su, sv = torch.ones_like(d), torch.ones_like(d)
    su[:, 1:-1] = (d[:, 2:] + d[:, :-2] - 2 * d[:, 1:-1]).abs() / d[:, 1:-1]
    sv[1:-1] = (d[2:] + d[:-2] - 2 * d[1:-1]).abs() / d[1:-1]
    ok = seen & (su < 0.02) & (sv < 0.02)
    interior = F.max_pool2d((~ok).float()[None, None], 3, 1, 1)[0, 0] == 0
    assert interior.sum() > 0.4 * h * w
    assert (interior & ~known[0]).sum() == 0  # no crack
    rel = (depth[0] - d).abs() / d
    assert rel[interior].max() < 0.15  # the right surface fills it (no background through a crack)
    # The test has teeth: points without footprints leave cracks in the same region.
    uv, z = project(mem.points.double(), cam.w2c[0], cam.K(w, h)[0])
    idx, _ = splat(uv[None].float(), z[None].float(), torch.zeros(1, len(mem)), h, w)
    assert (interior & (idx[0] < 0)).sum() > 100


def test_read_is_deterministic_and_independent_of_point_order(room):
    ref = room["scene"].reference_depth
    mem = _memory(room)
    # exact depth ties everywhere: the same view lifted again with other features
    mem.lift(1 - room["lat0"], room["d0"], room["cam0"], chunk=1)
    cams = Cameras(torch.stack([_pose(8.0, (0.1 * ref, 0, 0.1 * ref)), _pose(-15.0, (0, -0.1 * ref, 0.25 * ref))]),
                   room["cam0"].intrinsics.expand(2, 4), W, H)
    mem.write(torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0)),
              room["scene"].render(cams.with_size(w, h))[1], cams, mem.read(cams)[1], chunk=2)
    a = mem.read(cams)
    b = mem.read(cams)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    for seed in range(3):
        perm = torch.randperm(len(mem), generator=torch.Generator().manual_seed(seed))
        c = mem.select(perm).read(cams)
        for x, y in zip(a, c):
            assert torch.equal(x, y)
    assert torch.equal(mem.read(room["cam0"])[1], torch.ones(1, h, w, dtype=torch.bool))


def test_empty_memory_reads_nothing(room):
    lat, known, depth = LatentMemory(3, SF).read(room["cam0"])
    assert not known.any() and (lat == 0).all() and (depth == 0).all()


# ------------------------------------------------------------------------------------ write
def _orbit(scene, n, hh=30, ww=52):
    c = torch.tensor(scene.center, dtype=torch.float64)
    eyes = [c + 2.5 * torch.tensor([math.sin(2 * math.pi * k / n), 0.0, -math.cos(2 * math.pi * k / n)], dtype=torch.float64)
            for k in range(n)]
    return Cameras.from_fov(torch.stack([look_at(e, c) for e in eyes]), 60.0, ww, hh)


def test_orbit_twice_the_second_lap_adds_nothing(room):
    """A 360 deg orbit written chunk by chunk, then the same orbit again: lap two adds no point;
    after lap one the memory is within a small factor of the scene's visible surface cells."""
    scene = room["scene"]
    n, hh, ww = 24, 30, 52
    cams = _orbit(scene, n, hh, ww)
    rgb, depth = scene.render(cams)
    mem = LatentMemory(3, 1)
    mem.lift(rgb[0], depth[0], cams[0])
    laps = []
    for _lap in range(2):
        for s in range(0, n, 4):
            _, known, _ = mem.read(cams[s : s + 4])
            mem.write(rgb[s : s + 4], depth[s : s + 4], cams[s : s + 4], known, chunk=1 + s // 4)
        laps.append(len(mem))
    assert laps[1] == laps[0]
    # Visible surface in cells: distinct voxels (side = median cell footprint) hit by the true
    # surface points of every frame.
    pts, foot = [], []
    for k in range(n):
        K = cams.K()[k]
        pts.append(backproject(depth[k].double(), cams.c2w[k], K).reshape(-1, 3))
        foot.append((depth[k].double() / K[0, 0]).reshape(-1))
    size = torch.cat(foot).median()
    visible = torch.unique(torch.floor(torch.cat(pts) / size).long(), dim=0).shape[0]
    assert laps[0] <= 1.5 * visible
    assert laps[0] <= 0.3 * n * hh * ww  # far from appending every cell of every frame
    assert set(mem.stats()["points_per_chunk"]) >= {"0", "1", "2"}


def test_write_does_not_duplicate_cells_within_a_chunk(room):
    mem = LatentMemory(3, SF)
    cams = Cameras.cat([room["cam0"], room["cam0"]])
    lat = room["lat0"][None].expand(2, -1, -1, -1)
    dl = reduce_depth(room["d0"], SF)[None].expand(2, -1, -1)
    added = mem.write(lat, dl, cams, torch.zeros(2, h, w, dtype=torch.bool), chunk=1)
    assert added == h * w == len(mem)  # the second frame saw the first frame's new points
    assert mem.write(lat, dl, cams, None, chunk=2) == 0  # known=None reads the memory itself
    assert mem.write(lat, room["d0"][None].expand(2, -1, -1), cams, None, chunk=3) == 0  # pixel depth


def test_write_policies_replace_and_average(room):
    dl = reduce_depth(room["d0"], SF)[None]
    new = torch.full((1, 3, h, w), 0.25)
    rep = _memory(room, torch.float32, write_policy="replace")
    rep.write(new, dl, room["cam0"], None, chunk=1)
    lat, known, _ = rep.read(room["cam0"])
    assert len(rep) == h * w and known.all() and torch.allclose(lat, new)
    assert rep.stats()["points_per_chunk"] == {"1": h * w}
    avg = _memory(room, torch.float32, write_policy="average")
    avg.write(new, dl, room["cam0"], None, chunk=1)
    lat, _, _ = avg.read(room["cam0"])
    assert len(avg) == h * w and torch.allclose(lat[0], 0.5 * (room["lat0"] + 0.25), atol=1e-6)
    with pytest.raises(MirageError, match="unknown write policy"):
        LatentMemory(3, SF, write_policy="keep")


def test_append_policy_adds_every_valid_cell(room):
    app = _memory(room, torch.float32, write_policy="append")
    dl = reduce_depth(room["d0"], SF)[None]
    dl[0, :5] = 0  # invalid depth: no point
    new = torch.full((1, 3, h, w), 0.25)
    assert app.write(new, dl, room["cam0"], torch.ones(1, h, w, dtype=torch.bool), chunk=1) == (h - 5) * w
    assert len(app) == h * w + (h - 5) * w and app.stats()["points_per_chunk"] == {"0": h * w, "1": (h - 5) * w}


def test_point_splat_reads_the_lifting_view_back_and_is_saved(room, tmp_path):
    pt = _memory(room, torch.float32, splat="point")
    idx, _ = pt.read_index(room["cam0"])
    assert torch.equal(idx[0].flatten(), torch.arange(h * w))  # one point per cell, its own
    closer = Cameras(room["cam0"].c2w @ torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.5], [0, 0, 0, 1.0]],
                                                    dtype=torch.float64), room["cam0"].intrinsics, W, H)
    _, k_point, _ = pt.read(closer)
    _, k_patch, _ = _memory(room, torch.float32).read(closer)
    assert k_patch.float().mean() > 0.97 and k_point.float().mean() < 0.9  # closer: points leave cracks, patches do not
    pt.save(tmp_path / "m.safetensors")
    back = LatentMemory.load(tmp_path / "m.safetensors")
    assert back.splat == "point" and back.stats()["splat"] == "point"
    assert torch.equal(back.read(closer)[1], k_point)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(channels=0), "channels must be >= 1"),
    (dict(spatial_factor=0), "spatial_factor must be >= 1"),
    (dict(codec=" "), "codec name must not be empty"),
    (dict(feature_dtype="int8"), "feature_dtype must be one of float16, bfloat16, float32"),
    (dict(feature_dtype=torch.int8), "feature_dtype must be one of"),
    (dict(write_policy="keep"), "unknown write policy 'keep'"),
    (dict(splat="disc"), "unknown splat mode 'disc'"),
    (dict(device="gpu0"), "unknown device 'gpu0'"),
    (dict(max_radius=0), "max_radius must be a finite number > 0"),
    (dict(edge_tol=float("nan")), "edge_tol must be a finite number >= 0"),
    (dict(max_stretch=-1.0), "max_stretch must be a finite number > 0"),
])
def test_constructor_rejects_user_settings_with_one_mirage_error(kwargs, pattern):
    with pytest.raises(MirageError, match=pattern) as e:
        LatentMemory(**{"channels": 3, "spatial_factor": SF, **kwargs})
    assert "\n" not in str(e.value)


def test_constructor_wrong_types_are_type_errors_and_names_are_accepted():
    for args, kwargs in (((3.0, SF), {}), ((3, "2"), {}), ((3, SF), {"codec": None})):
        with pytest.raises(TypeError):
            LatentMemory(*args, **kwargs)
    m = LatentMemory(3, SF, feature_dtype="bfloat16", edge_tol=0)
    assert m.feature_dtype == torch.bfloat16 and m.edge_tol == 0.0 and m.features.dtype == torch.bfloat16


# ------------------------------------------------------------------------------------ files
def test_save_load_roundtrip(room, tmp_path):
    mem = _memory(room, image_hash="sha256:abc")
    mem.write(room["lat0"][None], reduce_depth(room["d0"], SF)[None], Cameras(_pose(20.0), room["cam0"].intrinsics, W, H),
              None, chunk=1)
    path = tmp_path / "m.safetensors"
    mem.save(path, extras={"reference_depth": 5.5, "width": W})
    back = LatentMemory.load(path)
    for name in ("points", "features", "footprint", "axes", "chunk", "key"):
        assert torch.equal(getattr(mem, name), getattr(back, name)), name
    assert back.extras == {"reference_depth": 5.5, "width": W} and back.image_hash == "sha256:abc"
    assert (back.codec, back.channels, back.spatial_factor, back.feature_dtype) == ("pixel", 3, SF, torch.float16)
    for x, y in zip(mem.read(room["cam0"]), back.read(room["cam0"])):
        assert torch.equal(x, y)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "mirage.latent-memory" and meta["version"] == "1" and meta["convention"] == "opencv"
    assert json.loads(meta["extras"])["reference_depth"] == 5.5
    empty = tmp_path / "empty.safetensors"
    LatentMemory(16, 8, codec="wan2.1").save(empty)
    assert len(LatentMemory.load(empty)) == 0
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_save_is_atomic(room, tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    _memory(room).save(path)
    before = path.read_bytes()
    import mirage_cli.memory.storage

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mirage_cli.memory.storage, "save_file", boom)
    with pytest.raises(MirageError, match="disk full"):  # one line for the user, old file intact
        _memory(room).save(path, extras={"x": 1})
    assert path.read_bytes() == before and not list(tmp_path.glob(".*"))
    with pytest.raises(MirageError, match="JSON"):
        _memory(room).save(path, extras={"bad": object()})


def _write_raw(path, tensors, meta):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=meta)


@pytest.fixture()
def good_file(room, tmp_path):
    path = tmp_path / "good.safetensors"
    _memory(room).save(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    return path, tensors, meta


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("truncated", "not a readable safetensors file"),
        ("garbage", "not a readable safetensors file"),
        ("empty", "not a readable safetensors file"),
        ("missing", "not found"),
        ("foreign", "not a mirage latent-memory cache .no 'format' metadata"),
        ("format", "not a mirage latent-memory cache .format 'other'"),
        ("version", "version '2' is not supported"),
        ("channels", "tensor 'features' has shape .6240, 3., expected .6240, 16."),
        ("dtype", "tensor 'points' has dtype float64, expected float32"),
        ("missing_tensor", "missing tensor 'footprint'"),
        ("count", "metadata says 7 points but the tensors hold 6240"),
        ("nan", "'points' contains NaN"),
        ("bad_int", "'spatial_factor' = 'eight' is not an integer"),
        ("bad_extras", "'extras' is not valid JSON"),
    ],
)
def test_bad_cache_files_give_one_clear_line(good_file, tmp_path, case, pattern):
    path, tensors, meta = good_file
    bad = tmp_path / f"{case}.safetensors"
    t, m = dict(tensors), dict(meta)
    if case == "truncated":
        bad.write_bytes(path.read_bytes()[:-100])
    elif case == "garbage":
        bad.write_bytes(b"\x13\x00\x00\x00\x00\x00\x00\x00{not json at all}" + bytes(100))
    elif case == "empty":
        bad.write_bytes(b"")
    elif case == "missing":
        bad = tmp_path / "nothing-here.safetensors"
    else:
        if case == "foreign":
            m = {}
        elif case == "format":
            m["format"] = "other"
        elif case == "version":
            m["version"] = "2"
        elif case == "channels":
            m["channels"] = "16"
        elif case == "dtype":
            t["points"] = t["points"].double()
        elif case == "missing_tensor":
            del t["footprint"]
        elif case == "count":
            m["points"] = "7"
        elif case == "nan":
            t["points"][5, 1] = float("nan")
        elif case == "bad_int":
            m["spatial_factor"] = "eight"
        elif case == "bad_extras":
            m["extras"] = "{oops"
        _write_raw(bad, t, m or None)
    with pytest.raises(MirageError, match=pattern) as e:
        LatentMemory.load(bad)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg


def test_stats_and_device_moves(room):
    mem = _memory(room)
    st = mem.stats()
    for key in ("points", "bytes", "channels", "dtype", "bounds", "points_per_chunk", "codec", "spatial_factor"):
        assert key in st
    assert st["dtype"] == "float16" and st["bytes"] == len(mem) * (12 + 6 + 4 + 12 + 4)
    lo, hi = st["bounds"]
    assert lo[2] >= 1.9 and hi[2] <= 9.0 + 1e-4
    assert mem.to("cpu") is mem


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_read_and_write_match_cpu_bit_for_bit(room):
    ref = room["scene"].reference_depth
    cams = Cameras(torch.stack([_pose(10.0, (0.2 * ref, 0, 0)), _pose(0.0, (0, 0, 0.3 * ref))]),
                   room["cam0"].intrinsics.expand(2, 4), W, H)
    cpu = _memory(room)
    gpu = _memory(room).to("cuda")
    for x, y in zip(cpu.read(cams), gpu.read(cams)):
        assert torch.equal(x, y.cpu())
    depth = room["scene"].render(cams.with_size(w, h))[1]
    lat = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    cpu.write(lat, depth, cams, None, chunk=1)
    gpu.write(lat.cuda(), depth.cuda(), cams, None, chunk=1)
    assert torch.equal(cpu.points, gpu.points.cpu()) and torch.equal(cpu.features, gpu.features.cpu())


def test_cached_block_bounds_follow_appends_and_replacements(room):
    """The cull-block bounds a memory keeps between reads equal fresh ones after every append (the
    tail is recomputed) and after the points are replaced; reads with them give the same bits."""
    from mirage_cli.memory.splat import block_bounds

    mem = _memory(room)
    for k in range(3):  # appends (the lifted grid is not a multiple of the block size)
        if k:
            mem.lift(room["lat0"], room["d0"] * (1 + 0.1 * k), room["cam0"], chunk=k)
        lo, hi = mem._block_bounds()
        flo, fhi = block_bounds(mem.points)
        assert torch.equal(lo, flo) and torch.equal(hi, fhi)
        assert mem._block_bounds()[0] is lo  # reused while the points are unchanged
    cams = room["cam0"]
    cached = mem.read(cams)
    mem._bounds_cache = None
    fresh = mem.read(cams)
    assert all(torch.equal(a, b) for a, b in zip(cached, fresh))
    sub = mem.select(torch.arange(len(mem) - 5))
    assert torch.equal(sub._block_bounds()[1], block_bounds(sub.points)[1])


def test_append_write_lifts_all_frames_at_once_with_the_same_bits(monkeypatch):
    # policy "append" lifts every frame in one batched call; it must store exactly the rows the
    # frame-by-frame path stores (same order, same float64 lift, same keys)
    from mirage_cli.bench.memory_speed import _bench_inputs, build_memory
    from mirage_cli.memory import latent as latent_mod
    from mirage_cli.memory.splat import lift_patches, lift_patches_frames
    cams, depth, lat = _bench_inputs(12, 20, 4, 5, torch.device("cpu"), 0)
    depth[1, 3:6, 4:9] = 0  # holes: not every frame lifts every cell
    base = build_memory(600, 12, 20, 4, torch.device("cpu"))
    base.write_policy = "append"
    batched = base.select(torch.arange(len(base)))
    added = batched.write(lat, depth, cams, None, chunk=4)
    real = latent_mod.write_frames
    monkeypatch.setattr(latent_mod, "write_frames", lambda *a: real(*a[:7]))  # no batch: per frame
    framewise = base.select(torch.arange(len(base)))
    assert framewise.write(lat, depth, cams, None, chunk=4) == added == int((depth > 0).sum())
    for name in ("points", "features", "footprint", "axes", "chunk", "key"):
        assert torch.equal(getattr(batched, name), getattr(framewise, name)), name
    K = cams.K()
    pts, foot, axes, tt, ii, jj = lift_patches_frames(depth, K, cams.c2w, depth > 0)
    for t in range(len(cams)):
        one = lift_patches(depth[t], K[t], cams.c2w[t], depth[t] > 0)
        sel = tt == t
        assert torch.equal(pts[sel], one[0]) and torch.equal(axes[sel], one[2])
        assert torch.equal(ii[sel], one[3]) and torch.equal(jj[sel], one[4])


def test_reserve_makes_room_without_changing_a_value():
    from mirage_cli.bench.memory_speed import _bench_inputs, build_memory
    cams, depth, lat = _bench_inputs(12, 20, 4, 3, torch.device("cpu"), 0)
    base = build_memory(500, 12, 20, 4, torch.device("cpu"))
    a, b = base.select(torch.arange(len(base))), base.select(torch.arange(len(base)))
    b.reserve(3 * 12 * 20)
    assert all(torch.equal(getattr(a, n), getattr(b, n)) for n in ("points", "features", "key", "axes"))
    ptr = b.points.data_ptr()
    b.write(lat, depth, cams, None, chunk=2)
    a.write(lat, depth, cams, None, chunk=2)
    assert b.points.data_ptr() == ptr  # the appends landed in the reserved room: no copy
    for n in ("points", "features", "footprint", "axes", "chunk", "key"):
        assert torch.equal(getattr(a, n), getattr(b, n)), n
    assert torch.equal(a._world_axes(), b._world_axes()) and torch.equal(a.read(cams)[0], b.read(cams)[0])


@pytest.mark.parametrize("factor,edge_tol", [(8, 0.05), (4, 0.0), (3, 0.05), (2, 0.3)])
def test_reduce_depth_compiled_and_torch_give_the_same_bits(room, factor, edge_tol, monkeypatch):
    from mirage_cli.memory import compiled, lifting
    if compiled.extension() is None:
        pytest.skip("no C++ compiler: the compiled reduce_depth cannot be built here")
    d = _reduce_depth_inputs(room, factor)
    d[0, 7:9, 30:33] = -float("inf")
    fast = reduce_depth(d, factor, edge_tol)
    h, w = d.shape[-2] // factor, d.shape[-1] // factor
    slow = lifting._reduce_depth_torch(d[..., : h * factor, : w * factor].float(), factor, edge_tol)
    assert torch.equal(fast.view(torch.int32), slow.view(torch.int32))
    monkeypatch.setenv("MIRAGE_COMPILED_SPLAT", "0")  # the switch turns it off too
    assert torch.equal(reduce_depth(d, factor, edge_tol).view(torch.int32), slow.view(torch.int32))


@pytest.mark.parametrize("mask", ["read", "none_known", "read_now"])
def test_policy_new_batched_lift_adds_the_same_points_as_frame_by_frame(monkeypatch, mask):
    # policy "new" lifts every candidate cell of a write at once and keeps, frame by frame, those the
    # points kept for earlier frames do not cover: the same rows, in the same order, as one lift per frame
    from mirage_cli.bench.memory_speed import _bench_inputs, build_memory
    from mirage_cli.memory import latent as latent_mod
    cams, depth, lat = _bench_inputs(12, 20, 4, 6, torch.device("cpu"), 0)
    depth[2, 2:7, 3:11] = 0
    base = build_memory(300, 12, 20, 4, torch.device("cpu"))
    known = {"read": base.read(cams)[1], "none_known": torch.zeros(6, 12, 20, dtype=torch.bool), "read_now": None}[mask]
    from mirage_cli.memory import policies
    monkeypatch.setattr(policies, "BATCH_LIFT_FRACTION", 1.0)  # the batched path whatever the candidates
    batched = base.select(torch.arange(len(base)))
    added = batched.write(lat, depth, cams, known, chunk=5)
    real = latent_mod.write_frames
    monkeypatch.setattr(latent_mod, "write_frames", lambda *a: real(*a[:7]))  # no batch: frame by frame
    framewise = base.select(torch.arange(len(base)))
    assert framewise.write(lat, depth, cams, known, chunk=5) == added > 0
    for name in ("points", "features", "footprint", "axes", "chunk", "key"):
        assert torch.equal(getattr(batched, name), getattr(framewise, name)), name
    if mask == "none_known":  # later frames did skip cells that earlier frames' new points cover
        assert added < int((depth > 0).sum())
